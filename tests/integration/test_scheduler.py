"""Periodic jobs on a real PostgreSQL: the nightly METRICS_SNAPSHOT fires once per slot and
organization however many workers race, a missed slot fires once, purging never re-opens it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from atum_ai.clock import FrozenClock
from atum_ai.config import Settings
from atum_ai.pipeline.schedules import metrics_schedule
from atum_ai.queue.models import Completion, NewJob
from atum_ai.queue.store import JobStore
from atum_ai.worker.scheduler import Schedule, fire_due

NIGHTLY = metrics_schedule(Settings(metrics_cron="15 0 * * *", metrics_timezone="UTC"))
D = date(2026, 3, 10)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def ticket_touched(conn: AsyncConnection[Any], org: uuid.UUID, when: datetime) -> None:
    await conn.execute(
        "INSERT INTO tickets (organization_id, ticket_id, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s)", (org, uuid.uuid4().hex, when, when))


async def job_touched(conn: AsyncConnection[Any], org: uuid.UUID, when: datetime) -> None:
    await JobStore(FrozenClock(when)).enqueue(conn, NewJob(org, "TEST_NOOP"))


async def already_fired(conn: AsyncConnection[Any], schedule: Schedule, slot: datetime) -> None:
    await conn.execute("INSERT INTO job_schedule_fires (schedule_name, fire_time) VALUES (%s, %s)",
                       (schedule.name, slot))


async def fires(conn: AsyncConnection[Any],
                schedule: Schedule = NIGHTLY) -> list[tuple[datetime, datetime]]:
    cur = await conn.execute(
        "SELECT fire_time, fired_at FROM job_schedule_fires WHERE schedule_name = %s ORDER BY 1",
        (schedule.name,))
    return [tuple(r) for r in await cur.fetchall()]


async def snapshots(conn: AsyncConnection[Any]) -> list[tuple[uuid.UUID, dict[str, Any], str]]:
    cur = await conn.execute(
        "SELECT organization_id, payload, dedupe_key FROM job_queue"
        " WHERE job_type = 'METRICS_SNAPSHOT' ORDER BY organization_id")
    return [tuple(r) for r in await cur.fetchall()]


@pytest.fixture
async def two_conns(db_url: str) -> AsyncIterator[list[AsyncConnection[Any]]]:
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(2)]
    try:
        yield conns
    finally:
        for c in conns:
            await c.close()


async def test_two_workers_over_a_night_enqueue_one_snapshot_per_active_org(conn, two_conns):
    tickets_only, both, jobs_only, idle = sorted(uuid.uuid4() for _ in range(4))
    await ticket_touched(conn, tickets_only, at(D, 9))
    await ticket_touched(conn, both, at(D, 23, 59))
    await job_touched(conn, both, at(D, 12))
    await job_touched(conn, jobs_only, at(D, 0, 1))
    await ticket_touched(conn, idle, at(D - timedelta(days=2), 12))
    await ticket_touched(conn, idle, at(D + timedelta(days=1), 0, 1))  # tomorrow's activity
    await already_fired(conn, NIGHTLY, at(D, 0, 15))  # last night went as usual

    clock = FrozenClock(at(D, 20))
    workers = [JobStore(clock), JobStore(clock)]  # two workers, each on its own connection
    outcomes: list[int | None] = []
    while clock.now() < at(D + timedelta(days=1), 6):
        outcomes += await asyncio.gather(
            *(fire_due(c, s, NIGHTLY) for c, s in zip(two_conns, workers, strict=True)))
        clock.advance(timedelta(minutes=5))

    assert sorted(o for o in outcomes if o is not None) == [3]  # one fire, three jobs
    payload = {"day": D.isoformat(), "timezone": "UTC"}
    key = f"metrics:{D.isoformat()}"
    assert await snapshots(conn) == [(tickets_only, payload, key), (both, payload, key),
                                     (jobs_only, payload, key)]
    slot = at(D + timedelta(days=1), 0, 15)
    assert [f[0] for f in await fires(conn)] == [at(D, 0, 15), slot]
    assert (await fires(conn))[1][1] == slot  # fired at the first tick at or after the slot


async def test_many_workers_racing_on_the_slot_itself_fire_it_once(db_url, conn):
    orgs = [uuid.uuid4() for _ in range(5)]
    for o in orgs:
        await ticket_touched(conn, o, at(D, 10))
    clock = FrozenClock(at(D + timedelta(days=1), 0, 15))
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(8)]
    try:
        outcomes = await asyncio.gather(*(fire_due(c, JobStore(clock), NIGHTLY) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(o for o in outcomes if o is not None) == [5]
    assert sorted(s[0] for s in await snapshots(conn)) == sorted(orgs)


async def test_missed_slots_after_downtime_fire_once_not_once_per_night(conn):
    orgs = {}
    for back in range(6):  # one organization active on each of the last six days
        day = D - timedelta(days=back)
        orgs[day] = uuid.uuid4()
        await ticket_touched(conn, orgs[day], at(day, 12))
    down_since = at(D - timedelta(days=5), 0, 15)
    await already_fired(conn, NIGHTLY, down_since)  # then the workers were down for 5 nights

    clock = FrozenClock(at(D, 9))
    store = JobStore(clock)
    assert await fire_due(conn, store, NIGHTLY) == 1
    assert await fire_due(conn, store, NIGHTLY) is None
    clock.set(at(D, 23, 59))
    assert await fire_due(conn, store, NIGHTLY) is None

    yesterday = D - timedelta(days=1)
    assert await snapshots(conn) == [
        (orgs[yesterday], {"day": yesterday.isoformat(), "timezone": "UTC"},
         f"metrics:{yesterday.isoformat()}")]
    assert [f[0] for f in await fires(conn)] == [down_since, at(D, 0, 15)]

    clock.set(at(D + timedelta(days=1), 0, 16))  # the next night is back to normal
    assert await fire_due(conn, store, NIGHTLY) == 1
    assert [s[0] for s in await snapshots(conn)].count(orgs[D]) == 1


async def test_purging_finished_jobs_does_not_reopen_a_fired_slot(conn):
    org = uuid.uuid4()
    await ticket_touched(conn, org, at(D, 12))
    clock = FrozenClock(at(D + timedelta(days=1), 0, 20))
    store = JobStore(clock)
    assert await fire_due(conn, store, NIGHTLY) == 1

    worker = uuid.uuid4()
    [job] = await store.claim(conn, worker, 10, lease_seconds=30, job_types=["METRICS_SNAPSHOT"])
    assert await store.complete(conn, worker, [Completion(job.id, result={})]) == {job.id}
    clock.advance(timedelta(minutes=1))
    assert await store.purge(conn, timedelta(seconds=30)) == 1
    assert await snapshots(conn) == []  # the job and its dedupe key are gone

    assert await fire_due(conn, store, NIGHTLY) is None
    assert await fire_due(conn, JobStore(clock), NIGHTLY) is None  # a worker that just started
    assert await snapshots(conn) == []


async def test_slot_and_day_follow_the_configured_timezone(conn):
    new_york = metrics_schedule(
        Settings(metrics_cron="15 0 * * *", metrics_timezone="America/New_York"))
    day = date(2026, 1, 14)  # EST, UTC-5: local 00:15 on Jan 15 is 05:15 UTC
    late_evening, day_before = uuid.uuid4(), uuid.uuid4()
    # Jan 14, 22:00 local, and Jan 13, 23:00 local:
    await ticket_touched(conn, late_evening, datetime(2026, 1, 15, 3, 0, tzinfo=UTC))
    await ticket_touched(conn, day_before, datetime(2026, 1, 14, 4, 0, tzinfo=UTC))
    await already_fired(conn, new_york, datetime(2026, 1, 14, 5, 15, tzinfo=UTC))

    clock = FrozenClock(datetime(2026, 1, 15, 5, 14, tzinfo=UTC))
    store = JobStore(clock)
    assert await fire_due(conn, store, new_york) is None  # 00:14 local: not yet
    clock.advance(timedelta(minutes=1))
    assert await fire_due(conn, store, new_york) == 1
    assert await snapshots(conn) == [
        (late_evening, {"day": day.isoformat(), "timezone": "America/New_York"},
         f"metrics:{day.isoformat()}")]
