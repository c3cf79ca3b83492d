"""SMART_REPLY: a reply draft for the agent, in the customer's language, grounded in the
suggested articles. Never sent automatically: the result is a draft (``auto_send`` is
always false) that an agent edits, accepts or rejects.

LLM path: ``prompts/SMART_REPLY.j2``; the answer may cite only the suggested article ids
and must be in the ticket's language (checked, one re-ask otherwise). Local path: a jinja2
template per language filled from the triage result and the top article.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import Field

from atum_ai.errors import PermanentError
from atum_ai.handlers.base import Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.handlers.common import LanguageCode, TicketId, mask_pii_for, upsert_suggestion
from atum_ai.queue.models import Job

ARTICLE_BODY_CHARS = 1500


class ReplyPayload(Payload):
    ticket_id: TicketId
    article_ids: list[str] = Field(default_factory=list, max_length=10)
    language: LanguageCode | None = None


class ReplyResult(Result):
    ticket_id: str
    draft: str
    language: str
    cited_article_ids: list[str]
    confidence: float = Field(ge=0, le=1)
    source: Literal["local", "llm"]
    auto_send: Literal[False] = False


class LLMReply(Result):
    draft: str = Field(min_length=1, max_length=6000)
    cited_article_ids: list[str] = Field(default_factory=list, max_length=10)
    confidence: float = Field(ge=0, le=1)


class SmartReplyHandler(Handler[ReplyPayload, ReplyResult]):
    job_type = "SMART_REPLY"
    Payload = ReplyPayload
    Result = ReplyResult
    description = "Draft a reply in the customer's language, citing suggested KB articles"
    timeout_seconds = 120.0

    async def handle(self, payload: ReplyPayload, ctx: HandlerContext) -> HandlerResult[ReplyResult]:
        ticket = await ctx.repo.get_ticket(payload.ticket_id)
        if ticket is None:
            raise PermanentError(f"ticket {payload.ticket_id!r} not found in this organization")
        language = payload.language
        if not language:
            from atum_ai.local.langid import detect_language

            language, _ = await asyncio.to_thread(detect_language, f"{ticket.subject}\n{ticket.body}")
        rows = {r["article_id"]: r for r in await ctx.repo.kb_articles(payload.article_ids)}
        kb = await ctx.repo.suggestion(ticket.ticket_id, "kb")
        kb_hits = {a["article_id"]: a for a in (kb or {}).get("content", {}).get("articles", [])}
        articles = [{**rows[i], "snippet": kb_hits.get(i, {}).get("snippet")}
                    for i in payload.article_ids if i in rows]
        triage = await ctx.repo.suggestion(ticket.ticket_id, "triage")
        priority = (((triage or {}).get("content") or {}).get("priority") or {}).get("label")
        if ctx.llm is not None:
            return await self._llm(ctx, ticket.ticket_id, ticket.subject, ticket.body, language, articles)
        from atum_ai.local.reply_templates import render_reply

        # The best-ranked article that matched the ticket in its title (ranking already prefers
        # the customer's language; one in another language that still ranks first is the
        # better match, named but not quoted). An article that matched on body words only is
        # usually about something else: no article beats pointing the customer at the wrong one.
        strong = [a for a in articles if kb_hits.get(a["article_id"], {}).get("title_match", True)]
        top = strong[0] if strong else None
        draft, used = render_reply(language, subject=ticket.subject, article=top,
                                   urgent=priority in ("urgent", "high", "critical"))
        # A template cannot judge fit: confidence follows whether there was an article, whether
        # the customer can read it, and whether the template speaks the customer's language.
        if top is None:
            confidence = 0.3
        elif top.get("language") in (None, language):
            confidence = 0.5
        else:
            confidence = 0.35
        confidence *= 1.0 if used == language else 0.6
        result = ReplyResult(ticket_id=ticket.ticket_id, draft=draft, language=used,
                             cited_article_ids=[top["article_id"]] if top else [],
                             confidence=round(confidence, 2), source="local")
        return HandlerResult(result, [], {"source": "local", "model": f"reply-template-{used}"})

    async def _llm(self, ctx: HandlerContext, ticket_id: str, subject: str, body: str,
                   language: str, articles: list[dict[str, Any]]) -> HandlerResult[ReplyResult]:
        assert ctx.llm is not None
        allowed = [a["article_id"] for a in articles]
        prompt = ctx.prompts.render(
            self.job_type, ticket={"subject": subject, "body": body}, language=language,
            articles=[{"article_id": a["article_id"], "title": a["title"],
                       "body": (a.get("body") or "")[:ARTICLE_BODY_CHARS]} for a in articles])

        def grounded(answer: LLMReply) -> None:
            bad = [i for i in answer.cited_article_ids if i not in allowed]
            if bad:
                raise ValueError(f"cited_article_ids may only contain {allowed}; not {bad}")
            if language in ("en", "de", "es", "fr", "pt") and len(answer.draft) >= 80:
                from atum_ai.local.langid import detect_language

                got, conf = detect_language(answer.draft)
                if got != language and conf >= 0.8:
                    raise ValueError(f"the draft must be written in language {language!r}, not {got!r}")

        outcome = await ctx.llm.complete_structured(
            self.job_type, prompt, LLMReply, mask_pii=await mask_pii_for(ctx), validate=grounded)
        a = outcome.value
        result = ReplyResult(ticket_id=ticket_id, draft=a.draft, language=language,
                             cited_article_ids=list(dict.fromkeys(a.cited_article_ids)),
                             confidence=a.confidence, source="llm")
        return HandlerResult(result, [], outcome.audit())

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[ReplyResult]) -> None:
        r = outcome.result
        await upsert_suggestion(conn, job, ticket_id=r.ticket_id, kind="reply", outcome=outcome,
                                confidence=r.confidence)
