"""KB_SUGGEST: the organization's best knowledge-base articles for a ticket.

Local retrieval is PostgreSQL full-text search ranked BM25-style (``local/kb_search.py``):
OR-ed lexemes for recall, IDF and length normalisation for precision. With an LLM
configured, ``prompts/KB_SUGGEST.j2`` re-ranks the candidates (it may only reorder or drop
them, never add one). Chains SMART_REPLY with the suggested article ids.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import Field

from atum_ai.errors import PermanentError
from atum_ai.handlers.base import FollowUp, Handler, HandlerContext, HandlerResult, Payload, Result
from atum_ai.handlers.common import LanguageCode, TicketId, mask_pii_for, upsert_suggestion
from atum_ai.queue.models import Job

MAX_QUERY_CHARS = 2000


class KbPayload(Payload):
    ticket_id: TicketId
    language: LanguageCode | None = None
    k: int = Field(default=5, ge=1, le=20)
    chain: bool = True


class KbArticleHit(Result):
    article_id: str
    title: str
    score: float
    snippet: str
    url: str | None = None
    # False: the article matched body words only, none in its title; usually off-topic (a
    # ticket whose topic has no article in the KB). Replies do not cite such an article.
    title_match: bool = True


class KbResult(Result):
    ticket_id: str
    articles: list[KbArticleHit]
    source: Literal["local", "llm"]


class LLMRerank(Result):
    ranked_article_ids: list[str] = Field(max_length=20)


class KbSuggestHandler(Handler[KbPayload, KbResult]):
    job_type = "KB_SUGGEST"
    Payload = KbPayload
    Result = KbResult
    description = "Suggest knowledge-base articles for a ticket (full-text BM25, optional LLM rerank)"
    timeout_seconds = 60.0

    async def handle(self, payload: KbPayload, ctx: HandlerContext) -> HandlerResult[KbResult]:
        ticket = await ctx.repo.get_ticket(payload.ticket_id)
        if ticket is None:
            raise PermanentError(f"ticket {payload.ticket_id!r} not found in this organization")
        query = f"{ticket.subject}\n{ticket.body}"[:MAX_QUERY_CHARS]
        # KB articles are often in one language while tickets come in several: search them all
        # and let ranking decide, rather than filter by the ticket's language.
        hits = await ctx.repo.search_kb(query, k=payload.k, query_language=payload.language)
        articles = [KbArticleHit(article_id=h.article_id, title=h.title, score=round(h.score, 4),
                                 snippet=h.snippet, url=h.url, title_match=h.title_match) for h in hits]
        audit: dict[str, Any] = {"source": "local", "model": "kb-bm25-postgres"}
        source: Literal["local", "llm"] = "local"
        if ctx.llm is not None and len(articles) > 1:
            articles, audit = await self._rerank(ctx, ticket.subject, ticket.body, articles)
            source = "llm"
        result = KbResult(ticket_id=ticket.ticket_id, articles=articles, source=source)
        follow_ups = []
        if payload.chain:
            follow_ups.append(FollowUp(
                "SMART_REPLY",
                {"ticket_id": ticket.ticket_id, "article_ids": [a.article_id for a in articles[:3]],
                 "language": payload.language},
                dedupe_key=f"reply:{ticket.ticket_id}"))
        return HandlerResult(result, follow_ups, audit)

    async def _rerank(self, ctx: HandlerContext, subject: str, body: str,
                      articles: list[KbArticleHit]) -> tuple[list[KbArticleHit], dict[str, Any]]:
        assert ctx.llm is not None
        known = {a.article_id: a for a in articles}
        prompt = ctx.prompts.render(self.job_type, ticket={"subject": subject, "body": body},
                                    articles=[a.model_dump() for a in articles])

        def only_candidates(answer: LLMRerank) -> None:
            unknown = [i for i in answer.ranked_article_ids if i not in known]
            if unknown:
                raise ValueError(f"ranked_article_ids may only contain {sorted(known)}; not {unknown}")

        outcome = await ctx.llm.complete_structured(
            self.job_type, prompt, LLMRerank, mask_pii=await mask_pii_for(ctx), validate=only_candidates)
        seen: list[str] = []
        for i in outcome.value.ranked_article_ids:
            if i not in seen:
                seen.append(i)
        ranked = [known[i] for i in seen] + [a for a in articles if a.article_id not in seen]
        return ranked, outcome.audit()

    async def persist(self, conn: AsyncConnection[Any], job: Job, outcome: HandlerResult[KbResult]) -> None:
        r = outcome.result
        await upsert_suggestion(conn, job, ticket_id=r.ticket_id, kind="kb", outcome=outcome,
                                confidence=None)
