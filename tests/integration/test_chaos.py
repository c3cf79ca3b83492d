"""Chaos: worker processes SIGKILLed at random and restarted, and a PostgreSQL restart in
the middle, while a backlog drains. At the end every job is DONE, its effect (a row in
``test_effects``, written by TEST_SLEEP inside the completion transaction) exists exactly
once, nothing is left RUNNING, and every job's events form a valid chain.

Size: about 1,000 jobs in CI; ``ATUM_FULL_TESTS=1`` runs the full 5,000 jobs.
Leases are 2 s so lost jobs are recovered quickly (maintenance every 0.5 s).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
import pytest

from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from atum_ai.testing.pg import TemporaryCluster
from tests.support.chaos import (
    all_events,
    chain_problems,
    connect_retrying,
    describe_chain,
    effect_counts,
    migrated_database,
    private_pg,  # noqa: F401
    size,
    status_counts,
)
from tests.support.processes import WorkerFactory, WorkerProcess, worker_processes  # noqa: F401

pytestmark = pytest.mark.slow

JOBS = size(1_000, 5_000)
WORKERS = 4
CONCURRENCY = size(4, 8)
LEASE = "2"
SECONDS = size((0.1, 0.3), (0.2, 0.6))  # handler sleep range
# Between kills. The CI size drains in ~10 s at 16 slots: kill often enough that several
# workers die mid-job whatever the machine's speed (the test asserts at least three kills).
KILL_EVERY = size((1.0, 2.0), (2.0, 4.0))
ENV = {"ATUM_MAINTENANCE_INTERVAL_SECONDS": "0.5"}


async def test_random_sigkills_and_a_postgresql_restart_lose_and_duplicate_nothing(
        private_pg: TemporaryCluster, worker_processes: WorkerFactory) -> None:  # noqa: F811
    url = await migrated_database(private_pg)
    rng = random.Random(8)
    orgs = [uuid.uuid4() for _ in range(8)]
    jobs = [NewJob(rng.choice(orgs), "TEST_SLEEP", {"seconds": round(rng.uniform(*SECONDS), 3), "n": i},
                   max_retries=25)
            for i in range(JOBS)]
    conn = await connect_retrying(url)
    await JobStore().enqueue_many(conn, jobs)
    ids = {j.id for j in jobs}

    def start() -> WorkerProcess:
        return worker_processes.start(url, "--concurrency", str(CONCURRENCY), "--lease", LEASE,
                                      "--grace", "1", env=ENV)

    t0 = time.monotonic()
    workers = [start() for _ in range(WORKERS)]
    kills = 0
    restarted_pg = False
    deadline = time.monotonic() + size(240, 600)
    while True:
        await asyncio.sleep(rng.uniform(*KILL_EVERY))
        try:
            counts = await status_counts(conn)
        except Exception:
            await conn.close()
            conn = await connect_retrying(url)
            counts = await status_counts(conn)
        done = counts.get("DONE", 0)
        if done == JOBS:
            break
        assert time.monotonic() < deadline, f"chaos did not converge: {counts}"
        if not restarted_pg and done >= JOBS // 2:
            await asyncio.to_thread(private_pg.restart)
            restarted_pg = True
            await conn.close()
            conn = await connect_retrying(url)
            continue
        victim = rng.choice(workers)
        victim.send(signal.SIGKILL)
        victim.wait(10)
        kills += 1
        workers[workers.index(victim)] = start()

    t_drained = time.monotonic() - t0
    for w in workers:
        await w.wait_ready()  # SIGTERM before the handlers are installed would just kill it
        w.send(signal.SIGTERM)
    for w in workers:
        assert await w.wait_async(30) == 0, w.log_text()[-3000:]

    counts = await status_counts(conn)
    assert counts == {"DONE": JOBS}
    effects = await effect_counts(conn)
    assert set(effects) == ids, "a job's effect is missing"
    duplicated = {k: v for k, v in effects.items() if v != 1}
    assert not duplicated, f"effects stored more than once: {list(duplicated.items())[:5]}"

    events = await all_events(conn)
    assert set(events) == ids
    bad = {job_id: p for job_id, evs in events.items() if (p := chain_problems(evs))}
    assert not bad, "\n".join(f"{k}: {p}: {describe_chain(events[k])}" for k, p in list(bad.items())[:5])
    # The chaos really happened: jobs were lost with their workers and recovered.
    recovered = sum(1 for evs in events.values() for e in evs if e.event_type == "RECOVERED")
    assert restarted_pg and kills >= 3 and recovered > 0
    cur = await conn.execute("SELECT count(*) FROM job_queue WHERE status = 'RUNNING' OR locked_at IS NOT NULL")
    assert (await cur.fetchone())[0] == 0
    print(f"\nchaos: {JOBS} jobs, {kills} SIGKILLs, 1 PostgreSQL restart, "
          f"{recovered} recoveries; drained in {t_drained:.1f}s")
    await conn.close()
