"""The ticket pipeline on a real PostgreSQL: ingest (Python API and CLI), the local pipeline
end to end in a burst worker wired as production wires it, metrics snapshots and feedback,
and the atomicity of a job's completion with its follow-ups."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from atum_ai.errors import ValidationError
from atum_ai.pipeline.ingest import ingest_event, parse_event
from atum_ai.pipeline.suggestions import record_feedback
from atum_ai.pipeline.training import set_taxonomy, train_triage
from atum_ai.queue.models import NewJob
from atum_ai.runtime import load_registry
from tests.support.pipeline import (
    FIXTURES,
    LLM_ENV,
    fixture_taxonomy,
    job_statuses,
    local_settings,
    read_jsonl,
    rows,
    run_burst_worker,
    run_cli,
    scalar,
    store_for,
    suggestions_by_ticket,
    table_counts,
)

GREETING = {"en": "Hello,", "de": "Guten Tag,", "es": "Hola:", "fr": "Bonjour,", "pt": "Olá,"}


# ============================================================================ ingest: Python API
async def test_ingest_event_rolls_back_with_the_callers_transaction(db_url, org):
    event = {"type": "ticket.created", "ticket_id": "T-1", "subject": "Printer", "body": "Broken."}
    async with await psycopg.AsyncConnection.connect(db_url) as c:
        async with c.transaction(force_rollback=True):
            await c.execute("CREATE TABLE callers_own_table (x int)")
            res = await ingest_event(c, org, event)
            assert res.job_id is not None and not res.duplicate
            # Visible inside the caller's transaction ...
            assert await scalar(c, "SELECT count(*) FROM job_queue") == 1
            assert await scalar(c, "SELECT count(*) FROM tickets") == 1
        # ... and gone with it: no ticket, no job, no event record, no organization.
        assert await table_counts(c) == {"organizations": 0, "tickets": 0, "ticket_events": 0,
                                         "job_queue": 0, "job_events": 0, "suggestions": 0}
        assert await scalar(c, "SELECT to_regclass('callers_own_table')") is None


async def test_ingest_event_commits_mirror_and_triage_job_together(db_url, org):
    async with await psycopg.AsyncConnection.connect(db_url) as c:
        async with c.transaction():
            res = await ingest_event(c, org, {"type": "ticket.created", "ticket_id": "T-2",
                                              "subject": "Invoice", "body": "Wrong VAT."})
        [job] = await rows(c, "SELECT job_type, payload, status, organization_id FROM job_queue")
        assert job == {"job_type": "TRIAGE_TICKET", "payload": {"ticket_id": "T-2", "event": "ticket.created"},
                       "status": "PENDING", "organization_id": org}
        assert res.job_id is not None
        # The same event again (same content, no event_id): recognised, nothing enqueued.
        again = await ingest_event(c, org, {"type": "ticket.created", "ticket_id": "T-2",
                                            "subject": "Invoice", "body": "Wrong VAT."})
        await c.commit()
        assert again.duplicate and again.job_id is None
        assert await scalar(c, "SELECT count(*) FROM job_queue") == 1


def test_parse_event_names_the_bad_field():
    with pytest.raises(ValidationError) as info:
        parse_event({"type": "ticket.created", "subject": "no id"})
    assert info.value.field == "ticket_id"
    with pytest.raises(ValidationError) as info:
        parse_event({"type": "ticket.created", "ticket_id": "T", "occurred_at": "2026-01-01T09:00:00"})
    assert info.value.field == "occurred_at" and "naive" in str(info.value)


# ============================================================================== ingest: the CLI
def _cli(monkeypatch, capsys, db_url: str, *argv: str) -> tuple[int, Any, str]:
    monkeypatch.setenv("ATUM_DATABASE_URL", db_url)
    for name in LLM_ENV:
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    code = run_cli(["--log-level", "WARNING", *argv])
    out, err = capsys.readouterr()
    # With --json, stdout is exactly one JSON document (nothing else: it is piped to programs).
    data = json.loads(out) if "--json" in argv else None
    return code, data, err


def _sync_counts(db_url: str, org: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(db_url) as c:
        def one(sql: str) -> Any:
            return c.execute(sql, (org,)).fetchone()[0]  # type: ignore[index]
        return {
            "tickets": one("SELECT count(*) FROM tickets WHERE organization_id = %s"),
            "ticket_events": one("SELECT count(*) FROM ticket_events WHERE organization_id = %s"),
            "jobs": one("SELECT count(*) FROM job_queue WHERE organization_id = %s"),
            "job_events": one("SELECT count(*) FROM job_events WHERE organization_id = %s"),
            "messages": one("SELECT coalesce(sum(message_count), 0) FROM tickets WHERE organization_id = %s"),
            "orgs": one("SELECT count(*) FROM organizations WHERE id = %s"),
        }


def _expected_times(events: list[dict[str, Any]]) -> dict[str, dict[str, datetime | None]]:
    """First agent reply and final resolution per ticket, replaying the file in order
    (a customer reply re-opens a resolved ticket)."""
    out: dict[str, dict[str, datetime | None]] = {}
    for ev in events:
        t = out.setdefault(ev["ticket_id"], {"first_response_at": None, "resolved_at": None})
        at = datetime.fromisoformat(ev["occurred_at"])
        if ev["type"] == "ticket.agent_replied":
            t["first_response_at"] = min(filter(None, [t["first_response_at"], at]))
        elif ev["type"] == "ticket.resolved":
            t["resolved_at"] = at
        elif ev["type"] == "ticket.customer_replied":
            t["resolved_at"] = None
    return out


def test_cli_ingest_events_file_enqueues_triage_for_created_and_customer_replies_only(
        db_url, org, monkeypatch, capsys):
    path = FIXTURES / "events.jsonl"
    events = read_jsonl("events.jsonl")
    triage_events = [e for e in events if e["type"] in ("ticket.created", "ticket.customer_replied")]
    assert 0 < len(triage_events) < len(events)  # the fixture really mixes event types

    code, stats, _ = _cli(monkeypatch, capsys, db_url, "ingest", str(path), "--org", str(org), "--json")
    assert code == 0
    assert stats == {"events": len(events), "enqueued": len(triage_events), "duplicates": 0,
                     "skipped": 0, "errors": []}
    with psycopg.connect(db_url) as c:
        jobs = c.execute("SELECT job_type, payload FROM job_queue WHERE organization_id = %s", (org,)).fetchall()
        assert {j[0] for j in jobs} == {"TRIAGE_TICKET"}
        got = sorted((p["ticket_id"], p["event"]) for _, p in jobs)
        assert got == sorted((e["ticket_id"], e["type"]) for e in triage_events)

        # first_response_at / resolved_at land in the mirror.
        expected = _expected_times(events)
        mirror = {r[0]: {"first_response_at": r[1], "resolved_at": r[2], "status": r[3]}
                  for r in c.execute("SELECT ticket_id, first_response_at, resolved_at, status FROM tickets"
                                     " WHERE organization_id = %s", (org,))}
    assert set(mirror) == set(expected) == {e["ticket_id"] for e in events}
    for tid, exp in expected.items():
        assert mirror[tid]["first_response_at"] == exp["first_response_at"], tid
        assert mirror[tid]["resolved_at"] == exp["resolved_at"], tid
        assert (mirror[tid]["status"] == "resolved") == (exp["resolved_at"] is not None), tid
    assert any(e["resolved_at"] for e in expected.values())
    assert mirror["N-501"]["first_response_at"] == datetime(2026, 11, 30, 8, 31, tzinfo=UTC)
    assert mirror["N-501"]["resolved_at"] == datetime(2026, 11, 30, 10, 45, tzinfo=UTC)

    # Replaying the same file: every event is recognised, nothing is enqueued or changed.
    before = _sync_counts(db_url, org)
    code, stats, _ = _cli(monkeypatch, capsys, db_url, "ingest", str(path), "--org", str(org), "--json")
    assert code == 0
    assert stats["enqueued"] == 0 and stats["duplicates"] == len(events)
    assert _sync_counts(db_url, org) == before


def _bad_file(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"type": "ticket.created", "event_id": "e1", "ticket_id": "B-1", "subject": "One", "body": "x"}),
        '{"type": "ticket.created", "ticket_id": ',  # line 2: not JSON
        json.dumps({"type": "ticket.created", "event_id": "e3", "subject": "no ticket id"}),  # line 3
        "",
        json.dumps({"type": "ticket.created", "event_id": "e5", "ticket_id": "B-2", "subject": "Two", "body": "y"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_ingest_reports_and_skips_malformed_lines(db_url, org, monkeypatch, capsys, tmp_path):
    code, stats, err = _cli(monkeypatch, capsys, db_url, "ingest", str(_bad_file(tmp_path)),
                            "--org", str(org), "--json")
    assert code == 1
    assert stats["events"] == 2 and stats["enqueued"] == 2 and stats["skipped"] == 2
    assert [e.split(":")[0] for e in stats["errors"]] == ["line 2", "line 3"]
    assert "ticket_id" in stats["errors"][1]
    assert "line 2" in err and "line 3" in err
    with psycopg.connect(db_url) as c:
        got = [r[0] for r in c.execute("SELECT ticket_id FROM tickets ORDER BY 1")]
    assert got == ["B-1", "B-2"]


def test_cli_ingest_on_error_abort_writes_nothing(db_url, org, monkeypatch, capsys, tmp_path):
    code, _, err = _cli(monkeypatch, capsys, db_url, "ingest", str(_bad_file(tmp_path)),
                        "--org", str(org), "--on-error", "abort")
    assert code == 2
    assert "line 2" in err and "nothing was written" in err
    assert _sync_counts(db_url, org) == {"tickets": 0, "ticket_events": 0, "jobs": 0, "job_events": 0,
                                         "messages": 0, "orgs": 0}


def test_cli_ingest_accepts_labelled_tickets_as_created(db_url, org, monkeypatch, capsys, tmp_path):
    labelled = read_jsonl("tickets.jsonl")[:5]
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in labelled), encoding="utf-8")
    code, stats, _ = _cli(monkeypatch, capsys, db_url, "ingest", str(path), "--org", str(org), "--json")
    assert code == 0 and stats["enqueued"] == 5
    with psycopg.connect(db_url) as c:
        mirror = {r[0]: r[1:] for r in c.execute(
            "SELECT ticket_id, subject, body, language, labels, status FROM tickets WHERE organization_id = %s",
            (org,))}
        payloads = [r[0] for r in c.execute("SELECT payload FROM job_queue WHERE organization_id = %s", (org,))]
        kinds = {r[0] for r in c.execute("SELECT event_type FROM ticket_events WHERE organization_id = %s", (org,))}
    assert kinds == {"ticket.created"}
    assert sorted(p["ticket_id"] for p in payloads) == sorted(r["id"] for r in labelled)
    assert {p["event"] for p in payloads} == {"ticket.created"}
    for r in labelled:
        subject, body, language, labels, status = mirror[r["id"]]
        assert (subject, body, language, status) == (r["subject"], r["body"], r["language"], "open")
        # Gold labels are kept for training, not mixed into the mirror's own columns.
        assert labels == {"queue": r["queue"], "type": r["type"], "priority": r["priority"]}


# ====================================================================== the local pipeline
@pytest.fixture
async def trained_org(conn, org):
    """An organization with the fixtures' taxonomy, KB, and a triage model trained on the
    even-numbered half of tickets.jsonl; returns the other half (to ingest)."""
    from atum_ai.local.kb_search import import_articles
    from atum_ai.pipeline.ingest import ensure_organization

    tickets = read_jsonl("tickets.jsonl")
    train, held_out = tickets[0::2], tickets[1::2]
    await ensure_organization(conn, org)
    await set_taxonomy(conn, org, fixture_taxonomy())
    await train_triage(conn, org, train)
    async with conn.transaction():
        await import_articles(conn, org, read_jsonl("kb.jsonl") + read_jsonl("kb_translations.jsonl"))
    return held_out


async def _snapshot(db_url, conn, org, settings, registry, day) -> dict[str, Any]:
    store = store_for(settings, registry)
    await store.enqueue(conn, NewJob(org, "METRICS_SNAPSHOT", {"day": day.isoformat(), "timezone": "UTC"}))
    await run_burst_worker(db_url, settings, registry=registry, job_types=["METRICS_SNAPSHOT"])
    return await scalar(conn, "SELECT metrics FROM metrics_snapshots WHERE organization_id = %s AND day = %s",
                        org, day)


async def test_local_pipeline_end_to_end(db_url, conn, org, trained_org):
    held_out = trained_org
    settings = local_settings()
    registry = load_registry()
    store = store_for(settings, registry)
    async with conn.transaction():
        for r in held_out:
            await ingest_event(conn, org, r, store=store)

    worker = await run_burst_worker(db_url, settings, registry=registry, concurrency=8)
    n = len(held_out)
    assert worker.processed == 4 * n
    assert await job_statuses(conn, org) == {(t, "DONE"): n for t in
                                             ("TRIAGE_TICKET", "KB_SUGGEST", "SLA_PREDICT", "SMART_REPLY")}
    assert await scalar(conn, "SELECT count(*) FROM job_queue WHERE status = 'DEAD'") == 0

    taxonomy = fixture_taxonomy()
    by_ticket = await suggestions_by_ticket(conn, org)
    assert set(by_ticket) == {r["id"] for r in held_out}
    languages_seen = set()
    for r in held_out:
        s = by_ticket[r["id"]]
        assert set(s) == {"triage", "kb", "sla", "reply"}, r["id"]
        tri = s["triage"]["content"]
        assert tri["source"] == "local" and tri["ticket_id"] == r["id"]
        for field in ("queue", "type", "priority"):
            assert tri[field]["label"] in taxonomy[field], (r["id"], field, tri[field])
            assert tri[field]["band"] in ("High", "Medium", "Low")
        assert tri["language"]["label"] == r["language"], r["id"]
        assert s["triage"]["model"].startswith("triage-local-v")
        assert s["kb"]["content"]["articles"], r["id"]
        sla = s["sla"]["content"]
        assert sla["source"] == "cold_start" and sla["risk_band"] in ("LOW", "MEDIUM", "HIGH")
        assert 0 <= sla["breach_probability"] <= 1
        reply = s["reply"]["content"]
        assert reply["auto_send"] is False and reply["source"] == "local"
        # Cited articles are a subset of the suggested ones.
        assert set(reply["cited_article_ids"]) <= {a["article_id"] for a in s["kb"]["content"]["articles"]}
        if r["language"] in ("de", "es", "fr", "pt"):
            languages_seen.add(r["language"])
            assert reply["language"] == r["language"], (r["id"], reply["language"])
            assert reply["draft"].startswith(GREETING[r["language"]]), (r["id"], reply["draft"][:40])
    assert languages_seen == {"de", "es", "fr", "pt"}  # the held-out half covers every template
    # Every reply suggestion was written by the SMART_REPLY job of that ticket.
    assert await scalar(conn, "SELECT count(*) FROM suggestions s JOIN job_queue q ON q.id = s.job_id"
                              " WHERE s.organization_id = %s AND q.job_type = 'SMART_REPLY'"
                              " AND q.payload->>'ticket_id' = s.ticket_id AND s.kind = 'reply'", org) == n

    # -------- metrics snapshot for today
    day = datetime.now(UTC).date()
    m1 = await _snapshot(db_url, conn, org, settings, registry, day)
    assert m1["tickets_in"] == n
    assert m1["suggestions_created"] == {"kb": n, "reply": n, "sla": n, "triage": n}
    assert m1["dead_jobs"] == 0 and m1["feedback"] == {}
    for t in ("TRIAGE_TICKET", "KB_SUGGEST", "SLA_PREDICT", "SMART_REPLY"):
        assert m1["jobs"][t]["SUCCEEDED"] == n and m1["jobs"][t]["ENQUEUED"] == n
    assert "METRICS_SNAPSHOT" not in m1["jobs"]  # a snapshot does not count itself
    assert m1["llm"] == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}

    # Recomputing the same day gives identical numbers (the upsert replaces the row).
    m2 = await _snapshot(db_url, conn, org, settings, registry, day)
    assert m2 == m1
    assert await scalar(conn, "SELECT count(*) FROM metrics_snapshots WHERE organization_id = %s", org) == 1

    # -------- agent feedback flows into the next snapshot
    first, second = sorted(by_ticket)[:2]
    await record_feedback(conn, org, by_ticket[first]["triage"]["id"], "accepted")
    await record_feedback(conn, org, by_ticket[second]["triage"]["id"], "rejected")
    await record_feedback(conn, org, by_ticket[first]["reply"]["id"], "edited", "Hello, fixed.")
    m3 = await _snapshot(db_url, conn, org, settings, registry, day)
    assert m3["feedback"] == {
        "triage": {"accepted": 1, "edited": 0, "rejected": 1, "acceptance_rate": 0.5, "edit_rate": 0.0},
        "reply": {"accepted": 0, "edited": 1, "rejected": 0, "acceptance_rate": 0.0, "edit_rate": 1.0},
    }
    assert {k: v for k, v in m3.items() if k != "feedback"} == {k: v for k, v in m1.items() if k != "feedback"}


# ================================================================= chaining atomicity
FAIL_SUGGESTIONS = """
CREATE FUNCTION test_refuse_suggestion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'suggestions are refused by the test'; END $$;
CREATE TRIGGER test_refuse_suggestion BEFORE INSERT OR UPDATE ON suggestions
    FOR EACH ROW EXECUTE FUNCTION test_refuse_suggestion();
"""


async def test_triage_follow_ups_exist_exactly_when_it_is_done(db_url, conn, org):
    settings = local_settings()
    registry = load_registry()
    store = store_for(settings, registry)
    ticket = read_jsonl("tickets.jsonl")[0]  # no trained model needed: local triage still answers
    res = await ingest_event(conn, org, ticket, store=store)
    await conn.execute(FAIL_SUGGESTIONS)

    # The handler succeeds, but its suggestion cannot be stored: the completion transaction
    # rolls back, so neither DONE nor the follow-ups nor the suggestion exist.
    await run_burst_worker(db_url, settings, registry=registry, job_types=["TRIAGE_TICKET"])
    job = await store.get(conn, res.job_id)
    assert job.status == "FAILED" and job.retry_count == 1
    assert job.result is None and "could not store the result" in job.last_error
    assert await scalar(conn, "SELECT count(*) FROM job_queue WHERE parent_id = %s", job.id) == 0
    assert await scalar(conn, "SELECT count(*) FROM job_queue WHERE organization_id = %s", org) == 1
    assert await scalar(conn, "SELECT count(*) FROM suggestions") == 0
    kinds = [e.event_type for e in await store.events(conn, job.id)]
    assert "SUCCEEDED" not in kinds and kinds[-1] == "RETRY_SCHEDULED"

    # Once the suggestion can be stored, the retry completes: DONE, both follow-ups (children
    # of this job, same tenant) and the suggestion, all together.
    await conn.execute("DROP TRIGGER test_refuse_suggestion ON suggestions")
    await conn.execute("UPDATE job_queue SET run_after = now() WHERE id = %s", (job.id,))
    await run_burst_worker(db_url, settings, registry=registry, job_types=["TRIAGE_TICKET"])
    job = await store.get(conn, res.job_id)
    assert job.status == "DONE" and job.result["ticket_id"] == ticket["id"]
    children = await rows(conn, "SELECT job_type, status, organization_id, payload FROM job_queue"
                                " WHERE parent_id = %s ORDER BY job_type", job.id)
    assert [(c["job_type"], c["status"], c["organization_id"]) for c in children] == [
        ("KB_SUGGEST", "PENDING", org), ("SLA_PREDICT", "PENDING", org)]
    assert all(c["payload"]["ticket_id"] == ticket["id"] for c in children)
    [sugg] = await rows(conn, "SELECT kind, job_id FROM suggestions WHERE organization_id = %s", org)
    assert sugg == {"kind": "triage", "job_id": job.id}


# ============================================================================ the demo
def test_demo_on_the_fixtures_gives_every_ticket_four_suggestions(db_url, monkeypatch, capsys):
    """The README's main command, on this test's database instead of the embedded server
    (tests/integration/test_embedded.py covers that one): stdout is one JSON document."""
    code, report, _ = _cli(monkeypatch, capsys, db_url, "demo", "--json")
    assert code == 0
    tickets = {r["id"]: r for r in read_jsonl("tickets.jsonl")}
    assert report["tickets"] == len(tickets) and report["dead_jobs"] == 0
    assert report["metrics"]["tickets_in"] == len(tickets)
    taxonomy = fixture_taxonomy()
    right = 0
    for tid, r in tickets.items():
        s = report["suggestions"][tid]
        assert set(s) == {"triage", "kb", "sla", "reply"}, tid
        assert s["triage"]["queue"]["label"] in taxonomy["queue"]
        right += s["triage"]["queue"]["label"] == r["queue"]
        assert s["triage"]["language"]["label"] == r["language"], tid
        assert s["reply"]["language"] == r["language"] and s["reply"]["auto_send"] is False
        assert s["reply"]["draft"].startswith(GREETING[r["language"]])
        # A reply cites only an article that matched the ticket in its title.
        weak = {a["article_id"] for a in s["kb"]["articles"] if not a["title_match"]}
        assert not weak & set(s["reply"]["cited_article_ids"]), tid
    # The German VAT-number invoice question has no German invoice article: whatever ranks
    # first matched body words only, and the draft points to no article.
    vat = report["suggestions"]["T-1025"]
    assert not vat["kb"]["articles"][0]["title_match"] and vat["reply"]["cited_article_ids"] == []
    # The English one finds the invoice/VAT article by its title and cites it.
    assert report["suggestions"]["T-1008"]["reply"]["cited_article_ids"] == ["KB-03"]
    # Trained on 250 separate fixture tickets: most queues come out right (45/48 when written).
    assert right >= 0.75 * len(tickets), right
