"""SLA model and importers on small invented histories (no real data, no network)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from atum_ai.errors import ValidationError
from atum_ai.local.sla_import import (
    coerce_policy,
    records_from_servicenow_rows,
    records_from_ticket_rows,
    ticket_row_breached,
)
from atum_ai.local.sla_model import (
    HIGH_RISK_FROM,
    MEDIUM_RISK_FROM,
    PRIORITY_BASE_RATES,
    RiskBand,
    SlaFeatures,
    SlaModel,
    SlaModelConfig,
    SlaModelFormatError,
    SlaRecord,
    SlaTarget,
    normalize_priority,
    risk_band,
)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def invented_history(n: int = 120, seed: int = 3) -> list[SlaRecord]:
    """Team "night-desk" misses most targets, "day-desk" few; the rest is noise."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        group = "night-desk" if i % 3 == 0 else "day-desk"
        slow = group == "night-desk"
        breached = rng.random() < (0.8 if slow else 0.1)
        hours = rng.uniform(30, 90) if breached else rng.uniform(1, 20)
        records.append(
            SlaRecord(
                features=SlaFeatures(
                    opened_at=T0 + timedelta(hours=3 * i),
                    priority=rng.choice(["high", "medium", "low"]),
                    assignment_group=group,
                    category=rng.choice(["printer", "email", "vpn", None]),
                    channel=rng.choice(["email", "phone"]),
                    body_chars=rng.choice([None, 120, 800]),
                ),
                breached=breached,
                first_response_hours=hours / 10,
                resolution_hours=hours,
                ticket_id=f"T{i}",
            )
        )
    return records


def test_priority_mapping() -> None:
    assert [normalize_priority(p) for p in ("1 - Critical", "2 - High", "3 - Moderate", "4 - Low")] == [
        "urgent",
        "high",
        "medium",
        "low",
    ]
    assert normalize_priority("5 - Planning") == "low"
    assert normalize_priority(" P1 ") == "urgent"
    assert normalize_priority(None) == "medium"
    assert normalize_priority("whatever") == "medium"


def test_features_reject_naive_datetimes() -> None:
    with pytest.raises(ValidationError):
        SlaFeatures(opened_at=datetime(2026, 1, 1, 9, 0))


def test_fit_predict_round_trip_learns_the_group() -> None:
    model = SlaModel().fit(invented_history())
    assert not model.is_cold_start
    assert model.metadata["n_records"] == 120
    assert 0 < model.metadata["base_rate"] < 1
    night = SlaFeatures(opened_at=T0 + timedelta(days=30), priority="medium", assignment_group="night-desk")
    day = SlaFeatures(opened_at=T0 + timedelta(days=30), priority="medium", assignment_group="day-desk")
    p_night, p_day = model.predict(night), model.predict(day)
    assert p_night.source == "model" and p_night.reason is None
    assert p_night.breach_probability > 0.5 > p_day.breach_probability
    assert p_night.risk_band is RiskBand.HIGH and p_day.risk_band is RiskBand.LOW
    top = p_night.top_factors[0]
    assert (top.feature, top.value, top.direction) == ("assignment_group", "night-desk", "raises")
    assert p_day.top_factors[0].direction == "lowers"
    assert p_night.predicted_resolution_minutes > p_day.predicted_resolution_minutes
    assert p_night.to_dict()["risk_band"] == "HIGH"


def test_missing_and_unseen_values_still_predict() -> None:
    model = SlaModel().fit(invented_history())
    bare = SlaFeatures(opened_at=T0 + timedelta(days=40))  # nothing but the time
    unseen = SlaFeatures(
        opened_at=T0 + timedelta(days=40),
        priority="urgent",  # never in training
        assignment_group="brand-new-team",
        category="smart-fridge",
        extra={"product": "x"},
    )
    for features in (bare, unseen):
        pred = model.predict(features)
        assert 0.0 <= pred.breach_probability <= 1.0
        assert pred.predicted_first_response_minutes > 0
        assert pred.predicted_resolution_minutes > 0


def test_cold_start_without_history_uses_base_rates_and_policy() -> None:
    policy = {"high": SlaTarget(first_response_minutes=30, resolution_minutes=480)}
    model = SlaModel(policy=policy).fit([])
    pred = model.predict(SlaFeatures(opened_at=T0, priority="2 - High"))
    assert pred.source == "cold_start"
    assert "cold start" in (pred.reason or "")
    assert pred.breach_probability == pytest.approx(PRIORITY_BASE_RATES["high"])
    assert pred.predicted_first_response_minutes == 30
    assert pred.predicted_resolution_minutes == 480
    assert pred.top_factors[0].feature == "priority"


def test_cold_start_with_a_few_records_or_one_class() -> None:
    few = invented_history(20)
    assert SlaModel().fit(few).predict(few[0]).source == "cold_start"
    all_met = [SlaRecord(r.features, breached=False, resolution_hours=5.0) for r in invented_history(60)]
    model = SlaModel().fit(all_met)
    pred = model.predict(all_met[0].features)
    assert model.is_cold_start and "0 breached" in (pred.reason or "")
    # the observed history pulls the base rate down, and the times come from it
    assert pred.breach_probability < PRIORITY_BASE_RATES[all_met[0].priority]
    assert pred.predicted_resolution_minutes == 300


def test_serialization_round_trip_and_version_check() -> None:
    model = SlaModel(SlaModelConfig(recency_half_life_days=10)).fit(invented_history())
    blob = model.to_bytes()
    again = SlaModel.from_bytes(blob)
    now = T0 + timedelta(days=41)
    for record in invented_history(10, seed=9):
        assert again.predict(record, now=now) == model.predict(record, now=now)
    assert again.metadata == model.metadata
    assert again.to_bytes() == blob

    cold = SlaModel().fit([])
    assert SlaModel.from_bytes(cold.to_bytes()).is_cold_start

    with pytest.raises(SlaModelFormatError):
        SlaModel.from_bytes(b"\x80not json")
    with pytest.raises(SlaModelFormatError):
        SlaModel.from_bytes(blob.replace(b'"version":1', b'"version":99'))
    with pytest.raises(SlaModelFormatError):
        SlaModel.from_bytes(b'{"format": "something.else", "version": 1}')


def test_bands_and_age() -> None:
    assert risk_band(MEDIUM_RISK_FROM - 1e-9) is RiskBand.LOW
    assert risk_band(MEDIUM_RISK_FROM) is RiskBand.MEDIUM
    assert risk_band(HIGH_RISK_FROM) is RiskBand.HIGH
    model = SlaModel().fit(invented_history())
    ticket = SlaFeatures(opened_at=T0 + timedelta(days=50), priority="medium", assignment_group="day-desk")
    at_open = model.predict(ticket, now=ticket.opened_at)
    later = model.predict(ticket, now=ticket.opened_at + timedelta(hours=25))
    # still open after 25 h: met tickets were mostly done by then, so the risk goes up
    assert later.breach_probability > at_open.breach_probability
    assert later.predicted_resolution_minutes >= 25 * 60
    # past the resolution target (default medium: 3 days) the breach has happened
    overdue = model.predict(ticket, now=ticket.opened_at + timedelta(days=4))
    assert overdue.breach_probability == 1.0 and "already passed" in (overdue.reason or "")
    with pytest.raises(ValidationError):
        model.predict(ticket, now=datetime(2026, 3, 1))


def test_servicenow_rows_use_first_row_features_and_last_row_label() -> None:
    def row(state: str, group: str, priority: str, made_sla: str, updated: str) -> dict[str, str]:
        return {
            "number": "INC9", "incident_state": state, "made_sla": made_sla,
            "opened_at": "03-01-2026 09:00", "sys_updated_at": updated, "priority": priority,
            "impact": "2 - Medium", "urgency": "1 - High", "category": "Cat A", "subcategory": "?",
            "u_symptom": "?", "assignment_group": group, "contact_type": "Email",
            "location": "Site 1", "opened_by": "Agent 1", "cmdb_ci": "?",
            "reassignment_count": "0" if state == "New" else "3",
            "resolved_at": "?" if state == "New" else "05-01-2026 21:00",
        }

    rows = [
        row("New", "Desk", "3 - Moderate", "TRUE", "03-01-2026 09:05"),
        row("Active", "Escalation", "1 - Critical", "FALSE", "03-01-2026 11:00"),
        row("Closed", "Escalation", "1 - Critical", "FALSE", "09-01-2026 10:00"),
        {"number": "INC10", "made_sla": "?", "opened_at": "?"},  # unusable: skipped
    ]
    (record,) = records_from_servicenow_rows(rows)
    assert record.ticket_id == "INC9" and record.breached is True
    f = record.features
    assert f.opened_at == datetime(2026, 1, 3, 9, 0, tzinfo=UTC)
    assert (f.assignment_group, f.priority) == ("Desk", "medium")  # as at open, not after escalation
    assert (f.impact, f.urgency, f.channel, f.subcategory) == ("medium", "high", "email", None)
    assert f.status_at_open == "new"  # the creation row's state, not the final "closed"
    assert record.first_response_hours == pytest.approx(2.0)
    assert record.resolution_hours == pytest.approx(60.0)
    (leaky,) = records_from_servicenow_rows(rows, features_from="last")
    assert (leaky.features.assignment_group, leaky.features.status_at_open) == ("Escalation", "closed")


def test_ticket_rows_against_policy() -> None:
    policy = {"high": {"first_response_minutes": 60, "resolution_minutes": 480}}
    assert coerce_policy(policy)["high"] == SlaTarget(60, 480)
    base = {"priority": "high", "queue": "billing", "type": "Incident", "language": "de"}
    rows = [
        {**base, "id": "a", "created_at": "2026-01-05T08:00:00Z",
         "first_response_at": "2026-01-05T08:30:00Z", "resolved_at": "2026-01-05T12:00:00Z", "body": "x" * 50},
        {**base, "id": "b", "created_at": "2026-01-05T09:00:00Z",
         "first_response_at": "2026-01-05T10:30:00Z", "resolved_at": "2026-01-05T11:00:00Z"},
        {**base, "id": "c", "created_at": "2026-01-05T10:00:00Z", "first_response_at": None},  # open, overdue
        {**base, "id": "d", "created_at": "2026-01-06T11:50:00Z"},  # open, not due yet: skipped
        {**base, "id": "e", "priority": "low", "created_at": "2026-01-01T10:00:00Z",
         "first_response_at": "2026-01-01T20:00:00Z",
         "resolved_at": "2026-01-04T10:00:00Z"},  # no policy row: default low targets (1 d / 5 d)
    ]
    records = records_from_ticket_rows(rows, policy, as_of=datetime(2026, 1, 6, 12, 0, tzinfo=UTC))
    by_id = {r.ticket_id: r for r in records}
    assert set(by_id) == {"a", "b", "c", "e"}
    assert by_id["a"].breached is False and by_id["a"].features.body_chars == 50
    assert by_id["b"].breached is True  # answered after 90 min, target 60
    assert by_id["c"].breached is True and by_id["c"].resolution_hours is None
    assert by_id["e"].breached is False
    assert by_id["a"].features.queue == "billing" and by_id["a"].features.ticket_type == "Incident"
    assert [r.ticket_id for r in records] == ["e", "a", "b", "c"]  # time-ordered
    with pytest.raises(ValidationError):
        records_from_ticket_rows([{**base, "created_at": "2026-01-05T08:00:00"}], policy)


def test_resolution_counts_as_first_response() -> None:
    target = SlaTarget(first_response_minutes=60, resolution_minutes=600)
    opened = T0
    assert ticket_row_breached(opened, None, opened + timedelta(minutes=30), target) is False
    assert ticket_row_breached(opened, None, opened + timedelta(minutes=90), target) is True
    assert ticket_row_breached(opened, opened + timedelta(minutes=5), None, target) is None
