"""`python -m bench`: queue benchmarks side by side with Procrastinate and pgqueuer, pgbench as
the hardware reference, the scale suite, and the AI suites; a rich table on the terminal,
bench/results/latest.json and bench/results/latest.md (the README's performance section).

    python -m bench                      # everything, ~15 minutes on 2 cores
    python -m bench --quick              # 2-minute smoke run (1 run each, small sizes)
    python -m bench --suites drain,pickup --runs 5
    python -m bench --systems atum_ai    # without the peers

Peers come from the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import DEFAULT_DSN, server_version
from bench.suites import Row

RESULTS = Path(__file__).resolve().parent / "results"
ALL_SUITES = ["enqueue", "drain", "pickup", "scale", "pgbench", "io_llm", "e2e"]
DEFAULT_SUITES = ["enqueue", "drain", "pickup", "scale", "pgbench", "io_llm", "e2e"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=DEFAULT_DSN, help="server to use (databases atum_bench_* are "
                   "created and dropped on it); default %(default)s or ATUM_BENCH_DSN")
    p.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                   help=f"comma-separated, from {','.join(ALL_SUITES)}")
    p.add_argument("--systems", default="atum_ai,procrastinate,pgqueuer")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run each, small sizes")
    p.add_argument("--runs", type=int, help="repetitions per measurement (default 3; quick 1)")
    p.add_argument("--drain-jobs", type=int, help="drain backlog (default 20,000)")
    p.add_argument("--bulk-jobs", type=int, help="bulk enqueue size (default 100,000)")
    p.add_argument("--scale-done", type=int, help="DONE rows at the largest scale (default 1,000,000)")
    p.add_argument("--e2e-tickets", type=int, help="tickets for the end-to-end suite (default 500)")
    p.add_argument("--out", default=str(RESULTS), help="where latest.json/latest.md go")
    p.add_argument("--no-save", action="store_true", help="print only")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> list[Row]:
    from bench.peers import load
    from bench.suites.queue import QueueSizes, drain_suite, enqueue_suite, pickup_suite

    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = set(suites) - set(ALL_SUITES)
    if unknown:
        raise SystemExit(f"unknown suite(s): {', '.join(sorted(unknown))}")
    runs = args.runs or (1 if args.quick else 3)
    sz = QueueSizes(runs=runs)
    if args.quick:
        sz.single, sz.bulk, sz.drain, sz.drain_slow, sz.pickup = 300, 20_000, 3_000, 1_500, 60
    if args.drain_jobs:
        sz.drain = args.drain_jobs
    if args.bulk_jobs:
        sz.bulk = args.bulk_jobs
    systems = load([s.strip() for s in args.systems.split(",") if s.strip()])
    rows: list[Row] = []
    for suite in suites:
        t0 = time.monotonic()
        print(f"[bench] === {suite} ===", flush=True)
        if suite == "enqueue":
            rows += await enqueue_suite(systems, args.dsn, sz)
        elif suite == "drain":
            rows += await drain_suite(systems, args.dsn, sz)
        elif suite == "pickup":
            rows += await pickup_suite(systems, args.dsn, sz)
        elif suite == "scale":
            from bench.suites.scale import scale_suite

            done = args.scale_done or (100_000 if args.quick else 1_000_000)
            rows += await scale_suite(args.dsn, done=done, runs=runs, quick=args.quick)
        elif suite == "pgbench":
            from bench.suites.pgbench import pgbench_suite

            rows += pgbench_suite(args.dsn, runs=runs, seconds=3 if args.quick else 5)
        elif suite == "io_llm":
            from bench.suites.ai import io_llm_suite

            rows += await io_llm_suite(args.dsn, runs=runs, jobs=640 if args.quick else 3200)
        elif suite == "e2e":
            from bench.suites.ai import e2e_suite

            rows += await e2e_suite(args.dsn, runs=runs, tickets=args.e2e_tickets or (100 if args.quick else 500))
        print(f"[bench] {suite} took {time.monotonic() - t0:.0f}s", flush=True)
    return rows


# ---------------------------------------------------------------------------- reporting
def _ratio(rows: list[Row], row: Row) -> str:
    """ours / peer, oriented so that > 1 means atum_ai is better."""
    if row.system == "atum_ai":
        return ""
    ours = next((r for r in rows if r.suite == row.suite and r.metric == row.metric
                 and r.system == "atum_ai"), None)
    if ours is None or not ours.stat.values or not row.stat.values:
        return ""
    a, b = ours.stat.median, row.stat.median
    if not a or not b:
        return ""
    ratio = a / b if row.better == "higher" else b / a
    return f"{ratio:.2f}x"


def _digits(row: Row) -> int:
    return 1 if row.stat.unit in ("ms", "%", "MB") else 0


def render(rows: list[Row], meta: dict[str, str]) -> tuple[Table, str]:
    table = Table(title=f"atum_ai benchmarks — {meta['server']}, {meta['cpus']} CPUs, "
                        f"median of {meta['runs']} (min-max)")
    for col in ("suite", "metric", "system", "median (min-max)", "atum_ai advantage", "note"):
        table.add_column(col, overflow="fold")
    md = [
        f"Measured {meta['when']} on {meta['server']}, {meta['cpus']} CPUs shared, "
        f"Python {meta['python']}; {meta['versions']}. Median of {meta['runs']} runs with "
        f"(min-max); 'atum_ai advantage' is atum_ai's median over the peer's, in the same run "
        f"(>1 = atum_ai better). Reproduce: `{meta['command']}`.",
        "",
        "| suite | metric | system | median (min-max) | atum_ai advantage | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        val = r.stat.fmt(_digits(r))
        ratio = _ratio(rows, r)
        table.add_row(r.suite, r.metric, r.system, val, ratio, r.note)
        md.append(f"| {r.suite} | {r.metric} | {r.system} | {val} | {ratio} | {r.note} |")
    return table, "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    rows = asyncio.run(run(args))
    from importlib.metadata import version

    def v(d: str) -> str:
        try:
            return version(d)
        except Exception:
            return "not installed"

    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "server": server_version(args.dsn),
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "versions": f"procrastinate {v('procrastinate')}, pgqueuer {v('pgqueuer')}, "
                    f"psycopg {v('psycopg')}, asyncpg {v('asyncpg')}",
        "runs": str(args.runs or (1 if args.quick else 3)),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": f"{time.monotonic() - t0:.0f}",
    }
    table, md = render(rows, meta)
    Console(width=200).print(table)
    print(f"[bench] total {meta['seconds']}s", flush=True)
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_text(json.dumps(
            {"meta": meta, "rows": [r.to_json() for r in rows]}, indent=2, default=str) + "\n")
        (out / "latest.md").write_text(md)
        print(f"[bench] wrote {out / 'latest.json'} and {out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
