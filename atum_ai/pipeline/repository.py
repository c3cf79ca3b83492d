"""TenantRepository: the read-only window a handler has on the database.

Every method filters by the organization the repository was built for, so a handler cannot
read another tenant's tickets, articles, models or suggestions, whatever payload it is given.
It borrows a pool connection per call and never writes: effects are returned as data and
stored by the worker in the completion transaction.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from atum_ai.clock import Clock, SystemClock

# Used when an organization has no policy rows (minutes to first response / resolution).
DEFAULT_SLA_POLICY: dict[str, tuple[int, int]] = {
    "urgent": (60, 4 * 60),
    "high": (4 * 60, 24 * 60),
    "medium": (8 * 60, 72 * 60),
    "low": (24 * 60, 7 * 24 * 60),
}


@dataclass(frozen=True)
class TicketView:
    ticket_id: str
    subject: str
    body: str
    status: str
    priority: str | None
    queue: str | None
    ticket_type: str | None
    language: str | None
    tags: list[str]
    channel: str | None
    created_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    message_count: int


@dataclass(frozen=True)
class Taxonomy:
    """The organization's label sets with descriptions: {field: {label: description}}."""

    fields: dict[str, dict[str, str]] = field(default_factory=dict)

    def labels(self, name: str) -> list[str]:
        return sorted(self.fields.get(name, {}))

    def describe(self, name: str) -> list[tuple[str, str]]:
        return sorted(self.fields.get(name, {}).items())

    @property
    def empty(self) -> bool:
        return not any(self.fields.values())


class TenantCache:
    """Per-organization reads that change rarely (settings, taxonomy, SLA policy, the latest
    model version), kept for ``ttl`` seconds by one worker process.

    Every ticket job asked for them again: two or three pool checkouts (each with its
    connection check, a round trip) per job before it did its own work. An edit through the
    CLI reaches running workers within ``ttl``. Keys always include the organization, so one
    tenant's entry can never answer another's read.
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._items: dict[tuple[uuid.UUID, str], tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, org: uuid.UUID, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, or one load shared by every job that asks while it runs (64 jobs
        starting together would otherwise all miss and all query)."""
        now = time.monotonic()
        hit = self._items.get((org, key))
        if hit is not None and hit[0] > now and not (hit[1].done() and hit[1].exception()):
            return await asyncio.shield(hit[1])
        if len(self._items) > 10_000:  # many tenants: start over rather than grow without bound
            self._items.clear()
        future = asyncio.ensure_future(load())
        self._items[(org, key)] = (now + self.ttl, future)
        try:
            return await asyncio.shield(future)
        except Exception:
            if future.done() and self._items.get((org, key), (0.0, None))[1] is future:
                del self._items[(org, key)]  # a failed load is not remembered
            raise


class TenantRepository:
    def __init__(self, pool: AsyncConnectionPool, organization_id: uuid.UUID,
                 *, clock: Clock | None = None, cache: TenantCache | None = None) -> None:
        self.pool = pool
        self.organization_id = organization_id
        self.clock = clock or SystemClock()
        self.cache = cache

    async def _cached(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        if self.cache is None:
            return await load()
        return await self.cache.get(self.organization_id, key, load)

    async def _one(self, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, {"org": self.organization_id, **params})  # type: ignore[arg-type]
            return await cur.fetchone()

    async def _all(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, {"org": self.organization_id, **params})  # type: ignore[arg-type]
            return list(await cur.fetchall())

    async def organization_settings(self) -> dict[str, Any]:
        async def load() -> dict[str, Any]:
            row = await self._one("SELECT settings FROM organizations WHERE id = %(org)s", {})
            return dict(row["settings"]) if row else {}

        return dict(await self._cached("settings", load))

    async def get_ticket(self, ticket_id: str) -> TicketView | None:
        row = await self._one(
            "SELECT ticket_id, subject, body, status, priority, queue, ticket_type, language, tags,"
            " channel, created_at, first_response_at, resolved_at, message_count"
            " FROM tickets WHERE organization_id = %(org)s AND ticket_id = %(t)s",
            {"t": ticket_id},
        )
        return TicketView(**row) if row else None

    async def taxonomy(self) -> Taxonomy:
        async def load() -> Taxonomy:
            rows = await self._all(
                "SELECT field, label, description FROM taxonomy_labels WHERE organization_id = %(org)s",
                {},
            )
            fields: dict[str, dict[str, str]] = {}
            for r in rows:
                fields.setdefault(r["field"], {})[r["label"]] = r["description"]
            return Taxonomy(fields)

        return await self._cached("taxonomy", load)  # frozen; handlers only read it

    async def sla_policy(self) -> dict[str, tuple[int, int]]:
        async def load() -> dict[str, tuple[int, int]]:
            rows = await self._all(
                "SELECT priority, first_response_minutes, resolution_minutes FROM sla_policies"
                " WHERE organization_id = %(org)s", {},
            )
            policy = dict(DEFAULT_SLA_POLICY)
            policy.update({r["priority"]: (r["first_response_minutes"], r["resolution_minutes"])
                           for r in rows})
            return policy

        return dict(await self._cached("sla_policy", load))

    async def search_kb(self, query: str, k: int = 5, language: str | None = None,
                        query_language: str | None = None) -> list[Any]:
        from atum_ai.local.kb_search import search_articles

        async with self.pool.connection() as conn:
            return await search_articles(conn, self.organization_id, query, k=k, language=language,
                                         query_language=query_language)

    async def kb_articles(self, article_ids: list[str]) -> list[dict[str, Any]]:
        return await self._all(
            "SELECT article_id, title, body, url, language FROM kb_articles"
            " WHERE organization_id = %(org)s AND article_id = ANY(%(ids)s)",
            {"ids": article_ids},
        )

    async def latest_model_version(self, kind: str) -> int | None:
        async def load() -> int | None:
            row = await self._one(
                "SELECT max(version) AS v FROM trained_models WHERE organization_id = %(org)s"
                " AND kind = %(k)s", {"k": kind},
            )
            return row["v"] if row else None

        return await self._cached(f"model:{kind}", load)

    async def load_model(self, kind: str, version: int) -> tuple[bytes, dict[str, Any]] | None:
        row = await self._one(
            "SELECT model, metadata FROM trained_models"
            " WHERE organization_id = %(org)s AND kind = %(k)s AND version = %(v)s",
            {"k": kind, "v": version},
        )
        return (bytes(row["model"]), row["metadata"]) if row else None

    async def suggestion(self, ticket_id: str, kind: str) -> dict[str, Any] | None:
        return await self._one(
            "SELECT id, content, model, prompt_version, confidence, updated_at FROM suggestions"
            " WHERE organization_id = %(org)s AND ticket_id = %(t)s AND kind = %(k)s",
            {"t": ticket_id, "k": kind},
        )

    async def day_metrics(self, day: date, tz: str) -> dict[str, Any]:
        from atum_ai.pipeline.metrics import compute_day_metrics

        async with self.pool.connection() as conn:
            return await compute_day_metrics(conn, self.organization_id, day, tz)
