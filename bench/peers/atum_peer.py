"""atum_ai under the same harness as the peers: enqueue through JobStore, workers through the
real CLI (`atum-ai --plugin tests.support.handlers:ALL worker --burst`), handler start times
from the ``started_at`` that TEST_NOOP stores in the job's result."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg

from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore
from bench.common import atum_env, atum_worker_cmd, migrate_atum, reset_atum

ORGS = [uuid.UUID(int=i + 1) for i in range(10)]  # drain/pickup jobs spread over 10 tenants


async def setup(url: str) -> None:
    await migrate_atum(url)


async def reset(url: str) -> None:
    reset_atum(url)


def _job(i: int) -> NewJob:
    return NewJob(ORGS[i % len(ORGS)], "TEST_NOOP", {"n": i})


async def enqueue_single(url: str, n: int) -> tuple[float, dict[uuid.UUID, float]]:
    store = JobStore()
    sent: dict[uuid.UUID, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        for i in range(n):
            at = time.time()
            sent[(await store.enqueue(conn, _job(i))).id] = at
        return time.perf_counter() - t0, sent


async def enqueue_paced(url: str, n: int, gap: float) -> dict[uuid.UUID, float]:
    store = JobStore()
    sent: dict[uuid.UUID, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(n):
            at = time.time()
            sent[(await store.enqueue(conn, _job(i))).id] = at
            await asyncio.sleep(max(0.0, gap - (time.time() - at)))
    return sent


async def enqueue_bulk(url: str, n: int) -> float:
    store = JobStore()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        jobs = [_job(i) for i in range(n)]
        t0 = time.perf_counter()
        await store.enqueue_many(conn, jobs)
        return time.perf_counter() - t0


async def count_done(url: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'DONE'), count(*) FROM job_queue")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


async def starts(url: str) -> dict[uuid.UUID, float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT id, (result->>'started_at')::float8 FROM job_queue"
            " WHERE status = 'DONE' AND result ? 'started_at'")
        return {r[0]: r[1] for r in await cur.fetchall()}


def worker_cmd(concurrency: int, serve: bool = False) -> list[str]:
    return atum_worker_cmd(concurrency, burst=not serve)


def worker_env(url: str) -> dict[str, str]:
    return atum_env(url)
