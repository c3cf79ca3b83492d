"""The Worker in-process on a real PostgreSQL: validation, unknown types, cancel, chaining,
burst mode, the per-outcome log line, and the pool-size check (in-process and CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atum_ai.clock import FrozenClock, SystemClock
from atum_ai.config import Settings
from atum_ai.errors import ConfigError
from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult
from atum_ai.handlers.registry import Registry
from atum_ai.queue.models import Job, JobStatus, NewJob
from atum_ai.queue.retry import RetryPolicy
from atum_ai.queue.store import JobStore
from atum_ai.worker.service import Worker, WorkerConfig
from tests.support.handlers import ALL, ChainHandler, StartedResult
from tests.support.processes import run_atum, wait_until

SETTINGS = Settings()
CLOCK = SystemClock()
LEASE = 3.0


def context_factory(job: Job, handler: Handler[Any, Any]) -> HandlerContext:
    return HandlerContext(
        job_id=job.id, organization_id=job.organization_id, job_type=job.job_type,
        attempt=job.attempt, clock=CLOCK, logger=logging.LoggerAdapter(logging.getLogger("t")),
        settings=SETTINGS, repo=None, prompts=None,  # type: ignore[arg-type]
    )


class PersistFailsChain(ChainHandler):
    """TEST_CHAIN whose effect cannot be stored: the completion transaction rolls back."""

    job_type = "TEST_CHAIN_BROKEN"

    async def persist(self, conn: AsyncConnection[Any], job: Job,
                      outcome: HandlerResult[StartedResult]) -> None:
        await conn.execute("SELECT 1/0")


def make_worker(pool: AsyncConnectionPool, db_url: str, *, extra: Sequence[type] = (),
                store: JobStore | None = None, **config: Any) -> Worker:
    registry = Registry([h() for h in (*ALL, *extra)])
    config = {"concurrency": 4, "lease_seconds": LEASE, "grace_seconds": 1.0,
              "poll_interval": 0.2, "maintenance_interval": 0.5, **config}
    return Worker(pool=pool, conninfo=db_url, store=store or JobStore(validator=registry),
                  registry=registry, context_factory=context_factory,
                  config=WorkerConfig(**config))


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(worker.run(install_signals=False))
    try:
        yield task
    finally:
        worker.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


async def enqueue(conn: AsyncConnection[Any], org: uuid.UUID, job_type: str,
                  payload: dict[str, Any] | None = None, **kw: Any) -> uuid.UUID:
    return (await JobStore().enqueue(conn, NewJob(org, job_type, payload or {}, **kw))).id


async def job_row(conn: AsyncConnection[Any], job_id: uuid.UUID) -> Job:
    job = await JobStore().get(conn, job_id)
    assert job is not None
    return job


async def event_types(conn: AsyncConnection[Any], job_id: uuid.UUID) -> list[str]:
    return [e.event_type for e in await JobStore().events(conn, job_id)]


async def wait_status(conn: AsyncConnection[Any], job_id: uuid.UUID, *statuses: JobStatus,
                      timeout: float = 15) -> Job:
    async def check() -> Job | None:
        job = await job_row(conn, job_id)
        return job if job.status in statuses else None

    return await wait_until(check, timeout, what=f"job {job_id} to be {'/'.join(statuses)}")


# ---------------------------------------------------------------------------- pool size
async def test_pool_too_small_is_a_config_error_naming_the_numbers():
    url = "postgresql://nobody@127.0.0.1:1/never_connected"  # refused before any connection
    small = AsyncConnectionPool(url, max_size=8, open=False)
    with pytest.raises(ConfigError) as err:
        make_worker(small, url, concurrency=5)
    message = str(err.value)
    assert "pool too small" in message
    assert "max_size=8" in message and "concurrency 5" in message and "at least 9" in message
    make_worker(small, url, concurrency=4)  # exactly enough is fine


def test_cli_worker_refuses_a_pool_smaller_than_concurrency_in_one_line(db_url):
    proc = run_atum(db_url, "worker", "--concurrency", "50", "--pool-size", "10")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: connection pool too small: pool size 10 but concurrency "
                                  "50 needs at least 54")


# ---------------------------------------------------------------------------- outages
class OutageStore(JobStore):
    """Claims fail as in a database outage while ``down`` is set."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.down = True
        self.failed_claims = 0

    async def claim(self, *args: Any, **kw: Any) -> list[Job]:
        if self.down:
            self.failed_claims += 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await super().claim(*args, **kw)


async def test_claim_backoff_ends_when_the_listener_reconnects(pool, db_url, conn, org):
    store = OutageStore()
    async with running(make_worker(pool, db_url, store=store)):
        # Four failed claims: the claim loop now backs off for about 4 s (3.2 to 4.8).
        await wait_until(lambda: store.failed_claims >= 4, 15, what="4 failed claims")
        store.down = False
        job_id = await enqueue(conn, org, "TEST_NOOP")
        cur = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN%%'")
        assert [r[0] for r in await cur.fetchall()] == [True]
        asked = time.monotonic()
        await wait_status(conn, job_id, JobStatus.DONE)
        took = time.monotonic() - asked
    # The listener is back (the database is reachable): claim now, not after the backoff.
    assert took < 2.0, f"job started {took:.2f}s after the listener came back"


# ---------------------------------------------------------------------------- permanent errors
async def test_invalid_payload_in_the_table_goes_dead_with_the_validation_message(
        pool, db_url, conn, org):
    job_id = uuid.uuid4()
    # Written behind the queue's back (another producer, an old version): enqueue would refuse it.
    await conn.execute(
        "INSERT INTO job_queue (id, organization_id, job_type, payload) VALUES (%s, %s, %s, %s)",
        (job_id, org, "TEST_SLEEP", Jsonb({"seconds": "soon"})))
    async with running(make_worker(pool, db_url)):
        job = await wait_status(conn, job_id, JobStatus.DEAD, JobStatus.DONE, JobStatus.FAILED)
    assert job.status == JobStatus.DEAD and job.retry_count == 1
    assert job.last_error.startswith(
        "invalid payload: payload.seconds: Input should be a valid number")
    assert await event_types(conn, job_id) == ["CLAIMED", "DEAD"]


async def test_jobs_of_types_this_worker_cannot_run_are_left_for_a_worker_that_can(
        pool, db_url, conn, org, caplog):
    """A fleet with different plugins (or a rolling deploy adding a type): a worker claims only
    the types it has handlers for, so another worker's job is neither claimed nor killed."""
    theirs = await enqueue(conn, org, "NOBODY_HANDLES_THIS", {"x": 1})
    ours = await enqueue(conn, org, "TEST_NOOP")
    worker = make_worker(pool, db_url, burst=True)
    assert "NOBODY_HANDLES_THIS" not in (worker.config.job_types or ())
    assert await asyncio.wait_for(worker.run(install_signals=False), 20) == 0
    assert (await job_row(conn, ours)).status == JobStatus.DONE
    assert (await job_row(conn, theirs)).status == JobStatus.PENDING
    assert await event_types(conn, theirs) == ["ENQUEUED"]
    # ... and when such jobs wait long, the worker says so.
    store = JobStore(FrozenClock(datetime.now(UTC) + timedelta(minutes=10)))
    async with pool.connection() as c:
        assert await store.orphan_types(c, worker.config.job_types, older_than=timedelta(minutes=5)) == [
            ("NOBODY_HANDLES_THIS", 1)]
    caplog.set_level(logging.WARNING, logger="atum_ai.worker")
    worker.store = store
    async with pool.connection() as c:
        await worker._warn_about_orphans(c)
    assert any("NOBODY_HANDLES_THIS (1)" in str(r.__dict__.get("types")) for r in caplog.records)


async def test_a_worker_asked_for_a_type_without_handler_refuses_to_start(pool, db_url):
    with pytest.raises(ConfigError, match="no registered handler: NOBODY_HANDLES_THIS"):
        make_worker(pool, db_url, job_types=["TEST_NOOP", "NOBODY_HANDLES_THIS"])


async def test_retryable_failure_is_retried_then_dead_when_exhausted(pool, db_url, conn, org):
    job_id = await enqueue(conn, org, "TEST_FAIL", {"message": "upstream 503"}, max_retries=3)
    store = JobStore(retry_policy=RetryPolicy(base_seconds=0.05, cap_seconds=0.1))
    async with running(make_worker(pool, db_url, store=store)):
        job = await wait_status(conn, job_id, JobStatus.DEAD)
    assert job.retry_count == 3 and job.last_error == "upstream 503"
    kinds = await event_types(conn, job_id)
    assert kinds.count("RETRY_SCHEDULED") == 2 and kinds.count("CLAIMED") == 3
    assert kinds[-1] == "DEAD"


# ---------------------------------------------------------------------------- cancel
async def test_cancel_of_a_running_job_stops_it_within_one_heartbeat(pool, db_url, conn, org):
    store = JobStore()
    job_id = await enqueue(conn, org, "TEST_SLEEP", {"seconds": 60})
    async with running(make_worker(pool, db_url)):
        await wait_status(conn, job_id, JobStatus.RUNNING)
        outcome = await store.cancel(conn, job_id)
        asked = time.monotonic()
        assert outcome.stopping
        job = await wait_status(conn, job_id, JobStatus.DEAD, JobStatus.DONE, JobStatus.FAILED)
        took = time.monotonic() - asked
    assert job.status == JobStatus.DEAD and job.last_error == "cancelled while running"
    heartbeat = LEASE / 3
    assert took < heartbeat + 1.0, f"cancel took {took:.2f}s; heartbeat every {heartbeat:.2f}s"
    kinds = await event_types(conn, job_id)
    assert kinds == ["ENQUEUED", "CLAIMED", "CANCEL_REQUESTED", "CANCELLED"]
    cur = await conn.execute("SELECT to_regclass('test_effects') IS NOT NULL")
    if (await cur.fetchone())[0]:
        cur = await conn.execute("SELECT count(*) FROM test_effects WHERE job_id = %s", (job_id,))
        assert (await cur.fetchone())[0] == 0



class SlowFailStore(JobStore):
    """Records failures only after the test has asked to cancel the job and a heartbeat has
    gone by: the cancel arrives while the worker is writing the handler's failure."""

    def __init__(self, cancelled: asyncio.Event, **kw: Any) -> None:
        super().__init__(**kw)
        self.in_fail = asyncio.Event()
        self.cancelled = cancelled

    async def fail(self, conn: AsyncConnection[Any], *args: Any, **kw: Any) -> Any:
        self.in_fail.set()
        await self.cancelled.wait()
        await asyncio.sleep(2 * LEASE / 3)  # at least one heartbeat sees cancel_requested
        return await super().fail(conn, *args, **kw)


async def test_a_cancel_that_arrives_while_a_failure_is_recorded_does_not_strand_the_job(
        pool, db_url, conn, org):
    """Only the handler is stopped by a cancel request. A cancel that reached the task while it
    recorded the handler's failure interrupted that write and skipped the bookkeeping after
    it: the job stayed RUNNING, its lease renewed by every heartbeat, for ever (seen in the
    contention test)."""
    cancelled = asyncio.Event()
    store = SlowFailStore(cancelled)
    job_id = await enqueue(conn, org, "TEST_FAIL", {"message": "boom"}, max_retries=2)
    worker = make_worker(pool, db_url, store=store)
    async with running(worker):
        await asyncio.wait_for(store.in_fail.wait(), 15)
        assert (await JobStore().cancel(conn, job_id)).stopping
        cancelled.set()
        job = await wait_status(conn, job_id, JobStatus.FAILED, JobStatus.DEAD, timeout=4 * LEASE)
        assert not worker._running and job.last_error == "boom"


# ---------------------------------------------------------------------------- timeouts
async def test_handler_over_its_timeout_fails_retryably_while_others_run(pool, db_url, conn, org):
    store = JobStore(retry_policy=RetryPolicy(base_seconds=30, cap_seconds=60))
    stuck = await enqueue(conn, org, "TEST_FOREVER")
    async with running(make_worker(pool, db_url, store=store, concurrency=2)):
        await wait_status(conn, stuck, JobStatus.RUNNING)
        noops = [await enqueue(conn, org, "TEST_NOOP", {"n": i}) for i in range(10)]
        for n in noops:
            await wait_status(conn, n, JobStatus.DONE)
        job = await wait_status(conn, stuck, JobStatus.FAILED)
    assert job.retry_count == 1 and job.last_error == "timed out after 1s"


# ---------------------------------------------------------------------------- chaining
async def test_follow_ups_exist_exactly_when_the_parent_is_done(pool, db_url, conn, org):
    good = await enqueue(conn, org, "TEST_CHAIN", {"n": 4})
    broken = await enqueue(conn, org, "TEST_CHAIN_BROKEN", {"n": 5}, max_retries=1)
    async with running(make_worker(pool, db_url, extra=[PersistFailsChain])):
        parent = await wait_status(conn, good, JobStatus.DONE, JobStatus.DEAD)
        cur = await conn.execute("SELECT id FROM job_queue WHERE parent_id = %s", (good,))
        children = [r[0] for r in await cur.fetchall()]
        for child in children:
            await wait_status(conn, child, JobStatus.DONE)
        failed = await wait_status(conn, broken, JobStatus.DEAD, JobStatus.DONE)
    assert parent.status == JobStatus.DONE
    cur = await conn.execute(
        "SELECT job_type, payload, organization_id, status FROM job_queue WHERE parent_id = %s"
        " ORDER BY payload->>'n'", (good,))
    assert await cur.fetchall() == [("TEST_NOOP", {"n": 41}, org, "DONE"),
                                    ("TEST_NOOP", {"n": 42}, org, "DONE")]
    assert failed.status == JobStatus.DEAD and failed.last_error == "could not store the result"
    assert failed.result is None
    cur = await conn.execute("SELECT count(*) FROM job_queue WHERE parent_id = %s", (broken,))
    assert (await cur.fetchone())[0] == 0
    trail = await JobStore().events(conn, broken)
    assert "SUCCEEDED" not in [e.event_type for e in trail]
    assert trail[-1].event_type == "DEAD" and trail[-1].data["duration_ms"] < 60_000


# ---------------------------------------------------------------------------- burst
async def test_burst_worker_drains_the_queue_including_follow_ups_and_exits_0(
        pool, db_url, conn, org):
    ids = [await enqueue(conn, org, "TEST_NOOP", {"n": i}) for i in range(30)]
    ids.append(await enqueue(conn, org, "TEST_CHAIN", {"n": 1}))
    worker = make_worker(pool, db_url, burst=True, concurrency=8)
    assert await asyncio.wait_for(worker.run(install_signals=False), 30) == 0
    cur = await conn.execute("SELECT status, count(*) FROM job_queue GROUP BY 1")
    assert dict(await cur.fetchall()) == {"DONE": 33}
    assert worker.processed == 33


async def test_burst_worker_on_an_empty_queue_exits_at_once(pool, db_url):
    worker = make_worker(pool, db_url, burst=True)
    assert await asyncio.wait_for(worker.run(install_signals=False), 10) == 0
    assert worker.processed == 0


# ---------------------------------------------------------------------------- observability
async def test_one_structured_log_line_per_job_outcome(pool, db_url, conn, org, caplog):
    caplog.set_level(logging.INFO, logger="atum_ai.worker")
    done = await enqueue(conn, org, "TEST_NOOP")
    dead = await enqueue(conn, org, "TEST_FAIL", {"permanent": True, "message": "bad input"})
    retry = await enqueue(conn, org, "TEST_FAIL", {"message": "try later"})
    store = JobStore(retry_policy=RetryPolicy(base_seconds=60, cap_seconds=60))
    worker = make_worker(pool, db_url, burst=True, store=store)
    assert await asyncio.wait_for(worker.run(install_signals=False), 30) == 0
    lines = [r for r in caplog.records if r.getMessage() == "job finished"]
    by_job = {r.job_id: r for r in lines}
    assert len(lines) == len(by_job) == 3
    expected = {done: ("TEST_NOOP", "done"), dead: ("TEST_FAIL", "dead"),
                retry: ("TEST_FAIL", "retry")}
    for job_id, (job_type, outcome) in expected.items():
        rec = by_job[str(job_id)]
        assert (rec.job_type, rec.outcome) == (job_type, outcome)
        assert rec.organization_id == str(org) and rec.attempt == 1
        assert isinstance(rec.duration_ms, float) and rec.duration_ms >= 0
        assert rec.worker_id == str(worker.worker_id)
    assert by_job[str(dead)].error == "bad input" and by_job[str(retry)].levelno == logging.WARNING
