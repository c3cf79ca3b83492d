"""pgqueuer as a peer: schema, enqueue (single and batch) and a worker process that records
when each no-op job started (in memory, written as JSON at exit).

Settings for throughput follow pgqueuer's performance-tuning guide: the asyncpg driver on a
dedicated connection for the QueueManager, ``batch_size`` raised for short jobs, and
``max_concurrent_tasks`` = concurrency (the guide requires it to be at least 2 x batch_size,
so batch_size = concurrency // 2). Concurrency 1 cannot be expressed with
``max_concurrent_tasks`` (minimum 2), so it uses the entrypoint's ``concurrency_limit=1`` with
``batch_size=1``, the documented way to serialise an entrypoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

STARTS: list[tuple[int, float]] = []


async def _conn(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def setup(url: str) -> None:
    conn = await _conn(url)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def reset(url: str) -> None:
    conn = await _conn(url)
    try:
        await conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        await conn.execute("VACUUM ANALYZE pgqueuer")
    finally:
        await conn.close()


async def enqueue_single(url: str, n: int) -> tuple[float, dict[int, float]]:
    conn = await _conn(url)
    sent: dict[int, float] = {}
    try:
        q = Queries(AsyncpgDriver(conn))
        t0 = time.perf_counter()
        for i in range(n):
            at = time.time()
            (jid,) = await q.enqueue("noop", str(i).encode())
            sent[int(jid)] = at
        return time.perf_counter() - t0, sent
    finally:
        await conn.close()


async def enqueue_paced(url: str, n: int, gap: float) -> dict[int, float]:
    conn = await _conn(url)
    sent: dict[int, float] = {}
    try:
        q = Queries(AsyncpgDriver(conn))
        for i in range(n):
            at = time.time()
            (jid,) = await q.enqueue("noop", str(i).encode())
            sent[int(jid)] = at
            await asyncio.sleep(max(0.0, gap - (time.time() - at)))
        return sent
    finally:
        await conn.close()


async def enqueue_bulk(url: str, n: int) -> float:
    conn = await _conn(url)
    try:
        q = Queries(AsyncpgDriver(conn))
        payloads = [str(i).encode() for i in range(n)]
        t0 = time.perf_counter()
        await q.enqueue(["noop"] * n, payloads, [0] * n)
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def count_done(url: str) -> tuple[int, int]:
    """(jobs finished successfully, jobs enqueued): pgqueuer deletes finished jobs and logs
    them in pgqueuer_log."""
    conn = await _conn(url)
    try:
        ok = await conn.fetchval(
            "SELECT count(DISTINCT job_id) FROM pgqueuer_log WHERE status = 'successful'")
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        return int(ok), int(ok) + int(left)
    finally:
        await conn.close()


async def worker(url: str, concurrency: int, out: str, serve: bool) -> None:
    conn = await _conn(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    limit = 1 if concurrency == 1 else 0

    @qm.entrypoint("noop", concurrency_limit=limit)
    async def noop(job: Job) -> None:
        STARTS.append((int(job.id), time.time()))

    if concurrency == 1:
        kwargs = {"batch_size": 1, "max_concurrent_tasks": None}
    else:
        kwargs = {"batch_size": max(1, concurrency // 2), "max_concurrent_tasks": concurrency}
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    with contextlib.suppress(asyncio.CancelledError):
        await qm.run(
            dequeue_timeout=timedelta(seconds=5),
            mode=QueueExecutionMode.continuous if serve else QueueExecutionMode.drain,
            **kwargs,
        )
    with contextlib.suppress(Exception):
        await conn.close()
    with open(out, "w") as fh:
        json.dump(STARTS, fh)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--serve", action="store_true")
    a = p.parse_args()
    asyncio.run(worker(a.url, a.concurrency, a.out, a.serve))


if __name__ == "__main__":
    main()
