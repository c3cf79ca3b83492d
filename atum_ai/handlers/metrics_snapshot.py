"""METRICS_SNAPSHOT: one snapshot per organization and day, idempotent.

Enqueued nightly by the worker's scheduler (one job per active organization, deduplicated by
day) or by hand. The numbers are deterministic (see ``pipeline/metrics.py``); the upsert
makes a recomputation replace the row with identical numbers.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import Field, field_validator

from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.queue.models import Job


class MetricsPayload(Payload):
    day: date
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


class MetricsResult(Result):
    organization_id: str
    day: str
    metrics: dict[str, Any]
    # With an LLM configured: a short narrative for team leads. Kept out of ``metrics`` so
    # the numbers stay deterministic however the model words them.
    narrative: str | None = None


class LLMNarrative(Result):
    narrative: str = Field(min_length=1, max_length=800)


class MetricsSnapshotHandler(Handler[MetricsPayload, MetricsResult]):
    job_type = "METRICS_SNAPSHOT"
    Payload = MetricsPayload
    Result = MetricsResult
    description = "Aggregate a day's ticket, job, feedback and LLM metrics for one organization"
    timeout_seconds = 300.0

    async def handle(self, payload: MetricsPayload, ctx: HandlerContext) -> HandlerResult[MetricsResult]:
        metrics = await ctx.repo.day_metrics(payload.day, payload.timezone)
        result = MetricsResult(organization_id=str(ctx.organization_id), day=payload.day.isoformat(),
                               metrics=metrics)
        audit: dict[str, Any] = {"source": "local", "model": "sql-aggregates"}
        if ctx.llm is not None:
            prompt = ctx.prompts.render(self.job_type, metrics=metrics)
            # Aggregates carry no ticket text, so there is nothing personal to mask.
            outcome = await ctx.llm.complete_structured(self.job_type, prompt, LLMNarrative, mask_pii=False)
            result = result.model_copy(update={"narrative": outcome.value.narrative})
            audit = {**outcome.audit(), "numbers_from": "sql-aggregates"}
        return HandlerResult(result, [], audit)

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[MetricsResult]) -> None:
        r = outcome.result
        await conn.execute(
            "INSERT INTO metrics_snapshots (organization_id, day, metrics, computed_at)"
            " VALUES (%s, %s, %s, now())"
            " ON CONFLICT (organization_id, day) DO UPDATE SET metrics = EXCLUDED.metrics,"
            " computed_at = EXCLUDED.computed_at",
            (job.organization_id, date.fromisoformat(r.day), Jsonb(r.metrics)),
        )
        from atum_ai.handlers.common import record_llm_usage

        await record_llm_usage(conn, job, outcome.audit)
