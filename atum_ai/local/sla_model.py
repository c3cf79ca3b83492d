"""SLA breach and time-to-resolution model, learned from a tenant's own ticket history.

This module holds the values (:class:`SlaFeatures`, :class:`SlaRecord`, :class:`SlaPrediction`)
and the model. Turning raw data into records lives in :mod:`atum_ai.local.sla_import`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from atum_ai.clock import require_aware

# --------------------------------------------------------------------------- priorities

PRIORITIES: tuple[str, ...] = ("urgent", "high", "medium", "low")

#: How priority labels from other systems map onto atum_ai's four labels. Keys are compared
#: lower-cased with surrounding whitespace removed. ServiceNow's "1 - Critical" .. "5 - Planning"
#: collapse so that the planning level (no service promise) joins "low".
PRIORITY_ALIASES: Mapping[str, str] = {
    # ServiceNow incident priority (impact x urgency matrix)
    "1 - critical": "urgent",
    "2 - high": "high",
    "3 - moderate": "medium",
    "4 - low": "low",
    "5 - planning": "low",
    # common spellings in helpdesks (Zammad, Zendesk, Jira Service Management, ATUM DESK)
    "critical": "urgent",
    "urgent": "urgent",
    "highest": "urgent",
    "blocker": "urgent",
    "p1": "urgent",
    "1": "urgent",
    "high": "high",
    "p2": "high",
    "2": "high",
    "medium": "medium",
    "moderate": "medium",
    "normal": "medium",
    "p3": "medium",
    "3": "medium",
    "low": "low",
    "lowest": "low",
    "minor": "low",
    "planning": "low",
    "p4": "low",
    "p5": "low",
    "4": "low",
    "5": "low",
}

#: A missing or unknown priority is treated as the everyday middle of the queue.
DEFAULT_PRIORITY = "medium"


def normalize_priority(value: object) -> str:
    """Map a priority label from any source onto ``urgent | high | medium | low``.

    >>> normalize_priority("1 - Critical"), normalize_priority("3 - Moderate"), normalize_priority(None)
    ('urgent', 'medium', 'medium')
    """
    if value is None:
        return DEFAULT_PRIORITY
    key = str(value).strip().lower()
    if key in PRIORITY_ALIASES:
        return PRIORITY_ALIASES[key]
    # "2 - High (custom)" and the like: fall back to the leading number, then the words
    head = key.split(" ", 1)[0].rstrip(".-")
    if head in PRIORITY_ALIASES:
        return PRIORITY_ALIASES[head]
    for word in key.replace("-", " ").split():
        if word in PRIORITY_ALIASES and not word.isdigit():
            return PRIORITY_ALIASES[word]
    return DEFAULT_PRIORITY


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """One priority's promise: answer within ``first_response_minutes``, resolve within
    ``resolution_minutes`` (wall-clock minutes from the ticket's creation)."""

    first_response_minutes: int
    resolution_minutes: int

    def __post_init__(self) -> None:
        if self.first_response_minutes <= 0 or self.resolution_minutes <= 0:
            raise ValueError("SLA targets must be positive minutes")


SlaPolicy = Mapping[str, SlaTarget]

#: Used when an organization has no SLA policy row for a priority. Typical helpdesk tiers.
DEFAULT_POLICY: Mapping[str, SlaTarget] = {
    "urgent": SlaTarget(first_response_minutes=60, resolution_minutes=4 * 60),
    "high": SlaTarget(first_response_minutes=4 * 60, resolution_minutes=24 * 60),
    "medium": SlaTarget(first_response_minutes=8 * 60, resolution_minutes=3 * 24 * 60),
    "low": SlaTarget(first_response_minutes=24 * 60, resolution_minutes=5 * 24 * 60),
}


def policy_target(policy: SlaPolicy | None, priority: str) -> SlaTarget:
    """The target for ``priority`` from ``policy``, else from :data:`DEFAULT_POLICY`."""
    if policy:
        hit = policy.get(priority)
        if hit is not None:
            return hit
    return DEFAULT_POLICY[priority if priority in DEFAULT_POLICY else DEFAULT_PRIORITY]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class SlaFeatures:
    """What is known about a ticket at the moment it is opened. Nothing here may depend on
    what happens later (reassignments, reopenings, replies, resolution): that would leak the
    outcome into training and make the model look better than it can be in production.

    Categorical fields are free strings (``None`` = unknown); they are one-hot encoded by the
    model, and values rarely seen in training fall into an "other" bucket.
    """

    opened_at: datetime
    priority: str = DEFAULT_PRIORITY
    impact: str | None = None
    urgency: str | None = None
    category: str | None = None
    subcategory: str | None = None
    symptom: str | None = None
    assignment_group: str | None = None  # the group it was FIRST assigned to
    channel: str | None = None  # email, phone, web, chat ... (ServiceNow contact_type)
    location: str | None = None
    opened_by: str | None = None
    queue: str | None = None
    ticket_type: str | None = None
    language: str | None = None
    body_chars: int | None = None
    #: tenant-specific categoricals known at open, e.g. {"product": "billing"}
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "opened_at", require_aware(self.opened_at, "opened_at"))
        object.__setattr__(self, "priority", normalize_priority(self.priority))


@dataclass(frozen=True, slots=True)
class SlaRecord:
    """One finished (or already-breached) ticket: what was known at open, and what happened.

    ``breached`` is the label the classifier learns; the hours are targets for the time
    regressors and may be missing (never answered, resolution unknown).
    """

    features: SlaFeatures
    breached: bool
    first_response_hours: float | None = None
    resolution_hours: float | None = None
    ticket_id: str | None = None

    @property
    def opened_at(self) -> datetime:
        return self.features.opened_at

    @property
    def priority(self) -> str:
        return self.features.priority


def utc(value: datetime) -> datetime:
    """Treat a naive datetime as UTC (for importers of logs that carry no zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --------------------------------------------------------------------------- prediction


class RiskBand(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


#: Band thresholds on the breach probability: LOW < 0.30 <= MEDIUM < 0.60 <= HIGH.
#: HIGH means "more likely than not, with margin": worth an agent's attention now.
MEDIUM_RISK_FROM = 0.30
HIGH_RISK_FROM = 0.60


def risk_band(probability: float) -> RiskBand:
    """>>> [risk_band(p).value for p in (0.1, 0.3, 0.59, 0.6)]
    ['LOW', 'MEDIUM', 'MEDIUM', 'HIGH']
    """
    if probability >= HIGH_RISK_FROM:
        return RiskBand.HIGH
    if probability >= MEDIUM_RISK_FROM:
        return RiskBand.MEDIUM
    return RiskBand.LOW


@dataclass(frozen=True, slots=True)
class TopFactor:
    """One reason behind a prediction. ``contribution`` is in log-odds of breach relative to
    the average training ticket (positive raises the risk); ``direction`` says it in words."""

    feature: str
    value: str
    contribution: float
    direction: Literal["raises", "lowers"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": round(self.contribution, 4),
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class SlaPrediction:
    breach_probability: float
    risk_band: RiskBand
    predicted_first_response_minutes: int
    predicted_resolution_minutes: int
    top_factors: tuple[TopFactor, ...]
    source: Literal["model", "cold_start"]
    #: why the cold-start path was taken, or what adjusted the probability; None otherwise
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "breach_probability": round(self.breach_probability, 4),
            "risk_band": self.risk_band.value,
            "predicted_first_response_minutes": self.predicted_first_response_minutes,
            "predicted_resolution_minutes": self.predicted_resolution_minutes,
            "top_factors": [f.to_dict() for f in self.top_factors],
            "source": self.source,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------- model

#: Breach rate assumed per priority before a tenant has history (cold start). Rough helpdesk
#: experience: tighter targets on urgent tickets are missed more often. With a little history
#: (fewer than MIN_TRAINING_RECORDS) these are blended with the observed per-priority rate,
#: weighted as PRIOR_STRENGTH pseudo-tickets.
PRIORITY_BASE_RATES: Mapping[str, float] = {"urgent": 0.40, "high": 0.30, "medium": 0.20, "low": 0.15}
PRIOR_STRENGTH = 10.0

#: Below this many records, or fewer than MIN_PER_CLASS breaches or non-breaches, a fitted
#: classifier would be noise: the model stays in cold start.
MIN_TRAINING_RECORDS = 30
MIN_PER_CLASS = 5

FORMAT_NAME = "atum_ai.sla_model"
FORMAT_VERSION = 1

CATEGORICAL_FIELDS: tuple[str, ...] = (
    "priority",
    "impact",
    "urgency",
    "category",
    "subcategory",
    "symptom",
    "assignment_group",
    "channel",
    "location",
    "opened_by",
    "queue",
    "ticket_type",
    "language",
)
#: Fields whose medians back off the per-priority time estimate, first that has enough data.
TIME_GROUP_FIELDS: tuple[str, ...] = ("assignment_group", "queue", "category")

_MISSING = "(missing)"
_OTHER = "(other)"
_QUANTILES = np.linspace(0.0, 1.0, 41)


class SlaModelFormatError(AtumError, ValueError):
    """A serialized model that this version cannot read."""


@dataclass(frozen=True, slots=True)
class SlaModelConfig:
    """Knobs of :class:`SlaModel`. The defaults were chosen by time-ordered cross-validation
    inside the training part of the ServiceNow development log (``bench/eval_sla.py``).

    ``features``: categorical fields to use (``extra:<key>`` for tenant extras); fields that
    are constant or always missing in the training data are dropped at fit.
    ``time_features``: "auto" adds hour-of-day (sin/cos) when the training window spans at
    least ``hour_min_days`` and weekday when it spans ``weekday_min_days``: a weekly pattern
    cannot be learned from a few days, and fitting one anyway confounds it with drift.
    """

    features: tuple[str, ...] = tuple(f for f in CATEGORICAL_FIELDS if f not in ("subcategory", "symptom"))
    C: float = 0.3
    min_frequency: int = 3
    time_features: Literal["auto", "on", "off"] = "auto"
    hour_min_days: float = 14.0
    weekday_min_days: float = 28.0
    use_body_length: bool = True
    min_group_size: int = 10
    max_factors: int = 5

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "C": self.C,
            "min_frequency": self.min_frequency,
            "time_features": self.time_features,
            "hour_min_days": self.hour_min_days,
            "weekday_min_days": self.weekday_min_days,
            "use_body_length": self.use_body_length,
            "min_group_size": self.min_group_size,
            "max_factors": self.max_factors,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlaModelConfig:
        return cls(**{**data, "features": tuple(data.get("features", cls.features))})


def _field_value(features: SlaFeatures, name: str) -> str:
    if name.startswith("extra:"):
        value: object = features.extra.get(name[6:])
    else:
        value = getattr(features, name)
    return _MISSING if value is None or value == "" else str(value)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


class _TimeStats:
    """Empirical distribution (41 quantiles, hours) of a duration, per priority and per
    (priority, field=value) group with at least ``min_group_size`` observations."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data  # {"global": [...], "priority": {p: [...]}, "groups": {"p|f|v": [...]}, "n": ...}

    @classmethod
    def fit(cls, records: list[SlaRecord], attr: str, min_group: int) -> _TimeStats:
        def grid(values: list[float]) -> list[float]:
            return [round(float(q), 4) for q in np.quantile(np.asarray(values), _QUANTILES)]

        obs = [(r, getattr(r, attr)) for r in records if getattr(r, attr) is not None]
        data: dict[str, Any] = {"n": len(obs), "global": None, "priority": {}, "groups": {}}
        if len(obs) >= 5:
            data["global"] = grid([h for _, h in obs])
        by_priority: dict[str, list[float]] = {}
        by_group: dict[str, list[float]] = {}
        for r, h in obs:
            by_priority.setdefault(r.priority, []).append(h)
            for name in TIME_GROUP_FIELDS:
                value = _field_value(r.features, name)
                if value != _MISSING:
                    by_group.setdefault(f"{r.priority}|{name}|{value}", []).append(h)
        data["priority"] = {p: grid(v) for p, v in by_priority.items() if len(v) >= 5}
        data["groups"] = {k: grid(v) for k, v in by_group.items() if len(v) >= min_group}
        return cls(data)

    def grid_for(self, features: SlaFeatures) -> tuple[list[float] | None, str]:
        for name in TIME_GROUP_FIELDS:
            key = f"{features.priority}|{name}|{_field_value(features, name)}"
            if key in self.data["groups"]:
                return self.data["groups"][key], f"median of {features.priority} tickets with {name}"
        if features.priority in self.data["priority"]:
            return self.data["priority"][features.priority], f"median of {features.priority} tickets"
        if self.data["global"] is not None:
            return self.data["global"], "median of all tickets"
        return None, "policy target"

    @staticmethod
    def median_given_age(grid: list[float], age_hours: float) -> float:
        """The median duration among tickets that are still open at ``age_hours``:
        F^-1((1 + F(age)) / 2). At age 0 this is the plain median."""
        values = np.asarray(grid)
        if age_hours <= values[0]:
            return float(np.interp(0.5, _QUANTILES, values))
        if age_hours >= values[-1]:
            return float(age_hours)  # older than anything seen: no better guess than "now"
        f_age = float(np.interp(age_hours, values, _QUANTILES))
        return float(np.interp((1.0 + f_age) / 2.0, _QUANTILES, values))

    @staticmethod
    def survival(grid: list[float], age_hours: float) -> float:
        """P(duration > age_hours) from the quantile grid."""
        values = np.asarray(grid)
        if age_hours <= values[0]:
            return 1.0
        if age_hours >= values[-1]:
            return 0.0
        return 1.0 - float(np.interp(age_hours, values, _QUANTILES))
