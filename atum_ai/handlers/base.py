"""The handler contract: typed payload in, typed result + follow-ups + audit facts out.

A handler never commits and never writes: ``handle`` reads through the tenant-scoped
repository in its context and returns data. The worker validates the payload, calls
``handle``, and then stores everything in ONE transaction with the fenced DONE transition:
the result on the job row, ``persist`` (e.g. a suggestion row), the follow-up jobs and the
audit facts in the SUCCEEDED event. If that transaction fails, none of it exists.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from atum_ai.clock import Clock
from atum_ai.queue.models import Job, NewJob
from atum_ai.queue.retry import RetryPolicy

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from atum_ai.ai.client import LLMClient
    from atum_ai.ai.prompts import PromptRenderer
    from atum_ai.config import Settings
    from atum_ai.pipeline.repository import TenantRepository


class Payload(BaseModel):
    """Base for job payloads: atum_ai owns them, so unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """Base for handler results."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A job to enqueue when this one completes. It always belongs to the same organization
    as the job that asked for it: a handler cannot enqueue work into another tenant."""

    job_type: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    priority: int = 0
    run_after: datetime | None = None


@dataclass(slots=True)
class HandlerResult(Generic[R]):
    result: R
    follow_ups: list[FollowUp] = field(default_factory=list)
    # Facts for the SUCCEEDED event: model, prompt name + sha256, token usage, latency, source.
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """Everything a handler may use. Typed, frozen, no database connection."""

    job_id: uuid.UUID
    organization_id: uuid.UUID
    job_type: str
    attempt: int
    clock: Clock
    logger: logging.LoggerAdapter[logging.Logger]
    settings: Settings
    repo: TenantRepository
    prompts: PromptRenderer
    llm: LLMClient | None = None
    parent_id: uuid.UUID | None = None


class Handler(Generic[P, R]):
    """Subclass and set ``job_type``, ``Payload``, ``Result``; implement ``handle``.

    Optional per-type knobs: ``retry_policy`` (backoff), ``timeout_seconds``,
    ``max_retries`` (used when the enqueuer gives none).
    """

    job_type: ClassVar[str]
    Payload: ClassVar[type[BaseModel]]
    Result: ClassVar[type[BaseModel]]
    retry_policy: ClassVar[RetryPolicy | None] = None
    timeout_seconds: ClassVar[float | None] = None
    max_retries: ClassVar[int | None] = None
    description: ClassVar[str] = ""

    async def handle(self, payload: P, ctx: HandlerContext) -> HandlerResult[R]:
        raise NotImplementedError

    async def persist(
        self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[R]
    ) -> None:
        """Write this job's effect (e.g. a suggestion row) inside the completion transaction.

        Runs after the fenced DONE update succeeded, on the worker's connection; must not
        commit. Must be idempotent per job (an upsert keyed by what it describes), because a
        job whose lease was lost may legitimately run twice."""
        return None


def follow_up_jobs(job: Job, follow_ups: list[FollowUp]) -> list[NewJob]:
    """Turn a handler's follow-ups into queue jobs in the parent's organization."""
    return [
        NewJob(
            organization_id=job.organization_id,
            job_type=f.job_type,
            payload=f.payload,
            dedupe_key=f.dedupe_key,
            priority=f.priority,
            run_after=f.run_after,
            parent_id=job.id,
        )
        for f in follow_ups
    ]
