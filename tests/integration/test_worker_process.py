"""Real ``atum-ai worker`` processes, real signals: crash recovery, graceful drain, timeouts,
a PostgreSQL restart under an idle worker, idle pickup latency, burst mode, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import statistics
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from atum_ai.queue.migrate import migrate
from atum_ai.queue.models import Job, JobEvent, JobStatus, NewJob
from atum_ai.queue.store import JobStore
from atum_ai.testing.pg import TemporaryCluster, _pg_bin, free_port, with_database
from tests.support import processes
from tests.support.processes import WorkerFactory, wait_until

worker_processes = processes.worker_processes  # the fixture, for the tests below

pytestmark = pytest.mark.slow

STORE = JobStore()


async def enqueue(conn: AsyncConnection[Any], org: uuid.UUID, job_type: str,
                  payload: dict[str, Any] | None = None, **kw: Any) -> uuid.UUID:
    return (await STORE.enqueue(conn, NewJob(org, job_type, payload or {}, **kw))).id


async def jobs(conn: AsyncConnection[Any], ids: list[uuid.UUID]) -> list[Job]:
    return [j for j in [await STORE.get(conn, i) for i in ids] if j is not None]


async def events(conn: AsyncConnection[Any], job_id: uuid.UUID) -> list[JobEvent]:
    return await STORE.events(conn, job_id)


def all_in(conn: AsyncConnection[Any], ids: list[uuid.UUID], *statuses: JobStatus):
    async def check() -> list[Job] | None:
        rows = await jobs(conn, ids)
        return rows if rows and all(j.status in statuses for j in rows) else None

    return check


async def started_at(conn: AsyncConnection[Any], job_id: uuid.UUID) -> float | None:
    """When the handler started (time.time() in the worker), once the job is DONE."""
    cur = await conn.execute(
        "SELECT (result->>'started_at')::float8 FROM job_queue WHERE id = %s AND status = 'DONE'",
        (job_id,))
    row = await cur.fetchone()
    return row[0] if row else None


async def effects(conn: AsyncConnection[Any]) -> dict[uuid.UUID, int]:
    cur = await conn.execute("SELECT to_regclass('test_effects') IS NOT NULL")
    if not (await cur.fetchone())[0]:
        return {}
    cur = await conn.execute("SELECT job_id, count(*) FROM test_effects GROUP BY 1")
    return {r[0]: r[1] for r in await cur.fetchall()}


# ---------------------------------------------------------------------------- crash
async def test_sigkilled_workers_jobs_are_recovered_by_another_worker_and_run_again(
        conn, db_url, org, worker_processes: WorkerFactory):
    ids = [await enqueue(conn, org, "TEST_SLEEP", {"seconds": 2.5, "n": i}) for i in range(3)]
    a = worker_processes.start(db_url, "--concurrency", "4", "--lease", "2")
    a_id = uuid.UUID(await a.wait_ready())
    await wait_until(all_in(conn, ids, JobStatus.RUNNING), 20, what="worker A to hold the jobs")
    assert {j.locked_by for j in await jobs(conn, ids)} == {a_id}

    a.send(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    assert all(j.status == JobStatus.RUNNING for j in await jobs(conn, ids))  # nobody released them

    b = worker_processes.start(db_url, "--concurrency", "4", "--lease", "3",
                               env={"ATUM_MAINTENANCE_INTERVAL_SECONDS": "1"})
    b_id = uuid.UUID(await b.wait_ready())
    done = await wait_until(all_in(conn, ids, JobStatus.DONE, JobStatus.DEAD), 40,
                            what="the recovered jobs to finish", log=b.log_text)
    b.send(signal.SIGTERM)
    assert await b.wait_async(20) == 0

    for job in done:
        assert job.status == JobStatus.DONE
        assert job.retry_count == 1  # the lost attempt on A counts
        assert job.result["attempt"] == 2
        assert job.last_error == f"lease expired: worker {a_id} stopped renewing its lease"
        trail = [(e.event_type, e.worker_id, e.attempt) for e in await events(conn, job.id)]
        assert trail == [("ENQUEUED", None, 0), ("CLAIMED", a_id, 1), ("RECOVERED", a_id, 1),
                         ("CLAIMED", b_id, 2), ("SUCCEEDED", b_id, 2)]
    assert await effects(conn) == {i: 1 for i in ids}  # each effect stored exactly once
    assert b.records("recovered jobs with expired leases")


# ---------------------------------------------------------------------------- drain
async def test_sigterm_finishes_what_fits_in_the_grace_and_releases_the_rest(
        conn, db_url, org, worker_processes: WorkerFactory):
    lease, grace = 3.0, 6.5
    short = [await enqueue(conn, org, "TEST_SLEEP", {"seconds": 2.5, "n": i}) for i in range(2)]
    long = [await enqueue(conn, org, "TEST_SLEEP", {"seconds": 120, "n": i}) for i in range(2)]
    w = worker_processes.start(db_url, "--concurrency", "4", "--lease", str(lease),
                               "--grace", str(grace))
    await w.wait_ready()
    await wait_until(all_in(conn, short + long, JobStatus.RUNNING), 20, what="4 running jobs")

    term_at = datetime.now(UTC)
    w.send(signal.SIGTERM)
    await w.wait_for_record("signal received; stopping", 10)
    late = await enqueue(conn, org, "TEST_NOOP")  # a draining worker claims nothing new

    # Meanwhile act as another worker's rescuer: a lease left to expire would be taken here.
    rescuer, rescued, latest_lock = JobStore(), [], term_at
    while w.alive():
        rescued += await rescuer.recover_expired(conn, default_lease_seconds=lease)
        for job in await jobs(conn, long):
            if job.status == JobStatus.RUNNING and job.locked_at:
                latest_lock = max(latest_lock, job.locked_at)
        await asyncio.sleep(0.1)
    assert w.wait(1) == 0
    assert rescued == []
    # The leases of the jobs still running were renewed long after they would have expired.
    assert latest_lock > term_at + timedelta(seconds=lease)

    for job in await jobs(conn, short):
        assert job.status == JobStatus.DONE and job.retry_count == 0
        kinds = [e.event_type for e in await events(conn, job.id)]
        assert kinds == ["ENQUEUED", "CLAIMED", "SUCCEEDED"]
    for job in await jobs(conn, long):
        assert job.status == JobStatus.PENDING and job.retry_count == 0
        assert job.locked_by is None and job.locked_at is None and job.last_error is None
        trail = [(e.event_type, e.from_status, e.to_status) for e in await events(conn, job.id)]
        assert trail[-1] == ("RELEASED", "RUNNING", "PENDING")
        assert [t[0] for t in trail] == ["ENQUEUED", "CLAIMED", "RELEASED"]
    assert (await STORE.get(conn, late)).status == JobStatus.PENDING
    assert await effects(conn) == {i: 1 for i in short}
    outcomes = sorted(r["outcome"] for r in w.records("job finished"))
    assert outcomes == ["done", "done", "released", "released"]


async def test_a_second_signal_releases_at_once(conn, db_url, org, worker_processes: WorkerFactory):
    long = [await enqueue(conn, org, "TEST_SLEEP", {"seconds": 120, "n": i}) for i in range(2)]
    w = worker_processes.start(db_url, "--concurrency", "2", "--lease", "3", "--grace", "60")
    await w.wait_ready()
    await wait_until(all_in(conn, long, JobStatus.RUNNING), 20, what="2 running jobs")
    w.send(signal.SIGTERM)
    await w.wait_for_record("draining", 10)
    w.send(signal.SIGINT)
    assert await w.wait_async(20) == 0  # long before the 60 s grace
    for job in await jobs(conn, long):
        assert job.status == JobStatus.PENDING and job.retry_count == 0
        assert [e.event_type for e in await events(conn, job.id)][-1] == "RELEASED"


async def test_systemd_notify_ready_watchdog_and_stopping(db_url, worker_processes: WorkerFactory,
                                                          tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        w = worker_processes.start(db_url, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        received: list[str] = []

        def read() -> list[str]:
            with contextlib.suppress(BlockingIOError):
                while True:
                    received.append(sock.recv(4096).decode())
            return received

        await wait_until(lambda: "READY=1" in read() and read().count("WATCHDOG=1") >= 2, 20,
                         what="READY=1 and two WATCHDOG=1", log=w.log_text)
        w.send(signal.SIGTERM)
        assert await w.wait_async(20) == 0
        read()
    stopping = next(i for i, m in enumerate(received) if m.startswith("STOPPING=1"))
    assert received.index("READY=1") < stopping


# ---------------------------------------------------------------------------- timeouts
async def test_handler_that_never_returns_is_timed_out_and_retried_while_others_flow(
        conn, db_url, org, worker_processes: WorkerFactory):
    w = worker_processes.start(db_url, "--concurrency", "2", "--lease", "3")
    await w.wait_ready()
    stuck = await enqueue(conn, org, "TEST_FOREVER")
    await wait_until(all_in(conn, [stuck], JobStatus.RUNNING), 20, what="the stuck job to run")
    noops = [await enqueue(conn, org, "TEST_NOOP", {"n": i}) for i in range(20)]

    async def retried_twice() -> Job | None:
        [job] = await jobs(conn, [stuck])
        return job if job.status == JobStatus.FAILED and job.retry_count >= 2 else None

    job = await wait_until(retried_twice, 30, what="the stuck job to fail twice", log=w.log_text)
    await wait_until(all_in(conn, noops, JobStatus.DONE), 20, what="the other jobs")
    w.send(signal.SIGTERM)
    assert await w.wait_async(20) == 0

    assert job.last_error == "timed out after 1s"
    trail = await events(conn, stuck)
    failures = [e for e in trail if e.event_type == "RETRY_SCHEDULED"]
    assert len(failures) >= 2 and all(e.message == "timed out after 1s" for e in failures)
    assert [e.attempt for e in failures][:2] == [1, 2]
    # Other jobs ran while the stuck one held its slot (between its first claim and timeout).
    first_claim = next(e.created_at for e in trail if e.event_type == "CLAIMED").timestamp()
    first_timeout = failures[0].created_at.timestamp()
    starts = [await started_at(conn, n) for n in noops]
    assert any(first_claim < s < first_timeout for s in starts)


# ---------------------------------------------------------------------------- PG restart
@pytest.fixture
def own_cluster():
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("needs initdb/pg_ctl to run a throw-away PostgreSQL")
    cluster = TemporaryCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def listening_backends(conn: AsyncConnection[Any]) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query ILIKE 'LISTEN%%'")
    return (await cur.fetchone())[0]


async def test_after_a_postgresql_restart_an_idle_worker_picks_up_new_work_through_notify(
        own_cluster: TemporaryCluster, org, worker_processes: WorkerFactory):
    with psycopg.connect(own_cluster.url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE atum")
    url = with_database(own_cluster.url, "atum")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        await migrate(c)
        # A long poll interval: only a NOTIFY can start a job within 2 seconds.
        w = worker_processes.start(url, "--concurrency", "2", "--lease", "3",
                                   env={"ATUM_POLL_INTERVAL_SECONDS": "30"})
        await w.wait_ready()
        await wait_until(lambda: listening_backends(c), 20, what="the worker to LISTEN")

    async def start_delay(job_id: uuid.UUID, enqueued: float, conn: AsyncConnection[Any]) -> float:
        started = await wait_until(lambda: started_at(conn, job_id), 30,
                                   what="the job to run", log=w.log_text)
        return started - enqueued

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        t = time.time()
        before = await start_delay(await enqueue(c, org, "TEST_NOOP"), t, c)
        assert before < 2.0

    await asyncio.to_thread(own_cluster.restart)
    assert w.alive()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        # Straight after the restart: picked up when the listener reconnects (it polls once).
        t = time.time()
        right_after = await start_delay(await enqueue(c, org, "TEST_NOOP", {"n": 1}), t, c)
        # Once it listens again, the next job starts through NOTIFY, not the 30 s poll.
        await w.wait_for_record("listener reconnected", 20)
        await wait_until(lambda: listening_backends(c), 20, what="the worker to LISTEN again")
        await asyncio.sleep(0.2)
        t = time.time()
        via_notify = await start_delay(await enqueue(c, org, "TEST_NOOP", {"n": 2}), t, c)
    print(f"\npickup after restart: first job {right_after:.3f}s, next job {via_notify:.3f}s")
    assert right_after < 2.0
    assert via_notify < 2.0
    assert w.records("listener connection lost; polling until it is back")
    w.send(signal.SIGTERM)
    assert await w.wait_async(20) == 0


# ---------------------------------------------------------------------------- pickup latency
async def test_idle_pickup_latency_over_100_jobs(conn, db_url, org, worker_processes: WorkerFactory,
                                                 record_property, capsys):
    w = worker_processes.start(db_url, "--concurrency", "4",
                               env={"ATUM_POLL_INTERVAL_SECONDS": "2"})
    await w.wait_ready()
    await wait_until(lambda: listening_backends(conn), 20, what="the worker to LISTEN")
    latencies = []
    for i in range(100):
        enqueued = time.time()
        job_id = await enqueue(conn, org, "TEST_NOOP", {"n": i})
        started = await wait_until(lambda job_id=job_id: started_at(conn, job_id), 10,
                                   interval=0.01,
                                   what=f"job {i} to run", log=w.log_text)
        latencies.append(started - enqueued)
    w.send(signal.SIGTERM)
    assert await w.wait_async(20) == 0

    median = statistics.median(latencies)
    p95 = sorted(latencies)[94]
    record_property("pickup_latency_median_ms", round(median * 1000, 2))
    with capsys.disabled():  # shown in every run, not only with -s
        print(f"\nidle pickup latency over 100 jobs (enqueue -> handler start): median "
              f"{median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


# ---------------------------------------------------------------------------- burst + logs
async def test_burst_process_drains_exits_0_and_logs_one_json_line_per_outcome(
        conn, db_url, org, worker_processes: WorkerFactory):
    noops = [await enqueue(conn, org, "TEST_NOOP", {"n": i}) for i in range(10)]
    chain = await enqueue(conn, org, "TEST_CHAIN", {"n": 1})
    dead = await enqueue(conn, org, "TEST_FAIL", {"permanent": True, "message": "bad"})
    exhausted = await enqueue(conn, org, "TEST_FAIL", {"message": "flaky"}, max_retries=1)
    w = worker_processes.start(db_url, "--burst", "--concurrency", "4")
    assert await w.wait_async(30) == 0

    cur = await conn.execute("SELECT id, status FROM job_queue")
    status = {r[0]: r[1] for r in await cur.fetchall()}
    assert len(status) == 15  # + the chain's two follow-ups
    assert all(status[i] == "DONE" for i in [*noops, chain])
    assert status[dead] == status[exhausted] == "DEAD"

    lines = w.records("job finished")
    assert sorted(r["job_id"] for r in lines) == sorted(str(i) for i in status)
    for r in lines:
        assert {"job_id", "job_type", "organization_id", "attempt", "duration_ms", "outcome",
                "worker_id", "level", "ts"} <= r.keys()
        assert r["organization_id"] == str(org) and r["attempt"] == 1
        assert r["outcome"] == ("done" if status[uuid.UUID(r["job_id"])] == "DONE" else "dead")
    assert {r["job_id"]: r.get("error") for r in lines if r["outcome"] == "dead"} == {
        str(dead): "bad", str(exhausted): "flaky"}


# ---------------------------------------------------------------------------- metrics
async def test_metrics_port_serves_prometheus_metrics(
        conn, db_url, org, worker_processes: WorkerFactory):
    ids = [await enqueue(conn, org, "TEST_NOOP", {"n": i}) for i in range(3)]
    ids.append(await enqueue(conn, org, "TEST_FAIL", {"permanent": True}))
    port = free_port()
    # Queued before the start, so they are finished by the first queue-depth sample (the
    # maintenance loop takes one on its first run, then every 15 s).
    w = worker_processes.start(db_url, "--concurrency", "3", "--metrics-port", str(port),
                               env={"ATUM_MAINTENANCE_INTERVAL_SECONDS": "1"})
    await w.wait_ready()
    await wait_until(all_in(conn, ids, JobStatus.DONE, JobStatus.DEAD), 20, what="the jobs")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    async def sampled() -> str | None:  # queue depth is sampled by the maintenance loop
        text = await asyncio.to_thread(scrape)
        return text if 'atum_queue_depth{status="DONE"} 3.0' in text else None

    text = await wait_until(sampled, 20, interval=0.5, what="queue depth in /metrics")
    w.send(signal.SIGTERM)
    assert await w.wait_async(20) == 0

    assert 'atum_jobs_total{job_type="TEST_NOOP",outcome="done"} 3.0' in text
    assert 'atum_jobs_total{job_type="TEST_FAIL",outcome="dead"} 1.0' in text
    assert 'atum_job_duration_seconds_count{job_type="TEST_NOOP"} 3.0' in text
    assert 'atum_queue_depth{status="DEAD"} 1.0' in text
    assert "atum_worker_busy_slots 0.0" in text and "atum_worker_slots 3.0" in text
    [poll] = [line for line in text.splitlines()
              if line.startswith("atum_worker_last_successful_poll_timestamp_seconds ")]
    assert abs(float(poll.split()[1]) - time.time()) < 60
