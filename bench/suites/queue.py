"""Queue suites run side by side for atum_ai, Procrastinate and pgqueuer on one server:
enqueue (single and bulk), drain (no-op jobs), pickup latency (idle worker)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psycopg

from bench.common import Stat, bench_database, percentile, rate_first_to_last
from bench.peers import System
from bench.suites import Row


@dataclass
class QueueSizes:
    single: int = 2000           # enqueue, one job per transaction
    bulk: int = 100_000          # enqueue, one call
    drain: int = 20_000          # drain backlog for atum_ai and fast peers
    drain_slow: int = 5_000      # backlog for a peer config measured below ~600 jobs/s
    pickup: int = 200            # pickup latency: jobs enqueued one at a time
    pickup_gap: float = 0.020
    runs: int = 3
    drain_configs: tuple[tuple[int, int], ...] = ((1, 1), (1, 16), (1, 64), (2, 16))  # (procs, conc)


def _log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# ---------------------------------------------------------------------------- enqueue
async def enqueue_suite(systems: list[System], dsn: str, sz: QueueSizes) -> list[Row]:
    rows: list[Row] = []
    for s in systems:
        with bench_database(dsn, f"enq_{s.name}") as url:
            await s.setup(url)
            single, bulk = [], []
            for r in range(sz.runs):
                await s.reset(url)
                secs, _ = await s.module.enqueue_single(url, sz.single)
                single.append(sz.single / secs)
                await s.reset(url)
                secs = await s.module.enqueue_bulk(url, sz.bulk)
                bulk.append(sz.bulk / secs)
                _log(f"enqueue {s.name} run {r + 1}: single {single[-1]:,.0f}/s bulk {bulk[-1]:,.0f}/s")
        rows.append(Row("enqueue", f"one job per transaction ({sz.single:,}), jobs/s", s.name,
                        Stat(single, "jobs/s")))
        rows.append(Row("enqueue", f"bulk {sz.bulk:,} in one call, jobs/s", s.name,
                        Stat(bulk, "jobs/s"), note=_bulk_note(s.name)))
    return rows


def _bulk_note(name: str) -> str:
    return {"atum_ai": "binary COPY into job_queue + job_events (audit)",
            "procrastinate": "batch_defer_async",
            "pgqueuer": "enqueue(lists): one INSERT ... unnest"}.get(name, "")


# ---------------------------------------------------------------------------- drain
def drain_jobs(s: System, procs: int, conc: int, sz: QueueSizes) -> int:
    # Slow configurations get a smaller backlog so the whole run stays near 15 minutes; the
    # rate is measured from first to last start, so it does not depend on the backlog size.
    slow = (s.name == "procrastinate") or (s.name == "pgqueuer" and conc == 1)
    return min(sz.drain, sz.drain_slow) if slow else sz.drain


async def drain_suite(systems: list[System], dsn: str, sz: QueueSizes) -> list[Row]:
    rows: list[Row] = []
    for s in systems:
        configs = sz.drain_configs if s.name == "atum_ai" else tuple(
            c for c in sz.drain_configs if c[0] == 1 and c[1] in (1, 16))
        with bench_database(dsn, f"drain_{s.name}") as url:
            await s.setup(url)
            for procs, conc in configs:
                n = drain_jobs(s, procs, conc, sz)
                rates = []
                for r in range(sz.runs):
                    await s.reset(url)
                    await s.module.enqueue_bulk(url, n)
                    workers = [s.start_worker(url, conc, tag=f"_p{i}") for i in range(procs)]
                    for w in workers:
                        w.wait(max(120.0, n / 50))
                    starts = await s.starts(url, workers)
                    done, total = await s.module.count_done(url)
                    if done != n or len(starts) != n:
                        raise RuntimeError(f"{s.name} drain: {done}/{total} done, {len(starts)} "
                                           f"starts, expected {n}: {workers[0].tail()}")
                    rates.append(rate_first_to_last(list(starts.values())))
                    _log(f"drain {s.name} {procs}x{conc} run {r + 1}: {rates[-1]:,.0f} jobs/s ({n:,} jobs)")
                label = f"{procs} processes x {conc}" if procs > 1 else f"concurrency {conc}"
                rows.append(Row("drain", f"no-op jobs/s, {label}", s.name, Stat(rates, "jobs/s"),
                                note=f"{n:,} jobs, all checked done"))
    return rows


# ---------------------------------------------------------------------------- pickup
async def wait_listening(url: str, timeout: float = 30) -> None:
    """Until the worker has connected, plus 2 s for it to LISTEN and settle. (Which query shows
    in pg_stat_activity differs per library, so the connection itself is the signal.)"""
    dbname = url.rsplit("/", 1)[-1]
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'", (dbname,))
            row = await cur.fetchone()
            if row and row[0]:
                await asyncio.sleep(2.0)
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("worker did not connect")


async def pickup_suite(systems: list[System], dsn: str, sz: QueueSizes) -> list[Row]:
    rows: list[Row] = []
    for s in systems:
        p50s, p95s, p99s = [], [], []
        with bench_database(dsn, f"pickup_{s.name}") as url:
            await s.setup(url)
            for r in range(sz.runs):
                await s.reset(url)
                w = s.start_worker(url, 16, serve=True)
                try:
                    await wait_listening(url)
                    sent = await s.module.enqueue_paced(url, sz.pickup, sz.pickup_gap)
                    await asyncio.sleep(1.0)
                finally:
                    w.stop()
                starts = await s.starts(url, [w])
                lat = [(starts[k] - sent[k]) * 1000 for k in sent if k in starts]
                if len(lat) != sz.pickup:
                    raise RuntimeError(f"{s.name} pickup: {len(lat)}/{sz.pickup} jobs ran: {w.tail()}")
                p50s.append(percentile(lat, 50))
                p95s.append(percentile(lat, 95))
                p99s.append(percentile(lat, 99))
                _log(f"pickup {s.name} run {r + 1}: p50 {p50s[-1]:.1f} p95 {p95s[-1]:.1f} "
                     f"p99 {p99s[-1]:.1f} ms")
        note = f"{sz.pickup} jobs {sz.pickup_gap * 1000:.0f} ms apart, idle worker at concurrency 16"
        rows.append(Row("pickup", "enqueue -> start p50, ms", s.name, Stat(p50s, "ms"), "lower", note))
        rows.append(Row("pickup", "enqueue -> start p95, ms", s.name, Stat(p95s, "ms"), "lower"))
        rows.append(Row("pickup", "enqueue -> start p99, ms", s.name, Stat(p99s, "ms"), "lower"))
    return rows
