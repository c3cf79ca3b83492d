"""TRIAGE_TICKET: queue, type, priority (and intent) from the tenant's taxonomy, language,
sentiment, a short summary, a confidence per field and a needs-review flag.

Local path: the organization's trained classifiers (``atum-ai train``), py3langid and a
sentiment lexicon. LLM path: ``prompts/TRIAGE_TICKET.j2`` lists the tenant's labels with
their descriptions; the answer is validated to stay inside them (a re-ask otherwise).
Chains KB_SUGGEST and SLA_PREDICT.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import Field

from atum_ai.errors import PermanentError
from atum_ai.handlers.base import FollowUp, Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.handlers.common import (
    ScoredLabel,
    TicketId,
    load_model,
    mask_pii_for,
    scored,
    upsert_suggestion,
)
from atum_ai.pipeline.repository import Taxonomy, TicketView
from atum_ai.queue.models import Job

SentimentLabel = Literal["negative", "neutral", "positive", "unknown"]
TRIAGE_FIELDS = ("queue", "type", "priority", "intent")


class TriagePayload(Payload):
    ticket_id: TicketId
    event: Literal["ticket.created", "ticket.customer_replied", "manual"] = "ticket.created"
    chain: bool = True  # enqueue KB_SUGGEST and SLA_PREDICT when done


class SentimentValue(Result):
    label: SentimentLabel
    score: float = Field(ge=-1, le=1)
    confidence: float = Field(ge=0, le=1)
    band: Literal["High", "Medium", "Low"]


class TriageResult(Result):
    ticket_id: str
    queue: ScoredLabel | None
    type: ScoredLabel | None
    priority: ScoredLabel | None
    intent: ScoredLabel | None = None
    language: ScoredLabel
    sentiment: SentimentValue
    summary: str
    needs_review: bool
    review_reasons: list[str] = []
    source: Literal["local", "llm"]


class LLMSentiment(Result):
    label: Literal["negative", "neutral", "positive"]
    score: float = Field(ge=-1, le=1)


class LLMTriage(Result):
    """What the model must answer (labels are further checked against the taxonomy)."""

    queue: str
    type: str
    priority: str
    intent: str | None = None
    # The model reads the whole ticket anyway; when it names the language, the local detector
    # is not run (it was a sixth of the CPU of an LLM-path triage). Optional: a model that
    # leaves it out gets the local detector's answer.
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}$")
    sentiment: LLMSentiment
    summary: str = Field(max_length=600)
    confidence: dict[str, float]


def summarize(subject: str, body: str, limit: int = 240) -> str:
    """An extractive one-liner: the subject, then the body's first sentence if it adds any."""
    subject = " ".join(subject.split())
    first = re.split(r"(?<=[.!?])\s+", " ".join(body.split()), maxsplit=1)[0] if body else ""
    text = subject if not first or first.lower() in subject.lower() else f"{subject} — {first}" if subject else first
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def ticket_text(t: TicketView) -> str:
    return f"{t.subject}\n{t.body}"


def _detect(ticket: TicketView) -> tuple[str, float]:
    from atum_ai.local.langid import detect_language

    # Inline, not in a thread: a fraction of a millisecond of pure Python, which in a thread
    # only adds GIL hand-offs to every other job's event-loop work.
    return detect_language(ticket_text(ticket))


class TriageHandler(Handler[TriagePayload, TriageResult]):
    job_type = "TRIAGE_TICKET"
    Payload = TriagePayload
    Result = TriageResult
    description = "Classify a ticket: queue, type, priority, intent, language, sentiment, summary"
    timeout_seconds = 120.0

    async def handle(self, payload: TriagePayload, ctx: HandlerContext) -> HandlerResult[TriageResult]:
        ticket = await ctx.repo.get_ticket(payload.ticket_id)
        if ticket is None:
            raise PermanentError(f"ticket {payload.ticket_id!r} not found in this organization")
        taxonomy = await ctx.repo.taxonomy()
        if ctx.llm is not None and not taxonomy.empty:
            result, audit = await self._llm(ctx, ticket, taxonomy)
        else:
            lang, lang_conf = _detect(ticket)
            result, audit = await self._local(ctx, ticket, taxonomy, lang, lang_conf)
        follow_ups = []
        if payload.chain:
            follow_ups = [
                FollowUp("KB_SUGGEST", {"ticket_id": ticket.ticket_id, "language": result.language.label
                                        if result.language.label != "und" else None},
                         dedupe_key=f"kb:{ticket.ticket_id}"),
                FollowUp("SLA_PREDICT", {"ticket_id": ticket.ticket_id,
                                         "priority": result.priority.label if result.priority else None,
                                         "queue": result.queue.label if result.queue else None,
                                         "ticket_type": result.type.label if result.type else None,
                                         "language": result.language.label},
                         dedupe_key=f"sla:{ticket.ticket_id}"),
            ]
        return HandlerResult(result, follow_ups, audit)

    # ---------------------------------------------------------------- local
    async def _local(self, ctx: HandlerContext, ticket: TicketView, taxonomy: Taxonomy,
                     lang: str, lang_conf: float) -> tuple[TriageResult, dict[str, Any]]:
        from atum_ai.local.sentiment import analyze_sentiment
        from atum_ai.local.triage_model import TriageModel

        loaded = await load_model(ctx, "triage", TriageModel.from_bytes)
        fields: dict[str, ScoredLabel | None] = {f: None for f in TRIAGE_FIELDS}
        reasons: list[str] = []
        audit: dict[str, Any] = {"source": "local"}
        if loaded is None:
            reasons.append("no trained triage model for this organization (run `atum-ai train`)")
        else:
            model, version = loaded
            audit.update(model=f"triage-local-v{version}")
            preds = await asyncio.to_thread(model.predict, ticket.subject, ticket.body)
            allowed = {f: set(taxonomy.labels(f)) for f in TRIAGE_FIELDS}
            for name, p in preds.items():
                if name not in fields:
                    continue
                if allowed.get(name) and p.label not in allowed[name]:
                    reasons.append(f"{name}: model label {p.label!r} is not in the taxonomy")
                    continue
                fields[name] = scored(p.label, p.confidence)
        sentiment = await asyncio.to_thread(analyze_sentiment, ticket_text(ticket), lang)
        result = self._assemble(ctx, ticket, fields, lang, lang_conf, sentiment.label, sentiment.score,
                                sentiment.confidence, reasons, "local")
        return result, audit

    # ---------------------------------------------------------------- LLM
    async def _llm(self, ctx: HandlerContext, ticket: TicketView,
                   taxonomy: Taxonomy) -> tuple[TriageResult, dict[str, Any]]:
        assert ctx.llm is not None
        prompt = ctx.prompts.render(
            self.job_type,
            ticket={"subject": ticket.subject, "body": ticket.body, "channel": ticket.channel or ""},
            taxonomy={f: taxonomy.describe(f) for f in TRIAGE_FIELDS},
        )
        labels = {f: set(taxonomy.labels(f)) for f in TRIAGE_FIELDS}

        def inside_taxonomy(answer: LLMTriage) -> None:
            for f in ("queue", "type", "priority", "intent"):
                value = getattr(answer, f)
                if value is None or not labels[f]:
                    continue
                if value not in labels[f]:
                    raise ValueError(f"{f} must be one of {sorted(labels[f])}, not {value!r}")

        outcome = await ctx.llm.complete_structured(
            self.job_type, prompt, LLMTriage, mask_pii=await mask_pii_for(ctx), validate=inside_taxonomy)
        a = outcome.value
        conf = {k: max(0.0, min(1.0, float(v))) for k, v in a.confidence.items()}
        if a.language:
            lang, lang_conf = a.language, conf.get("language", 0.8)
        else:
            lang, lang_conf = _detect(ticket)
        fields: dict[str, ScoredLabel | None] = {}
        for f in TRIAGE_FIELDS:
            value = getattr(a, f)
            fields[f] = scored(value, conf.get(f, 0.5)) if value and (labels[f] or f != "intent") else None
            if fields[f] is not None and labels[f] and value not in labels[f]:
                fields[f] = None  # unreachable after validation; belt and braces
        result = self._assemble(ctx, ticket, fields, lang, lang_conf, a.sentiment.label,
                                a.sentiment.score, conf.get("sentiment", 0.6), [], "llm",
                                summary=a.summary)
        return result, outcome.audit()

    # ---------------------------------------------------------------- common
    def _assemble(self, ctx: HandlerContext, ticket: TicketView, fields: dict[str, ScoredLabel | None],
                  lang: str, lang_conf: float, s_label: str, s_score: float, s_conf: float,
                  reasons: list[str], source: Literal["local", "llm"], summary: str | None = None) -> TriageResult:
        threshold = ctx.settings.review_threshold
        for name in ("queue", "type", "priority"):
            f = fields.get(name)
            if f is None:
                reasons.append(f"{name}: no prediction")
            elif f.confidence < threshold:
                reasons.append(f"{name}: low confidence {f.confidence:.2f}")
        if lang == "und":
            reasons.append("language: undetermined")
        return TriageResult(
            ticket_id=ticket.ticket_id,
            queue=fields.get("queue"), type=fields.get("type"), priority=fields.get("priority"),
            intent=fields.get("intent"),
            language=scored(lang, lang_conf),
            sentiment=SentimentValue(label=s_label, score=round(max(-1, min(1, s_score)), 4),  # type: ignore[arg-type]
                                     confidence=round(max(0, min(1, s_conf)), 4),
                                     band="High" if s_conf >= 0.8 else "Medium" if s_conf >= 0.5 else "Low"),
            summary=summary or summarize(ticket.subject, ticket.body),
            needs_review=bool(reasons),
            review_reasons=reasons,
            source=source,
        )

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[TriageResult]) -> None:
        r = outcome.result
        confs = [f.confidence for f in (r.queue, r.type, r.priority) if f is not None]
        await upsert_suggestion(conn, job, ticket_id=r.ticket_id, kind="triage", outcome=outcome,
                                confidence=min(confs) if confs else None)
