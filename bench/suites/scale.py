"""Scale: claim latency and drain rate as finished rows pile up (1,000 organizations).

Levels: 10,000 PENDING in an otherwise empty table (the baseline), then 100,000 DONE +
10,000 PENDING, 1,000,000 DONE + 10,000 PENDING, and 1,000,000 DONE + 100,000 PENDING. Rows
are generated in SQL (no job_events for the DONE rows: the claim never reads them). Claim
latency is measured on one connection (claim 16, as a worker at concurrency 16 does, then
complete them); the drain rate by a real worker process at concurrency 16 over a fixed window.
The two ratio rows pair every window at 1M DONE with a baseline window run just before it in
a database of its own (see scale_suite). The EXPLAIN of the claim at the largest level goes to
results/claim_explain.txt.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from atum_ai.queue.models import Completion
from atum_ai.queue.queries import QUERIES
from atum_ai.queue.store import JobStore
from bench.common import (
    Stat,
    atum_env,
    atum_worker_cmd,
    bench_database,
    migrate_atum,
    percentile,
    rate_first_to_last,
    spawn,
)
from bench.suites import Row

ORGS = 1000
RESULTS = Path(__file__).resolve().parent.parent / "results"

FILL = """
INSERT INTO job_queue (id, organization_id, job_type, payload, status, run_after, created_at,
                       updated_at, result)
SELECT gen_random_uuid(),
       ('00000000-0000-0000-0000-' || lpad(to_hex(1 + (i %% {orgs})), 12, '0'))::uuid,
       'TEST_NOOP', jsonb_build_object('n', i), %(status)s,
       now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour' + i * interval '1 microsecond',
       CASE WHEN %(status)s = 'DONE' THEN '{{"attempt": 1}}'::jsonb END
  FROM generate_series(%(lo)s, %(hi)s - 1) AS i
"""


def _log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def fill(url: str, status: str, n: int, start: int = 0) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        step = 200_000
        for lo in range(start, start + n, step):
            conn.execute(FILL.format(orgs=ORGS),
                         {"status": status, "lo": lo, "hi": min(start + n, lo + step)})


def settle(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE job_queue")


def rearm(url: str) -> None:
    """Put the jobs a previous run finished back to PENDING (dead tuples, as real churn)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE job_queue SET status = 'PENDING', result = NULL, locked_by = NULL,"
                     " locked_at = NULL WHERE status = 'RUNNING' OR (status = 'DONE' AND result ? 'started_at')")
        conn.execute("TRUNCATE job_events")
        conn.execute("VACUUM ANALYZE job_queue")


async def claim_latency(url: str, claims: int) -> list[float]:
    store = JobStore()
    worker = uuid.uuid4()
    out = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(claims):
            t = time.perf_counter()
            jobs = await store.claim(conn, worker, 16, lease_seconds=30)
            out.append((time.perf_counter() - t) * 1000)
            # Marked like a drained job so that rearm() puts it back: the claims measured here
            # must not eat the PENDING rows of the next measurement.
            await store.complete(conn, worker, [Completion(j.id, result={"started_at": 0.0})
                                                for j in jobs])
    return out


async def _explain(url: str) -> str:
    text = ""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        try:
            async with conn.transaction():
                cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + QUERIES["job_claim"], {
                    "worker_id": uuid.uuid4(), "limit": 16, "lease_seconds": 30, "job_types": None, "start": uuid.uuid4(),
                    "now": datetime.now(UTC)})
                text = "\n".join(r[0] for r in await cur.fetchall())
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
    return text


async def drain_window(url: str, seconds: float, tag: str) -> float:
    since = time.time()
    w = spawn(atum_worker_cmd(16, burst=True), atum_env(url), f"scale_{tag}")
    await asyncio.sleep(seconds)
    w.stop()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT (result->>'started_at')::float8 FROM job_queue"
                                 " WHERE status = 'DONE' AND result ? 'started_at'"
                                 " AND (result->>'started_at')::float8 >= %s", (since,))
        starts = [r[0] for r in await cur.fetchall()]
    return rate_first_to_last(starts)


async def scale_suite(dsn: str, *, done: int, runs: int, quick: bool) -> list[Row]:
    # The 1M DONE + 10,000 PENDING level separates the two things that grow at the largest
    # level: finished history (which the claim must skip) and the runnable backlog itself.
    levels = [(0, 10_000), (done // 10, 10_000), (done, 10_000), (done, max(10_000, done // 10))]
    if quick:
        levels = [(0, 5_000), (done, 10_000)]
    window = 4.0 if quick else 6.0
    claims = 50 if quick else 200
    rows: list[Row] = []
    # Paired baseline: this machine's speed drifts by tens of percent within minutes (pgbench
    # 39,000-62,000 rows/s on different hours), more than the effect measured. So each drain
    # window at a grown level is paired with a baseline window (0 DONE + the baseline's
    # PENDING, a database of its own) run just before it, and the ratio rows are the median of
    # the per-pair ratios rather than one median divided by another measured minutes earlier.
    base_pending = levels[0][1]
    paired: dict[tuple[int, int], list[float]] = {}
    with bench_database(dsn, "scale") as url, bench_database(dsn, "scale_base") as base_url:
        await migrate_atum(url)
        await migrate_atum(base_url)
        fill(base_url, "PENDING", base_pending)
        settle(base_url)
        have_done = have_pending = 0
        for n_done, n_pending in levels:
            t0 = time.monotonic()
            fill(url, "DONE", n_done - have_done, start=10_000_000 + have_done)
            fill(url, "PENDING", n_pending - have_pending, start=have_pending)
            have_done, have_pending = n_done, n_pending
            settle(url)
            _log(f"scale: built {n_done:,} DONE + {n_pending:,} PENDING in {time.monotonic() - t0:.0f}s")
            pair = n_done > 0 and (n_done == done or n_pending > base_pending)
            p50s, p99s, rates = [], [], []
            for r in range(runs):
                rearm(url)
                lat = await claim_latency(url, claims)
                p50s.append(percentile(lat, 50))
                p99s.append(percentile(lat, 99))
                base_rate = None
                if pair:
                    rearm(base_url)
                    base_rate = await drain_window(base_url, window, f"base_{n_done}_{r}")
                rearm(url)
                rates.append(await drain_window(url, window, f"{n_done}_{r}"))
                if base_rate:
                    paired.setdefault((n_done, n_pending), []).append(100.0 * rates[-1] / base_rate)
                _log(f"scale {n_done:,}+{n_pending:,} run {r + 1}: claim p50 {p50s[-1]:.2f} "
                     f"p99 {p99s[-1]:.2f} ms, drain {rates[-1]:,.0f} jobs/s"
                     + (f" (paired baseline {base_rate:,.0f})" if base_rate else ""))
            label = f"{n_done:,} DONE + {n_pending:,} PENDING"
            rows.append(Row("scale", f"claim(16) p50, ms — {label}", "atum_ai", Stat(p50s, "ms"), "lower",
                            f"{ORGS:,} orgs, {claims} claims"))
            rows.append(Row("scale", f"claim(16) p99, ms — {label}", "atum_ai", Stat(p99s, "ms"), "lower"))
            rows.append(Row("scale", f"drain jobs/s, concurrency 16 — {label}", "atum_ai",
                            Stat(rates, "jobs/s"), note=f"{window:.0f}s window"))
        rearm(url)
        text = await _explain(url)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "claim_explain.txt").write_text(
            f"-- EXPLAIN (ANALYZE, BUFFERS) of job_claim, limit 16, at {levels[-1][0]:,} DONE + "
            f"{levels[-1][1]:,} PENDING over {ORGS:,} organizations\n{text}\n")
        idx = sorted({w.strip(",") for line in text.splitlines() for w in line.split()
                      if w.startswith(("ix_", "job_queue_pkey"))})
        paired_note = f"median of {runs} ratios, each to a baseline window run just before it"
        if not quick:
            rows.append(Row("scale", f"drain rate with {done:,} DONE + {base_pending:,} PENDING vs baseline, %",
                            "atum_ai", Stat(paired[(done, base_pending)], "%"),
                            note="the cost of finished history alone; " + paired_note))
        rows.append(Row("scale", "drain rate at largest level vs baseline, %", "atum_ai",
                        Stat(paired[levels[-1]], "%"),
                        note=paired_note + "; indexes in the claim plan: " + ", ".join(idx)
                             + " (results/claim_explain.txt)"))
    return rows
