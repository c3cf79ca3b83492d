"""Ticket events in: upsert the ticket mirror and enqueue TRIAGE_TICKET, in one transaction.

``ingest_event(conn, organization_id, event)`` is the Python API a ticket system calls
inside its own transaction: if that transaction rolls back, neither the mirror row nor the
job exists. Each event is recorded under a key (its ``event_id``, else a hash of its
content), so replaying a file finds the key and enqueues nothing twice.

Accepted shapes (one JSON object each):

* the canonical event: ``{"type": "ticket.created" | "ticket.customer_replied" |
  "ticket.agent_replied" | "ticket.resolved", "ticket_id", "event_id"?, "occurred_at"?,
  "subject"?, "body"?, "priority"?, "channel"?, "language"?, "tags"?}``
* a labelled ticket (``{"id", "subject", "body", "queue"?, "type"?, "priority"?, ...}``, the
  format of public helpdesk datasets): read as ``ticket.created``; its labels are kept for
  training and evaluation, never shown to the models at prediction time.

Ids (``ticket_id``, ``event_id``, a labelled ticket's ``id``) are non-empty strings or
integers; anything else (null, an object, 1e400) is refused naming the field rather than
turned into a string such as ``"None"``. ``occurred_at`` must fall between 1970-01-01 and
9000-01-01 in UTC. JSONL files are read as bytes and split on ``\n`` only
(:func:`split_jsonl`, :func:`decode_jsonl_line`): a raw U+2028 inside a JSON string is not a
line break, and a line that is not UTF-8 is one bad line, not a bad file.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError

from atum_ai.clock import Clock, SystemClock
from atum_ai.errors import ValidationError
from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from atum_ai.queue.validation import time_range_error

EventType = Literal["ticket.created", "ticket.customer_replied", "ticket.agent_replied", "ticket.resolved"]
ShortText = Annotated[str, StringConstraints(max_length=200)]
MAX_SUBJECT = 1_000
MAX_BODY = 100_000
# The mirror keeps the conversation's customer text, bounded so a long thread cannot grow
# a row without limit; the newest text is kept.
MAX_MIRROR_BODY = 200_000
MAX_ID_CHARS = 200
_UTF8_BOM = b"\xef\xbb\xbf"


def split_jsonl(data: bytes) -> list[bytes]:
    """The lines of a JSONL file, undecoded: split on ``\n`` only (``str.splitlines`` also
    splits on U+2028, U+2029 and U+0085, which ``json.dumps(..., ensure_ascii=False)`` writes
    raw inside strings), a trailing ``\r`` removed, a leading UTF-8 BOM dropped. Line ``n``
    of the file is item ``n - 1``."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline ends the last line; it does not start one
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def decode_jsonl_line(raw: bytes) -> str:
    """One line as text; a ValidationError (no field: the caller adds the line number) when
    it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                              "of the line)") from None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"a non-integer number ({value!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def id_text(value: Any, field: str) -> str:
    """An id from JSON: a non-empty string (stripped) or an integer; else a ValidationError
    naming ``field``. Never ``str()`` of anything: null became the ticket "None" (and every
    null id the same ticket), an object "{'x': 1}", 1e400 "inf"."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 4 * MAX_ID_CHARS:  # str() of a 10**5000 raises (and is too long)
            raise ValidationError(f"integer too large (at most {MAX_ID_CHARS} digits)", field=field)
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValidationError("must not be empty", field=field)
    else:
        raise ValidationError(f"must be a non-empty string or an integer, not {_json_kind(value)}",
                              field=field)
    if len(text) > MAX_ID_CHARS:
        raise ValidationError(f"must be at most {MAX_ID_CHARS} characters", field=field)
    _check_text(text, field)
    return text


def _check_text(text: str, field: str) -> None:
    try:
        _no_nul(text)
    except ValueError as exc:
        raise ValidationError(str(exc), field=field) from None


def _label_text(value: Any, field: str) -> str | None:
    """A gold label: text, an integer or a finite number; null is "no label"."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 600:
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    raise ValidationError(f"must be a string or a number, not {_json_kind(value)}", field=field)


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("contains a NUL character (U+0000)")
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains invalid unicode (a lone surrogate)") from None
    return value


class TicketEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    type: EventType
    ticket_id: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    occurred_at: datetime | None = None
    subject: Annotated[str, StringConstraints(max_length=MAX_SUBJECT)] | None = None
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)] | None = None
    priority: ShortText | None = None
    channel: ShortText | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")] | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=50)
    labels: dict[str, ShortText | None] | None = None  # gold labels (labelled imports only)

    @field_validator("ticket_id", "event_id", mode="before")
    @classmethod
    def _id_in(cls, v: Any) -> Any:
        # A ticket system may send numeric ids: 4711 is ticket "4711". Not a boolean, not a
        # float (1e400 would be "inf"); other types fail as "not a valid string".
        if isinstance(v, int) and not isinstance(v, bool):
            if v.bit_length() > 4 * MAX_ID_CHARS:
                raise ValueError(f"integer too large (at most {MAX_ID_CHARS} digits)")
            return str(v)
        return v

    @field_validator("ticket_id", "event_id", "subject", "body", "priority", "channel")
    @classmethod
    def _text_ok(cls, v: str | None) -> str | None:
        return _no_nul(v)

    @field_validator("event_id")
    @classmethod
    def _event_id_not_blank(cls, v: str | None) -> str | None:
        # Kept as given (it is the replay key), but "   " identifies nothing.
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("tags")
    @classmethod
    def _tags_ok(cls, v: list[str]) -> list[str]:
        return [t for t in (_no_nul(x) for x in v) if t]

    @field_validator("labels")
    @classmethod
    def _labels_ok(cls, v: dict[str, str | None] | None) -> dict[str, str | None] | None:
        # Stored as jsonb, which refuses U+0000 (and psycopg cannot encode lone surrogates):
        # without this check such a label failed in the database, not here.
        for key, value in (v or {}).items():
            _no_nul(key)
            _no_nul(value)
        return v

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.utcoffset() is None:
            raise ValueError("naive datetime; give a timezone (e.g. 2026-01-01T09:00:00Z)")
        # "9999-12-31T23:59:59-14:00" (year 10000 in UTC) was stored and then broke every read
        # of the organization's tickets.
        if v is not None and (problem := time_range_error(v)):
            raise ValueError(problem)
        return v

    def key(self) -> str:
        if self.event_id:
            return self.event_id
        digest = hashlib.sha256(json.dumps(
            [self.type, self.ticket_id, self.occurred_at.isoformat() if self.occurred_at else None,
             self.subject, self.body], ensure_ascii=False).encode()).hexdigest()
        return f"sha256:{digest[:32]}"


_LABEL_FIELDS = ("queue", "type", "priority", "intent")


def parse_event(raw: Any) -> TicketEvent:
    """Validate one event (either shape); errors name the field."""
    if not isinstance(raw, dict):
        raise ValidationError("an event must be a JSON object", field="event")
    data = dict(raw)
    if not str(data.get("type", "")).startswith("ticket.") and "id" in data:
        ticket_id = id_text(data["id"], "id")
        labels = {k: _label_text(data[k], f"labels.{k}") for k in _LABEL_FIELDS if k in data}
        tags = data.get("tags") or []
        data = {
            "type": "ticket.created",
            "ticket_id": ticket_id,
            "event_id": f"import:{ticket_id}",
            "subject": data.get("subject") or "",
            "body": data.get("body") or "",
            "language": data.get("language"),
            "channel": data.get("channel") or data.get("source"),
            "tags": [str(t) for t in tags if t] if isinstance(tags, list) else [],
            "labels": labels,
        }
    try:
        return TicketEvent.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors(include_url=False)[0]
        from atum_ai.queue.validation import field_path

        # field_path quotes a key that is not a plain name (a label key may hold anything).
        where = field_path(err["loc"], root="").lstrip(".") or "event"
        raise ValidationError(str(err["msg"]).removeprefix("Value error, "), field=where) from None


@dataclass(frozen=True)
class IngestResult:
    ticket_id: str
    event_key: str
    duplicate: bool
    job_id: uuid.UUID | None


_UPSERT_CREATED = """
INSERT INTO tickets (organization_id, ticket_id, subject, body, status, priority, language, tags,
                     channel, labels, created_at, last_customer_at, updated_at)
VALUES (%(org)s, %(ticket)s, %(subject)s, %(body)s, 'open', %(priority)s, %(language)s, %(tags)s,
        %(channel)s, %(labels)s, %(at)s, %(at)s, %(now)s)
ON CONFLICT (organization_id, ticket_id) DO UPDATE
   SET subject = CASE WHEN EXCLUDED.subject <> '' THEN EXCLUDED.subject ELSE tickets.subject END,
       body = CASE WHEN EXCLUDED.body <> '' THEN EXCLUDED.body ELSE tickets.body END,
       priority = coalesce(EXCLUDED.priority, tickets.priority),
       language = coalesce(EXCLUDED.language, tickets.language),
       channel = coalesce(EXCLUDED.channel, tickets.channel),
       labels = coalesce(EXCLUDED.labels, tickets.labels),
       created_at = least(tickets.created_at, EXCLUDED.created_at),
       updated_at = EXCLUDED.updated_at
"""

_CUSTOMER_REPLIED = """
INSERT INTO tickets (organization_id, ticket_id, subject, body, status, created_at,
                     last_customer_at, updated_at)
VALUES (%(org)s, %(ticket)s, coalesce(%(subject)s, ''), %(body)s, 'open', %(at)s, %(at)s, %(now)s)
ON CONFLICT (organization_id, ticket_id) DO UPDATE
   SET body = right(tickets.body || E'\n\n' || EXCLUDED.body, %(max_body)s),
       status = 'open', resolved_at = NULL, message_count = tickets.message_count + 1,
       last_customer_at = greatest(tickets.last_customer_at, EXCLUDED.last_customer_at),
       updated_at = EXCLUDED.updated_at
"""

_AGENT_REPLIED = """
INSERT INTO tickets (organization_id, ticket_id, status, created_at, first_response_at, updated_at)
VALUES (%(org)s, %(ticket)s, 'pending', %(at)s, %(at)s, %(now)s)
ON CONFLICT (organization_id, ticket_id) DO UPDATE
   SET first_response_at = CASE WHEN tickets.first_response_at IS NULL
                                  OR EXCLUDED.first_response_at < tickets.first_response_at
                                THEN EXCLUDED.first_response_at ELSE tickets.first_response_at END,
       status = CASE WHEN tickets.status = 'resolved' THEN 'resolved' ELSE 'pending' END,
       message_count = tickets.message_count + 1,
       updated_at = EXCLUDED.updated_at
"""

_RESOLVED = """
INSERT INTO tickets (organization_id, ticket_id, status, created_at, resolved_at, updated_at)
VALUES (%(org)s, %(ticket)s, 'resolved', %(at)s, %(at)s, %(now)s)
ON CONFLICT (organization_id, ticket_id) DO UPDATE
   SET resolved_at = EXCLUDED.resolved_at, status = 'resolved', updated_at = EXCLUDED.updated_at
"""

_SQL = {
    "ticket.created": _UPSERT_CREATED,
    "ticket.customer_replied": _CUSTOMER_REPLIED,
    "ticket.agent_replied": _AGENT_REPLIED,
    "ticket.resolved": _RESOLVED,
}
TRIAGE_EVENTS = {"ticket.created": "ticket.created", "ticket.customer_replied": "ticket.customer_replied"}


async def ensure_organization(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                              name: str | None = None) -> None:
    await conn.execute("INSERT INTO organizations (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                       (organization_id, name))


async def ingest_event(
    conn: AsyncConnection[Any],
    organization_id: uuid.UUID,
    event: TicketEvent | dict[str, Any],
    *,
    store: JobStore | None = None,
    clock: Clock | None = None,
) -> IngestResult:
    """Apply one event on ``conn`` (inside the caller's transaction when one is open)."""
    ev = event if isinstance(event, TicketEvent) else parse_event(event)
    clock = clock or (store.clock if store else SystemClock())
    store = store or JobStore(clock)
    now = clock.now()
    at = ev.occurred_at or now
    key = ev.key()
    async with conn.transaction():
        await ensure_organization(conn, organization_id)
        cur = await conn.execute(
            "INSERT INTO ticket_events (organization_id, event_key, ticket_id, event_type, occurred_at,"
            " body, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (organization_id, event_key) DO NOTHING RETURNING event_key",
            (organization_id, key, ev.ticket_id, ev.type, at, ev.body, now),
        )
        if await cur.fetchone() is None:
            return IngestResult(ev.ticket_id, key, True, None)
        await conn.execute(_SQL[ev.type], {
            "org": organization_id, "ticket": ev.ticket_id, "subject": ev.subject or "",
            "body": ev.body or "", "priority": ev.priority, "language": ev.language,
            "tags": ev.tags, "channel": ev.channel,
            "labels": Jsonb(ev.labels) if ev.labels else None, "at": at, "now": now,
            "max_body": MAX_MIRROR_BODY,
        })
        job_id = None
        if ev.type in TRIAGE_EVENTS:
            res = await store.enqueue(conn, NewJob(
                organization_id=organization_id, job_type="TRIAGE_TICKET",
                payload={"ticket_id": ev.ticket_id, "event": ev.type},
                dedupe_key=f"triage:{ev.ticket_id}:{key}"[:500],
                # New tickets first: a reply to an open conversation is less urgent than a
                # customer nobody has answered yet.
                priority=1 if ev.type == "ticket.created" else 0,
            ))
            job_id = res.id
    return IngestResult(ev.ticket_id, key, False, job_id)
