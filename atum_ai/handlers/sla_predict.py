"""SLA_PREDICT: breach probability, risk band, predicted first-response and resolution
times and the factors behind them.

The numbers always come from the organization's local model (``local/sla_model.py``, fitted
by ``atum-ai train`` on the ticket mirror or an imported incident log); on cold start from
policy targets plus priority base rates, and the result says so. With an LLM configured,
``prompts/SLA_PREDICT.j2`` turns the factors into one sentence an agent can act on; the
model never changes the numbers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import Field

from atum_ai.errors import PermanentError
from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.handlers.common import LanguageCode, TicketId, load_model, mask_pii_for, upsert_suggestion
from atum_ai.queue.models import Job


class SlaPayload(Payload):
    ticket_id: TicketId
    priority: str | None = Field(default=None, max_length=64)
    queue: str | None = Field(default=None, max_length=200)
    ticket_type: str | None = Field(default=None, max_length=200)
    language: LanguageCode | None = None


class Factor(Result):
    feature: str
    value: str
    direction: Literal["raises", "lowers"]
    weight: float


class SlaResult(Result):
    ticket_id: str
    breach_probability: float = Field(ge=0, le=1)
    risk_band: Literal["LOW", "MEDIUM", "HIGH"]
    predicted_first_response_minutes: int
    predicted_resolution_minutes: int
    first_response_due_at: str
    resolution_due_at: str
    priority: str
    top_factors: list[Factor]
    source: Literal["model", "cold_start"]
    reason: str | None = None
    explanation: str | None = None


class LLMExplanation(Result):
    explanation: str = Field(min_length=1, max_length=400)


class SlaPredictHandler(Handler[SlaPayload, SlaResult]):
    job_type = "SLA_PREDICT"
    Payload = SlaPayload
    Result = SlaResult
    description = "Predict SLA breach risk and response/resolution times"
    timeout_seconds = 60.0

    async def handle(self, payload: SlaPayload, ctx: HandlerContext) -> HandlerResult[SlaResult]:
        from atum_ai.local.sla_model import SlaFeatures, SlaModel, SlaTarget

        ticket = await ctx.repo.get_ticket(payload.ticket_id)
        if ticket is None:
            raise PermanentError(f"ticket {payload.ticket_id!r} not found in this organization")
        policy = {p: SlaTarget(fr, res) for p, (fr, res) in (await ctx.repo.sla_policy()).items()}
        loaded = await load_model(ctx, "sla", SlaModel.from_bytes)
        model = loaded[0] if loaded else SlaModel(policy=policy)
        features = SlaFeatures(
            opened_at=ticket.created_at,
            priority=payload.priority or ticket.priority or "medium",
            queue=payload.queue or ticket.queue,
            ticket_type=payload.ticket_type or ticket.ticket_type,
            language=payload.language or ticket.language,
            channel=ticket.channel,
            body_chars=len(ticket.body),
        )
        pred = model.predict(features, now=max(ctx.clock.now(), ticket.created_at), policy=policy,
                             answered=ticket.first_response_at is not None)
        target = policy.get(features.priority) or next(iter(policy.values()))
        factors = [Factor(feature=f.feature, value=str(f.value),
                          direction="raises" if f.contribution > 0 else "lowers",
                          weight=round(abs(f.contribution), 4)) for f in pred.top_factors]
        result = SlaResult(
            ticket_id=ticket.ticket_id,
            breach_probability=round(pred.breach_probability, 4),
            risk_band=pred.risk_band.value,  # type: ignore[arg-type]
            predicted_first_response_minutes=pred.predicted_first_response_minutes,
            predicted_resolution_minutes=pred.predicted_resolution_minutes,
            first_response_due_at=(ticket.created_at + timedelta(minutes=target.first_response_minutes)).isoformat(),
            resolution_due_at=(ticket.created_at + timedelta(minutes=target.resolution_minutes)).isoformat(),
            priority=features.priority,
            top_factors=factors,
            source=pred.source,
            reason=pred.reason,
        )
        audit: dict[str, Any] = {"source": "local",
                                 "model": f"sla-local-v{loaded[1]}" if loaded else "sla-cold-start"}
        if ctx.llm is not None:
            prompt = ctx.prompts.render(self.job_type, prediction=result.model_dump(mode="json"))
            outcome = await ctx.llm.complete_structured(
                self.job_type, prompt, LLMExplanation, mask_pii=await mask_pii_for(ctx))
            result = result.model_copy(update={"explanation": outcome.value.explanation})
            audit = {**outcome.audit(), "numbers_from": audit["model"]}
        return HandlerResult(result, [], audit)

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[SlaResult]) -> None:
        r = outcome.result
        await upsert_suggestion(conn, job, ticket_id=r.ticket_id, kind="sla", outcome=outcome,
                                confidence=None)
