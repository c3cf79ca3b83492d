"""Pieces the built-in ticket handlers share: payload fields, suggestion upserts, model
loading with a per-process cache, and the PII decision."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import Field, StringConstraints

from atum_ai.handlers.base import HandlerContext, HandlerResult, Result
from atum_ai.queue.models import Job, uuid7

TicketId = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
LanguageCode = Annotated[str, StringConstraints(pattern=r"^([a-z]{2}|und)$")]
Band = Literal["High", "Medium", "Low"]
SuggestionKind = Literal["triage", "kb", "reply", "sla"]

M = TypeVar("M")


def band_for(confidence: float) -> Band:
    """High >= 0.8, Medium >= 0.5, else Low (the same bands the local models use)."""
    return "High" if confidence >= 0.8 else "Medium" if confidence >= 0.5 else "Low"


class ScoredLabel(Result):
    label: str
    confidence: float = Field(ge=0, le=1)
    band: Band


def scored(label: str, confidence: float) -> ScoredLabel:
    # Band from the stored (rounded) value, so that band == band_for(confidence) always holds.
    c = round(max(0.0, min(1.0, float(confidence))), 4)
    return ScoredLabel(label=label, confidence=c, band=band_for(c))


class _ModelCache:
    """Deserialised per-organization models, keyed by (org, kind, version): every worker on
    every machine loads the same stored version, and loads it once per process.

    Once also while it loads: jobs that need a model being fetched and deserialised wait for
    that one load. Without this, the 16 jobs a worker starts at once each fetched and
    unpickled their own copy of a 9 MB model: the worker's memory peaked at 1 GB and stayed at
    800 MB (freed memory is not returned to the OS)."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[tuple[uuid.UUID, str, int], Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._loading: dict[tuple[uuid.UUID, str, int], asyncio.Future[Any]] = {}

    def get(self, key: tuple[uuid.UUID, str, int]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple[uuid.UUID, str, int], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    async def get_or_load(self, key: tuple[uuid.UUID, str, int],
                          load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached model, or the result of ``load()`` run once for all who ask meanwhile
        (None from ``load`` is not cached)."""
        cached = self.get(key)
        if cached is not None:
            return cached
        pending = self._loading.get(key)
        if pending is None:
            async def load_and_keep() -> Any:
                value = await load()
                if value is not None:
                    self.put(key, value)
                return value

            pending = self._loading[key] = asyncio.ensure_future(load_and_keep())
            pending.add_done_callback(lambda _f: self._loading.pop(key, None))
        return await asyncio.shield(pending)


MODEL_CACHE = _ModelCache()


async def load_model(ctx: HandlerContext, kind: str, loader: Callable[[bytes], M]) -> tuple[M, int] | None:
    version = await ctx.repo.latest_model_version(kind)
    if version is None:
        return None

    async def fetch_and_deserialise() -> M | None:
        stored = await ctx.repo.load_model(kind, version)
        return None if stored is None else await asyncio.to_thread(loader, stored[0])

    model = await MODEL_CACHE.get_or_load((ctx.organization_id, kind, version), fetch_and_deserialise)
    return (model, version) if model is not None else None


async def mask_pii_for(ctx: HandlerContext) -> bool:
    """Per-organization setting first ("on"/"off"), else the deployment default (on when the
    LLM endpoint is not on this machine)."""
    setting = (await ctx.repo.organization_settings()).get("pii_masking")
    if setting in ("on", "off"):
        return setting == "on"
    return ctx.settings.mask_pii


async def upsert_suggestion(
    conn: AsyncConnection[Any],
    job: Job,
    *,
    ticket_id: str,
    kind: SuggestionKind,
    outcome: HandlerResult[Any],
    confidence: float | None,
) -> None:
    """One suggestion per (organization, ticket, kind); a newer job replaces the content and
    clears feedback that was about the old content. A trigger NOTIFYs agents."""
    audit = outcome.audit
    await conn.execute(
        """
        INSERT INTO suggestions (id, organization_id, ticket_id, kind, job_id, content, model,
                                 prompt_version, confidence, created_at, updated_at)
        VALUES (%(id)s, %(org)s, %(ticket)s, %(kind)s, %(job)s, %(content)s, %(model)s,
                %(prompt)s, %(confidence)s, now(), now())
        ON CONFLICT (organization_id, ticket_id, kind) DO UPDATE
           SET job_id = EXCLUDED.job_id, content = EXCLUDED.content, model = EXCLUDED.model,
               prompt_version = EXCLUDED.prompt_version, confidence = EXCLUDED.confidence,
               updated_at = now(), feedback = NULL, feedback_text = NULL, feedback_at = NULL
        """,
        {
            "id": uuid7(), "org": job.organization_id, "ticket": ticket_id, "kind": kind,
            "job": job.id, "content": Jsonb(outcome.result.model_dump(mode="json")),
            "model": audit.get("model"),
            "prompt": (f"{audit['prompt']}@{audit['prompt_sha256'][:12]}"
                       if audit.get("prompt") and audit.get("prompt_sha256") else None),
            "confidence": confidence,
        },
    )
    await record_llm_usage(conn, job, audit)


async def record_llm_usage(conn: AsyncConnection[Any], job: Job, audit: dict[str, Any]) -> None:
    if audit.get("source") != "llm":
        return
    usage = audit.get("usage") or {}
    await conn.execute(
        "INSERT INTO llm_usage (organization_id, job_id, job_type, model, prompt_tokens,"
        " completion_tokens, cost_usd, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (job.organization_id, job.id, job.job_type, audit.get("model") or "?",
         int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
         float(audit.get("cost_usd") or 0), audit.get("latency_ms")),
    )
