"""Database outage: PostgreSQL is stopped for 20 s under running workers.

The design (verified here): a worker does NOT exit when the database goes away. It stays
up, keeps its event loop turning (systemd's watchdog stays fed), retries the claim with
capped, jittered exponential backoff (0.5 s doubling to 15 s), lets the listener reconnect
with its own backoff, and logs the outage once rather than once per attempt. When the
server is back it reports "database reachable again", the leases lost meanwhile are
recovered and every job finishes; each effect is stored exactly once.

"No hot error loop" is measured, not assumed: the log lines each worker writes while the
server is down, averaged over the outage, stay under 5 per second.

(Pool too small for the concurrency is refused at start with a clear message: see
``tests/integration/test_worker.py::test_pool_too_small_is_a_config_error_naming_the_numbers``
and ``test_cli_worker_refuses_a_pool_smaller_than_concurrency_in_one_line``.)

Size: 300 jobs in CI, 1,000 with ``ATUM_FULL_TESTS=1``; the outage is 20 s in both.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal

import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from atum_ai.testing.pg import TemporaryCluster
from tests.support.chaos import (
    all_events,
    chain_problems,
    connect_retrying,
    effect_counts,
    log_lines_between,
    migrated_database,
    private_pg,  # noqa: F401
    size,
    status_counts,
)
from tests.support.processes import WorkerFactory, wait_until, worker_processes  # noqa: F401

pytestmark = pytest.mark.slow

JOBS = size(300, 1_000)
OUTAGE_SECONDS = 20.0
MAX_LINES_PER_SECOND = 5.0


async def test_workers_ride_out_a_20s_outage_without_a_hot_loop_and_finish_every_job(
        private_pg: TemporaryCluster, worker_processes: WorkerFactory) -> None:  # noqa: F811
    url = await migrated_database(private_pg)
    rng = random.Random(20)
    org = uuid.uuid4()
    jobs = [NewJob(org, "TEST_SLEEP", {"seconds": round(rng.uniform(0.1, 0.4), 3), "n": i},
                   max_retries=25) for i in range(JOBS)]
    conn = await connect_retrying(url)
    await JobStore().enqueue_many(conn, jobs)
    await conn.close()

    workers = [worker_processes.start(url, "--concurrency", "4", "--lease", "3",
                                      env={"ATUM_MAINTENANCE_INTERVAL_SECONDS": "0.5"})
               for _ in range(3)]
    for w in workers:
        await w.wait_ready()

    conn = await connect_retrying(url)
    await wait_until(lambda: _done_at_least(conn, JOBS // 5), 60, what="a fifth of the jobs done")
    await conn.close()

    down_at = datetime.now(UTC)
    await asyncio.to_thread(private_pg.stop)
    await asyncio.sleep(OUTAGE_SECONDS)
    assert all(w.alive() for w in workers), "a worker exited during the outage"
    up_at = datetime.now(UTC)
    await asyncio.to_thread(private_pg.start)

    conn = await connect_retrying(url)
    await wait_until(lambda: _done_at_least(conn, JOBS), size(90, 180), interval=0.5,
                     what="every job to finish after the outage",
                     log=lambda: workers[0].log_text())
    assert all(w.alive() for w in workers), "a worker exited after the outage"
    for w in workers:
        assert await wait_until(lambda w=w: w.records("database reachable again"), 20,
                                what="the reconnect to be logged")

    rates, kinds = [], Counter()
    for w in workers:
        lines = log_lines_between(w.log_text(), down_at, up_at)
        kinds.update(json.loads(x).get("msg", "?")[:60] if x.startswith("{") else "(text)" for x in lines)
        rates.append(len(lines) / OUTAGE_SECONDS)
        assert len(lines) / OUTAGE_SECONDS < MAX_LINES_PER_SECOND, "\n".join(lines[:40])
        # The outage is reported, once, not once per attempt.
        assert len(w.records("claim failed; retrying with backoff")) <= 6
    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        assert await w.wait_async(30) == 0

    assert await status_counts(conn) == {"DONE": JOBS}
    effects = await effect_counts(conn)
    assert set(effects) == {j.id for j in jobs} and set(effects.values()) == {1}
    events = await all_events(conn)
    bad = {k: p for k, evs in events.items() if (p := chain_problems(evs))}
    assert not bad, list(bad.items())[:3]
    await conn.close()
    print(f"\noutage: log lines per second while PostgreSQL was down, per worker: "
          f"{', '.join(f'{r:.2f}' for r in rates)}; by message: {dict(kinds)}")


async def _done_at_least(conn, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await status_counts(conn)).get("DONE", 0) >= n



