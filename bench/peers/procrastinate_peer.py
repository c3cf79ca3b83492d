"""Procrastinate as a peer: schema, enqueue (single and batch) and a worker process that
records when each no-op task started (kept in memory, written as JSON at exit, so the peer
pays nothing extra per job).

Settings for throughput follow Procrastinate's docs: ``concurrency=N`` (async tasks in one
worker), LISTEN/NOTIFY on (the default) so an idle worker wakes at once, ``wait=False`` to exit
once the queues are empty, and a connection pool large enough for the concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import procrastinate

STARTS: list[tuple[int, float]] = []


def make_app(url: str, pool_size: int = 8) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=url, min_size=1, max_size=pool_size))

    @app.task(name="noop", pass_context=True)
    async def noop(context: Any, n: int = 0) -> None:
        STARTS.append((context.job.id, time.time()))

    return app


async def setup(url: str) -> None:
    app = make_app(url, 2)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def reset(url: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE procrastinate_jobs CASCADE")
        await conn.execute("VACUUM ANALYZE procrastinate_jobs")


async def enqueue_single(url: str, n: int) -> tuple[float, dict[int, float]]:
    """n jobs, one transaction each; returns (seconds, {job_id: time before the call})."""
    app = make_app(url, 2)
    sent: dict[int, float] = {}
    async with app.open_async():
        task = app.tasks["noop"]
        t0 = time.perf_counter()
        for i in range(n):
            at = time.time()
            sent[await task.defer_async(n=i)] = at
        return time.perf_counter() - t0, sent


async def enqueue_paced(url: str, n: int, gap: float) -> dict[int, float]:
    app = make_app(url, 2)
    sent: dict[int, float] = {}
    async with app.open_async():
        task = app.tasks["noop"]
        for i in range(n):
            at = time.time()
            sent[await task.defer_async(n=i)] = at
            await asyncio.sleep(max(0.0, gap - (time.time() - at)))
    return sent


async def enqueue_bulk(url: str, n: int) -> float:
    app = make_app(url, 2)
    async with app.open_async():
        task = app.tasks["noop"]
        kwargs = [{"n": i} for i in range(n)]
        t0 = time.perf_counter()
        await task.batch_defer_async(*kwargs)
        return time.perf_counter() - t0


async def count_done(url: str) -> tuple[int, int]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM procrastinate_jobs")
        row = await cur.fetchone()
        return int(row[0]), int(row[1])


async def worker(url: str, concurrency: int, out: str, serve: bool) -> None:
    """Drain (``wait=False``: exit when the queue is empty) or, with ``serve``, run as an idle
    service until SIGTERM (pickup latency)."""
    import contextlib
    import signal

    app = make_app(url, concurrency + 4)
    async with app.open_async():
        task = asyncio.create_task(app.run_worker_async(
            concurrency=concurrency, wait=serve, install_signal_handlers=False, listen_notify=True))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with open(out, "w") as fh:
        json.dump(STARTS, fh)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--serve", action="store_true", help="stay up until SIGTERM (pickup latency)")
    a = p.parse_args()
    asyncio.run(worker(a.url, a.concurrency, a.out, a.serve))


if __name__ == "__main__":
    main()
