"""The worker: a long-running asyncio process that claims, runs and finalises jobs.

Life of a job here::

    claim (batch, one query, SKIP LOCKED, fair)  ->  validate payload  ->  handler.handle()
      -> completion queue -> flusher: ONE transaction per batch: fenced DONE + result +
         handler.persist() + follow-ups + SUCCEEDED events
      -> or fail(): FAILED with backoff / DEAD (permanent, exhausted, cancelled)

Background tasks: the LISTEN connection (wake-ups), the heartbeat (renews the lease of every
held job every lease/3 and learns about cancellations and lost leases), maintenance (rescue
expired leases, purge by retention) and the periodic scheduler. SIGTERM/SIGINT stop claiming,
let running jobs finish within the grace period, then release the rest back to PENDING
without counting an attempt; a second signal releases at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from atum_ai.config import MAX_CONCURRENCY, MAX_SECONDS
from atum_ai.errors import ConfigError, PermanentError, RetryableError, UnknownJobTypeError

# A wiring mistake (missing prompt, bad template) will not fix itself on retry.
_PERMANENT = (PermanentError, ConfigError)
from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, follow_up_jobs
from atum_ai.handlers.registry import Registry, describe_validation_error
from atum_ai.logs import ContextAdapter
from atum_ai.queue.models import Completion, Job, JobStatus
from atum_ai.queue.store import JobStore
from atum_ai.redact import sanitize_error
from atum_ai.worker import systemd
from atum_ai.worker.listener import Listener
from atum_ai.worker.metrics import WorkerMetrics
from atum_ai.worker.scheduler import Schedule, fire_due

log = logging.getLogger("atum_ai.worker")


def _persists(handler: Handler[Any, Any]) -> bool:
    """Does this handler write effects of its own in the completion transaction?"""
    return type(handler).persist is not Handler.persist

ContextFactory = Callable[[Job, Handler[Any, Any]], HandlerContext]

# Connections the worker itself holds besides one per running job: the claim loop, the
# completion flusher, the heartbeat and maintenance/scheduler. The LISTEN connection is
# separate from the pool.
RESERVED_CONNECTIONS = 4


# Seconds the shutdown may take after the grace period: flushing finished completions, then
# releasing unstarted and unfinished jobs. Keep grace + this below systemd's TimeoutStopSec.
SHUTDOWN_BUDGET = 10.0

# How often (and after how long a wait) runnable jobs of types nobody here handles are reported.
ORPHAN_CHECK_SECONDS = 300.0


def required_pool_size(concurrency: int) -> int:
    return concurrency + RESERVED_CONNECTIONS


@dataclass
class WorkerConfig:
    concurrency: int = 16
    job_types: Sequence[str] | None = None
    lease_seconds: float = 30.0
    grace_seconds: float = 20.0
    poll_interval: float = 2.0
    default_timeout: float = 300.0
    job_timeouts: dict[str, float] = field(default_factory=dict)
    burst: bool = False
    maintenance_interval: float = 5.0
    retention: timedelta | None = timedelta(days=14)
    purge_interval: float = 3600.0
    metrics_port: int | None = None
    sample_queue_depth: bool = True
    # Lookahead: with a backlog, claim up to this many jobs beyond the free slots, so that a
    # worker at low concurrency claims in batches. Sized so a buffered job waits about
    # prefetch_window seconds on average (0 while job durations are unknown or long), and a
    # job buffered longer than prefetch_hold is released back (RELEASED, attempt not counted).
    # Buffered jobs are RUNNING under this worker's lease and renewed by the heartbeat.
    prefetch: int = 48
    prefetch_window: float = 0.05
    prefetch_hold: float = 2.0

    def __post_init__(self) -> None:
        def seconds(name: str, value: float, low: float, high: float) -> None:
            # NaN and Infinity fail the comparison too: a lease of inf once made the lease
            # recovery of every worker fail.
            if not (isinstance(value, int | float) and low <= value <= high):
                raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds, not {value!r}")

        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {self.concurrency}")
        seconds("lease", self.lease_seconds, 1, MAX_SECONDS)
        seconds("grace", self.grace_seconds, 0, MAX_SECONDS)
        seconds("poll interval", self.poll_interval, 0.01, 3_600)
        seconds("default job timeout", self.default_timeout, 0.001, MAX_SECONDS)
        for job_type, timeout in self.job_timeouts.items():
            seconds(f"timeout of {job_type}", timeout, 0.001, MAX_SECONDS)
        seconds("maintenance interval", self.maintenance_interval, 0.01, MAX_SECONDS)
        if self.prefetch < 0:
            raise ConfigError("prefetch must not be negative")


@dataclass
class _Running:
    job: Job
    task: asyncio.Task[None]
    started: float
    cancel_reason: str | None = None  # "cancelled" | "lost" | "shutdown"
    # True while the handler runs. A cancel request or a lost lease stops only the handler:
    # cancelling the task before it started (the exception then skips all of _run_job) or
    # while it records the outcome (it cuts that write off) left the job RUNNING, its lease
    # renewed by every heartbeat, for ever. A task not yet started is stopped by the next
    # heartbeat, and an outcome's write is fenced anyway.
    handling: bool = False


class _HeldConnection:
    """A pool connection kept across iterations by a hot loop (claim, flush): saves the pool's
    per-checkout health check, one round trip per use. Dropped back to the pool (which
    discards it if broken) after a connection error."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is not None and self.conn.closed:
            await self.drop()
        if self.conn is None:
            self.conn = await self.pool.getconn()
        return self.conn

    async def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.putconn(conn)


@dataclass
class _Finished:
    job: Job
    handler: Handler[Any, Any]
    outcome: HandlerResult[Any]
    duration: float


class Worker:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        conninfo: str,
        store: JobStore,
        registry: Registry,
        context_factory: ContextFactory,
        config: WorkerConfig,
        schedules: Sequence[Schedule] = (),
        worker_id: uuid.UUID | None = None,
    ) -> None:
        needed = required_pool_size(config.concurrency)
        if pool.max_size < needed:
            raise ConfigError(
                f"connection pool too small: max_size={pool.max_size} but concurrency "
                f"{config.concurrency} needs at least {needed} (one per job + "
                f"{RESERVED_CONNECTIONS} for claiming, completing, heartbeat and maintenance; "
                f"the LISTEN connection is separate). Raise ATUM_POOL_SIZE or lower --concurrency."
            )
        # Claim only what this process can run (River and Oban do the same): a fleet whose
        # workers load different plugins, or a rolling deploy that adds a job type, must not
        # have one worker claim another's jobs and kill them as "unknown type".
        known = registry.job_types
        if config.job_types is None:
            config = replace(config, job_types=tuple(known))
        else:
            unknown = sorted(set(config.job_types) - set(known))
            if unknown:
                raise ConfigError(
                    f"--types names job type(s) with no registered handler: {', '.join(unknown)} "
                    f"(registered: {', '.join(known) or 'none'})")
        self.pool = pool
        self.conninfo = conninfo
        self.store = store
        self.registry = registry
        self.context_factory = context_factory
        self.config = config
        self.schedules = list(schedules)
        self.worker_id = worker_id or uuid.uuid4()
        self.metrics = WorkerMetrics()
        self.metrics.slots.set(config.concurrency)
        # Read at scrape time: setting it on every job start and end cost more than the jobs.
        self.metrics.busy_slots.set_function(lambda: len(self._running))

        self._running: dict[uuid.UUID, _Running] = {}
        self._buffer: dict[uuid.UUID, tuple[Job, float]] = {}  # claimed ahead, not started
        self._backlog = False  # the last claim came back full
        self._avg_duration: float | None = None  # EWMA of handler durations (prefetch sizing)
        self._claim_conn = _HeldConnection(pool)
        self._flush_conn = _HeldConnection(pool)
        self._finishing: dict[uuid.UUID, _Finished] = {}  # done, waiting for the flusher
        self._finished_queue: asyncio.Queue[_Finished] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._release_now = asyncio.Event()
        self._signals = 0
        self._listener_connects = 0
        self._reconnected = asyncio.Event()  # the listener got back in: the database is up
        self._pool_check: asyncio.Task[None] | None = None
        self.processed = 0
        self._counters: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._log = ContextAdapter(log, {"worker_id": str(self.worker_id)})

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, *, immediate: bool = False) -> None:
        self._signals += 1
        if immediate or self._signals > 1:
            self._release_now.set()
        self._stopping.set()
        self._wake.set()
        self._slot_free.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._log.info("signal received; stopping", extra={"signal": sig.name,
                                                           "running": len(self._running)})
        systemd.stopping()
        self.request_stop()

    async def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped (or, with ``burst``, until nothing is runnable). Returns 0."""
        if install_signals:
            self._install_signal_handlers()
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port)
        listener = Listener(self.conninfo, self._on_notify, job_types=self.config.job_types,
                            on_connected=self._on_listener_connected)
        background = [
            asyncio.create_task(listener.run(), name="listener"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._maintenance_loop(), name="maintenance"),
            asyncio.create_task(self._flush_loop(), name="flusher"),
        ]
        if self.schedules:
            background.append(asyncio.create_task(self._scheduler_loop(), name="scheduler"))
        if systemd.watchdog_interval():
            background.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        self._log.info("worker started", extra={
            "concurrency": self.config.concurrency, "lease": self.config.lease_seconds,
            "types": ",".join(self.config.job_types or []) or "all"})
        systemd.ready()
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for t in background:
                t.cancel()
            for t in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self._claim_conn.drop()
            await self._flush_conn.drop()
        self._log.info("worker stopped", extra={"processed": self.processed})
        return 0

    # ------------------------------------------------------------------ claiming
    def _on_notify(self, _payload: str) -> None:
        self._wake.set()

    def _on_listener_connected(self) -> None:
        """Poll once now: work may have arrived while the listener was deaf. On a reconnect
        the pooled connections are most likely broken too (server restart), so check them
        all first: the pool's check-on-borrow would try them one by one with backoff sleeps
        of 1, 2, 4 ... s before the claim could run (7 s for four stale connections, a
        PoolTimeout from six on)."""
        self._listener_connects += 1
        if self._listener_connects == 1:
            self._wake.set()
        elif self._pool_check is None or self._pool_check.done():
            self._pool_check = asyncio.create_task(self._check_pool_then_wake(), name="pool-check")

    async def _check_pool_then_wake(self) -> None:
        try:
            await self.pool.check()
        except Exception as exc:  # the claim loop reports outages; just note it
            self._log.info("pool check after reconnect failed", extra={
                "error": sanitize_error(exc, 200)})
        self._reconnected.set()
        self._wake.set()

    def _lookahead(self) -> int:
        """How many jobs to claim beyond the free slots: only with a backlog, and only as many
        as the running slots get through in about prefetch_window seconds."""
        cfg = self.config
        if not cfg.prefetch or not self._backlog or self._avg_duration is None:
            return 0
        per_window = cfg.concurrency * cfg.prefetch_window / max(self._avg_duration, 1e-4)
        return max(0, min(cfg.prefetch, int(per_window)) - len(self._buffer))

    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self._running)
            while free > 0 and self._buffer:
                job_id = next(iter(self._buffer))
                self._start(self._buffer.pop(job_id)[0])
                free -= 1
            want = free + self._lookahead() if free > 0 else 0
            if want <= 0:
                self._slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.prefetch_hold / 2):
                        await self._slot_free.wait()
                await self._release_stale_buffer()
                continue
            self._wake.clear()
            try:
                conn = await self._claim_conn.get()
                jobs = await self.store.claim(
                    conn, self.worker_id, want, lease_seconds=self.config.lease_seconds,
                    job_types=self.config.job_types)
                if (not jobs and self.config.burst and not self._running and not self._finishing
                        and not self._buffer):
                    if not await self.store.runnable_exists(conn, self.config.job_types):
                        return
                self.metrics.last_poll.set(time.time())
                if failures:
                    self._log.info("database reachable again", extra={"failed_polls": failures})
                failures = 0
            except (psycopg.OperationalError, psycopg.errors.AdminShutdown, OSError) as exc:
                await self._claim_conn.drop()
                failures += 1
                delay = min(0.25 * 2**failures, 15.0) * random.uniform(0.8, 1.2)
                if failures == 1 or failures % 10 == 0:
                    self._log.warning("claim failed; retrying with backoff", extra={
                        "error": sanitize_error(exc, 300), "failures": failures,
                        "retry_in": round(delay, 2)})
                if not self._reconnected.is_set():
                    await self._backoff(delay)
                self._reconnected.clear()
                continue
            self._backlog = len(jobs) == want
            now = time.monotonic()
            for job in jobs:
                if free > 0:
                    self._start(job)
                    free -= 1
                else:
                    self._buffer[job.id] = (job, now)
            if len(jobs) < want:
                # Nothing more to take now: wait for a notification, a freed slot, or a poll.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.poll_interval):
                        if self._buffer or (self.config.burst and (self._running or self._finishing)):
                            self._slot_free.clear()
                            await self._slot_free.wait()
                        else:
                            await self._wake.wait()

    async def _release_stale_buffer(self) -> None:
        """Give back jobs that waited in the lookahead buffer longer than prefetch_hold (the
        running jobs turned out slow), so that other workers can run them now."""
        if not self._buffer:
            return
        cutoff = time.monotonic() - self.config.prefetch_hold
        stale = [job_id for job_id, (_, at) in self._buffer.items() if at < cutoff]
        if not stale:
            return
        for job_id in stale:
            self._buffer.pop(job_id, None)
        self._backlog = False
        try:
            async with self.pool.connection() as conn:
                await self.store.release(conn, self.worker_id, stale,
                                         message="lookahead released: running jobs were slow")
        except (psycopg.OperationalError, OSError):
            pass  # their leases expire and recovery counts the attempt

    async def _backoff(self, delay: float) -> None:
        """Sleep out a failed claim's backoff, cut short by a stop or by the listener getting
        back in: the database is up again, so new work must not wait out a backoff of up to
        15 s. (A NOTIFY alone does not end it: an overloaded database is not hit once per
        notification.)"""
        stop = asyncio.ensure_future(self._stopping.wait())
        back = asyncio.ensure_future(self._reconnected.wait())
        try:
            await asyncio.wait({stop, back}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            back.cancel()

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
        self._running[job.id] = _Running(job, task, time.monotonic())

    # ------------------------------------------------------------------ running one job
    def _timeout_for(self, job: Job, handler: Handler[Any, Any] | None) -> float:
        if job.timeout_seconds:
            return float(job.timeout_seconds)
        if job.job_type in self.config.job_timeouts:
            return self.config.job_timeouts[job.job_type]
        if handler is not None and handler.timeout_seconds:
            return float(handler.timeout_seconds)
        return self.config.default_timeout

    async def _run_job(self, job: Job) -> None:
        started = time.monotonic()
        handler = self.registry.get(job.job_type)
        try:
            outcome = await self._invoke(job, handler)
        except asyncio.CancelledError:
            entry = self._running.get(job.id)
            reason = entry.cancel_reason if entry else None
            if reason == "cancelled":
                await self._fail(job, handler, "cancelled while running", started, cancelled=True)
            # "shutdown": released by _drain; "lost": another worker owns it now.
            self._forget(job.id)
            if reason is None:
                raise
            return
        except _PERMANENT as exc:
            await self._fail(job, handler, exc, started, permanent=True)
        except RetryableError as exc:
            await self._fail(job, handler, exc, started)
        except Exception as exc:  # an unexpected bug: retry with backoff, it may be transient
            await self._fail(job, handler, f"{type(exc).__name__}: {exc}", started)
        else:
            assert handler is not None
            fin = _Finished(job, handler, outcome, time.monotonic() - started)
            avg = self._avg_duration
            self._avg_duration = fin.duration if avg is None else 0.8 * avg + 0.2 * fin.duration
            self._finishing[job.id] = fin
            self._finished_queue.put_nowait(fin)
        self._forget(job.id)

    async def _invoke(self, job: Job, handler: Handler[Any, Any] | None) -> HandlerResult[Any]:
        """The handler phase: the payload checked against the handler's model, then the handler
        under its timeout. Only this phase is stopped by a cancel request or a lost lease."""
        entry = self._running.get(job.id)
        if entry is not None:
            entry.handling = True
        try:
            if handler is None:
                raise UnknownJobTypeError(f"no handler registered for job type {job.job_type!r}")
            try:
                payload = handler.Payload.model_validate(job.payload)
            except Exception as exc:
                if hasattr(exc, "errors"):
                    field_, msg = describe_validation_error(exc)  # type: ignore[arg-type]
                    raise PermanentError(f"invalid payload: {field_}: {msg}") from None
                raise PermanentError(f"invalid payload: {exc}") from None
            ctx = self.context_factory(job, handler)
            timeout = self._timeout_for(job, handler)
            try:
                async with asyncio.timeout(timeout):
                    outcome = await handler.handle(payload, ctx)
            except TimeoutError:
                raise RetryableError(f"timed out after {timeout:g}s") from None
            if not isinstance(outcome, HandlerResult) or not isinstance(outcome.result, handler.Result):
                raise PermanentError(
                    f"handler for {job.job_type} returned {type(outcome).__name__}, "
                    f"not HandlerResult[{handler.Result.__name__}]")
            return outcome
        finally:
            if entry is not None:
                entry.handling = False

    def _forget(self, job_id: uuid.UUID) -> None:
        if self._running.pop(job_id, None) is not None:
            self._slot_free.set()

    async def _fail(
        self,
        job: Job,
        handler: Handler[Any, Any] | None,
        error: object,
        started: float,
        *,
        permanent: bool = False,
        cancelled: bool = False,
    ) -> None:
        message = sanitize_error(error)
        policy = handler.retry_policy if handler is not None else None
        duration = time.monotonic() - started
        for attempt in range(8):
            try:
                async with self.pool.connection() as conn:
                    out = await self.store.fail(
                        conn, self.worker_id, job, message, permanent=permanent,
                        cancelled=cancelled, retry_policy=policy,
                        data={"duration_ms": round(duration * 1000, 1)})
                break
            except (psycopg.OperationalError, OSError):
                await asyncio.sleep(min(0.5 * 2**attempt, 10))
            except Exception as exc:  # LostClaimError: someone else owns the job now
                self._log.warning("could not record failure", extra={
                    "job_id": str(job.id), "error": sanitize_error(exc, 300)})
                self.metrics.lost_claims.inc()
                return
        else:
            return  # the lease will expire and recovery will count the attempt
        outcome = "cancelled" if cancelled else ("dead" if out.status == JobStatus.DEAD else "retry")
        self._record(job, outcome, duration, error=message)

    def _record(self, job: Job, outcome: str, duration: float, error: str | None = None) -> None:
        self.processed += 1
        counters = self._counters.get((job.job_type, outcome))
        if counters is None:  # labels() takes a lock and builds a key: once per type/outcome
            counters = self._counters[(job.job_type, outcome)] = (
                self.metrics.jobs.labels(job.job_type, outcome),
                self.metrics.duration.labels(job.job_type))
        counters[0].inc()
        counters[1].observe(duration)
        level = logging.INFO if outcome == "done" else logging.WARNING
        if not self._log.logger.isEnabledFor(level):
            return
        extra = {"job_id": str(job.id), "job_type": job.job_type,
                 "organization_id": str(job.organization_id), "attempt": job.attempt,
                 "duration_ms": round(duration * 1000, 1), "outcome": outcome}
        if error:
            extra["error"] = error[:300]
        self._log.log(level, "job finished", extra=extra)

    # ------------------------------------------------------------------ completing
    async def _flush_loop(self) -> None:
        while True:
            first = await self._finished_queue.get()
            batch = [first]
            while not self._finished_queue.empty() and len(batch) < 500:
                batch.append(self._finished_queue.get_nowait())
            await self._flush(batch)

    async def _flush(self, batch: list[_Finished]) -> None:
        """Complete a batch in one transaction; on a handler's persist error, fall back to one
        transaction per job so one bad job cannot block the others."""
        attempt = 0
        while True:
            try:
                done = await self._complete(batch)
                break
            except (psycopg.OperationalError, OSError) as exc:
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    self._log.warning("completion failed; retrying", extra={
                        "error": sanitize_error(exc, 300), "jobs": len(batch)})
                await asyncio.sleep(min(0.25 * 2**attempt, 10))
            except Exception:
                if len(batch) == 1:
                    fin = batch[0]
                    # started = when the handler began, so the recorded duration is the
                    # job's, not the monotonic clock's age (seconds since boot).
                    await self._fail(fin.job, fin.handler, "could not store the result",
                                     time.monotonic() - fin.duration)
                    self._finishing.pop(fin.job.id, None)
                    return
                for fin in batch:
                    await self._flush([fin])
                return
        self._slot_free.set()  # burst mode waits on this for follow-ups to be claimable
        for fin in batch:
            self._finishing.pop(fin.job.id, None)
            if fin.job.id in done:
                self._record(fin.job, "done", fin.duration)
            else:
                self.metrics.lost_claims.inc()
                self._log.warning("completion fenced out: lease lost, result discarded",
                                  extra={"job_id": str(fin.job.id), "job_type": fin.job.job_type})

    async def _complete(self, batch: list[_Finished]) -> set[uuid.UUID]:
        completions = [
            Completion(
                f.job.id,
                result=f.outcome.result.model_dump(mode="json"),
                follow_ups=tuple(follow_up_jobs(f.job, f.outcome.follow_ups)),
                audit={**f.outcome.audit, "duration_ms": round(f.duration * 1000, 1)},
            )
            for f in batch
        ]
        persisting = [f for f in batch if _persists(f.handler)]
        try:
            conn = await self._flush_conn.get()
            if not persisting:
                # JobStore.complete is atomic on its own (one statement, or one transaction
                # with the follow-ups); no outer transaction, no extra round trips.
                return await self.store.complete(conn, self.worker_id, completions)
            async with conn.transaction():
                done = await self.store.complete(conn, self.worker_id, completions)
                # Pipeline mode: the handlers' writes (a suggestion, a usage row ... per job)
                # go out back to back and are checked together at the end of the block,
                # instead of one round trip each; an error still aborts the transaction.
                async with conn.pipeline():
                    for f in persisting:
                        if f.job.id in done:
                            await f.handler.persist(conn, f.job, f.outcome)
            return done
        except (psycopg.OperationalError, OSError):
            await self._flush_conn.drop()
            raise

    # ------------------------------------------------------------------ heartbeat
    def _held_ids(self) -> list[uuid.UUID]:
        return [*self._running.keys(), *self._buffer.keys(), *self._finishing.keys()]

    async def _heartbeat_loop(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        held = self._held_ids()
        if not held:
            return
        try:
            async with self.pool.connection() as conn:
                alive = await self.store.heartbeat(conn, self.worker_id, held)
        except (psycopg.OperationalError, OSError) as exc:
            self._log.warning("heartbeat failed", extra={"error": sanitize_error(exc, 200)})
            return
        for job_id in held:
            if job_id in self._buffer and (job_id not in alive or alive[job_id]):
                # Lost or cancelled before it started: another worker owns it, or it is
                # cancelled now without ever running.
                job, _ = self._buffer.pop(job_id)
                if job_id in alive:
                    asyncio.create_task(self._fail(job, self.registry.get(job.job_type),
                                                   "cancelled before start", time.monotonic(),
                                                   cancelled=True))
                continue
            entry = self._running.get(job_id)
            if entry is None or not entry.handling:
                continue  # not started, or recording its outcome (see _Running.handling)
            if job_id not in alive:
                entry.cancel_reason = "lost"
                entry.task.cancel()
                self._log.warning("lease lost; stopping job", extra={"job_id": str(job_id)})
            elif alive[job_id] and entry.cancel_reason is None:
                entry.cancel_reason = "cancelled"
                entry.task.cancel()
                self._log.info("cancel requested; stopping job", extra={"job_id": str(job_id)})

    # ------------------------------------------------------------------ maintenance
    async def _maintenance_loop(self) -> None:
        last_purge = 0.0
        last_depth = 0.0
        last_orphans = time.monotonic()  # first look after one interval, not at start-up
        while True:
            # Jitter spreads many workers' rescues apart; SKIP LOCKED makes overlaps harmless.
            await asyncio.sleep(self.config.maintenance_interval * random.uniform(0.7, 1.3))
            try:
                async with self.pool.connection() as conn:
                    rescued = await self.store.recover_expired(
                        conn, default_lease_seconds=self.config.lease_seconds)
                    if rescued:
                        self._log.warning("recovered jobs with expired leases", extra={
                            "count": len(rescued)})
                        self._wake.set()
                    now = time.monotonic()
                    if self.config.retention and now - last_purge > self.config.purge_interval:
                        last_purge = now
                        purged = await self.store.purge(conn, self.config.retention)
                        if purged:
                            self._log.info("purged finished jobs", extra={"count": purged})
                    if now - last_orphans > ORPHAN_CHECK_SECONDS:
                        last_orphans = now
                        await self._warn_about_orphans(conn)
                    if self.config.metrics_port and self.config.sample_queue_depth and now - last_depth > 15:
                        last_depth = now
                        counts: dict[str, int] = {s.value: 0 for s in JobStatus}
                        for _type, status, n in await self.store.status_counts(conn):
                            counts[status] = counts.get(status, 0) + n
                        for status, n in counts.items():
                            self.metrics.queue_depth.labels(status).set(n)
            except (psycopg.OperationalError, OSError):
                continue  # the claim loop reports outages; stay quiet here
            except Exception as exc:
                self._log.warning("maintenance failed", extra={"error": sanitize_error(exc, 300)})

    async def _warn_about_orphans(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Say so when runnable jobs of types this worker does not run have waited long:
        either a worker with that plugin is missing, or the type is misspelt."""
        waiting = await self.store.orphan_types(
            conn, list(self.config.job_types or ()), older_than=timedelta(seconds=ORPHAN_CHECK_SECONDS))
        if waiting:
            self._log.warning("runnable jobs of types this worker does not handle are waiting",
                              extra={"types": ", ".join(f"{t} ({n})" for t, n in waiting[:10])})

    async def _scheduler_loop(self) -> None:
        while True:
            for schedule in self.schedules:
                try:
                    async with self.pool.connection() as conn:
                        await fire_due(conn, self.store, schedule)
                except (psycopg.OperationalError, OSError):
                    pass
                except Exception as exc:
                    self._log.warning("schedule failed", extra={
                        "schedule": schedule.name, "error": sanitize_error(exc, 300)})
            now = self.store.clock.now()
            wait = min((s.next_slot(now) - now).total_seconds() for s in self.schedules)
            await asyncio.sleep(max(1.0, min(wait + 0.5, 30.0)))

    async def _watchdog_loop(self) -> None:
        interval = systemd.watchdog_interval() or 30.0
        while True:
            # Only claim liveness when the event loop is really turning.
            systemd.watchdog()
            await asyncio.sleep(interval / 2)

    # ------------------------------------------------------------------ shutdown
    async def _drain(self) -> None:
        """Let running jobs finish within the grace period (the heartbeat keeps their leases
        alive meanwhile), then release the rest; wait for pending completions to flush."""
        if self._running:
            self._log.info("draining", extra={"running": len(self._running),
                                              "grace": self.config.grace_seconds})
            tasks = [r.task for r in self._running.values()]
            waiter = asyncio.gather(*tasks, return_exceptions=True)
            release_now = asyncio.create_task(self._release_now.wait())
            await asyncio.wait({waiter, release_now}, timeout=self.config.grace_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            release_now.cancel()
        leftover = list(self._running.values())
        for entry in leftover:
            entry.cancel_reason = "shutdown"
            entry.task.cancel()
        for entry in leftover:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task
        # After the grace period the rest of the shutdown is bounded (SHUTDOWN_BUDGET), even
        # with the database down, so that systemd's TimeoutStopSec (45 s in the shipped unit,
        # 20 s grace) never has to SIGKILL us: first the completions that finished in time,
        # then releasing what did not run. What cannot be written is left to lease recovery.
        budget_end = time.monotonic() + SHUTDOWN_BUDGET
        flush_end = time.monotonic() + SHUTDOWN_BUDGET / 2
        while (self._finishing or not self._finished_queue.empty()) and time.monotonic() < flush_end:
            await asyncio.sleep(0.02)
        if self._finishing:
            self._log.warning("shutting down with completions not stored (database unreachable); "
                              "their leases expire and another worker runs them again",
                              extra={"count": len(self._finishing),
                                     "lease": self.config.lease_seconds})
        buffered = [job for job, _ in self._buffer.values()]
        self._buffer.clear()
        ids = [e.job.id for e in leftover] + [job.id for job in buffered]
        released_ok = not ids
        attempt = 0
        while not released_ok and (left := budget_end - time.monotonic()) > 0:
            try:
                async with self.pool.connection(timeout=left) as conn:
                    released = await self.store.release(conn, self.worker_id, ids)
                released_ok = True
                self._log.info("released unfinished jobs", extra={"count": len(released)})
                for e in leftover:
                    if e.job.id in released:
                        self._record(e.job, "released", time.monotonic() - e.started)
                for job in buffered:
                    if job.id in released:
                        self._record(job, "released", 0.0)
            except (psycopg.OperationalError, OSError):
                attempt += 1
                await asyncio.sleep(min(0.5 * 2**attempt, max(0.0, budget_end - time.monotonic())))
        if not released_ok:
            self._log.warning("could not release unfinished jobs (database unreachable); their "
                              "leases expire and another worker recovers them, counting an attempt",
                              extra={"count": len(ids), "lease": self.config.lease_seconds})
