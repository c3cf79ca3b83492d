"""Turn ticket history into :class:`~atum_ai.local.sla_model.SlaRecord` values.

Two sources:

* :func:`read_servicenow_incident_log` reads a ServiceNow incident audit log (the UCI
  "Incident management process enriched event log" layout): one CSV row per update of an
  incident, ``?`` for a missing value, dates as ``DD-MM-YYYY HH:MM`` without a zone.
* :func:`records_from_ticket_rows` builds records from atum_ai's own ticket mirror plus the
  organization's SLA policy.

Leakage: only what is known when the ticket opens
-------------------------------------------------
The label of an incident (``made_sla``) and its times come from its LAST logged row (its final
state). Its features come from its FIRST logged row: the state at open. In the development
log the first row is written within minutes of ``opened_at`` (90 % within 16 min, all within
1.4 h), while later rows carry decisions made during handling. Reading features from the last
row would leak: ``assignment_group`` differs between first and last row for 42 % of incidents
(reassignment after failing to solve it), priority/impact/urgency were re-rated for ~5 %,
and category/subcategory/symptom re-coded for ~7 %. Column by column:

=========================  ====  =====================================================
column                     used  why
=========================  ====  =====================================================
number                     id    identity, not a feature
opened_at                  yes   hour of day / weekday (cyclic); the split key
priority, impact, urgency  yes   first row: as rated when logged (later re-rating leaks)
category, subcategory      yes   first row (re-categorisation happens during handling)
u_symptom                  yes   first row -> ``symptom``
assignment_group           yes   first row only: the initial routing. Last row = where it
                                 ended after reassignments, a strong leak
contact_type               yes   -> ``channel`` (constant "Phone" in the dev log)
location                   yes   the caller's site, known at open
opened_by                  yes   the service-desk agent who logged it, known at open
cmdb_ci                    yes   -> extra["cmdb_ci"]; nearly always missing
caller_id                  no    a person (privacy) with ~1 incident each: no signal
sys_created_by/_at         no    duplicates opened_by / opened_at, missing in 30 %
assigned_to                no    a person; set or changed while the ticket is handled
incident_state             yes   first row only -> ``status_at_open``: the creation row's
                                 state (new / active / resolved / awaiting user info;
                                 every first row has sys_mod_count 0). Later rows leak
active                     no    follows incident_state
reassignment_count         no    LEAK: counts reassignments that happen after open
reopen_count               no    LEAK: reopenings happen after resolution
sys_mod_count              no    LEAK: number of updates, grows with handling time
sys_updated_by/_at         no    LEAK: who/when of the last update (closure)
made_sla                   label last row: FALSE -> ``breached=True``
knowledge                  no    LEAK: last-row value set while handling (first row
                                 always TRUE in the dev log; FALSE only on breaches)
u_priority_confirmation    no    LEAK: the priority check happens after open
notify                     no    constant
problem_id, rfc, vendor,   no    LEAK: links to problems/changes raised while handling
caused_by
closed_code, resolved_by   no    LEAK: the outcome
resolved_at                label ``resolution_hours`` = resolved_at - opened_at
closed_at                  no    outcome; auto-closure in batches days after resolution
=========================  ====  =====================================================

The log has no explicit first reply. ``first_response_hours`` is approximated by the first
update that takes the incident out of ``New`` (an agent picked it up); it is a label only.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from atum_ai.clock import require_aware
from atum_ai.errors import ValidationError
from atum_ai.local.sla_model import (
    SlaFeatures,
    SlaRecord,
    SlaTarget,
    normalize_priority,
    policy_target,
    utc,
)

__all__ = [
    "SERVICENOW_MISSING",
    "coerce_policy",
    "normalize_level",
    "parse_servicenow_time",
    "read_servicenow_incident_log",
    "records_from_servicenow_rows",
    "records_from_ticket_rows",
    "ticket_row_breached",
]

SERVICENOW_MISSING = "?"
SERVICENOW_TIME_FORMAT = "%d-%m-%Y %H:%M"

# ServiceNow impact/urgency are "1 - High", "2 - Medium", "3 - Low".
_LEVELS = {"1": "high", "2": "medium", "3": "low", "high": "high", "medium": "medium", "low": "low"}


def _value(row: Mapping[str, str], column: str) -> str | None:
    raw = row.get(column)
    if raw is None:
        return None
    raw = raw.strip()
    return None if raw in ("", SERVICENOW_MISSING) else raw


def parse_servicenow_time(value: str | None) -> datetime | None:
    """``"29-02-2016 01:16"`` -> aware UTC datetime (the log has no zone: we read it as UTC)."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", SERVICENOW_MISSING):
        return None
    try:
        return utc(datetime.strptime(value, SERVICENOW_TIME_FORMAT))
    except ValueError:
        return None


def normalize_level(value: str | None) -> str | None:
    """``"1 - High"`` -> ``"high"``; unknown spellings are kept lower-cased."""
    if value is None:
        return None
    key = value.strip().lower()
    head = key.split(" ", 1)[0]
    return _LEVELS.get(head) or _LEVELS.get(key.split("-")[-1].strip()) or key


def _hours(start: datetime, end: datetime | None) -> float | None:
    if end is None:
        return None
    return max(0.0, (end - start).total_seconds() / 3600.0)


def _servicenow_record(
    number: str, rows: list[Mapping[str, str]], features_from: Literal["first", "last"]
) -> SlaRecord | None:
    last = rows[-1]
    feature_row = rows[0] if features_from == "first" else last
    opened_at = parse_servicenow_time(_value(last, "opened_at") or _value(feature_row, "opened_at"))
    made_sla = (_value(last, "made_sla") or "").upper()
    if opened_at is None or made_sla not in ("TRUE", "FALSE"):
        return None  # no anchor in time, or no label: useless for training
    extra = {}
    if (ci := _value(feature_row, "cmdb_ci")) is not None:
        extra["cmdb_ci"] = ci
    features = SlaFeatures(
        opened_at=opened_at,
        priority=normalize_priority(_value(feature_row, "priority")),
        impact=normalize_level(_value(feature_row, "impact")),
        urgency=normalize_level(_value(feature_row, "urgency")),
        category=_value(feature_row, "category"),
        subcategory=_value(feature_row, "subcategory"),
        symptom=_value(feature_row, "u_symptom"),
        assignment_group=_value(feature_row, "assignment_group"),
        channel=(_value(feature_row, "contact_type") or "").lower() or None,
        location=_value(feature_row, "location"),
        opened_by=_value(feature_row, "opened_by"),
        status_at_open=(_value(feature_row, "incident_state") or "").lower() or None,
        extra=extra,
    )
    picked_up = None
    for row in rows:
        if (_value(row, "incident_state") or "New") != "New":
            picked_up = parse_servicenow_time(_value(row, "sys_updated_at"))
            break
    return SlaRecord(
        features=features,
        breached=made_sla == "FALSE",
        first_response_hours=_hours(opened_at, picked_up),
        resolution_hours=_hours(opened_at, parse_servicenow_time(_value(last, "resolved_at"))),
        ticket_id=number,
    )


def records_from_servicenow_rows(
    rows: Iterable[Mapping[str, str]], *, features_from: Literal["first", "last"] = "first"
) -> list[SlaRecord]:
    """Group audit rows by ``number`` (in log order) and build one record per incident.

    ``features_from="last"`` reads the features from the final row instead: that LEAKS the
    handling history (see the module docstring) and exists only to measure the leak.

    Incidents without ``opened_at`` or a TRUE/FALSE ``made_sla`` are skipped. The result is
    sorted by ``opened_at`` (then number), ready for a time-ordered split.
    """
    by_number: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        number = _value(row, "number")
        if number is not None:
            by_number.setdefault(number, []).append(row)
    records = [
        r for n, rs in by_number.items() if (r := _servicenow_record(n, rs, features_from)) is not None
    ]
    records.sort(key=lambda r: (r.opened_at, r.ticket_id or ""))
    return records


def read_servicenow_incident_log(
    path: str | Path, *, features_from: Literal["first", "last"] = "first"
) -> list[SlaRecord]:
    """Read a ServiceNow incident audit-log CSV into records (see the module docstring)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return records_from_servicenow_rows(csv.DictReader(handle), features_from=features_from)


# --------------------------------------------------------------------------- atum_ai mirror


def coerce_policy(policy: Mapping[str, Any] | None) -> dict[str, SlaTarget]:
    """Accept ``{"high": SlaTarget(...)}`` or rows like ``{"high": {"first_response_minutes":
    60, "resolution_minutes": 480}}``; priority keys are normalized."""
    out: dict[str, SlaTarget] = {}
    for key, value in (policy or {}).items():
        if isinstance(value, SlaTarget):
            target = value
        elif isinstance(value, Mapping):
            target = SlaTarget(
                first_response_minutes=int(value["first_response_minutes"]),
                resolution_minutes=int(value["resolution_minutes"]),
            )
        else:
            raise ValidationError("expected SlaTarget or a mapping of minutes", field=f"policy.{key}")
        out[normalize_priority(key)] = target
    return out


def _time(row: Mapping[str, Any], key: str) -> datetime | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(f"not an ISO 8601 time: {value!r}", field=key) from exc
    if not isinstance(value, datetime):
        raise ValidationError("expected a datetime", field=key)
    return require_aware(value, key)


def ticket_row_breached(
    created_at: datetime,
    first_response_at: datetime | None,
    resolved_at: datetime | None,
    target: SlaTarget,
    *,
    as_of: datetime | None = None,
) -> bool | None:
    """Did the ticket breach its target? ``None`` while the outcome is still open.

    A breach is a first response OR a resolution later than the target. A ticket that is not
    answered (or not resolved) yet has breached once ``as_of`` is past the target; before that
    its outcome is unknown (right-censored) and it must not be used as a "made it" example.
    """
    if first_response_at is None and resolved_at is not None:
        first_response_at = resolved_at  # solved without a separate reply: that was the answer
    fr_due = created_at + timedelta(minutes=target.first_response_minutes)
    res_due = created_at + timedelta(minutes=target.resolution_minutes)
    if first_response_at is not None and first_response_at > fr_due:
        return True
    if resolved_at is not None and resolved_at > res_due:
        return True
    if as_of is not None:
        if first_response_at is None and as_of > fr_due:
            return True
        if resolved_at is None and as_of > res_due:
            return True
    return None if resolved_at is None else False


def records_from_ticket_rows(
    rows: Iterable[Mapping[str, Any]],
    policy: Mapping[str, Any] | None = None,
    *,
    as_of: datetime | None = None,
) -> list[SlaRecord]:
    """Build records from atum_ai ticket-mirror rows.

    Each row is a mapping with ``created_at`` (aware datetime or ISO 8601 string), ``priority``
    and optionally ``id``, ``queue``, ``type``, ``language``, ``channel``, ``category``,
    ``first_response_at``, ``resolved_at``, and ``body_chars`` (or ``body_length``, or ``body``
    whose length is taken). ``policy`` maps priority -> targets (:func:`coerce_policy`); a
    priority without a policy row falls back to :data:`~atum_ai.local.sla_model.DEFAULT_POLICY`.
    ``as_of`` (the caller's clock) lets still-open tickets that are already past their target
    count as breaches; open tickets whose outcome is not decided yet are skipped.
    """
    targets = coerce_policy(policy)
    if as_of is not None:
        as_of = require_aware(as_of, "as_of")
    records: list[SlaRecord] = []
    for row in rows:
        created_at = _time(row, "created_at")
        if created_at is None:
            raise ValidationError("missing", field="created_at")
        first_response_at = _time(row, "first_response_at")
        resolved_at = _time(row, "resolved_at")
        priority = normalize_priority(row.get("priority"))
        target = policy_target(targets, priority)
        breached = ticket_row_breached(created_at, first_response_at, resolved_at, target, as_of=as_of)
        if breached is None:
            continue
        records.append(
            SlaRecord(
                features=SlaFeatures(
                    opened_at=created_at,
                    priority=priority,
                    queue=_str(row.get("queue")),
                    ticket_type=_str(row.get("type") or row.get("ticket_type")),
                    language=_str(row.get("language")),
                    channel=_str(row.get("channel")),
                    category=_str(row.get("category")),
                    body_chars=_body_chars(row),
                ),
                breached=breached,
                first_response_hours=_hours(created_at, first_response_at),
                resolution_hours=_hours(created_at, resolved_at),
                ticket_id=_str(row.get("id")),
            )
        )
    records.sort(key=lambda r: (r.opened_at, r.ticket_id or ""))
    return records


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _body_chars(row: Mapping[str, Any]) -> int | None:
    for key in ("body_chars", "body_length"):
        if row.get(key) is not None:
            return int(row[key])
    body = row.get("body")
    return len(body) if isinstance(body, str) else None

