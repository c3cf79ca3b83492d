"""Per-organization choice of the SLA model's configuration (rolling validation, oldest first)."""

import random
from datetime import UTC, datetime, timedelta

from atum_ai.local.sla_model import SlaFeatures, SlaModel, SlaRecord
from atum_ai.local.sla_tuning import MIN_RECORDS_TO_TUNE, fit_tuned, rolling_folds, select_config

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def drifting_history(n: int = 400, seed: int = 5) -> list[SlaRecord]:
    """The team reorganised halfway: "desk-a" was the slow one, then "desk-b" is."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        group = rng.choice(["desk-a", "desk-b"])
        slow = (group == "desk-a") if i < n // 2 else (group == "desk-b")
        breached = rng.random() < (0.8 if slow else 0.15)
        records.append(SlaRecord(
            features=SlaFeatures(opened_at=T0 + timedelta(hours=i), priority="medium",
                                 assignment_group=group,
                                 category=rng.choice(["printer", "email", "vpn"])),
            breached=breached, resolution_hours=50.0 if breached else 5.0, ticket_id=f"T{i}"))
    rng.shuffle(records)  # any order in: the folds are taken in time order
    return records


def test_folds_are_in_time_order_and_never_validate_on_the_past():
    records = sorted(drifting_history(), key=lambda r: r.opened_at)
    for fit_part, val_part in rolling_folds(records):
        assert max(r.opened_at for r in fit_part) < min(r.opened_at for r in val_part)
    assert [len(v) for _, v in rolling_folds(records)] == [50, 50, 50, 50]


def test_a_drifting_team_gets_a_recency_weighted_model():
    model, selection = fit_tuned(drifting_history())
    assert "half-life" in selection.chosen, selection.scores
    chosen = selection.scores[selection.chosen]["brier"]
    assert chosen <= selection.scores["default C=0.3"]["brier"]
    assert model.config.recency_half_life_days is not None
    # it follows the team as it is now: desk-b is the risky one
    late = T0 + timedelta(hours=500)
    p_b = model.breach_probability(SlaFeatures(opened_at=late, assignment_group="desk-b"))
    p_a = model.breach_probability(SlaFeatures(opened_at=late, assignment_group="desk-a"))
    assert p_b > p_a
    # the choice travels with the stored model
    stored = SlaModel.from_bytes(model.to_bytes())
    assert stored.metadata["selection"]["chosen"] == selection.chosen
    assert stored.config.recency_half_life_days == model.config.recency_half_life_days


def test_short_history_keeps_the_defaults_and_says_why():
    selection = select_config(drifting_history(n=MIN_RECORDS_TO_TUNE - 1))
    assert selection.chosen == "default" and selection.scores == {}
    assert "tuning needs" in (selection.reason or "")


def test_a_validation_slice_with_one_class_keeps_the_defaults():
    records = drifting_history()
    # no breach at all in the newest eighth of the history
    newest = sorted(records, key=lambda r: r.opened_at)[-50:]
    ids = {r.ticket_id for r in newest}
    records = [SlaRecord(features=r.features, breached=False, resolution_hours=5.0,
                         ticket_id=r.ticket_id) if r.ticket_id in ids else r for r in records]
    selection = select_config(records)
    assert selection.chosen == "default" and "breaches only or none" in (selection.reason or "")
