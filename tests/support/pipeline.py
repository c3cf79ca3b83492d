"""Helpers for pipeline tests: the project's fixtures, a real burst worker wired exactly as
production wires it (``runtime``), and small "what is in the database" queries."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from atum_ai.clock import Clock, SystemClock
from atum_ai.config import Settings
from atum_ai.handlers.registry import Registry
from atum_ai.queue.store import JobStore
from atum_ai.runtime import build_context_builder, load_registry, make_store, open_pool
from atum_ai.worker.service import Worker, WorkerConfig, required_pool_size

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LLM_ENV = ("ATUM_LLM_BASE_URL", "ATUM_LLM_API_KEY", "ATUM_LLM_MODEL", "ATUM_LLM_TASK_MODELS")


def read_jsonl(name: str) -> list[dict[str, Any]]:
    with (FIXTURES / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fixture_taxonomy() -> dict[str, dict[str, str]]:
    return json.loads((FIXTURES / "taxonomy.json").read_text(encoding="utf-8"))


def local_settings(**overrides: Any) -> Settings:
    """Settings with no LLM, whatever the environment says (init kwargs win over env)."""
    return Settings(llm_base_url=None, llm_model=None, llm_api_key=None, **overrides)


def run_cli(argv: Sequence[str]) -> int:
    """``atum_ai.cli.main(argv)`` in-process, then put logging back as it was: the CLI installs
    its own root handler on the stderr of the moment (pytest's capture, closed after the test),
    which would otherwise outlive the test and log into a closed stream."""
    from atum_ai.cli import main

    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "openai", "psycopg.pool")})
    try:
        return main(list(argv))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def store_for(settings: Settings, registry: Registry, clock: Clock | None = None) -> JobStore:
    return make_store(settings, clock or SystemClock(), registry)


async def run_burst_worker(
    db_url: str,
    settings: Settings,
    *,
    registry: Registry | None = None,
    clock: Clock | None = None,
    job_types: Sequence[str] | None = None,
    concurrency: int = 4,
    timeout: float = 60.0,
) -> Worker:
    """Run a burst Worker with the real registry/store/context builder until nothing is
    runnable; returns the finished worker (``processed`` etc.)."""
    registry = registry or load_registry()
    clock = clock or SystemClock()
    store = make_store(settings, clock, registry)
    config = WorkerConfig(concurrency=concurrency, job_types=job_types, burst=True,
                          lease_seconds=30, grace_seconds=2, poll_interval=0.2,
                          maintenance_interval=5.0, retention=None)
    async with open_pool(db_url, max_size=required_pool_size(concurrency), min_size=1) as pool:
        builder = build_context_builder(settings, pool, clock)
        worker = Worker(pool=pool, conninfo=db_url, store=store, registry=registry,
                        context_factory=builder, config=config)
        try:
            assert await asyncio.wait_for(worker.run(install_signals=False), timeout) == 0
        finally:
            if builder.llm is not None:
                await builder.llm.aclose()
    return worker


async def scalar(conn: AsyncConnection[Any], sql: str, *params: Any) -> Any:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else (row[0] if not isinstance(row, dict) else next(iter(row.values())))


async def rows(conn: AsyncConnection[Any], sql: str, *params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


async def table_counts(conn: AsyncConnection[Any], org: uuid.UUID | None = None) -> dict[str, int]:
    """Row counts of the tables ingest and the pipeline write (all tenants, or one)."""
    out = {}
    for table, col in (("organizations", "id"), ("tickets", "organization_id"),
                       ("ticket_events", "organization_id"), ("job_queue", "organization_id"),
                       ("job_events", "organization_id"), ("suggestions", "organization_id")):
        where = f" WHERE {col} = %s" if org else ""
        out[table] = int(await scalar(conn, f"SELECT count(*) FROM {table}{where}", *([org] if org else [])))
    return out


async def job_statuses(conn: AsyncConnection[Any], org: uuid.UUID) -> dict[tuple[str, str], int]:
    got = await rows(conn, "SELECT job_type, status, count(*) AS n FROM job_queue"
                           " WHERE organization_id = %s GROUP BY 1, 2", org)
    return {(r["job_type"], r["status"]): int(r["n"]) for r in got}


async def suggestions_by_ticket(conn: AsyncConnection[Any], org: uuid.UUID) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in await rows(conn, "SELECT * FROM suggestions WHERE organization_id = %s", org):
        out.setdefault(r["ticket_id"], {})[r["kind"]] = r
    return out
