"""Bad input, property-based (hypothesis), on a real PostgreSQL (one database per test).

Enqueue payloads (``JobStore.enqueue`` with the registry as validator, and raw) and ticket
events (``pipeline.ingest.ingest_event``, which parses with ``parse_event``) drawn with
arbitrary unicode (lone surrogates included), NUL characters, huge strings, deep nesting,
wrong types and missing fields. Each one is either

* accepted, and then processed to the end by a real worker (no job left PENDING, RUNNING
  or FAILED; a job the validator accepted runs to DONE), or
* rejected with :class:`atum_ai.errors.ValidationError` whose ``.field`` names the field,
  and then nothing at all was written (every table's row count unchanged).

Any other exception fails the test. ``max_examples`` stays modest (60) to keep CI quick.

Also here: over-limit job type names and payloads refused by ``atum-ai enqueue`` in one
line with exit code 2. (A 1 MiB payload and a 100,000-job bulk enqueue succeeding are in
``tests/integration/test_store.py``.)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atum_ai.errors import ValidationError
from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.handlers.registry import Registry
from atum_ai.pipeline.ingest import ingest_event, parse_event
from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from atum_ai.runtime import load_registry
from tests.support.chaos import row_counts, run_burst
from tests.support.handlers import ALL
from tests.support.processes import run_atum

EXAMPLES = 60
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------- a fuzz handler
class FuzzPayload(Payload):
    text: str
    count: int = 0
    data: dict[str, Any] = {}
    items: list[Any] = []


class EchoResult(Result):
    echo: dict[str, Any]


class FuzzHandler(Handler[FuzzPayload, EchoResult]):
    job_type = "FUZZ_ECHO"
    Payload = FuzzPayload
    Result = EchoResult

    async def handle(self, payload: FuzzPayload, ctx: HandlerContext) -> HandlerResult[EchoResult]:
        return HandlerResult(EchoResult(echo=payload.model_dump(mode="json")))


def registry() -> Registry:
    return Registry([FuzzHandler(), *(h() for h in ALL)])


def _ctx(job: Any, handler: Any) -> HandlerContext:
    import logging

    from atum_ai.clock import SystemClock
    from atum_ai.config import Settings

    return HandlerContext(job_id=job.id, organization_id=job.organization_id, job_type=job.job_type,
                          attempt=job.attempt, clock=SystemClock(),
                          logger=logging.LoggerAdapter(logging.getLogger("fuzz")),
                          settings=Settings(), repo=None, prompts=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- strategies
NASTY = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "\ufeff", "</ticket_text>",
                         "💥" * 50, "'; DROP TABLE job_queue; --", "\\u0000", "null", "\n\r\t"])
ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=40),  # incl. surrogates
    NASTY,
    st.builds(lambda n, c: c * n, st.sampled_from([70_000, 300_000, 1_100_000]),
              st.sampled_from(["x", "é", "\x00"])),
)


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), ANY_TEXT,
                    st.builds(lambda e, sign: sign * 10**e, st.sampled_from([19, 400, 5000]), st.sampled_from([1, -1])),
                    st.datetimes(), st.binary(max_size=4), st.uuids())
JSONISH = st.recursive(SCALARS, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(ANY_TEXT, c, max_size=4),
    st.dictionaries(st.integers(), c, max_size=2)), max_leaves=12)
DEEP = st.builds(_nest, st.integers(1, 300), SCALARS)
VALUES = st.one_of(JSONISH, DEEP)

FUZZ_PAYLOADS = st.one_of(
    st.fixed_dictionaries({"text": ANY_TEXT}, optional={"count": VALUES, "data": VALUES, "items": VALUES}),
    st.fixed_dictionaries({"text": st.text(max_size=20)},
                          optional={"count": st.integers(-5, 5), "data": st.dictionaries(st.text(max_size=5), JSONISH, max_size=3),
                                    "items": st.lists(JSONISH, max_size=3)}),
    st.dictionaries(ANY_TEXT, VALUES, max_size=4),  # missing fields, unknown fields
    VALUES,  # not even an object
)
JOB_TYPES = st.one_of(st.sampled_from(["FUZZ_ECHO", "TEST_NOOP", "NO_SUCH_TYPE"]), ANY_TEXT,
                      st.just("A" * 65), st.integers(), st.none())
META = st.fixed_dictionaries({}, optional={
    "priority": st.one_of(st.integers(), st.text(max_size=3), st.floats(), st.none()),
    "max_retries": st.one_of(st.integers(), st.text(max_size=3), st.none()),
    "timeout_seconds": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
    "dedupe_key": st.one_of(ANY_TEXT, st.integers()),
    "run_after": st.one_of(st.datetimes(), st.datetimes(timezones=st.timezones()), st.text(max_size=5)),
    "organization_id": st.one_of(st.uuids(), st.text(max_size=40), st.integers()),
})


# ---------------------------------------------------------------------------- helpers
KNOWN_FIELDS = {
    "payload", "job_type", "dedupe_key", "run_after", "max_retries", "priority", "timeout_seconds",
    "organization_id", "parent_id", "id",  # enqueue
    "event", "type", "ticket_id", "event_id", "occurred_at", "subject", "body", "channel",
    "language", "tags", "labels",  # ingest
}


def _assert_names_field(exc: ValidationError) -> None:
    assert isinstance(exc.field, str) and exc.field, f"no field named: {exc!r}"
    assert exc.field.split(".")[0].split("[")[0] in KNOWN_FIELDS, exc.field
    # The message is safe to print and store: no NUL, encodable, bounded.
    text = str(exc)
    assert "\x00" not in text and len(text) < 2000
    text.encode("utf-8")


async def _try_enqueue(db_url: str, store: JobStore, job: NewJob) -> uuid.UUID | None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        before = await row_counts(conn)
        try:
            res = await store.enqueue(conn, job)
        except ValidationError as exc:
            _assert_names_field(exc)
            assert await row_counts(conn) == before, "a rejected enqueue wrote something"
            return None
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        return res.id


async def _statuses(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT status, id, job_type, last_error, payload FROM job_queue")
        out: dict[str, list[tuple[Any, ...]]] = {}
        for r in await cur.fetchall():
            out.setdefault(r[0], []).append(r[1:])
        return out


# ---------------------------------------------------------------------------- enqueue
def test_enqueue_with_the_registry_validator_accepts_and_runs_or_names_the_field(db_url: str) -> None:
    reg = registry()
    store = JobStore(validator=reg)
    org = uuid.uuid4()
    accepted: dict[uuid.UUID, Any] = {}

    @SETTINGS
    @given(payload=FUZZ_PAYLOADS)
    def check(payload: Any) -> None:
        job = NewJob(org, "FUZZ_ECHO", payload)
        job_id = asyncio.run(_try_enqueue(db_url, store, job))
        if job_id is not None:
            accepted[job_id] = payload

    check()
    asyncio.run(run_burst(db_url, reg, context_factory=_ctx))
    statuses = _statuses_sync(db_url)
    assert set(statuses) <= {"DONE"}, {k: v[:3] for k, v in statuses.items() if k != "DONE"}
    assert len(statuses.get("DONE", [])) == len(accepted)


def test_raw_enqueue_accepts_and_finishes_or_names_the_field(db_url: str) -> None:
    store = JobStore()  # no validator: only the queue's own checks
    accepted: list[uuid.UUID] = []

    @SETTINGS
    @given(job_type=JOB_TYPES, payload=FUZZ_PAYLOADS, meta=META)
    def check(job_type: Any, payload: Any, meta: dict[str, Any]) -> None:
        meta = dict(meta)
        org = meta.pop("organization_id", uuid.uuid4())
        job = NewJob(org, job_type, payload, **meta)
        job_id = asyncio.run(_try_enqueue(db_url, store, job))
        if job_id is not None:
            accepted.append(job_id)

    check()
    reg = registry()
    asyncio.run(run_burst(db_url, reg, context_factory=_ctx))
    statuses = _statuses_sync(db_url)
    # Every accepted job of a type this worker runs finished: DONE, or DEAD at once for a
    # payload its type refuses. A type nobody here handles is not claimed at all: it waits,
    # untouched, for a worker that has that handler. Nothing is left running or retrying.
    assert set(statuses) <= {"DONE", "DEAD", "PENDING"}, {k: v[:3] for k, v in statuses.items()}
    for _id, job_type, last_error, _payload in statuses.get("DEAD", []):
        assert last_error.startswith("invalid payload"), last_error
    for _id, job_type, last_error, _payload in statuses.get("PENDING", []):
        assert job_type not in reg and last_error is None, job_type
    assert sum(len(v) for v in statuses.values()) == len(accepted)


def _statuses_sync(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    return asyncio.run(_statuses(db_url))


BAD_PAYLOADS = [
    ({"text": "x", "count": 10**5000}, "payload.count"),
    ({"text": "x", "data": {"n": float("nan")}}, "payload.data.n"),
    ({"text": "x", "data": {"at": datetime(2026, 1, 1)}}, "payload.data.at"),
    ({"text": "x", "data": {"b": b"\x00"}}, "payload.data.b"),
    ({"text": "x", "data": {1: "int key"}}, "payload.data"),
    ({"text": "x", "data": {"k": _nest(5000, 1)}}, "payload.data.k"),
    ({"text": "a\x00b"}, "payload.text"),
    ({"text": "\udc00"}, "payload.text"),
    ({"text": "x" * (1024 * 1024)}, "payload"),
    ({"count": 1}, "payload.text"),
    ({"text": 5}, "payload.text"),
]


async def test_known_bad_payloads_are_refused_naming_the_field(conn) -> None:
    store = JobStore(validator=registry())
    before = await row_counts(conn)
    for payload, field in BAD_PAYLOADS:
        with pytest.raises(ValidationError) as info:
            await store.enqueue(conn, NewJob(uuid.uuid4(), "FUZZ_ECHO", payload))
        assert info.value.field is not None and info.value.field.startswith(field), (info.value.field, field)
    assert await row_counts(conn) == before


BAD_METADATA = [
    ({"priority": "5"}, "priority"),
    ({"priority": 10**7}, "priority"),
    ({"max_retries": "3"}, "max_retries"),
    ({"timeout_seconds": "soon"}, "timeout_seconds"),
    ({"dedupe_key": 42}, "dedupe_key"),
    ({"run_after": "2026-01-01"}, "run_after"),
    ({"organization_id": "not-a-uuid"}, "organization_id"),
    ({"job_type": None}, "job_type"),
]


async def test_wrong_job_metadata_types_are_a_validation_error(conn) -> None:
    before = await row_counts(conn)
    for kw, field in BAD_METADATA:
        fields: dict[str, Any] = {"organization_id": uuid.uuid4(), "job_type": "TEST_NOOP", "payload": {}}
        fields.update(kw)
        with pytest.raises(ValidationError) as info:
            await JobStore().enqueue(conn, NewJob(**fields))
        assert info.value.field == field, (kw, info.value.field)
    assert await row_counts(conn) == before


# ---------------------------------------------------------------------------- ingest
EVENT_TYPES = st.sampled_from(["ticket.created", "ticket.customer_replied", "ticket.agent_replied",
                               "ticket.resolved"])
SMALL_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=60)
EVENT_FIELDS = {
    "ticket_id": st.one_of(SMALL_TEXT, ANY_TEXT, st.integers(), st.none()),
    "event_id": st.one_of(SMALL_TEXT, ANY_TEXT, st.none()),
    "occurred_at": st.one_of(st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                             st.datetimes().map(lambda d: d.isoformat()), SMALL_TEXT, st.integers()),
    "subject": st.one_of(SMALL_TEXT, ANY_TEXT, st.integers()),
    "body": st.one_of(SMALL_TEXT, ANY_TEXT, st.lists(SMALL_TEXT, max_size=2)),
    "priority": st.one_of(st.sampled_from(["high", "low", "urgent"]), SMALL_TEXT),
    "channel": SMALL_TEXT,
    "language": st.one_of(st.sampled_from(["en", "de", "xx"]), SMALL_TEXT),
    "tags": st.one_of(st.lists(SMALL_TEXT, max_size=60), SMALL_TEXT, VALUES),
    "labels": st.one_of(st.dictionaries(SMALL_TEXT, st.one_of(SMALL_TEXT, st.none()), max_size=3), VALUES),
}
CANONICAL = st.fixed_dictionaries(
    {"type": EVENT_TYPES, "ticket_id": SMALL_TEXT.filter(str.strip)},
    optional={k: v for k, v in EVENT_FIELDS.items() if k != "ticket_id"})
LABELLED = st.fixed_dictionaries(
    {"id": st.one_of(SMALL_TEXT, st.integers(), VALUES)},
    optional={"subject": EVENT_FIELDS["subject"], "body": EVENT_FIELDS["body"],
              "queue": st.one_of(SMALL_TEXT, VALUES), "type": st.one_of(SMALL_TEXT, st.none()),
              "priority": st.one_of(SMALL_TEXT, st.integers()), "intent": SMALL_TEXT,
              "language": EVENT_FIELDS["language"], "tags": EVENT_FIELDS["tags"],
              "channel": SMALL_TEXT, "source": SMALL_TEXT})
PLAUSIBLE = st.fixed_dictionaries(
    {"type": EVENT_TYPES, "ticket_id": st.text(min_size=1, max_size=30).filter(str.strip)},
    optional={"subject": st.text(max_size=200), "body": st.text(max_size=3000),
              "event_id": st.text(min_size=1, max_size=50),
              "priority": st.sampled_from(["low", "medium", "high", "urgent"]),
              "language": st.sampled_from(["en", "de", "fr"]), "tags": st.lists(st.text(max_size=10)),
              "occurred_at": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())})
EVENTS = st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, CANONICAL, LABELLED, st.dictionaries(ANY_TEXT, VALUES, max_size=5), VALUES)


async def _try_ingest(db_url: str, org: uuid.UUID, raw: Any) -> bool:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        before = await row_counts(conn)
        try:
            parse_event(raw)
        except ValidationError as exc:
            _assert_names_field(exc)
            parsed_ok = False
        else:
            parsed_ok = True
        try:
            await ingest_event(conn, org, raw)
        except ValidationError as exc:
            _assert_names_field(exc)
            assert not parsed_ok, "parse_event accepted what ingest_event refused"
            assert await row_counts(conn) == before, "a rejected event wrote something"
            return False
        assert parsed_ok
        return True


def test_ingest_accepts_and_processes_or_names_the_field(db_url: str) -> None:
    org = uuid.uuid4()
    accepted = []

    @SETTINGS
    @given(raw=EVENTS)
    def check(raw: Any) -> None:
        if asyncio.run(_try_ingest(db_url, org, raw)):
            accepted.append(raw)

    check()
    # Every enqueued TRIAGE_TICKET (and its follow-ups) runs to the end on the local models.
    asyncio.run(run_burst(db_url, load_registry(), timeout=300))
    statuses = _statuses_sync(db_url)
    assert set(statuses) <= {"DONE"}, {k: [(r[1], r[2]) for r in v[:5]] for k, v in statuses.items()
                                       if k != "DONE"}
    print(f"\ningest: {len(accepted)} of the drawn events accepted; "
          f"{len(statuses.get('DONE', []))} jobs ran to DONE")


BAD_EVENTS = [
    ({"type": "ticket.created", "ticket_id": "1", "labels": {"queue": "a\x00b"}}, "labels"),
    ({"type": "ticket.created", "ticket_id": "1", "labels": {"q\x00": "x"}}, "labels"),
    ({"type": "ticket.created", "ticket_id": "1", "labels": {"queue": "\ud800"}}, "labels"),
    ({"id": "7", "subject": "s", "body": "b", "queue": "Bill\x00ing"}, "labels"),
    ({"type": "ticket.created", "ticket_id": "1", "tags": ["\ud800"]}, "tags"),
    ({"type": "ticket.created", "ticket_id": "1", "occurred_at": "2026-01-01T09:00:00"}, "occurred_at"),
    ({"type": "ticket.created", "ticket_id": "1", "body": "x" * 100_001}, "body"),
    ({"type": "ticket.created"}, "ticket_id"),
    ({"type": "ticket.nope", "ticket_id": "1"}, "type"),
    ("not an object", "event"),
]


async def test_known_bad_events_are_refused_naming_the_field(conn) -> None:
    before = await row_counts(conn)
    for raw, field in BAD_EVENTS:
        with pytest.raises(ValidationError) as info:
            await ingest_event(conn, uuid.uuid4(), raw)
        got = info.value.field
        assert got is not None and got.split(".")[0].split("[")[0] == field, (raw, got)
    assert await row_counts(conn) == before


# ---------------------------------------------------------------------------- CLI limits
@pytest.mark.parametrize("job_type, payload, field", [
    ("T" * 65, "{}", "job_type"),
    ("BAD TYPE", "{}", "job_type"),
    ("TEST_NOOP", json.dumps({"n": 1, "pad": "x" * 5000}), "payload"),
    ("TEST_NOOP", '{"n": "\\u0000"}', "payload.n"),
])
def test_cli_enqueue_refuses_over_limit_input_in_one_line_with_exit_2(db_url, job_type, payload, field):
    # The payload limit is lowered to 4 KiB here: one argv string cannot hold 1 MiB on Linux
    # (MAX_ARG_STRLEN is 128 KiB); the 1 MiB default itself is tested in test_store.py.
    proc = run_atum(db_url, "enqueue", "--org", str(uuid.uuid4()), "--type", job_type,
                    "--payload", payload, "--allow-unknown", env={"ATUM_MAX_PAYLOAD_BYTES": "4096"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], lines[:3]
    assert len(lines[0]) < 400  # the refused input is not echoed back
    assert proc.stdout == ""
