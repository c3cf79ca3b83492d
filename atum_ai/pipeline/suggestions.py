"""How agents receive suggestions and give feedback (Python API; the CLI wraps it).

* SQL: the ``suggestions`` table, one row per (organization, ticket, kind).
* NOTIFY: channel ``atum_ai_suggestions``, payload
  ``{"organization_id", "ticket_id", "kind", "suggestion_id"}`` on every new or changed
  suggestion (a trigger, so every writer notifies).
* Feedback: accepted / edited / rejected (+ the edited text), counted by METRICS_SNAPSHOT. An
  accepted or edited KB suggestion nudges the top article's ranking prior.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from atum_ai.clock import Clock, SystemClock
from atum_ai.errors import JobNotFoundError, ValidationError

SUGGESTIONS_CHANNEL = "atum_ai_suggestions"
Feedback = Literal["accepted", "edited", "rejected"]


async def list_suggestions(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                           ticket_id: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, ticket_id, kind, content, model, prompt_version, confidence, created_at,"
            " updated_at, feedback, feedback_text, feedback_at FROM suggestions"
            " WHERE organization_id = %s AND (%s::text IS NULL OR ticket_id = %s)"
            " ORDER BY ticket_id, array_position(ARRAY['triage','kb','sla','reply'], kind) LIMIT %s",
            (organization_id, ticket_id, ticket_id, limit))
        return list(await cur.fetchall())


async def get_suggestion(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                         suggestion_id: uuid.UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM suggestions WHERE organization_id = %s AND id = %s",
                          (organization_id, suggestion_id))
        return await cur.fetchone()


async def record_feedback(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                          suggestion_id: uuid.UUID, feedback: Feedback, text: str | None = None,
                          *, clock: Clock | None = None) -> dict[str, Any]:
    if feedback not in ("accepted", "edited", "rejected"):
        raise ValidationError("must be accepted, edited or rejected", field="feedback")
    if text is not None and ("\x00" in text or len(text) > 20_000):
        raise ValidationError("must be at most 20,000 characters without NUL", field="text")
    now = (clock or SystemClock()).now()
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "UPDATE suggestions SET feedback = %s, feedback_text = %s, feedback_at = %s"
                " WHERE organization_id = %s AND id = %s RETURNING id, ticket_id, kind, content",
                (feedback, text, now, organization_id, suggestion_id))
            row = await cur.fetchone()
        if row is None:
            raise JobNotFoundError(f"no suggestion {suggestion_id} in organization {organization_id}")
        if row["kind"] == "kb" and row["content"].get("articles"):
            from atum_ai.local.kb_search import add_article_boost

            top = row["content"]["articles"][0]["article_id"]
            delta = {"accepted": 0.5, "edited": 0.25, "rejected": -0.25}[feedback]
            await add_article_boost(conn, organization_id, top, delta)
    return row


async def watch_suggestions(conninfo: str, organization_id: uuid.UUID) -> AsyncIterator[dict[str, Any]]:
    """Yield each new or changed suggestion of one organization as it is written."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listen:
        await listen.execute(f"LISTEN {SUGGESTIONS_CHANNEL}")
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as reader:
            async for n in listen.notifies():
                try:
                    note = json.loads(n.payload)
                except json.JSONDecodeError:
                    continue
                if note.get("organization_id") != str(organization_id):
                    continue  # another tenant's suggestion: never read, never shown
                row = await get_suggestion(reader, organization_id, uuid.UUID(note["suggestion_id"]))
                if row is not None:
                    yield row
