"""Payload models of the built-in handlers: what an enqueuer may send, and errors that name
the field (no database: the registry is the queue's validator)."""

from __future__ import annotations

import pytest

from atum_ai.errors import PayloadValidationError
from atum_ai.handlers.registry import Registry, build_registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(plugins=False)


def refused(registry: Registry, job_type: str, payload: dict) -> PayloadValidationError:
    with pytest.raises(PayloadValidationError) as info:
        registry.validate_payload(job_type, payload)
    return info.value


@pytest.mark.parametrize(
    ("job_type", "payload", "field", "words"),
    [
        ("TRIAGE_TICKET", {}, "payload.ticket_id", "required"),
        ("TRIAGE_TICKET", {"ticket_id": "   "}, "payload.ticket_id", "at least 1"),
        ("TRIAGE_TICKET", {"ticket_id": "T-1", "event": "ticket.deleted"}, "payload.event", "ticket.created"),
        ("TRIAGE_TICKET", {"ticket_id": "T-1", "queue": "Billing"}, "payload.queue", "not permitted"),
        ("TRIAGE_TICKET", {"ticket_id": "x" * 201}, "payload.ticket_id", "at most 200"),
        ("KB_SUGGEST", {"ticket_id": "T-1", "k": 0}, "payload.k", "greater than or equal to 1"),
        ("KB_SUGGEST", {"ticket_id": "T-1", "k": 21}, "payload.k", "less than or equal to 20"),
        ("KB_SUGGEST", {"ticket_id": "T-1", "language": "english"}, "payload.language", "pattern"),
        ("SMART_REPLY", {"ticket_id": "T-1", "article_ids": [f"KB-{i}" for i in range(11)]},
         "payload.article_ids", "at most 10"),
        ("SMART_REPLY", {"ticket_id": "T-1", "article_ids": ["KB-1", 7]}, "payload.article_ids[1]", "string"),
        ("SLA_PREDICT", {"ticket_id": "T-1", "priority": "p" * 65}, "payload.priority", "at most 64"),
        ("METRICS_SNAPSHOT", {}, "payload.day", "required"),
        ("METRICS_SNAPSHOT", {"day": "yesterday"}, "payload.day", "date"),
        ("METRICS_SNAPSHOT", {"day": "2026-12-01", "timezone": "Mars/Olympus_Mons"}, "payload.timezone",
         "unknown timezone"),
    ],
)
def test_invalid_payload_names_the_field(registry, job_type, payload, field, words):
    err = refused(registry, job_type, payload)
    assert err.field == field
    assert words in err.message
    assert str(err).startswith(f"{field}: ")


def test_valid_payloads_are_normalised_with_defaults(registry):
    assert registry.validate_payload("TRIAGE_TICKET", {"ticket_id": "  T-1 "}) == {
        "ticket_id": "T-1", "event": "ticket.created", "chain": True}
    assert registry.validate_payload("KB_SUGGEST", {"ticket_id": "T-1"}) == {
        "ticket_id": "T-1", "language": None, "k": 5, "chain": True}
    assert registry.validate_payload("SMART_REPLY", {"ticket_id": "T-1", "language": "und"})["language"] == "und"
    assert registry.validate_payload("METRICS_SNAPSHOT", {"day": "2026-12-01", "timezone": "Europe/Berlin"}) == {
        "day": "2026-12-01", "timezone": "Europe/Berlin"}


def test_unknown_job_types_pass_unchanged_for_plugins_loaded_elsewhere(registry):
    payload = {"anything": [1, 2]}
    assert registry.validate_payload("SOMEONE_ELSES_TYPE", payload) is payload


def test_every_builtin_declares_typed_closed_models(registry):
    assert registry.job_types == ["KB_SUGGEST", "METRICS_SNAPSHOT", "SLA_PREDICT", "SMART_REPLY", "TRIAGE_TICKET"]
    for handler in registry:
        assert handler.Payload.model_config.get("extra") == "forbid", handler.job_type
        assert handler.Result.model_config.get("extra") == "forbid", handler.job_type
        assert handler.description and handler.timeout_seconds
        assert registry.origin(handler.job_type) == "built-in"
