"""Queue core on a real PostgreSQL: enqueue, claim, complete, fail, recover, cancel, purge."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from atum_ai.clock import FrozenClock
from atum_ai.errors import LostClaimError, PayloadValidationError, ValidationError
from atum_ai.queue.models import Completion, JobStatus, NewJob
from atum_ai.queue.retry import RetryPolicy
from atum_ai.queue.store import JobStore

W1 = uuid.UUID(int=1)
W2 = uuid.UUID(int=2)


def job(org: uuid.UUID, n: int = 0, **kw) -> NewJob:
    return NewJob(organization_id=org, job_type=kw.pop("job_type", "NOOP"), payload={"n": n}, **kw)


async def statuses(conn) -> dict[str, int]:
    cur = await conn.execute("SELECT status, count(*) FROM job_queue GROUP BY 1")
    return {r[0]: r[1] for r in await cur.fetchall()}


async def test_enqueue_claim_complete_round_trip(conn, org, clock):
    store = JobStore(clock)
    res = await store.enqueue(conn, job(org, 1, priority=3))
    assert res.created
    [claimed] = await store.claim(conn, W1, 10, lease_seconds=30)
    assert claimed.id == res.id and claimed.status == JobStatus.RUNNING and claimed.attempt == 1
    assert claimed.payload == {"n": 1} and claimed.locked_by == W1
    done = await store.complete(conn, W1, [Completion(res.id, result={"ok": True}, audit={"m": 1})])
    assert done == {res.id}
    row = await store.get(conn, res.id)
    assert row.status == JobStatus.DONE and row.result == {"ok": True}
    kinds = [e.event_type for e in await store.events(conn, res.id)]
    assert kinds == ["ENQUEUED", "CLAIMED", "SUCCEEDED"]


async def test_rolled_back_transactional_enqueue_leaves_no_job(db_url, org):
    store = JobStore()
    async with await psycopg.AsyncConnection.connect(db_url) as c:
        async with c.transaction(force_rollback=True):
            await c.execute("CREATE TABLE my_app_table (x int)")
            await store.enqueue(c, job(org))
        cur = await c.execute("SELECT count(*) FROM job_queue")
        assert (await cur.fetchone())[0] == 0
        cur = await c.execute("SELECT count(*) FROM job_events")
        assert (await cur.fetchone())[0] == 0


async def test_dedupe_key_returns_existing_id_while_unfinished(conn, org, clock):
    store = JobStore(clock)
    a = await store.enqueue(conn, job(org, dedupe_key="k1"))
    b = await store.enqueue(conn, job(org, 2, dedupe_key="k1"))
    assert not b.created and b.id == a.id
    other_org = await store.enqueue(conn, job(uuid.uuid4(), dedupe_key="k1"))
    assert other_org.created  # dedupe is per tenant
    [c] = await store.claim(conn, W1, 1, lease_seconds=30, job_types=["NOOP"])
    await store.complete(conn, W1, [Completion(c.id)])
    done_again = await store.enqueue(conn, job(org, 3, dedupe_key="k1"))
    assert done_again.created and done_again.id != a.id or c.id != a.id


async def test_bulk_enqueue_100k_in_one_call(conn, org, clock):
    store = JobStore(clock)
    jobs = [job(org, i) for i in range(100_000)]
    ids = await store.enqueue_many(conn, jobs)
    assert len(ids) == 100_000 and len(set(ids)) == 100_000
    assert await statuses(conn) == {"PENDING": 100_000}
    cur = await conn.execute("SELECT count(*) FROM job_events WHERE event_type = 'ENQUEUED'")
    assert (await cur.fetchone())[0] == 100_000


async def test_bulk_with_one_invalid_job_inserts_nothing(conn, org):
    store = JobStore()
    jobs = [job(org, i) for i in range(50)]
    jobs.append(NewJob(organization_id=org, job_type="NOOP", payload={"bad": "a\x00b"}))
    with pytest.raises(PayloadValidationError, match=r"payload\.bad: .*\(job 50 of 51 in the batch\)"):
        await store.enqueue_many(conn, jobs)
    assert await statuses(conn) == {}
    cur = await conn.execute("SELECT count(*) FROM job_events")
    assert (await cur.fetchone())[0] == 0


async def test_bulk_with_an_invalid_job_inside_the_callers_transaction_leaves_it_usable(conn, org):
    """The invalid job is found while earlier rows are already streaming through COPY: the
    savepoint drops them, and the caller's own work in the same transaction survives."""
    store = JobStore()
    jobs = [job(org, i) for i in range(20)] + [job(org, 0, priority=10**9)] + [job(org, i) for i in range(5)]
    async with conn.transaction():
        kept = await store.enqueue(conn, job(org, 1))
        with pytest.raises(ValidationError, match=r"priority: .*\(job 20 of 26 in the batch\)"):
            await store.enqueue_many(conn, jobs)
        again = await store.enqueue_many(conn, jobs[:20])
    cur = await conn.execute("SELECT count(*) FROM job_queue")
    assert (await cur.fetchone())[0] == 21 and kept.created and len(again) == 20


async def test_bulk_payloads_round_trip_exactly(conn, org):
    """The binary COPY sends the checked JSON text as jsonb: objects stay objects (not JSON
    strings), and unicode, escapes and nesting come back as they went in."""
    store = JobStore()
    payloads = [{"n": i, "text": "Zürich \\ \"quoted\" \n\t ✓ 日本", "nested": {"a": [1, 2.5, None, True]}}
                for i in range(20)]
    jobs = [NewJob(organization_id=org, job_type="NOOP", payload=p, timeout_seconds=1.5, max_retries=2)
            for p in payloads]
    ids = await store.enqueue_many(conn, jobs)
    cur = await conn.execute(
        "SELECT payload, jsonb_typeof(payload), timeout_seconds, max_retries, run_after = created_at"
        " FROM job_queue WHERE id = ANY(%s) ORDER BY (payload->>'n')::int", (ids,))
    rows = await cur.fetchall()
    assert [r[0] for r in rows] == payloads
    assert {(r[1], r[2], r[3], r[4]) for r in rows} == {("object", 1.5, 2, True)}


async def test_bulk_with_dedupe_keys_maps_duplicates(conn, org, clock):
    store = JobStore(clock)
    first = await store.enqueue(conn, job(org, dedupe_key="dup"))
    jobs = [job(org, i, dedupe_key=f"k{i % 10}") for i in range(30)] + [job(org, dedupe_key="dup")]
    ids = await store.enqueue_many(conn, jobs)
    assert ids[-1] == first.id
    assert len(set(ids[:30])) == 10
    cur = await conn.execute("SELECT count(*) FROM job_queue")
    assert (await cur.fetchone())[0] == 11


async def test_bulk_with_a_dedupe_key_whose_live_job_finishes_meanwhile_inserts_it(conn, org, clock):
    """The live holder of a key can finish between the bulk INSERT ... ON CONFLICT and the
    lookup of the holder's id; the job must then be inserted (the key is free), not fail."""
    store = JobStore(clock)
    holder = await store.enqueue(conn, job(org, dedupe_key="race"))
    # Finish the holder right after the staged insert, as a concurrent worker would.
    await conn.execute(f"""
        CREATE FUNCTION test_finish_holder() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE job_queue SET status = 'DONE' WHERE id = '{holder.id}' AND status = 'PENDING';
              RETURN NULL; END $$;
        CREATE TRIGGER test_finish_holder AFTER INSERT ON job_events
            FOR EACH STATEMENT EXECUTE FUNCTION test_finish_holder();""")
    jobs = [job(org, i, dedupe_key=f"k{i}") for i in range(10)] + [job(org, 99, dedupe_key="race")]
    ids = await store.enqueue_many(conn, jobs)

    assert ids[-1] == jobs[-1].id != holder.id  # inserted in the second round
    assert ids[:10] == [j.id for j in jobs[:10]]
    cur = await conn.execute("SELECT status FROM job_queue WHERE dedupe_key = 'race' ORDER BY created_at, id")
    assert sorted(r[0] for r in await cur.fetchall()) == ["DONE", "PENDING"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "x\x00"}, "payload.text"),
        ({"a": [{"b\x00": 1}]}, 'payload.a[0]["b\\u0000"]'),  # the NUL shown, not printed
        ({"when": datetime(2026, 1, 1)}, "payload.when"),
        ({"x": float("nan")}, "payload.x"),
        ({"s": "\ud800"}, "payload.s"),
        ({"big": "x" * (1024 * 1024)}, "payload"),
    ],
)
async def test_bad_payloads_are_rejected_naming_the_field(conn, org, payload, field):
    store = JobStore()
    with pytest.raises(PayloadValidationError) as err:
        await store.enqueue(conn, NewJob(organization_id=org, job_type="NOOP", payload=payload))
    assert err.value.field == field
    assert await statuses(conn) == {}


async def test_job_fields_are_checked(conn, org):
    store = JobStore()
    with pytest.raises(ValidationError, match="job_type"):
        await store.enqueue(conn, NewJob(organization_id=org, job_type="x" * 65))
    with pytest.raises(ValidationError, match="run_after"):
        await store.enqueue(conn, job(org, run_after=datetime(2026, 1, 1)))
    # Stored fine by PostgreSQL, unreadable by drivers afterwards (1 BC / year 10000 in UTC).
    for far in (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
                datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))):
        with pytest.raises(ValidationError, match="run_after: must be between"):
            await store.enqueue(conn, job(org, run_after=far))
    with pytest.raises(ValidationError, match="dedupe_key: contains invalid unicode"):
        await store.enqueue(conn, job(org, dedupe_key="\udcff"))
    with pytest.raises(ValidationError, match="timeout_seconds"):
        await store.enqueue(conn, job(org, timeout_seconds=1e-50))
    # The database keeps the same bounds for rows written behind the application's back.
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute("INSERT INTO job_queue (organization_id, job_type, run_after)"
                           " VALUES (%s, 'NOOP', '0001-12-31 23:00:00+00 BC')", (org,))
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute("INSERT INTO job_queue (organization_id, job_type, lease_seconds)"
                           " VALUES (%s, 'NOOP', 'Infinity')", (org,))
    assert (await statuses(conn)) == {}


async def test_one_mib_payload_is_accepted(conn, org):
    store = JobStore()
    payload = {"big": "é" * (500 * 1024)}  # ~1,000,000 bytes of UTF-8
    res = await store.enqueue(conn, NewJob(organization_id=org, job_type="NOOP", payload=payload))
    row = await store.get(conn, res.id)
    assert row.payload == payload


async def test_timestamps_ignore_server_timezone(conn, org, clock):
    store = JobStore(clock)
    when = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    await conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
    res = await store.enqueue(conn, job(org, run_after=when))
    await conn.execute("SET TimeZone = 'America/Los_Angeles'")
    row = await store.get(conn, res.id)
    assert row.run_after == when


async def test_claim_orders_by_priority_then_run_after(conn, org, clock):
    store = JobStore(clock)
    t0 = clock.now() - timedelta(minutes=5)
    low_old = await store.enqueue(conn, job(org, 1, priority=0, run_after=t0))
    high_new = await store.enqueue(conn, job(org, 2, priority=5, run_after=t0 + timedelta(seconds=5)))
    future = await store.enqueue(conn, job(org, 3, priority=9, run_after=clock.now() + timedelta(hours=1)))
    claimed = await store.claim(conn, W1, 10, lease_seconds=30)
    assert [c.id for c in claimed] == [high_new.id, low_old.id]
    assert future.id not in {c.id for c in claimed}


async def test_fairness_new_tenant_job_is_in_the_next_claim(conn, clock):
    store = JobStore(clock)
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    await store.enqueue_many(conn, [job(org_a, i) for i in range(10_000)])
    clock.advance(1)
    b = await store.enqueue(conn, job(org_b, 1))
    clock.advance(1)
    claimed = await store.claim(conn, W1, 4, lease_seconds=30)
    assert b.id in {c.id for c in claimed}
    assert len(claimed) == 4


async def test_with_more_busy_tenants_than_the_window_every_tenant_is_still_served(conn, clock):
    """300 organizations with 3 jobs each, claims of 4 (a window of 32 organizations a claim,
    each window starting where the last claim stopped): each claim takes 4 different
    organizations, and every organization gets a job early: nobody starves."""
    store = JobStore(clock)
    orgs = [uuid.uuid4() for _ in range(300)]
    t0 = clock.now() - timedelta(hours=1)
    # Arrivals interleaved: every organization's 1st job, then every 2nd ... (a steady load).
    await store.enqueue_many(conn, [job(o, i, run_after=t0 + timedelta(seconds=i * 300 + k))
                                    for i in range(3) for k, o in enumerate(orgs)])
    order: list[uuid.UUID] = []
    while batch := await store.claim(conn, W1, 4, lease_seconds=30):
        if len(order) < 450:  # while most organizations still have work
            assert len({j.organization_id for j in batch}) == len(batch)
        order += [j.organization_id for j in batch]
    assert len(order) == 900 and set(order) == set(orgs)
    # A round robin: the first 300 jobs went to 300 different organizations, the next 300
    # again to all of them. (Random windows, ordered by age inside, left 10-20 organizations
    # waiting until after the 450th job in 1 run of 35.)
    assert len(set(order[:300])) == 300 and len(set(order[300:600])) == 300


async def test_claims_of_one_do_not_let_an_earlier_backlog_starve_other_tenants(conn, clock):
    """A worker running slow jobs frees one slot at a time, so it claims 1 job at a time. A
    tenant that enqueued 2,000 jobs an hour ago must not win every one of those claims: the
    50 tenants whose single job arrived later are each served within one turn of the round
    robin (51 claims), not after the backlog drained (2,000+ claims, as oldest-first did)."""
    store = JobStore(clock)
    big = uuid.uuid4()
    small = [uuid.uuid4() for _ in range(50)]
    t0 = clock.now() - timedelta(hours=1)
    await store.enqueue_many(conn, [job(big, i, run_after=t0) for i in range(2000)])
    await store.enqueue_many(conn, [job(o, 0, run_after=t0 + timedelta(minutes=30, seconds=k))
                                    for k, o in enumerate(small)])
    served: list[uuid.UUID] = []
    for _ in range(51):
        (one,) = await store.claim(conn, W1, 1, lease_seconds=30)
        served.append(one.organization_id)
    assert set(small) <= set(served)
    assert served.count(big) == 1


async def test_claim_filters_by_job_type(conn, org, clock):
    store = JobStore(clock)
    await store.enqueue(conn, job(org, job_type="A"))
    b = await store.enqueue(conn, job(org, job_type="B"))
    claimed = await store.claim(conn, W1, 10, lease_seconds=30, job_types=["B"])
    assert [c.id for c in claimed] == [b.id]


async def test_eight_concurrent_claimers_drain_10k_jobs_exactly_once(pool, org):
    store = JobStore()
    async with pool.connection() as c:
        await store.enqueue_many(c, [job(org, i) for i in range(10_000)])
    seen: list[uuid.UUID] = []

    async def claimer(worker: uuid.UUID) -> None:
        while True:
            async with pool.connection() as c:
                batch = await store.claim(c, worker, 50, lease_seconds=60)
                if not batch:
                    return
                seen.extend(j.id for j in batch)
                done = await store.complete(c, worker, [Completion(j.id) for j in batch])
                assert done == {j.id for j in batch}

    await asyncio.gather(*(claimer(uuid.uuid4()) for _ in range(8)))
    assert len(seen) == 10_000 and len(set(seen)) == 10_000
    async with pool.connection() as c:
        assert await statuses(c) == {"DONE": 10_000}
        cur = await c.execute(
            "SELECT count(*) FROM job_events WHERE event_type = 'CLAIMED'"
        )
        assert (await cur.fetchone())[0] == 10_000


async def test_backoff_then_dead_when_exhausted(conn, org, clock):
    store = JobStore(clock, retry_policy=RetryPolicy(base_seconds=10, cap_seconds=100, jitter=0))
    res = await store.enqueue(conn, job(org, max_retries=3))
    delays = []
    for attempt in range(1, 4):
        [j] = await store.claim(conn, W1, 1, lease_seconds=30)
        assert j.attempt == attempt
        out = await store.fail(conn, W1, j, RuntimeError(f"boom {attempt}"))
        if attempt < 3:
            assert out.status == JobStatus.FAILED
            delays.append((out.run_after - clock.now()).total_seconds())
            assert await store.claim(conn, W1, 1, lease_seconds=30) == []  # not before run_after
            clock.set(out.run_after)
        else:
            assert out.status == JobStatus.DEAD
    assert delays == [10, 20]
    row = await store.get(conn, res.id)
    assert row.retry_count == 3 and row.last_error == "boom 3"
    kinds = [e.event_type for e in await store.events(conn, res.id)]
    assert kinds == ["ENQUEUED", "CLAIMED", "RETRY_SCHEDULED", "CLAIMED", "RETRY_SCHEDULED",
                     "CLAIMED", "DEAD"]


async def test_permanent_error_goes_dead_at_once(conn, org, clock):
    store = JobStore(clock)
    res = await store.enqueue(conn, job(org))
    [j] = await store.claim(conn, W1, 1, lease_seconds=30)
    out = await store.fail(conn, W1, j, "invalid payload: field x", permanent=True)
    assert out.status == JobStatus.DEAD and out.retry_count == 1
    assert (await store.get(conn, res.id)).max_retries == 5


async def test_nul_in_error_message_still_commits_sanitized(conn, org, clock):
    store = JobStore(clock)
    await store.enqueue(conn, job(org))
    [j] = await store.claim(conn, W1, 1, lease_seconds=30)
    out = await store.fail(conn, W1, j, "bad \x00 byte " + "y" * 10_000 + " sk-abcdefghijklmnop")
    assert out.status == JobStatus.FAILED
    row = await store.get(conn, j.id)
    assert "\x00" not in row.last_error and len(row.last_error) <= 2000
    assert row.last_error.startswith("bad  byte")


async def test_fencing_late_completion_of_lost_lease_changes_nothing(conn, org, clock):
    store = JobStore(clock)
    res = await store.enqueue(conn, job(org))
    [first] = await store.claim(conn, W1, 1, lease_seconds=10)
    clock.advance(11)
    recovered = await store.recover_expired(conn, default_lease_seconds=10)
    assert recovered == [(res.id, JobStatus.FAILED)]
    clock.advance(3600)
    [second] = await store.claim(conn, W2, 1, lease_seconds=10)
    assert second.id == res.id and second.attempt == 2
    assert await store.complete(conn, W1, [Completion(res.id, result={"from": "w1"})]) == set()
    with pytest.raises(LostClaimError):
        await store.complete_one(conn, W1, Completion(res.id))
    with pytest.raises(LostClaimError):
        await store.fail(conn, W1, first, "late failure")
    assert await store.heartbeat(conn, W1, [res.id]) == {}
    row = await store.get(conn, res.id)
    assert row.status == JobStatus.RUNNING and row.locked_by == W2 and row.result is None
    await store.complete_one(conn, W2, Completion(res.id, result={"from": "w2"}))
    assert (await store.get(conn, res.id)).result == {"from": "w2"}


async def test_heartbeat_keeps_lease_alive(conn, org, clock):
    store = JobStore(clock)
    res = await store.enqueue(conn, job(org))
    await store.claim(conn, W1, 1, lease_seconds=10)
    for _ in range(5):
        clock.advance(6)
        assert await store.heartbeat(conn, W1, [res.id]) == {res.id: False}
        assert await store.recover_expired(conn, default_lease_seconds=10) == []
    clock.advance(11)
    assert await store.recover_expired(conn, default_lease_seconds=10) == [(res.id, JobStatus.FAILED)]


async def test_recover_exhausted_goes_dead_and_never_touches_finished(conn, org, clock):
    store = JobStore(clock)
    dead_soon = await store.enqueue(conn, job(org, max_retries=1))
    finished = await store.enqueue(conn, job(org, 2))
    claimed = await store.claim(conn, W1, 2, lease_seconds=5)
    await store.complete(conn, W1, [Completion(finished.id)])
    clock.advance(60)
    assert await store.recover_expired(conn, default_lease_seconds=5) == [(dead_soon.id, JobStatus.DEAD)]
    assert (await store.get(conn, finished.id)).status == JobStatus.DONE
    assert len(claimed) == 2


async def test_cancel_pending_running_and_requeue(conn, org, clock):
    store = JobStore(clock)
    a = await store.enqueue(conn, job(org, 1))
    out = await store.cancel(conn, a.id)
    assert out.to_status == JobStatus.DEAD and not out.stopping
    b = await store.enqueue(conn, job(org, 2))
    [j] = await store.claim(conn, W1, 1, lease_seconds=30)
    out = await store.cancel(conn, b.id)
    assert out.stopping
    assert await store.heartbeat(conn, W1, [b.id]) == {b.id: True}
    fail = await store.fail(conn, W1, j, "cancelled", cancelled=True)
    assert fail.status == JobStatus.DEAD
    assert await store.requeue(conn, a.id)
    assert (await store.get(conn, a.id)).status == JobStatus.PENDING
    assert not await store.requeue(conn, a.id)  # not DEAD any more
    kinds = [e.event_type for e in await store.events(conn, b.id)]
    assert kinds == ["ENQUEUED", "CLAIMED", "CANCEL_REQUESTED", "CANCELLED"]
    with pytest.raises(Exception, match="no job"):
        await store.cancel(conn, uuid.uuid4())
    with pytest.raises(Exception, match="no job"):
        await store.cancel(conn, a.id, organization_id=uuid.uuid4())  # other tenant


async def test_release_returns_job_without_counting_attempt(conn, org, clock):
    store = JobStore(clock)
    res = await store.enqueue(conn, job(org))
    await store.claim(conn, W1, 1, lease_seconds=30)
    assert await store.release(conn, W1, [res.id]) == [res.id]
    row = await store.get(conn, res.id)
    assert row.status == JobStatus.PENDING and row.retry_count == 0 and row.locked_by is None


async def test_follow_ups_exist_exactly_when_parent_is_done(db_url, org, clock):
    store = JobStore(clock)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
        parent = await store.enqueue(c, job(org))
        [p] = await store.claim(c, W1, 1, lease_seconds=30)
        kids = (job(org, 10, job_type="CHILD", parent_id=p.id), job(org, 11, job_type="CHILD", parent_id=p.id))
        comp = Completion(p.id, follow_ups=kids)
        # A failing completion transaction leaves neither the DONE nor the children.
        with pytest.raises(RuntimeError):
            async with c.transaction():
                await store.complete(c, W1, [comp])
                raise RuntimeError("crash after complete, before commit")
        assert (await store.get(c, parent.id)).status == JobStatus.RUNNING
        cur = await c.execute("SELECT count(*) FROM job_queue WHERE job_type = 'CHILD'")
        assert (await cur.fetchone())[0] == 0
        assert await store.complete(c, W1, [comp]) == {parent.id}
        cur = await c.execute("SELECT parent_id, organization_id FROM job_queue WHERE job_type = 'CHILD'")
        rows = await cur.fetchall()
        assert rows == [(parent.id, org), (parent.id, org)]


async def test_purge_removes_old_finished_jobs_and_events(conn, org, clock):
    store = JobStore(clock)
    ids = await store.enqueue_many(conn, [job(org, i) for i in range(25)])
    claimed = await store.claim(conn, W1, 20, lease_seconds=30)
    await store.complete(conn, W1, [Completion(j.id) for j in claimed])
    clock.advance(timedelta(days=8))
    assert await store.purge(conn, timedelta(days=7), batch=7) == 20
    assert await statuses(conn) == {"PENDING": 5}
    cur = await conn.execute("SELECT count(DISTINCT job_id) FROM job_events")
    assert (await cur.fetchone())[0] == 5
    assert len(ids) == 25


async def test_notify_is_sent_once_per_enqueuing_transaction(db_url, org):
    store = JobStore()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN atum_ai_jobs")
        async with await psycopg.AsyncConnection.connect(db_url) as c:
            async with c.transaction():
                await store.enqueue_many(c, [job(org, i) for i in range(1000)])
                await store.enqueue(c, job(org, 5000))
        got = []
        gen = listener.notifies(timeout=1.0)
        async for n in gen:
            got.append(n.payload)
        assert got == ["NOOP"]


async def test_status_counts_and_scoping(conn, clock):
    store = JobStore(clock)
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.enqueue(conn, job(a, job_type="X"))
    await store.enqueue(conn, job(b, job_type="X"))
    assert await store.status_counts(conn) == [("X", "PENDING", 2)]
    assert await store.status_counts(conn, organization_id=a) == [("X", "PENDING", 1)]


def test_frozen_clock_rejects_naive():
    with pytest.raises(ValueError):
        FrozenClock(datetime(2026, 1, 1))


async def test_every_job_of_a_mixed_run_has_a_consistent_event_chain(conn, org, clock):
    """Success, retry then success, exhaustion, a permanent error, cancels (pending and
    running), a requeue, a release at shutdown, a lease recovery and a fenced-out late
    completion, interleaved: each job's events form one valid chain, ending where the row is."""
    from tests.support.chaos import chain_problems, describe_chain

    store = JobStore(clock, retry_policy=RetryPolicy(base_seconds=1, cap_seconds=4, jitter=0))
    ids = {name: (await store.enqueue(conn, job(org, i, max_retries=2))).id for i, name in enumerate(
        ["ok", "retry_ok", "exhausted", "permanent", "cancel_pending", "cancel_running",
         "requeued", "released", "recovered"])}

    async def claim_all(worker: uuid.UUID) -> dict[uuid.UUID, object]:
        return {j.id: j for j in await store.claim(conn, worker, 50, lease_seconds=30)}

    await store.cancel(conn, ids["cancel_pending"])
    held = await claim_all(W1)
    await store.complete(conn, W1, [Completion(ids["ok"])])
    for name in ("retry_ok", "exhausted"):
        await store.fail(conn, W1, held[ids[name]], "transient")
    await store.fail(conn, W1, held[ids["permanent"]], "bad input", permanent=True)
    await store.fail(conn, W1, held[ids["requeued"]], "bad input", permanent=True)
    await store.cancel(conn, ids["cancel_running"])  # the worker acts on it ...
    await store.fail(conn, W1, held[ids["cancel_running"]], "cancelled while running", cancelled=True)
    await store.release(conn, W1, [ids["released"]])
    assert await store.requeue(conn, ids["requeued"])

    clock.advance(timedelta(seconds=31))  # W1's lease on "recovered" expires
    await store.recover_expired(conn, default_lease_seconds=30)
    clock.advance(timedelta(seconds=10))
    held2 = await claim_all(W2)
    assert set(held2) == {ids[n] for n in ("retry_ok", "exhausted", "requeued", "released", "recovered")}
    # W1 wakes up and tries to complete "recovered": fenced out, nothing changes.
    assert await store.complete(conn, W1, [Completion(ids["recovered"])]) == set()
    await store.fail(conn, W2, held2[ids["exhausted"]], "transient again")  # 2nd attempt: DEAD
    await store.complete(conn, W2, [Completion(ids[n]) for n in ("retry_ok", "requeued", "released",
                                                                  "recovered")])

    expected = {"ok": "DONE", "retry_ok": "DONE", "exhausted": "DEAD", "permanent": "DEAD",
                "cancel_pending": "DEAD", "cancel_running": "DEAD", "requeued": "DONE",
                "released": "DONE", "recovered": "DONE"}
    for name, job_id in ids.items():
        row = await store.get(conn, job_id)
        events = await store.events(conn, job_id)
        assert row.status == expected[name], (name, describe_chain(events))
        assert events[-1].to_status == expected[name], (name, describe_chain(events))
        problems = chain_problems(events, expect_done=expected[name] == "DONE")
        assert not problems, (name, problems, describe_chain(events))
    kinds = {name: [e.event_type for e in await store.events(conn, job_id)] for name, job_id in ids.items()}
    assert kinds["released"][:4] == ["ENQUEUED", "CLAIMED", "RELEASED", "CLAIMED"]
    assert "RECOVERED" in kinds["recovered"] and "REQUEUED" in kinds["requeued"]
    assert kinds["cancel_pending"] == ["ENQUEUED", "CANCELLED"]


@pytest.mark.parametrize("n", [3, 20])
async def test_bulk_keeps_non_ascii_text_under_a_non_utf8_client_encoding(db_url, org, n):
    """jsonb's binary input reads the text in the client encoding: a WIN1252 session must
    store 'café €' as 'café €' on the COPY path (n=20) as on the insert path (n=3)."""
    store = JobStore()
    jobs = [NewJob(organization_id=org, job_type="NOOP", payload={"s": "café €", "n": i}) for i in range(n)]
    async with await psycopg.AsyncConnection.connect(
            db_url, autocommit=True, options="-c client_encoding=WIN1252") as c:
        assert c.info.encoding == "cp1252"
        await store.enqueue_many(c, jobs)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
        cur = await c.execute("SELECT DISTINCT payload->>'s' FROM job_queue")
        assert [r[0] for r in await cur.fetchall()] == ["café €"]


async def test_run_after_with_an_offset_postgresql_cannot_spell_works_on_every_path(conn, org):
    """Python allows UTC offsets of +-23:59 and with seconds; PostgreSQL's text input does
    not. Single, small-batch, COPY and dedupe (staging) paths all store the same instant."""
    odd = timezone(timedelta(hours=16, seconds=7))
    at = datetime(2030, 6, 1, 12, tzinfo=odd)
    store = JobStore()
    ids = [(await store.enqueue(conn, job(org, 0, run_after=at))).id]
    ids += await store.enqueue_many(conn, [job(org, i, run_after=at) for i in range(3)])
    ids += await store.enqueue_many(conn, [job(org, i, run_after=at) for i in range(20)])
    ids += await store.enqueue_many(conn, [job(org, i, run_after=at, dedupe_key=f"k{i}") for i in range(20)])
    cur = await conn.execute("SELECT DISTINCT run_after FROM job_queue WHERE id = ANY(%s)", (ids,))
    assert [r[0] for r in await cur.fetchall()] == [at]


async def test_store_works_on_a_callers_dict_row_connection(db_url, org, clock):
    """Callers hand us their connection, which may be set up with dict_row: enqueue (dedupe
    included), bulk staging, claim and complete read rows positionally all the same."""
    from psycopg.rows import dict_row

    store = JobStore(clock)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        first = await store.enqueue(c, job(org, dedupe_key="same"))
        again = await store.enqueue(c, job(org, dedupe_key="same"))
        assert (again.id, again.created) == (first.id, False)
        keyed = await store.enqueue_many(c, [job(org, i, dedupe_key=f"k{i % 5}") for i in range(20)])
        assert len(set(keyed)) == 5
        claimed = await store.claim(c, W1, 100, lease_seconds=30)
        assert len(claimed) == 6
        done = await store.complete(c, W1, [Completion(j.id, result={"ok": True}) for j in claimed])
        assert len(done) == 6
