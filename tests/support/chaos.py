"""Helpers for the chaos, outage, contention, bad-input, isolation, injection and secrets tests.

Sizes: every test here runs small by default (the whole set stays within a few minutes in
CI); ``ATUM_FULL_TESTS=1`` switches to the full sizes the issue asks for (5,000 chaos jobs,
a 60 s contention run). :func:`size` picks between the two.

Worker subprocesses come from :mod:`tests.support.processes` (a colleague's helpers); this
module adds a private PostgreSQL that a test may stop and restart, the job-event chain
checker, and small queries.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from atum_ai.queue.migrate import migrate
from atum_ai.queue.models import JobEvent
from atum_ai.testing.pg import TemporaryCluster, _pg_bin, with_database

FULL = os.environ.get("ATUM_FULL_TESTS") == "1"


def size(ci: Any, full: Any) -> Any:
    """The CI size, or the full size under ``ATUM_FULL_TESTS=1``."""
    return full if FULL else ci


# ---------------------------------------------------------------------------- own cluster
@pytest.fixture
def private_pg() -> Iterator[TemporaryCluster]:
    """A throw-away PostgreSQL cluster of this test alone (never the system server on 5432):
    the test may stop, start and restart it."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("needs initdb/pg_ctl to run a throw-away PostgreSQL")
    cluster = TemporaryCluster().init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def migrated_database(cluster: TemporaryCluster, name: str = "atum") -> str:
    """Create and migrate a database on ``cluster``; returns its URL."""
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(cluster.url, name)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)
        await create_effects_table(conn)
    return url


async def create_effects_table(conn: AsyncConnection[Any]) -> None:
    """TEST_SLEEP records its effect in ``test_effects`` (creating it on first use); create
    it up front so concurrent first uses cannot race on CREATE TABLE."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS test_effects"
        " (job_id uuid, organization_id uuid, at timestamptz DEFAULT now())")


async def connect_retrying(url: str, timeout: float = 60) -> AsyncConnection[Any]:
    """Connect, waiting out a PostgreSQL that is restarting."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------- queries
async def status_counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT status, count(*) FROM job_queue GROUP BY 1")
    return {r[0]: int(r[1]) for r in await cur.fetchall()}


async def effect_counts(conn: AsyncConnection[Any]) -> dict[uuid.UUID, int]:
    cur = await conn.execute("SELECT job_id, count(*) FROM test_effects GROUP BY 1")
    return {r[0]: int(r[1]) for r in await cur.fetchall()}


async def all_events(conn: AsyncConnection[Any]) -> dict[uuid.UUID, list[JobEvent]]:
    """Every job's events, oldest first (by id: events are written under the row lock of
    the transition they record, so id order is transition order)."""
    from psycopg.rows import dict_row

    out: dict[uuid.UUID, list[JobEvent]] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM job_events ORDER BY job_id, id")
        for r in await cur.fetchall():
            out.setdefault(r["job_id"], []).append(JobEvent(**r))
    return out


# ---------------------------------------------------------------------------- event chains
_NEEDS_CLAIM = {"SUCCEEDED", "RETRY_SCHEDULED", "RELEASED", "RECOVERED", "DEAD", "FAILED"}


def chain_problems(events: Sequence[JobEvent], *, expect_done: bool = True) -> list[str]:
    """What is wrong with one job's event chain (empty: valid).

    ENQUEUED first; every SUCCEEDED / RETRY_SCHEDULED / RELEASED / RECOVERED / DEAD closes a
    CLAIMED that is still open; every event's from_status is the previous event's to_status;
    CLAIMED attempts never go backwards; with ``expect_done`` exactly one SUCCEEDED, last."""
    problems: list[str] = []
    if not events:
        return ["no events"]
    first = events[0]
    if (first.event_type, first.from_status, first.to_status) != ("ENQUEUED", None, "PENDING"):
        problems.append(f"first event is {first.event_type} {first.from_status}->{first.to_status}")
    state = first.to_status
    claimed = False
    last_attempt = 0
    for e in events[1:]:
        if e.event_type == "ENQUEUED":
            problems.append("a second ENQUEUED")
        if e.from_status != state:
            problems.append(f"{e.event_type} from {e.from_status} but the job was {state}")
        if e.event_type == "CLAIMED":
            if claimed:
                problems.append("CLAIMED while already claimed")
            if e.to_status != "RUNNING":
                problems.append(f"CLAIMED to {e.to_status}")
            if (e.attempt or 0) < last_attempt:
                problems.append(f"attempt went back from {last_attempt} to {e.attempt}")
            last_attempt = e.attempt or 0
            claimed = True
        elif e.event_type in _NEEDS_CLAIM or (e.event_type == "CANCELLED" and e.from_status == "RUNNING"):
            if not claimed:
                problems.append(f"{e.event_type} without an open CLAIMED")
            claimed = False
        state = e.to_status
    succeeded = [i for i, e in enumerate(events) if e.event_type == "SUCCEEDED"]
    if expect_done:
        if len(succeeded) != 1:
            problems.append(f"{len(succeeded)} SUCCEEDED events")
        elif succeeded[0] != len(events) - 1:
            problems.append("SUCCEEDED is not the last event")
        if state != "DONE":
            problems.append(f"ends in {state}")
    return problems


def describe_chain(events: Sequence[JobEvent]) -> str:
    return " ".join(f"{e.event_type}({e.from_status}->{e.to_status}#{e.attempt})" for e in events)


# ---------------------------------------------------------------------------- logs
def log_lines_between(text: str, start: datetime, end: datetime) -> list[str]:
    """JSON log lines whose ``ts`` falls in [start, end]; non-JSON lines (tracebacks) are
    counted with the last timestamped line before them."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                ts = datetime.fromisoformat(json.loads(line)["ts"])
            except (ValueError, KeyError):
                ts = None
            if ts is not None:
                inside = start <= ts <= end
        if inside:
            out.append(line)
    return out


def contains_any(text: str, needles: Sequence[str]) -> list[str]:
    return [n for n in needles if n in text]


# ---------------------------------------------------------------------------- in-process worker
async def run_burst(db_url: str, registry: Any, *, settings: Any = None, concurrency: int = 4,
                    timeout: float = 120.0, context_factory: Any = None) -> Any:
    """Drain the queue with an in-process burst Worker wired as production wires it
    (``runtime``): the given registry, a store validating with it, the real context builder
    (tenant repository, prompts, LLM client from ``settings``) unless one is given."""
    import asyncio

    from atum_ai.clock import SystemClock
    from atum_ai.config import Settings
    from atum_ai.runtime import build_context_builder, make_store, open_pool
    from atum_ai.worker.service import Worker, WorkerConfig, required_pool_size

    settings = settings or Settings(llm_base_url=None, llm_model=None, llm_api_key=None)
    clock = SystemClock()
    config = WorkerConfig(concurrency=concurrency, burst=True, lease_seconds=30, grace_seconds=2,
                          poll_interval=0.1, maintenance_interval=5.0, retention=None, prefetch=0)
    async with open_pool(db_url, max_size=required_pool_size(concurrency), min_size=1) as pool:
        builder = context_factory or build_context_builder(settings, pool, clock)
        worker = Worker(pool=pool, conninfo=db_url, store=make_store(settings, clock, registry),
                        registry=registry, context_factory=builder, config=config)
        try:
            assert await asyncio.wait_for(worker.run(install_signals=False), timeout) == 0
        finally:
            llm = getattr(builder, "llm", None)
            if llm is not None:
                await llm.aclose()
    return worker


async def row_counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Row counts of every table enqueue and ingest write."""
    out = {}
    for table in ("organizations", "tickets", "ticket_events", "job_queue", "job_events",
                  "suggestions"):
        cur = await conn.execute(f"SELECT count(*) FROM {table}")  # type: ignore[arg-type]
        out[table] = int((await cur.fetchone())[0])
    return out
