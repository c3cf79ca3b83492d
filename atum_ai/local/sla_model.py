"""SLA breach and time-to-resolution model, learned from a tenant's own ticket history.

This module holds the values (:class:`SlaFeatures`, :class:`SlaRecord`, :class:`SlaPrediction`)
and the model. Turning raw data into records lives in :mod:`atum_ai.local.sla_import`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from atum_ai.clock import require_aware
from atum_ai.errors import AtumError

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
    #: the ticket's status when it was first recorded (ServiceNow: the state of the creation
    #: row): "new", or already "active" (someone took it on as it was logged), "resolved"
    #: (logged after a fix on the phone), "awaiting user info"
    status_at_open: str | None = None
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
    """The band of a breach probability (thresholds above).

    >>> [risk_band(p).value for p in (0.1, 0.3, 0.59, 0.6)]
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
    "status_at_open",
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
    #: weight training tickets by 0.5 ** (age / half-life) before the newest one, so that the
    #: classifier follows a team whose performance drifts; None = all tickets count the same
    recency_half_life_days: float | None = None

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
            "recency_half_life_days": self.recency_half_life_days,
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


class SlaModel:
    """Breach probability + first-response/resolution time estimates from a tenant's history.

    * Breach: L2-regularised logistic regression over one-hot categoricals known at open (rare
      values, seen fewer than ``min_frequency`` times, share an "(other)" column; a missing
      value is a value of its own), plus log body length and, with enough history, cyclic
      hour/weekday. A regularised logistic model is calibrated by construction on its training
      distribution (it fits log-loss); on the development log an extra Platt/isotonic step did
      not improve Brier. It is also small, explainable (exact per-feature contributions) and
      serialises to plain JSON (no pickle: a stored model cannot execute code on load).
    * Times: medians (not means: durations are heavy-tailed and MAE is what matters) of the
      same priority, refined by the first of assignment_group / queue / category with at least
      ``min_group_size`` tickets; each kept as a 41-point quantile grid so that an estimate
      made later in the ticket's life can condition on its age.
    * Cold start (fewer than 30 records, or fewer than 5 breaches or 5 non-breaches):
      :data:`PRIORITY_BASE_RATES` blended with whatever per-priority history exists, and
      policy targets for the times. The prediction says so: ``source="cold_start"`` + reason.

    After ``fit`` the model is read-only, so one instance can serve concurrent predictions.
    """

    def __init__(self, config: SlaModelConfig | None = None, policy: SlaPolicy | None = None) -> None:
        self.config = config or SlaModelConfig()
        self.policy: dict[str, SlaTarget] = dict(policy or {})
        self.metadata: dict[str, Any] = {"n_records": 0, "n_breached": 0, "base_rate": None}
        self.cold_start_reason: str | None = "not fitted"
        self._fields: list[str] = []
        self._vocab: dict[str, list[str]] = {}  # field -> known values (column order)
        self._numeric: list[str] = []  # numeric column names, after the one-hot block
        self._num_mean: list[float] = []
        self._num_std: list[float] = []
        self._coef: np.ndarray = np.zeros(0)
        self._intercept = 0.0
        self._col_mean: np.ndarray = np.zeros(0)
        self._priority_rates: dict[str, float] = dict(PRIORITY_BASE_RATES)
        self._first_response = _TimeStats({"n": 0, "global": None, "priority": {}, "groups": {}})
        self._resolution = _TimeStats({"n": 0, "global": None, "priority": {}, "groups": {}})
        self._age_grids: dict[str, dict[str, list[float]]] = {"breached": {}, "met": {}}

    # ------------------------------------------------------------------ fitting

    @property
    def is_cold_start(self) -> bool:
        return self.cold_start_reason is not None

    def fit(self, records: Iterable[SlaRecord], *, policy: SlaPolicy | None = None) -> SlaModel:
        """Learn from finished tickets. Returns ``self``; cheap (milliseconds for thousands)."""
        records = sorted(records, key=lambda r: r.opened_at)
        if policy is not None:
            self.policy = dict(policy)
        n = len(records)
        n_breached = sum(r.breached for r in records)
        base_rate = n_breached / n if n else None
        self.metadata = {
            "n_records": n,
            "n_breached": n_breached,
            "base_rate": round(base_rate, 6) if base_rate is not None else None,
            "trained_from": records[0].opened_at.isoformat() if records else None,
            "trained_to": records[-1].opened_at.isoformat() if records else None,
            "features": [],
        }
        self._priority_rates = self._blend_priority_rates(records)
        self._first_response = _TimeStats.fit(records, "first_response_hours", self.config.min_group_size)
        self._resolution = _TimeStats.fit(records, "resolution_hours", self.config.min_group_size)
        self._age_grids = self._fit_age_grids(records)
        self.metadata["n_first_response"] = self._first_response.data["n"]
        self.metadata["n_resolution"] = self._resolution.data["n"]

        if n < MIN_TRAINING_RECORDS:
            self.cold_start_reason = f"only {n} finished tickets (need {MIN_TRAINING_RECORDS})"
        elif min(n_breached, n - n_breached) < MIN_PER_CLASS:
            self.cold_start_reason = (
                f"{n_breached} breached / {n - n_breached} met in history "
                f"(need {MIN_PER_CLASS} of each)"
            )
        else:
            self.cold_start_reason = None
            self._fit_classifier(records)
        self.metadata["source"] = "cold_start" if self.is_cold_start else "model"
        return self

    @staticmethod
    def _fit_age_grids(records: list[SlaRecord]) -> dict[str, dict[str, list[float]]]:
        """Resolution-time quantile grids of breached and of met tickets, per priority ("*" =
        all priorities) where there are at least 5 of each; used to update p for age."""
        grids: dict[str, dict[str, list[float]]] = {"breached": {}, "met": {}}
        for key in ("*", *PRIORITIES):
            for outcome, flag in (("breached", True), ("met", False)):
                hours = [
                    r.resolution_hours
                    for r in records
                    if r.resolution_hours is not None and r.breached is flag and key in ("*", r.priority)
                ]
                if len(hours) >= 5:
                    grids[outcome][key] = [round(float(q), 4) for q in np.quantile(hours, _QUANTILES)]
        return grids

    def _open_fractions(self, priority: str, age_hours: float) -> tuple[float | None, float | None]:
        breached, met = self._age_grids["breached"], self._age_grids["met"]
        key = priority if priority in breached and priority in met else "*"
        if key not in breached or key not in met:
            return None, None
        # floor: an age beyond everything seen in training is rare, not impossible
        return (
            max(_TimeStats.survival(breached[key], age_hours), 0.02),
            max(_TimeStats.survival(met[key], age_hours), 0.02),
        )

    def _blend_priority_rates(self, records: list[SlaRecord]) -> dict[str, float]:
        counts: dict[str, list[int]] = {p: [0, 0] for p in PRIORITIES}
        for r in records:
            counts.setdefault(r.priority, [0, 0])
            counts[r.priority][0] += int(r.breached)
            counts[r.priority][1] += 1
        return {
            p: (k + PRIOR_STRENGTH * PRIORITY_BASE_RATES.get(p, 0.2)) / (m + PRIOR_STRENGTH)
            for p, (k, m) in counts.items()
        }

    def _fit_classifier(self, records: list[SlaRecord]) -> None:
        from sklearn.linear_model import LogisticRegression

        cfg = self.config
        span_days = (records[-1].opened_at - records[0].opened_at).total_seconds() / 86400
        self._fields = []
        self._vocab = {}
        for name in cfg.features:
            counts: dict[str, int] = {}
            for r in records:
                value = _field_value(r.features, name)
                counts[value] = counts.get(value, 0) + 1
            if len(counts) < 2:
                continue  # constant or always missing: nothing to learn
            known = sorted(v for v, c in counts.items() if c >= cfg.min_frequency)
            if any(c < cfg.min_frequency for c in counts.values()):
                known.append(_OTHER)
            self._fields.append(name)
            self._vocab[name] = known

        numeric: list[str] = []
        if cfg.time_features == "on" or (cfg.time_features == "auto" and span_days >= cfg.hour_min_days):
            numeric += ["hour_sin", "hour_cos"]
        if cfg.time_features == "on" or (cfg.time_features == "auto" and span_days >= cfg.weekday_min_days):
            numeric += ["weekday_sin", "weekday_cos"]
        if cfg.use_body_length and any(r.features.body_chars is not None for r in records):
            numeric += ["log_body_chars", "body_missing"]
        self._numeric = numeric
        raw = np.array([self._raw_numeric(r.features) for r in records]).reshape(len(records), len(numeric))
        if numeric:
            mean = raw.mean(axis=0)
            std = raw.std(axis=0)
            std[std < 1e-9] = 1.0
        else:
            mean = std = np.zeros(0)
        self._num_mean, self._num_std = mean.tolist(), std.tolist()

        X = np.vstack([self._row(r.features) for r in records])
        y = np.array([r.breached for r in records], dtype=int)
        weights = None
        if cfg.recency_half_life_days:
            newest = records[-1].opened_at
            age_days = np.array([(newest - r.opened_at).total_seconds() / 86400 for r in records])
            weights = 0.5 ** (age_days / cfg.recency_half_life_days)
            weights /= weights.mean()
        clf = LogisticRegression(C=cfg.C, max_iter=5000)
        clf.fit(X, y, sample_weight=weights)
        self._coef = clf.coef_[0].astype(float)
        self._intercept = float(clf.intercept_[0])
        self._col_mean = X.mean(axis=0)
        self.metadata["features"] = self._fields + numeric
        self.metadata["span_days"] = round(span_days, 3)

    # ------------------------------------------------------------------ encoding

    def _raw_numeric(self, features: SlaFeatures) -> list[float]:
        at = features.opened_at
        hour = at.hour + at.minute / 60.0
        values = {
            "hour_sin": math.sin(2 * math.pi * hour / 24),
            "hour_cos": math.cos(2 * math.pi * hour / 24),
            "weekday_sin": math.sin(2 * math.pi * at.weekday() / 7),
            "weekday_cos": math.cos(2 * math.pi * at.weekday() / 7),
            "log_body_chars": math.log1p(features.body_chars) if features.body_chars is not None else 0.0,
            "body_missing": 1.0 if features.body_chars is None else 0.0,
        }
        if features.body_chars is None and self._num_mean and "log_body_chars" in self._numeric:
            values["log_body_chars"] = self._num_mean[self._numeric.index("log_body_chars")]
        return [values[name] for name in self._numeric]

    def _row(self, features: SlaFeatures) -> np.ndarray:
        parts: list[float] = []
        for name in self._fields:
            vocab = self._vocab[name]
            value = _field_value(features, name)
            if value not in vocab and _OTHER in vocab:
                value = _OTHER  # rare in training or never seen: the shared "(other)" column
            parts.extend(1.0 if v == value else 0.0 for v in vocab)
        raw = self._raw_numeric(features)
        parts.extend((x - m) / s for x, m, s in zip(raw, self._num_mean, self._num_std, strict=True))
        return np.asarray(parts, dtype=float)

    # ------------------------------------------------------------------ predicting

    def breach_probability(self, features: SlaFeatures | SlaRecord) -> float:
        """The breach probability at open (no age adjustment)."""
        features = features.features if isinstance(features, SlaRecord) else features
        if self.is_cold_start:
            return self._priority_rates.get(features.priority, PRIORITY_BASE_RATES[DEFAULT_PRIORITY])
        return _sigmoid(float(self._row(features) @ self._coef) + self._intercept)

    def _factors(self, features: SlaFeatures) -> list[TopFactor]:
        if self.is_cold_start:
            rates = list(self._priority_rates.values())
            mean_rate = sum(rates) / len(rates)
            delta = _logit(self.breach_probability(features)) - _logit(mean_rate)
            return [TopFactor("priority", features.priority, delta, "raises" if delta >= 0 else "lowers")]
        contrib = self._coef * (self._row(features) - self._col_mean)
        factors: list[TopFactor] = []
        col = 0
        for name in self._fields:
            width = len(self._vocab[name])
            value = _field_value(features, name)
            if value not in self._vocab[name] and _OTHER in self._vocab[name]:
                value = f"{value} {_OTHER}" if value != _MISSING else value
            factors.append(self._factor(name, value, float(contrib[col : col + width].sum())))
            col += width
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(self._numeric):
            key = name.rsplit("_", 1)[0] if name.startswith(("hour", "weekday")) else "body_length"
            groups.setdefault(key, []).append(col + i)
        for key, cols in groups.items():
            if key == "hour":
                value = f"{features.opened_at.hour:02d}h UTC"
            elif key == "weekday":
                value = features.opened_at.strftime("%A")
            else:
                value = str(features.body_chars) if features.body_chars is not None else _MISSING
            factors.append(self._factor(key, value, float(contrib[cols].sum())))
        factors.sort(key=lambda f: abs(f.contribution), reverse=True)
        return [f for f in factors if abs(f.contribution) >= 1e-3][: self.config.max_factors]

    @staticmethod
    def _factor(name: str, value: str, contribution: float) -> TopFactor:
        return TopFactor(name, value, contribution, "raises" if contribution >= 0 else "lowers")

    def predict(
        self,
        features: SlaFeatures | SlaRecord,
        *,
        now: datetime | None = None,
        policy: SlaPolicy | None = None,
        answered: bool | None = None,
    ) -> SlaPrediction:
        """Predict for a ticket that is still open.

        ``now`` (from the caller's clock; default: the ticket's ``opened_at``) gives the
        ticket's age. A ticket still open at that age updates the at-open probability p by
        Bayes' rule: p' = p*Sb / (p*Sb + (1-p)*Sm), where Sb and Sm are the fractions of
        breached and of met training tickets (same priority when there are enough) whose
        resolution took longer than that age. Past the resolution
        due time (or, when ``answered is False``, past the first-response due time) the breach
        has already happened: probability 1. The time estimates are medians of tickets still
        open at that age. ``policy`` overrides the policy given at fit.
        """
        features = features.features if isinstance(features, SlaRecord) else features
        now = features.opened_at if now is None else require_aware(now, "now")
        age_hours = max(0.0, (now - features.opened_at).total_seconds() / 3600.0)
        target = policy_target(policy if policy is not None else self.policy, features.priority)

        probability = self.breach_probability(features)
        factors = self._factors(features)
        reasons: list[str] = []
        if self.is_cold_start:
            reasons.append(f"cold start: {self.cold_start_reason}; per-priority base rate")

        fr_minutes, fr_how = self._estimate(
            self._first_response, features, age_hours, target.first_response_minutes
        )
        res_minutes, res_how = self._estimate(
            self._resolution, features, age_hours, target.resolution_minutes
        )
        if self.is_cold_start and (fr_how == "policy target" or res_how == "policy target"):
            reasons.append("times from the SLA policy targets")

        if age_hours * 60 > target.resolution_minutes:
            probability = 1.0
            reasons.append("resolution target already passed")
        elif answered is False and age_hours * 60 > target.first_response_minutes:
            probability = 1.0
            reasons.append("first-response target already passed")
        elif age_hours > 0:
            open_if_breached, open_if_met = self._open_fractions(features.priority, age_hours)
            if open_if_breached is not None and open_if_met is not None:
                num = probability * open_if_breached
                adjusted = num / (num + (1.0 - probability) * open_if_met)
                if abs(adjusted - probability) > 0.005:
                    reasons.append(
                        f"still open after {age_hours:.1f} h: {open_if_breached:.0%} of breached vs "
                        f"{open_if_met:.0%} of met tickets were still open at that age"
                    )
                probability = adjusted
        probability = min(max(probability, 0.0), 1.0)
        return SlaPrediction(
            breach_probability=probability,
            risk_band=risk_band(probability),
            predicted_first_response_minutes=fr_minutes,
            predicted_resolution_minutes=res_minutes,
            top_factors=tuple(factors),
            source="cold_start" if self.is_cold_start else "model",
            reason="; ".join(reasons) or None,
        )

    @staticmethod
    def _estimate(
        stats: _TimeStats, features: SlaFeatures, age_hours: float, target_minutes: int
    ) -> tuple[int, str]:
        grid, how = stats.grid_for(features)
        if grid is None:
            return max(int(target_minutes), int(round(age_hours * 60))), how
        hours = stats.median_given_age(grid, age_hours)
        return max(1, int(round(hours * 60))), how

    def predict_resolution_hours(self, features: SlaFeatures | SlaRecord) -> float | None:
        """Point estimate (median) of the resolution time at open; None without any data."""
        features = features.features if isinstance(features, SlaRecord) else features
        grid, _ = self._resolution.grid_for(features)
        return None if grid is None else _TimeStats.median_given_age(grid, 0.0)

    # ------------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """Plain JSON (UTF-8) with a format name and version. Safe to load: no pickle."""
        state = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "policy": {
                p: {
                    "first_response_minutes": t.first_response_minutes,
                    "resolution_minutes": t.resolution_minutes,
                }
                for p, t in self.policy.items()
            },
            "metadata": self.metadata,
            "cold_start_reason": self.cold_start_reason,
            "priority_rates": self._priority_rates,
            "first_response": self._first_response.data,
            "resolution": self._resolution.data,
            "age_grids": self._age_grids,
            "classifier": None
            if self.is_cold_start
            else {
                "fields": self._fields,
                "vocab": self._vocab,
                "numeric": self._numeric,
                "num_mean": self._num_mean,
                "num_std": self._num_std,
                "coef": self._coef.tolist(),
                "intercept": self._intercept,
                "col_mean": self._col_mean.tolist(),
            },
        }
        return json.dumps(state, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> SlaModel:
        try:
            state = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SlaModelFormatError(f"not a serialized SLA model: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
            raise SlaModelFormatError("not a serialized SLA model (format name missing)")
        if state.get("version") != FORMAT_VERSION:
            raise SlaModelFormatError(
                f"SLA model format version {state.get('version')!r}; this atum_ai reads {FORMAT_VERSION}"
            )
        try:
            model = cls(
                SlaModelConfig.from_dict(state["config"]),
                policy={p: SlaTarget(**t) for p, t in state["policy"].items()},
            )
            model.metadata = state["metadata"]
            model.cold_start_reason = state["cold_start_reason"]
            model._priority_rates = {p: float(v) for p, v in state["priority_rates"].items()}
            model._first_response = _TimeStats(state["first_response"])
            model._resolution = _TimeStats(state["resolution"])
            model._age_grids = {k: dict(v) for k, v in state["age_grids"].items()}
            clf = state["classifier"]
            if clf is not None:
                model._fields = list(clf["fields"])
                model._vocab = {k: list(v) for k, v in clf["vocab"].items()}
                model._numeric = list(clf["numeric"])
                model._num_mean = [float(x) for x in clf["num_mean"]]
                model._num_std = [float(x) for x in clf["num_std"]]
                model._coef = np.asarray(clf["coef"], dtype=float)
                model._intercept = float(clf["intercept"])
                model._col_mean = np.asarray(clf["col_mean"], dtype=float)
                width = sum(len(v) for v in model._vocab.values()) + len(model._numeric)
                if model._coef.shape != (width,) or model._col_mean.shape != (width,):
                    raise SlaModelFormatError("classifier weights do not match its columns")
            elif model.cold_start_reason is None:
                raise SlaModelFormatError("model without classifier must be in cold start")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SlaModelFormatError):
                raise
            raise SlaModelFormatError(f"corrupt SLA model: {exc!r}") from exc
        return model
