"""Values the queue core passes around. No I/O here."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JOB_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]{0,63}$")
MAX_DEDUPE_KEY_CHARS = 512


class JobStatus(StrEnum):
    PENDING = "PENDING"  # waiting to run
    RUNNING = "RUNNING"  # claimed by a worker, under lease
    DONE = "DONE"
    FAILED = "FAILED"  # an attempt failed; runs again at run_after
    DEAD = "DEAD"  # no more attempts: exhausted, permanent error or cancelled


UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED)
_STATUS = {s.value: s for s in JobStatus}


class EventType(StrEnum):
    ENQUEUED = "ENQUEUED"
    DEDUPLICATED = "DEDUPLICATED"
    CLAIMED = "CLAIMED"
    SUCCEEDED = "SUCCEEDED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    DEAD = "DEAD"
    RECOVERED = "RECOVERED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLED = "CANCELLED"
    REQUEUED = "REQUEUED"
    RELEASED = "RELEASED"


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 v7): new rows land at the right edge of the primary key
    index instead of random pages, which keeps bulk enqueue and the claim index compact."""
    import os
    import time

    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. ``payload`` must be JSON-serialisable; it is validated at enqueue."""

    organization_id: uuid.UUID
    job_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    run_after: datetime | None = None
    priority: int = 0  # higher runs first
    dedupe_key: str | None = None
    max_retries: int | None = None  # None: the column default (5)
    timeout_seconds: float | None = None  # None: the worker's per-type setting
    parent_id: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid7)


@dataclass(frozen=True, slots=True)
class Job:
    """A row of ``job_queue`` as the worker sees it after a claim."""

    id: uuid.UUID
    organization_id: uuid.UUID
    job_type: str
    payload: dict[str, Any]
    status: JobStatus
    locked_by: uuid.UUID | None
    locked_at: datetime | None
    run_after: datetime
    retry_count: int
    max_retries: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    priority: int = 0
    dedupe_key: str | None = None
    parent_id: uuid.UUID | None = None
    timeout_seconds: float | None = None
    cancel_requested: bool = False
    result: Any = None

    @property
    def attempt(self) -> int:
        """1-based number of the attempt in progress (retry_count counts finished ones)."""
        return self.retry_count + 1

    @classmethod
    def from_claim(cls, row: tuple[Any, ...]) -> Job:
        """From a ``job_claim`` row (columns as in :data:`CLAIM_COLUMNS`): positional, because
        a worker at full speed builds thousands of these a second."""
        return cls(*row[:4], _STATUS[row[4]], *row[5:])

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        names = cls.__dataclass_fields__.keys()
        data = {k: row[k] for k in names if k in row}
        data["status"] = JobStatus(data["status"])
        return cls(**data)


# What job_claim returns, in order: Job's fields up to cancel_requested (result is not read).
CLAIM_COLUMNS = tuple(Job.__dataclass_fields__)[:-1]


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job_id: uuid.UUID
    organization_id: uuid.UUID
    event_type: str
    from_status: str | None
    to_status: str | None
    worker_id: uuid.UUID | None
    attempt: int | None
    message: str | None
    data: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Completion:
    """What the worker stores when a job succeeds: result, follow-ups and audit facts."""

    job_id: uuid.UUID
    result: Any = None
    follow_ups: tuple[NewJob, ...] = ()
    audit: dict[str, Any] = field(default_factory=dict)
