"""Choose the SLA model's configuration for one organization from its own history.

Teams differ: one keeps its routing for years, another reorganises every quarter and only its
recent tickets say anything about the next one. So instead of one global setting, training
tries a small grid of :class:`~atum_ai.local.sla_model.SlaModelConfig` values by rolling-origin
validation on the organization's history, oldest first (fit on the first 4/8 of the tickets,
score the next 1/8; then 5/8, 6/8, 7/8), and keeps the one with the lowest mean Brier score: a
proper score, so it rewards calibration and ranking together, and the breach probability is
shown to agents as a number. Never a random split: that would let the model learn from tickets
opened after the ones it is scored on.

With too little history to validate on (fewer than :data:`MIN_RECORDS_TO_TUNE` tickets, or a
validation slice with one class only), the defaults are kept and the reason is recorded.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from atum_ai.evaluation import auroc, brier
from atum_ai.local.sla_model import SlaModel, SlaModelConfig, SlaRecord

#: Below this many finished tickets each validation slice holds under 25: too few to rank
#: configurations, so the defaults are kept.
MIN_RECORDS_TO_TUNE = 200

#: Recency half-lives tried, as fractions of the history's span: "the last quarter matters
#: most" and "the last half". Relative, so that they mean the same for 3 days or 3 years.
HALF_LIFE_FRACTIONS = (0.25, 0.5)


@dataclass(frozen=True, slots=True)
class Selection:
    """The configuration kept, its name, and every candidate's validation scores."""

    config: SlaModelConfig
    chosen: str
    scores: dict[str, dict[str, float]]
    reason: str | None = None  # why the defaults were kept without tuning

    def to_metadata(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "validation": {k: {m: round(v, 4) for m, v in s.items()} for k, s in self.scores.items()},
        }


def rolling_folds(records: Sequence[SlaRecord]) -> list[tuple[list[SlaRecord], list[SlaRecord]]]:
    """(fit, validate) pairs over time-ordered ``records``: the first k/8 then the next 1/8,
    for k = 4..7."""
    m = len(records)
    return [(list(records[: m * k // 8]), list(records[m * k // 8 : m * (k + 1) // 8]))
            for k in (4, 5, 6, 7)]


def candidate_configs(span_days: float) -> dict[str, SlaModelConfig]:
    """The grid: regularisation strength, with or without the detail fields (subcategory,
    symptom: many rare values), fewer rare values, hour/weekday, and recency weighting."""
    default = SlaModelConfig()
    with_detail = (*default.features, "subcategory", "symptom")
    core = ("priority", "impact", "urgency", "category", "assignment_group", "location")
    out: dict[str, SlaModelConfig] = {}
    for c in (0.1, 0.3, 1.0):
        out[f"default C={c}"] = replace(default, C=c)
        out[f"+subcategory,symptom C={c}"] = replace(default, C=c, features=with_detail)
        out[f"core C={c}"] = replace(default, C=c, features=core)
    out["default C=0.3 min_freq=5"] = replace(default, min_frequency=5)
    out["default C=0.3 +hour/weekday"] = replace(default, time_features="on")
    if span_days > 0:
        for fraction in HALF_LIFE_FRACTIONS:
            half_life = round(span_days * fraction, 3)
            out[f"default C=0.3 half-life {fraction:g} of the history ({half_life:g} d)"] = replace(
                default, recency_half_life_days=half_life)
    return out


def validate(config: SlaModelConfig, records: Sequence[SlaRecord]) -> dict[str, float]:
    """Mean AUROC and Brier of ``config`` over the rolling folds of ``records``."""
    aucs, briers = [], []
    for fit_part, val_part in rolling_folds(records):
        model = SlaModel(config).fit(fit_part)
        p = [model.breach_probability(r) for r in val_part]
        y = [r.breached for r in val_part]
        aucs.append(auroc(y, p))
        briers.append(brier(y, p))
    return {"auroc": statistics.fmean(aucs), "brier": statistics.fmean(briers)}


def select_config(records: Sequence[SlaRecord]) -> Selection:
    """The configuration with the lowest mean validation Brier on ``records`` (any order:
    they are sorted by opening time here)."""
    records = sorted(records, key=lambda r: r.opened_at)
    if len(records) < MIN_RECORDS_TO_TUNE:
        return Selection(SlaModelConfig(), "default", {},
                         f"{len(records)} finished tickets (tuning needs {MIN_RECORDS_TO_TUNE})")
    for _, val_part in rolling_folds(records):
        if len({r.breached for r in val_part}) < 2:
            return Selection(SlaModelConfig(), "default", {},
                             "a validation slice of the history has breaches only or none")
    span_days = (records[-1].opened_at - records[0].opened_at).total_seconds() / 86400
    candidates = candidate_configs(span_days)
    scores = {name: validate(cfg, records) for name, cfg in candidates.items()}
    chosen = min(scores, key=lambda name: scores[name]["brier"])
    return Selection(candidates[chosen], chosen, scores)


def fit_tuned(records: Sequence[SlaRecord], **fit_kwargs: Any) -> tuple[SlaModel, Selection]:
    """Select the configuration on ``records``, then fit it on all of them."""
    selection = select_config(records)
    model = SlaModel(selection.config).fit(records, **fit_kwargs)
    model.metadata["selection"] = selection.to_metadata()
    return model, selection
