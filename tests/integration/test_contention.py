"""Contention: 4 worker processes, their maintenance loops (lease rescue every 0.2 s, purge
every second with a seconds-long retention) and a producer running together: bulk enqueue
through COPY, dedupe-keyed bulk enqueue through the staging table, single enqueues, cancels
and requeues, for ~20 s in CI (60 s with ``ATUM_FULL_TESTS=1``).

No job may fail because of a deadlock or a serialization failure. Triggers copy every
``job_events.message`` and every ``last_error`` into a side table as they are written (the
purge deletes finished jobs and their events, so the rows themselves cannot be inspected
afterwards); none of them may mention a deadlock or a serialization failure. The workers'
own background statements may not hit one either (their logs are searched): a worker's
heartbeat and its batch completion used to lock the same rows in different orders and
deadlock (retried, but each one cost a second and a rolled-back batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import time
import uuid
from typing import Any

import pytest
from psycopg import AsyncConnection

from atum_ai.errors import JobNotFoundError
from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from tests.support.chaos import all_events, chain_problems, create_effects_table, size
from tests.support.processes import WorkerFactory, wait_until, worker_processes  # noqa: F401

pytestmark = pytest.mark.slow

DURATION = size(20.0, 60.0)
BAD_WORDS = ("deadlock", "serializ", "could not serialize", "lock timeout", "40P01", "40001")

_LOCK_RE = re.compile(r"deadlock|serializ|lock timeout|\b(40P01|40001)\b", re.IGNORECASE)


def _lock_error(line: str) -> bool:
    try:
        rec = json.loads(line)
    except ValueError:
        return bool(_LOCK_RE.search(line))
    return any(_LOCK_RE.search(str(rec.get(k) or "")) for k in ("msg", "error", "exc_info"))


_CAPTURE = """
CREATE TABLE captured_messages (src text, job_id uuid, message text, at timestamptz DEFAULT now());
CREATE FUNCTION capture_event_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO captured_messages (src, job_id, message) VALUES ('job_events', NEW.job_id, NEW.message);
    RETURN NULL;
END $$;
CREATE TRIGGER capture_event_message AFTER INSERT ON job_events
    FOR EACH ROW WHEN (NEW.message IS NOT NULL) EXECUTE FUNCTION capture_event_message();
CREATE FUNCTION capture_last_error() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO captured_messages (src, job_id, message) VALUES ('last_error', NEW.id, NEW.last_error);
    RETURN NULL;
END $$;
CREATE TRIGGER capture_last_error AFTER UPDATE OF last_error ON job_queue
    FOR EACH ROW WHEN (NEW.last_error IS DISTINCT FROM OLD.last_error AND NEW.last_error IS NOT NULL)
    EXECUTE FUNCTION capture_last_error();
"""


async def produce(conn: AsyncConnection[Any], until: float, rng: random.Random) -> dict[str, int]:
    store = JobStore()
    orgs = [uuid.uuid4() for _ in range(6)]
    stats = {"bulk": 0, "dedupe": 0, "single": 0, "cancel": 0, "requeue": 0}
    round_ = 0
    while time.monotonic() < until:
        round_ += 1
        batch = []
        for i in range(rng.randint(50, 200)):
            kind = rng.random()
            org = rng.choice(orgs)
            if kind < 0.6:
                batch.append(NewJob(org, "TEST_NOOP", {"n": i}))
            elif kind < 0.8:
                batch.append(NewJob(org, "TEST_SLEEP", {"seconds": 0.02, "n": i}, max_retries=20))
            elif kind < 0.9:
                batch.append(NewJob(org, "TEST_CHAIN", {"n": i}))
            else:
                batch.append(NewJob(org, "TEST_FAIL", {"message": "flaky"}, max_retries=2))
        await store.enqueue_many(conn, batch)
        stats["bulk"] += len(batch)
        # Dedupe keys that collide with live jobs go through the staging table + ON CONFLICT.
        keyed = [NewJob(rng.choice(orgs), "TEST_NOOP", {"n": i}, dedupe_key=f"k{rng.randint(0, 40)}")
                 for i in range(20)]
        await store.enqueue_many(conn, keyed)
        stats["dedupe"] += len(keyed)
        for _ in range(5):
            await store.enqueue(conn, NewJob(rng.choice(orgs), "TEST_NOOP",
                                             dedupe_key=f"s{rng.randint(0, 10)}"))
            stats["single"] += 1
        cur = await conn.execute(
            "SELECT id FROM job_queue WHERE status IN ('PENDING', 'RUNNING') ORDER BY random() LIMIT 3")
        for (job_id,) in await cur.fetchall():
            with contextlib.suppress(JobNotFoundError):  # purged meanwhile
                await store.cancel(conn, job_id)
                stats["cancel"] += 1
        if round_ % 3 == 0:
            cur = await conn.execute("SELECT id FROM job_queue WHERE status = 'DEAD' LIMIT 5")
            for (job_id,) in await cur.fetchall():
                with contextlib.suppress(JobNotFoundError):  # purged meanwhile
                    if await store.requeue(conn, job_id):
                        stats["requeue"] += 1
        await asyncio.sleep(rng.uniform(0.05, 0.2))
    return stats


async def test_workers_maintenance_and_bulk_enqueue_together_never_fail_a_job_on_a_deadlock(
        conn, db_url, worker_processes: WorkerFactory) -> None:  # noqa: F811
    await create_effects_table(conn)
    await conn.execute(_CAPTURE)
    env = {"ATUM_MAINTENANCE_INTERVAL_SECONDS": "0.2", "ATUM_PURGE_INTERVAL_SECONDS": "1",
           "ATUM_RETENTION_DAYS": str(3 / 86400)}  # purge what finished more than 3 s ago
    workers = [worker_processes.start(db_url, "--concurrency", "4", "--lease", "2", env=env)
               for _ in range(4)]
    for w in workers:
        await w.wait_ready()

    stats = await produce(conn, time.monotonic() + DURATION, random.Random(4))

    async def settled() -> bool:
        cur = await conn.execute(
            "SELECT count(*) FROM job_queue WHERE status IN ('PENDING', 'RUNNING', 'FAILED')")
        return (await cur.fetchone())[0] == 0

    try:
        await wait_until(settled, 60, interval=0.5, what="every job to finish",
                         log=lambda: workers[0].log_text()[-3000:])
    except AssertionError as exc:
        cur = await conn.execute(
            "SELECT id, job_type, status, run_after - now() AS due_in, locked_by, locked_at,"
            " lease_seconds, retry_count, max_retries, cancel_requested, last_error FROM job_queue"
            " WHERE status IN ('PENDING', 'RUNNING', 'FAILED') LIMIT 10")
        stuck = await cur.fetchall()
        raise AssertionError(f"{exc}\n--- unfinished jobs ---\n{stuck}") from None
    # Stop before reading what is left, so the purge cannot race the checks.
    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        assert await w.wait_async(30) == 0

    cur = await conn.execute("SELECT src, job_id, message FROM captured_messages")
    messages = await cur.fetchall()
    bad = [m for m in messages if any(b in (m[2] or "").lower() for b in BAD_WORDS)]
    assert not bad, bad[:5]
    # What did fail failed for the reasons the producer planted (or a lease rescue).
    expected = ("flaky", "cancelled", "requeued; last error:", "lease expired", "lookahead released",
                "worker shutting down")
    unexpected = {m[2] for m in messages if not (m[2] or "").startswith(expected)}
    assert not unexpected, unexpected

    cur = await conn.execute("SELECT id, status, job_type FROM job_queue")
    left = await cur.fetchall()
    events = await all_events(conn)
    chains = {r[0]: chain_problems(events.get(r[0], []), expect_done=r[1] == "DONE")
              for r in left if r[2] != "TEST_FAIL" and r[1] == "DONE"}
    broken = {k: v for k, v in chains.items() if v}
    assert not broken, list(broken.items())[:3]

    # Only what a line says, not its ids: a uuid's hex digits can spell "40001".
    lock_lines = [line for w in workers for line in w.log_text().splitlines()
                  if _lock_error(line)]
    cur = await conn.execute("SELECT count(*) FROM job_queue")
    print(f"\ncontention over {DURATION:.0f}s: produced {stats}; {len(left)} jobs left after purge; "
          f"{len(messages)} messages captured; worker log lines about lock errors (retried): "
          f"{len(lock_lines)}")
    # Not even retried ones: heartbeat, completion and release lock rows in the same order.
    assert not lock_lines, lock_lines[:5]
