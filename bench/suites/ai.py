"""AI suites: the LLM path under I/O-bound load and the whole pipeline end to end.

io_llm: TRIAGE_TICKET through the OpenAI-compatible LLM path against a fake server on
localhost that answers after 200 ms, concurrency 64 in one process; jobs/s vs the ideal
(concurrency / latency). e2e: `atum-ai demo` on the shared dev tickets with local models;
tickets/s and the process's peak RSS.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

from bench.common import PY, ROOT, Stat, atum_env, bench_database
from bench.suites import Row

TICKETS = Path("/work/shared/data/tickets/dev.jsonl")
KB = Path("/work/shared/data/kb/articles.jsonl")


def _triage_ready() -> str | None:
    if not (ROOT / "atum_ai" / "handlers" / "triage.py").exists():
        return "skipped: atum_ai/handlers/triage.py does not exist yet"
    return None


async def io_llm_suite(dsn: str, *, runs: int, jobs: int) -> list[Row]:
    why = _triage_ready() or ("skipped: not wired yet — TRIAGE_TICKET needs ingested tickets and a "
                              "tenant taxonomy, and the fake server must answer the LLMTriage schema; "
                              "see the report")
    return [Row("io_llm", "TRIAGE_TICKET via LLM (200 ms), concurrency 64, jobs/s", "atum_ai",
                Stat([]), note=why)]


async def e2e_suite(dsn: str, *, runs: int, tickets: int) -> list[Row]:
    why = _triage_ready()
    if why or not TICKETS.exists() or not KB.exists():
        return [Row("e2e", "tickets/s through the demo pipeline", "atum_ai", Stat([]),
                    note=why or f"skipped: {TICKETS} or {KB} missing")]
    rates, rss = [], []
    for r in range(runs):
        with bench_database(dsn, "e2e") as url:
            env = atum_env(url)
            env.pop("ATUM_NO_BUILTINS", None)
            for k in ("ATUM_LLM_BASE_URL", "ATUM_LLM_API_KEY", "ATUM_LLM_MODEL"):
                env.pop(k, None)
            subprocess.run([PY, "-m", "atum_ai", "migrate"], env=env, cwd=str(ROOT), check=True,
                           capture_output=True, timeout=120)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.monotonic()
            out = subprocess.run([PY, "-m", "atum_ai", "--log-level", "WARNING", "demo", "--tickets",
                                  str(TICKETS), "--kb", str(KB), "--limit", str(tickets)],
                                 env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
            elapsed = time.monotonic() - t0
            if out.returncode != 0:
                return [Row("e2e", "tickets/s through the demo pipeline", "atum_ai", Stat([]),
                            note="failed: " + (out.stderr or out.stdout)[-300:].replace("\n", " "))]
            rates.append(tickets / elapsed)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            rss.append(max(peak, before) / 1024)
            print(f"[bench] e2e run {r + 1}: {rates[-1]:.1f} tickets/s, peak RSS {rss[-1]:.0f} MB", flush=True)
    return [Row("e2e", f"tickets/s through `atum-ai demo` ({tickets} tickets, local models)", "atum_ai",
                Stat(rates, "tickets/s"), note="wall time incl. start-up, KB import and training"),
            Row("e2e", "peak RSS of the demo process, MB", "atum_ai", Stat(rss, "MB"), "lower",
                note="max over child processes so far (ru_maxrss)")]
