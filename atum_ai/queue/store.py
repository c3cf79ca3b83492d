"""JobStore: the only code that executes the queue's SQL.

Every method takes the caller's connection, so an enqueue can join the caller's own
transaction (the ticket system's) and the worker can complete a job, store its effects and
enqueue follow-ups atomically. psycopg errors are translated here into the AtumError tree.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.adapt import Dumper
from psycopg.pq import Format, TransactionStatus
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Json, Jsonb

from atum_ai.clock import Clock, SystemClock
from atum_ai.errors import (
    DuplicateJobError,
    JobNotFoundError,
    LostClaimError,
    StoreError,
    ValidationError,
)
from atum_ai.queue.models import Completion, EventType, Job, JobEvent, JobStatus, NewJob
from atum_ai.queue.queries import QUERIES
from atum_ai.queue.retry import RetryPolicy
from atum_ai.queue.validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PayloadValidator,
    check_job_fields,
    prepare_payload,
)
from atum_ai.redact import sanitize_error

NOTIFY_CHANNEL = "atum_ai_jobs"
# Below this many jobs a loop of single inserts beats the COPY set-up round trips.
_COPY_THRESHOLD = 8
# Column types of the binary COPYs (binary COPY applies no casts, so they must be exact).
_JOB_COPY_TYPES = ["uuid", "uuid", "text", "jsonb", "timestamptz", "int4", "int4", "float4", "uuid",
                   "timestamptz", "timestamptz"]
_EVENT_COPY_TYPES = ["uuid", "uuid", "text", "text", "int4", "timestamptz"]
_JSONB_OID = psycopg.adapters.types["jsonb"].oid


class _JsonTextBinaryDumper(Dumper):
    """jsonb in binary COPY from JSON text that prepare_payload already produced and checked.
    psycopg's own jsonb dumper would serialise the str again into a JSON string literal."""

    format = Format.BINARY
    oid = _JSONB_OID

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        # jsonb_recv reads the text in the connection's client encoding, not always UTF-8.
        conn = self.connection
        self._encoding = conn.info.encoding if conn is not None else "utf-8"

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode(self._encoding)  # jsonb binary: version 1, then the text


def _tuples(conn: AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
    """A cursor that returns tuples whatever row factory the caller's connection has (every
    method here takes the caller's connection, which may be set up with dict_row)."""
    return conn.cursor(row_factory=tuple_row)


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Map psycopg errors that callers act on into the AtumError tree (procrastinate's
    ``wrap_exceptions``). Connection-level errors pass through unchanged: the worker treats
    them as infrastructure trouble, not as the job's fault."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise DuplicateJobError(sanitize_error(exc.diag.message_primary or exc)) from exc
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise StoreError(sanitize_error(exc.diag.message_primary or exc)) from exc


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: uuid.UUID
    created: bool  # False: a live job with the same dedupe key already existed


@dataclass(frozen=True, slots=True)
class FailOutcome:
    id: uuid.UUID
    status: JobStatus
    retry_count: int
    run_after: datetime


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    id: uuid.UUID
    from_status: JobStatus
    to_status: JobStatus

    @property
    def stopping(self) -> bool:
        """True when the job was RUNNING: its worker stops it within one heartbeat."""
        return self.to_status == JobStatus.RUNNING


class JobStore:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        validator: PayloadValidator | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.validator = validator
        self.max_payload_bytes = max_payload_bytes
        self.retry_policy = retry_policy or RetryPolicy()
        # Where the next claim's window of organizations starts: the round robin of job_claim
        # goes on just after the last organization the previous full claim served. None (at
        # start, and after a claim that found less than it asked for) means a random start,
        # so workers begin at different places and a window of organizations with only
        # future jobs is not asked again.
        self._window_start: uuid.UUID | None = None

    # ------------------------------------------------------------------ enqueue
    def prepare(self, job: NewJob) -> str:
        """Validate a job and return its serialised payload (raises ValidationError)."""
        check_job_fields(job)
        return prepare_payload(
            job.job_type, job.payload, validator=self.validator, max_bytes=self.max_payload_bytes
        )

    async def enqueue(self, conn: AsyncConnection[Any], job: NewJob) -> EnqueueResult:
        """Enqueue one job on ``conn``, inside the caller's transaction if one is open."""
        payload = self.prepare(job)
        if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            # job_insert is one statement (job, ENQUEUED event and NOTIFY together), so in
            # autocommit it is atomic on its own: no BEGIN/COMMIT round trips (1,100 -> 1,650
            # jobs/s here). The dedupe retry loop needs no transaction either.
            return await self._insert_one(conn, job, payload)
        # Inside the caller's transaction: a savepoint, so a rejected insert leaves their
        # transaction usable.
        async with conn.transaction():
            return await self._insert_one(conn, job, payload)

    async def _insert_one(self, conn: AsyncConnection[Any], job: NewJob, payload: str) -> EnqueueResult:
        params = {
            "id": job.id,
            "organization_id": job.organization_id,
            "job_type": job.job_type,
            "payload": payload,
            "run_after": job.run_after,
            "priority": job.priority,
            "dedupe_key": job.dedupe_key,
            "max_retries": job.max_retries,
            "timeout_seconds": job.timeout_seconds,
            "parent_id": job.parent_id,
            "now": self.clock.now(),
        }
        # A live duplicate can finish between our INSERT and SELECT; two rounds settle it.
        for _ in range(3):
            with translate_db_errors():
                cur = await _tuples(conn).execute(QUERIES["job_insert"], params)
                if await cur.fetchone():
                    return EnqueueResult(job.id, True)
                cur = await _tuples(conn).execute(QUERIES["job_find_live_duplicate"], params)
                row = await cur.fetchone()
            if row:
                return EnqueueResult(row[0], False)
        raise StoreError(f"could not enqueue {job.job_type} with dedupe key {job.dedupe_key!r}")

    async def enqueue_many(self, conn: AsyncConnection[Any], jobs: Sequence[NewJob]) -> list[uuid.UUID]:
        """Enqueue many jobs all-or-nothing; returns one id per input job (the existing job's
        id where a dedupe key matched). Uses COPY, so 100,000 jobs are one call and never hit
        the 65,535 bind-parameter limit. One invalid job rejects the whole call with its
        field and index, and nothing is written."""
        if not jobs:
            return []
        if len(jobs) > _COPY_THRESHOLD and not any(j.dedupe_key for j in jobs):
            async with conn.transaction():
                with translate_db_errors():
                    ids = await self._copy_direct(conn, jobs)
                    await self._notify(conn, jobs)
                return ids
        payloads = [self._prepare_nth(i, j, len(jobs)) for i, j in enumerate(jobs)]
        async with conn.transaction():
            if len(jobs) <= _COPY_THRESHOLD:
                return [(await self._insert_one(conn, j, p)).id for j, p in zip(jobs, payloads, strict=True)]
            with translate_db_errors():
                ids = await self._copy_via_staging(conn, jobs, payloads)
                await self._notify(conn, jobs)
            return ids

    def _prepare_nth(self, i: int, job: NewJob, total: int) -> str:
        """prepare() for job ``i`` of a batch; the error says which job it was."""
        try:
            return self.prepare(job)
        except ValidationError as exc:
            raise type(exc)(f"{exc.message} (job {i} of {total} in the batch)", field=exc.field) from None

    @staticmethod
    async def _notify(conn: AsyncConnection[Any], jobs: Sequence[NewJob]) -> None:
        for job_type in sorted({j.job_type for j in jobs}):
            await _tuples(conn).execute(QUERIES["job_notify"], {"job_type": job_type})

    async def _copy_direct(self, conn: AsyncConnection[Any], jobs: Sequence[NewJob]) -> list[uuid.UUID]:
        """Binary COPY into job_queue and job_events. Each job is validated as its row is
        written, so Python's validation overlaps the server's index work; a bad job aborts
        the COPY and the surrounding transaction (savepoint) writes nothing. Binary rather
        than text: the server skips parsing three UUIDs and three timestamps per row, which
        was a sixth of its COPY time (62,000 -> ~100,000 jobs/s here, see bench/)."""
        now = self.clock.now()
        async with conn.cursor(row_factory=tuple_row) as cur:
            cur.adapters.register_dumper(None, _JsonTextBinaryDumper)
            async with cur.copy(QUERIES["job_queue_copy_binary"]) as copy:
                copy.set_types(_JOB_COPY_TYPES)
                for i, j in enumerate(jobs):
                    payload = self._prepare_nth(i, j, len(jobs))
                    await copy.write_row(
                        (j.id, j.organization_id, j.job_type, payload, j.run_after or now, j.priority,
                         5 if j.max_retries is None else j.max_retries, j.timeout_seconds,
                         j.parent_id, now, now)
                    )
            async with cur.copy(QUERIES["job_events_enqueued_copy_binary"]) as copy:
                copy.set_types(_EVENT_COPY_TYPES)
                for j in jobs:
                    await copy.write_row((j.id, j.organization_id, "ENQUEUED", "PENDING", 0, now))
        return [j.id for j in jobs]

    async def _copy_via_staging(
        self, conn: AsyncConnection[Any], jobs: Sequence[NewJob], payloads: Sequence[str]
    ) -> list[uuid.UUID]:
        ids: list[uuid.UUID | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(QUERIES["job_staging_create"])
            # A job whose key a live job holds maps to that job. That job can finish between
            # our INSERT ... ON CONFLICT and the lookup; then the key is free again and the
            # job is inserted in the next round (as enqueue() does for one job).
            for _ in range(3):
                await cur.execute("TRUNCATE atum_enqueue_staging")
                async with cur.copy(
                    "COPY atum_enqueue_staging (ord, id, organization_id, job_type, payload,"
                    " run_after, priority, dedupe_key, max_retries, timeout_seconds, parent_id)"
                    " FROM STDIN"
                ) as copy:
                    for i in pending:
                        j = jobs[i]
                        await copy.write_row(
                            # In UTC: text COPY refuses offsets PostgreSQL cannot spell
                            # (beyond +-15:59, or with seconds), which Python allows.
                            (i, j.id, j.organization_id, j.job_type, payloads[i],
                             j.run_after and j.run_after.astimezone(UTC), j.priority, j.dedupe_key,
                             j.max_retries, j.timeout_seconds, j.parent_id)
                        )
                await cur.execute(QUERIES["job_insert_from_staging"], {"now": self.clock.now()})
                inserted = {r[0] for r in await cur.fetchall()}
                missing = [i for i in pending if jobs[i].id not in inserted]
                for i in pending:
                    if jobs[i].id in inserted:
                        ids[i] = jobs[i].id
                if missing:
                    await cur.execute(
                        "SELECT q.organization_id, q.job_type, q.dedupe_key, q.id FROM job_queue q"
                        " JOIN unnest(%s::uuid[], %s::text[], %s::text[]) AS k(o, t, d)"
                        " ON q.organization_id = k.o AND q.job_type = k.t AND q.dedupe_key = k.d"
                        " WHERE q.status IN ('PENDING', 'RUNNING', 'FAILED')",
                        (
                            [jobs[i].organization_id for i in missing],
                            [jobs[i].job_type for i in missing],
                            [jobs[i].dedupe_key for i in missing],
                        ),
                    )
                    live = {(r[0], r[1], r[2]): r[3] for r in await cur.fetchall()}
                    for i in missing:
                        ids[i] = live.get((jobs[i].organization_id, jobs[i].job_type, jobs[i].dedupe_key))
                pending = [i for i in missing if ids[i] is None]
                if not pending:
                    return [i for i in ids if i is not None]
        raise StoreError(f"could not enqueue {len(pending)} job(s) whose dedupe keys kept changing "
                         "hands; try again")

    # ------------------------------------------------------------------ worker side
    async def claim(
        self,
        conn: AsyncConnection[Any],
        worker_id: uuid.UUID,
        limit: int,
        *,
        lease_seconds: float,
        job_types: Sequence[str] | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` runnable jobs (see ``job_claim`` in sql/jobs.sql for the
        fairness rule). One statement: its own transaction when ``conn`` is in autocommit."""
        if limit <= 0:
            return []
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                QUERIES["job_claim"],
                {
                    "worker_id": worker_id,
                    "limit": limit,
                    "lease_seconds": lease_seconds,
                    "job_types": list(job_types) if job_types else None,
                    "now": self.clock.now(),
                    "start": (start := self._window_start or uuid.uuid4()),
                },
            )
            jobs = [Job.from_claim(r) for r in await cur.fetchall()]
        self._window_start = _next_window_start(start, jobs) if len(jobs) == limit else None
        return jobs

    async def orphan_types(
        self, conn: AsyncConnection[Any], job_types: Sequence[str], *, older_than: timedelta
    ) -> list[tuple[str, int]]:
        """[(job_type, waiting)] of runnable jobs, waiting longer than ``older_than``, whose
        type is not among ``job_types`` (the ones the asking worker runs)."""
        cur = await _tuples(conn).execute(QUERIES["job_orphan_types"], {
            "job_types": list(job_types), "before": self.clock.now() - older_than})
        return [(r[0], int(r[1])) for r in await cur.fetchall()]

    async def heartbeat(
        self, conn: AsyncConnection[Any], worker_id: uuid.UUID, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, bool]:
        """Renew leases; returns ``{job_id: cancel_requested}`` for the jobs still ours.
        A held job missing from the answer was lost (its lease was recovered)."""
        if not ids:
            return {}
        cur = await _tuples(conn).execute(
            QUERIES["job_heartbeat"], {"ids": list(ids), "worker_id": worker_id, "now": self.clock.now()}
        )
        return {r[0]: r[1] for r in await cur.fetchall()}

    async def complete(
        self, conn: AsyncConnection[Any], worker_id: uuid.UUID, completions: Sequence[Completion]
    ) -> set[uuid.UUID]:
        """Fenced batch completion. Marks DONE the jobs still RUNNING under ``worker_id``,
        stores results and audit facts, and enqueues the follow-ups of exactly those jobs, all
        atomically: one statement when there are no follow-ups; otherwise one transaction, or
        the caller's transaction when one is open (no savepoint: a failure aborts the caller's
        transaction, as any statement's would). Returns the completed ids; the others were
        fenced out and nothing of theirs was written."""
        if not completions:
            return set()
        params = {
            "batch": Json([{"id": str(c.job_id), "result": c.result, "audit": c.audit or None}
                           for c in completions]),
            "worker_id": worker_id,
            "now": self.clock.now(),
        }
        if not any(c.follow_ups for c in completions):
            # One statement (DONE + SUCCEEDED events in data-modifying CTEs) is atomic by
            # itself: no BEGIN/COMMIT round trips in autocommit.
            cur = await _tuples(conn).execute(QUERIES["job_complete"], params)
            return {r[0] for r in await cur.fetchall()}
        in_caller_tx = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        async with contextlib.nullcontext() if in_caller_tx else conn.transaction():
            cur = await _tuples(conn).execute(QUERIES["job_complete"], params)
            done = {r[0] for r in await cur.fetchall()}
            follow_ups = [f for c in completions if c.job_id in done for f in c.follow_ups]
            if follow_ups:
                await self.enqueue_many(conn, follow_ups)
        return done

    async def complete_one(
        self, conn: AsyncConnection[Any], worker_id: uuid.UUID, completion: Completion
    ) -> None:
        """Like :meth:`complete` for one job; raises LostClaimError when fenced out."""
        if completion.job_id not in await self.complete(conn, worker_id, [completion]):
            raise LostClaimError(completion.job_id)

    async def fail(
        self,
        conn: AsyncConnection[Any],
        worker_id: uuid.UUID,
        job: Job,
        error: object,
        *,
        permanent: bool = False,
        retry_policy: RetryPolicy | None = None,
        cancelled: bool = False,
        data: dict[str, Any] | None = None,
    ) -> FailOutcome:
        """Fenced failure of one attempt: FAILED with capped, jittered backoff, or DEAD when
        permanent, cancelled or out of attempts. Raises LostClaimError when fenced out."""
        now = self.clock.now()
        policy = retry_policy or self.retry_policy
        message = sanitize_error(error)
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                QUERIES["job_fail"],
                {
                    "id": job.id,
                    "worker_id": worker_id,
                    "permanent": permanent or cancelled,
                    "retry_at": policy.next_run(now, job.retry_count + 1),
                    "error": message,
                    "dead_event": EventType.CANCELLED if cancelled else EventType.DEAD,
                    "data": Jsonb(data) if data else None,
                    "now": now,
                },
            )
            row = await cur.fetchone()
        if row is None:
            raise LostClaimError(job.id)
        return FailOutcome(row[0], JobStatus(row[1]), row[2], row[3])

    async def release(
        self,
        conn: AsyncConnection[Any],
        worker_id: uuid.UUID,
        ids: Sequence[uuid.UUID],
        message: str = "worker shutting down",
    ) -> list[uuid.UUID]:
        """Give held jobs back (PENDING, attempt not counted); returns the ids released."""
        if not ids:
            return []
        cur = await _tuples(conn).execute(
            QUERIES["job_release"],
            {"ids": list(ids), "worker_id": worker_id, "message": message, "now": self.clock.now()},
        )
        return [r[0] for r in await cur.fetchall()]

    async def recover_expired(
        self, conn: AsyncConnection[Any], *, default_lease_seconds: float, limit: int = 500
    ) -> list[tuple[uuid.UUID, JobStatus]]:
        """Rescue jobs of dead or frozen workers (lease expired). Safe to run from every
        worker at once: rows are taken with SKIP LOCKED and only RUNNING rows qualify."""
        p = self.retry_policy
        cur = await _tuples(conn).execute(
            QUERIES["job_recover_expired"],
            {
                "default_lease": default_lease_seconds,
                "limit": limit,
                "base": p.base_seconds,
                "cap": p.cap_seconds,
                "jitter": p.jitter,
                "now": self.clock.now(),
            },
        )
        return [(r[0], JobStatus(r[1])) for r in await cur.fetchall()]

    # ------------------------------------------------------------------ admin
    async def cancel(
        self,
        conn: AsyncConnection[Any],
        job_id: uuid.UUID,
        *,
        organization_id: uuid.UUID | None = None,
        reason: str = "cancelled",
    ) -> CancelOutcome:
        for _ in range(5):
            async with conn.transaction():
                cur = await _tuples(conn).execute(
                    QUERIES["job_cancel"],
                    {"id": job_id, "organization_id": organization_id,
                     "reason": sanitize_error(reason), "now": self.clock.now()},
                )
                row = await cur.fetchone()
                if row is not None:
                    return CancelOutcome(row[0], JobStatus(row[1]), JobStatus(row[2]))
                job = await self.get(conn, job_id, organization_id=organization_id)
                if job is None:
                    raise JobNotFoundError(f"no job {job_id}")
                if job.status not in (JobStatus.PENDING, JobStatus.FAILED, JobStatus.RUNNING) or (
                        job.status == JobStatus.RUNNING and job.cancel_requested):
                    return CancelOutcome(job.id, job.status, job.status)
            # A worker moved the job between our read and our update: look again.
        return CancelOutcome(job.id, job.status, job.status)

    async def requeue(
        self, conn: AsyncConnection[Any], job_id: uuid.UUID, *, organization_id: uuid.UUID | None = None
    ) -> bool:
        """DEAD -> PENDING with fresh attempts. False when the job is not DEAD."""
        async with conn.transaction():
            job = await self.get(conn, job_id, organization_id=organization_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            with translate_db_errors():
                cur = await _tuples(conn).execute(
                    QUERIES["job_requeue"],
                    {"id": job_id, "organization_id": organization_id, "now": self.clock.now(),
                     "message": f"requeued; last error: {job.last_error or '-'}"[:2000]},
                )
                return (await cur.fetchone()) is not None

    async def purge(
        self, conn: AsyncConnection[Any], older_than: timedelta, *, batch: int = 1000
    ) -> int:
        """Delete DONE/DEAD jobs (and their events) last updated before now - older_than, in
        small batches so that no long lock or huge transaction builds up."""
        before = self.clock.now() - older_than
        total = 0
        while True:
            async with conn.transaction():
                cur = await _tuples(conn).execute(QUERIES["job_purge_batch"], {"before": before, "batch": batch})
                row = await cur.fetchone()
            n = int(row[0]) if row else 0
            total += n
            if n < batch:
                return total

    async def get(
        self, conn: AsyncConnection[Any], job_id: uuid.UUID, *, organization_id: uuid.UUID | None = None
    ) -> Job | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(QUERIES["job_get"], {"id": job_id, "organization_id": organization_id})
            row = await cur.fetchone()
        return Job.from_row(row) if row else None

    async def events(self, conn: AsyncConnection[Any], job_id: uuid.UUID) -> list[JobEvent]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(QUERIES["job_events_list"], {"id": job_id})
            return [JobEvent(**r) for r in await cur.fetchall()]

    async def status_counts(
        self, conn: AsyncConnection[Any], *, organization_id: uuid.UUID | None = None
    ) -> list[tuple[str, str, int]]:
        cur = await _tuples(conn).execute(QUERIES["job_status_counts"], {"organization_id": organization_id})
        return [(r[0], r[1], int(r[2])) for r in await cur.fetchall()]

    async def list_jobs(
        self,
        conn: AsyncConnection[Any],
        *,
        organization_id: uuid.UUID | None = None,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                QUERIES["job_list"],
                {"organization_id": organization_id, "status": status, "job_type": job_type,
                 "limit": limit},
            )
            return list(await cur.fetchall())

    async def runnable_exists(
        self, conn: AsyncConnection[Any], job_types: Sequence[str] | None = None
    ) -> bool:
        cur = await _tuples(conn).execute(
            QUERIES["job_runnable_exists"],
            {"job_types": list(job_types) if job_types else None, "now": self.clock.now()},
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def claim_schedule_fire(
        self, conn: AsyncConnection[Any], schedule_name: str, fire_time: datetime
    ) -> bool:
        """True for exactly one caller per (schedule, fire time), however many workers race."""
        cur = await _tuples(conn).execute(
            QUERIES["schedule_fire_claim"],
            {"schedule_name": schedule_name, "fire_time": fire_time, "now": self.clock.now()},
        )
        return (await cur.fetchone()) is not None

    async def last_schedule_fire(self, conn: AsyncConnection[Any], schedule_name: str) -> datetime | None:
        cur = await _tuples(conn).execute(QUERIES["schedule_last_fire"], {"schedule_name": schedule_name})
        row = await cur.fetchone()
        return row[0] if row else None


def _next_window_start(start: uuid.UUID, jobs: Sequence[Job]) -> uuid.UUID:
    """The organization id just after the last one ``jobs`` came from, in the claim's wrapping
    order from ``start``: the next window begins where this claim stopped serving."""
    span = 1 << 128
    last = max((j.organization_id.int - start.int) % span for j in jobs)
    return uuid.UUID(int=(start.int + last + 1) % span)
