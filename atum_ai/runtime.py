"""Wiring: turn Settings into the live objects the commands and the worker need.

Configuration is read once at the edge (the CLI) and everything below receives its
dependencies explicitly. This module is the only place that knows how the parts fit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from atum_ai.clock import Clock, SystemClock
from atum_ai.config import Settings
from atum_ai.errors import ConfigError
from atum_ai.handlers.base import Handler, HandlerContext
from atum_ai.handlers.registry import Registry, build_registry
from atum_ai.logs import ContextAdapter
from atum_ai.pipeline.repository import TenantCache, TenantRepository
from atum_ai.queue.migrate import discover, applied, migrate
from atum_ai.queue.models import Job
from atum_ai.queue.retry import RetryPolicy
from atum_ai.queue.store import JobStore
from atum_ai.redact import register_secret

log = logging.getLogger(__name__)


@contextlib.contextmanager
def database_url(settings: Settings, *, announce: Any = None) -> Iterator[tuple[str, bool]]:
    """Yield (url, embedded). With ATUM_DATABASE_URL unset, start the embedded server for as
    long as the command runs."""
    if settings.database_url:
        yield settings.database_url, False
        return
    from pathlib import Path

    from atum_ai.embedded import start_embedded

    with start_embedded(Path(settings.data_dir) if settings.data_dir else None) as server:
        if announce:
            announce(server.message)
        yield server.url, True


async def ensure_schema(url: str, *, auto: bool) -> None:
    """Apply migrations when ``auto`` (embedded demo); otherwise refuse to run on an
    out-of-date schema with a message that says what to do."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if auto:
            await migrate(conn)
            return
        done = await applied(conn)
        pending = [m.name for m in discover() if m.name not in done]
        if pending:
            raise ConfigError(
                f"the database schema is not up to date ({len(pending)} pending migration(s), "
                f"first {pending[0]}); run `atum-ai migrate`"
            )


def make_store(settings: Settings, clock: Clock | None = None, registry: Registry | None = None) -> JobStore:
    return JobStore(
        clock or SystemClock(),
        validator=registry,
        max_payload_bytes=settings.max_payload_bytes,
        retry_policy=RetryPolicy(
            base_seconds=settings.backoff_base_seconds,
            cap_seconds=settings.backoff_cap_seconds,
            jitter=settings.backoff_jitter,
        ),
    )


def load_registry(plugin_specs: list[str] | None = None) -> Registry:
    """Built-ins + entry points + ``--plugin module:attr`` specs (development and tests).
    ``ATUM_NO_BUILTINS=1`` leaves the built-in AI handlers out (queue-only deployments)."""
    import os

    from atum_ai.handlers.registry import _instantiate, _load

    registry = build_registry(builtins=os.environ.get("ATUM_NO_BUILTINS") != "1")
    for spec in plugin_specs or []:
        obj = _load(spec)
        handlers = obj if isinstance(obj, list | tuple) else [obj]
        for h in handlers:
            registry.register(_instantiate(h), origin=f"--plugin {spec}")
    return registry


POOL_RECONNECT_SECONDS = 4.0


@contextlib.asynccontextmanager
async def open_pool(url: str, *, max_size: int, min_size: int = 1) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(
        url, min_size=min(min_size, max_size), max_size=max_size, open=False,
        kwargs={"autocommit": True}, timeout=30,
        # A connection broken by a server restart is found and replaced before use.
        check=AsyncConnectionPool.check_connection,
        # psycopg_pool retries a lost connection with doubling delays (1, 2, 4, 8, 16 s ...)
        # for reconnect_timeout: after a 20 s outage the next attempt came up to 11 s after
        # the server was back, and workers sat idle meanwhile. Giving up after a few seconds
        # instead lets demand (a claim, or the pool check the worker runs when its LISTEN
        # connection gets back in) start a fresh attempt at once.
        reconnect_timeout=POOL_RECONNECT_SECONDS,
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()


@dataclass
class ContextBuilder:
    """Builds each job's HandlerContext: tenant-scoped repository, prompts, LLM, clock."""

    settings: Settings
    pool: AsyncConnectionPool
    clock: Clock
    prompts: Any
    llm: Any
    # Shared by every job this worker runs (settings, taxonomy ... for a few seconds).
    tenant_cache: TenantCache = field(default_factory=TenantCache)

    def __call__(self, job: Job, handler: Handler[Any, Any]) -> HandlerContext:

        logger = ContextAdapter(logging.getLogger(f"atum_ai.handlers.{job.job_type}"), {
            "job_id": str(job.id), "organization_id": str(job.organization_id)})
        return HandlerContext(
            job_id=job.id,
            organization_id=job.organization_id,
            job_type=job.job_type,
            attempt=job.attempt,
            clock=self.clock,
            logger=logger,
            settings=self.settings,
            repo=TenantRepository(self.pool, job.organization_id, clock=self.clock,
                                  cache=self.tenant_cache),
            prompts=self.prompts,
            llm=self.llm,
            parent_id=job.parent_id,
        )


def build_context_builder(settings: Settings, pool: AsyncConnectionPool, clock: Clock) -> ContextBuilder:
    from atum_ai.ai.client import build_llm_client
    from atum_ai.ai.prompts import PromptRenderer

    if settings.llm_api_key:
        register_secret(settings.llm_api_key.get_secret_value())
    return ContextBuilder(settings, pool, clock, PromptRenderer(), build_llm_client(settings))
