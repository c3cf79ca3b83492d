"""Tenant isolation, end to end: two organizations that share ticket ids and KB article ids,
each with canary strings in its tickets and articles and its own label set, run through the
whole pipeline (local models, then the LLM path behind respx). No result, suggestion,
prompt sent, metrics snapshot or log line of one organization may carry the other's canary.

Sharing the ids is the point: a query that forgot ``organization_id`` would find the other
tenant's ticket or article under the same id and carry its canary across.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from atum_ai.config import Settings
from atum_ai.local.kb_search import import_articles
from atum_ai.logs import JsonFormatter
from atum_ai.pipeline.ingest import ensure_organization, ingest_event
from atum_ai.pipeline.training import set_taxonomy, train_triage
from atum_ai.queue.models import NewJob
from atum_ai.runtime import load_registry
from tests.support.pipeline import (
    fixture_taxonomy,
    local_settings,
    read_jsonl,
    rows,
    run_burst_worker,
    store_for,
)

BASE_URL = "http://llm.test/v1"
CHAIN = ("TRIAGE_TICKET", "KB_SUGGEST", "SLA_PREDICT", "SMART_REPLY")
# Org B names its queues differently: a label of one tenant showing up in the other's
# results would mean a model or taxonomy crossed over.
B_QUEUES = {"Billing": "Payments Desk", "Technical Support": "Product Help",
            "Account Management": "Access Team", "Sales": "Commercial", "Product Feedback": "Ideas"}


class Tenant:
    def __init__(self, name: str, queues: dict[str, str]) -> None:
        self.name = name
        self.id = uuid.uuid4()
        self.canary = f"CANARY{name}{uuid.uuid4().hex[:10].upper()}"
        self.queues = queues  # fixture queue label -> this tenant's label
        base = fixture_taxonomy()
        self.taxonomy = {**base, "queue": {queues[k]: v for k, v in base["queue"].items()}}

    def tickets(self, source: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(source):
            out.append({**r, "id": f"T-{i + 1}",  # the same ids in both tenants
                        "subject": f"{r['subject']} ({self.canary})",
                        "body": f"{r['body']}\nCustomer reference {self.canary}-{i + 1}.",
                        "queue": self.queues[r["queue"]]})
        return out

    def articles(self) -> list[dict[str, Any]]:
        return [{**a, "title": f"{a['title']} {self.canary}",
                 "body": f"{a['body']} Internal note {self.canary}."} for a in read_jsonl("kb.jsonl")]


def other(t: Tenant, tenants: tuple[Tenant, Tenant]) -> Tenant:
    return tenants[1] if t is tenants[0] else tenants[0]


@pytest.fixture
async def tenants(conn) -> tuple[Tenant, Tenant]:
    source = [r for r in read_jsonl("tickets.jsonl") if r["language"] == "en"]
    train, ingest_rows = source[0::2], source[1::2][:6]
    a = Tenant("A", {k: k for k in B_QUEUES})
    b = Tenant("B", B_QUEUES)
    for t in (a, b):
        await ensure_organization(conn, t.id)
        await set_taxonomy(conn, t.id, t.taxonomy)
        await train_triage(conn, t.id, t.tickets(train))
        async with conn.transaction():
            await import_articles(conn, t.id, t.articles())
        t.ingest = t.tickets(ingest_rows)  # type: ignore[attr-defined]
    return a, b


async def ingest_all(conn, settings: Settings, tenants: tuple[Tenant, Tenant]) -> None:
    store = store_for(settings, load_registry())
    async with conn.transaction():
        for t in tenants:
            for r in t.ingest:  # type: ignore[attr-defined]
                await ingest_event(conn, t.id, r, store=store)


async def snapshot_all(db_url, conn, settings: Settings, tenants: tuple[Tenant, Tenant]) -> None:
    store = store_for(settings, load_registry())
    day = datetime.now(UTC).date().isoformat()
    for t in tenants:
        await store.enqueue(conn, NewJob(t.id, "METRICS_SNAPSHOT", {"day": day, "timezone": "UTC"}))
    await run_burst_worker(db_url, settings, job_types=["METRICS_SNAPSHOT"])


async def assert_isolated(conn, tenants: tuple[Tenant, Tenant], records: list[logging.LogRecord],
                          source: str) -> None:
    for t in tenants:
        foreign = other(t, tenants).canary
        n = len(t.ingest)  # type: ignore[attr-defined]
        statuses = await rows(conn, "SELECT job_type, status, count(*) AS n FROM job_queue"
                                    " WHERE organization_id = %s GROUP BY 1, 2", t.id)
        assert {(r["job_type"], r["status"]): r["n"] for r in statuses} == {
            **{(jt, "DONE"): n for jt in CHAIN}, ("METRICS_SNAPSHOT", "DONE"): 1}, t.name

        suggestions = await rows(conn, "SELECT ticket_id, kind, content::text AS content"
                                       " FROM suggestions WHERE organization_id = %s", t.id)
        assert len(suggestions) == 4 * n
        for s in suggestions:
            assert foreign not in s["content"], (t.name, s["ticket_id"], s["kind"])
            content = json.loads(s["content"])
            assert content.get("source", source) in (source, "model", "cold_start")
            if s["kind"] == "triage":
                assert content["queue"]["label"] in t.taxonomy["queue"], (t.name, content["queue"])
            if s["kind"] == "kb":
                # Its own articles were found (they carry its canary), never the other's.
                assert content["articles"] and all(t.canary in a["title"] for a in content["articles"])
        jobs_text = await rows(conn, "SELECT payload::text || coalesce(result::text, '') AS t"
                                     " FROM job_queue WHERE organization_id = %s", t.id)
        assert all(foreign not in j["t"] for j in jobs_text), t.name
        events = await rows(conn, "SELECT coalesce(message, '') || coalesce(data::text, '') AS t"
                                  " FROM job_events WHERE organization_id = %s", t.id)
        assert all(foreign not in e["t"] for e in events), t.name

        [snap] = await rows(conn, "SELECT metrics::text AS m FROM metrics_snapshots"
                                  " WHERE organization_id = %s", t.id)
        metrics = json.loads(snap["m"])
        assert metrics["tickets_in"] == n and foreign not in snap["m"]
        assert metrics["suggestions_created"] == {"kb": n, "reply": n, "sla": n, "triage": n}

    # Ticket text is never logged at all, let alone under the other tenant's name.
    formatter = JsonFormatter()
    for record in records:
        line = formatter.format(record)
        for t in tenants:
            assert t.canary not in line, line


async def test_local_pipeline_keeps_tenants_apart(db_url, conn, tenants, caplog):
    caplog.set_level(logging.DEBUG, logger="atum_ai")
    settings = local_settings()
    await ingest_all(conn, settings, tenants)
    await run_burst_worker(db_url, settings, concurrency=8)
    await snapshot_all(db_url, conn, settings, tenants)
    await assert_isolated(conn, tenants, caplog.records, "local")


# ------------------------------------------------------------------------- the LLM path
def _fake_model(tenants: tuple[Tenant, Tenant], sent: list[str]):
    """An obliging model: it answers every task, and copies what it was shown into its
    answers (the subject into the triage summary, the ticket into the reply draft), so a
    prompt that carried the other tenant's text would carry it into the stored results."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(request.content.decode())
        name = body["response_format"]["json_schema"]["name"]
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        system = body["messages"][0]["content"]
        tenant = next((t for t in tenants if t.canary in user), None)
        if name == "LLMTriage":
            # The queue labels offered in the prompt: take the first one listed.
            queue = re.search(r"Queues:\n- ([^:\n]+)", system).group(1)  # type: ignore[union-attr]
            subject = re.search(r"<ticket_text>\n(.*?)\n</ticket_text>", user, re.S).group(1)  # type: ignore[union-attr]
            content = {"queue": queue, "type": "Request", "priority": "medium", "intent": None,
                       "sentiment": {"label": "neutral", "score": 0.0},
                       "summary": f"About: {subject}"[:500],
                       "confidence": {"queue": 0.9, "type": 0.8, "priority": 0.7, "sentiment": 0.6}}
        elif name == "LLMRerank":
            content = {"ranked_article_ids": re.findall(r"- id: (\S+)", user)[::-1]}
        elif name == "LLMReply":
            ids = re.findall(r"^\[(KB-\d+)\]", user, re.M)
            content = {"draft": f"Hello, about your message: {user[:300]}", "cited_article_ids": ids[:1],
                       "confidence": 0.7}
        elif name == "LLMExplanation":
            content = {"explanation": f"Risk as computed. {user[:200]}"}
        elif name == "LLMNarrative":
            content = {"narrative": f"A quiet day. {user[:300]}"}
        else:  # pragma: no cover - a new LLM task must be taught to this fake
            raise AssertionError(f"unexpected schema {name}")
        assert tenant is not None or name in ("LLMExplanation", "LLMNarrative"), user[:200]
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "iso-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(content)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    return answer


async def test_llm_pipeline_keeps_tenants_apart_in_prompts_and_results(
        db_url, conn, tenants, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="atum_ai")
    monkeypatch.setenv("ATUM_LLM_BASE_URL", BASE_URL)
    monkeypatch.setenv("ATUM_LLM_MODEL", "iso-model")
    monkeypatch.setenv("ATUM_LLM_API_KEY", "sk-iso-test")
    monkeypatch.delenv("ATUM_LLM_TASK_MODELS", raising=False)
    settings = Settings()
    sent: list[str] = []
    with respx.mock(base_url=BASE_URL, assert_all_called=True) as mock:
        mock.post("/chat/completions").mock(side_effect=_fake_model(tenants, sent))
        await ingest_all(conn, settings, tenants)
        await run_burst_worker(db_url, settings, concurrency=8)
        await snapshot_all(db_url, conn, settings, tenants)

    n = sum(len(t.ingest) for t in tenants)  # type: ignore[attr-defined]
    assert len(sent) == 4 * n + 2  # triage, rerank, reply, SLA wording per ticket; 2 narratives
    a, b = tenants
    for request in sent:
        assert not (a.canary in request and b.canary in request), request[:300]
    assert sum(a.canary in r for r in sent) == sum(b.canary in r for r in sent) > 0
    await assert_isolated(conn, tenants, caplog.records, "llm")
    for t in tenants:
        summaries = await rows(conn, "SELECT content->>'summary' AS s FROM suggestions"
                                     " WHERE organization_id = %s AND kind = 'triage'", t.id)
        # The model did echo its prompt: the check above would have seen a crossed-over text.
        assert all(t.canary in s["s"] for s in summaries)
