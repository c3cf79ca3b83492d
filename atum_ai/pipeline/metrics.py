"""Deterministic per-organization, per-day aggregates for METRICS_SNAPSHOT.

Everything is computed from rows that do not change once the day is over (ticket timestamps,
job_events of that day, feedback given that day, LLM usage of that day), so recomputing a
day gives identical numbers. The day is a calendar day in the given timezone.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from atum_ai.pipeline.repository import DEFAULT_SLA_POLICY

_TICKETS = """
WITH policy AS (
    SELECT p.priority, p.first_response_minutes, p.resolution_minutes
      FROM jsonb_to_recordset(%(defaults)s::jsonb)
           AS p(priority text, first_response_minutes int, resolution_minutes int)
     WHERE NOT EXISTS (SELECT 1 FROM sla_policies s
                        WHERE s.organization_id = %(org)s AND s.priority = p.priority)
    UNION ALL
    SELECT priority, first_response_minutes, resolution_minutes FROM sla_policies
     WHERE organization_id = %(org)s
), t AS (
    SELECT t.*, coalesce(p.first_response_minutes, 480) AS fr_target,
           coalesce(p.resolution_minutes, 4320) AS res_target
      FROM tickets t LEFT JOIN policy p ON p.priority = coalesce(t.priority, 'medium')
     WHERE t.organization_id = %(org)s
)
SELECT
  (SELECT count(*) FROM t WHERE created_at >= %(start)s AND created_at < %(end)s) AS tickets_in,
  (SELECT count(*) FROM t WHERE resolved_at >= %(start)s AND resolved_at < %(end)s) AS tickets_resolved,
  (SELECT count(*) FROM t WHERE resolved_at >= %(start)s AND resolved_at < %(end)s
      AND resolved_at <= created_at + make_interval(mins => res_target)
      AND coalesce(first_response_at, resolved_at) <= created_at + make_interval(mins => fr_target)
  ) AS resolved_within_sla,
  (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_response_at - created_at) / 60)
     FROM t WHERE first_response_at >= %(start)s AND first_response_at < %(end)s) AS median_first_response_minutes,
  (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at) / 60)
     FROM t WHERE resolved_at >= %(start)s AND resolved_at < %(end)s) AS median_resolution_minutes
"""

# The snapshot's own jobs are left out: otherwise each snapshot (and each recomputation of
# the same day) would count itself, and recomputing a day would never give the same numbers.
_JOBS = """
SELECT q.job_type, e.event_type, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (e.data->>'duration_ms')::float8) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY (e.data->>'duration_ms')::float8) AS p95
  FROM job_events e JOIN job_queue q ON q.id = e.job_id
 WHERE e.organization_id = %(org)s AND q.organization_id = %(org)s
   AND e.created_at >= %(start)s AND e.created_at < %(end)s
   AND e.event_type IN ('ENQUEUED', 'SUCCEEDED', 'RETRY_SCHEDULED', 'DEAD', 'CANCELLED', 'RECOVERED')
   AND q.job_type <> 'METRICS_SNAPSHOT'
 GROUP BY 1, 2 ORDER BY 1, 2
"""

_FEEDBACK = """
SELECT kind, feedback, count(*) AS n FROM suggestions
 WHERE organization_id = %(org)s AND feedback_at >= %(start)s AND feedback_at < %(end)s
 GROUP BY 1, 2 ORDER BY 1, 2
"""

_SUGGESTED = """
SELECT kind, count(*) AS n FROM suggestions
 WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s
 GROUP BY 1 ORDER BY 1
"""

_LLM = """
SELECT coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd, count(*) AS calls
  FROM llm_usage WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s
"""


def _r(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


async def compute_day_metrics(conn: AsyncConnection[Any], organization_id: uuid.UUID, day: date,
                              tz: str = "UTC") -> dict[str, Any]:
    zone = ZoneInfo(tz)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    import json

    params = {"org": organization_id, "start": start, "end": end,
              "defaults": json.dumps([{"priority": p, "first_response_minutes": fr, "resolution_minutes": r}
                                      for p, (fr, r) in DEFAULT_SLA_POLICY.items()])}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_TICKETS, params)
        t = await cur.fetchone() or {}
        await cur.execute(_JOBS, params)
        job_rows = await cur.fetchall()
        await cur.execute(_FEEDBACK, params)
        fb_rows = await cur.fetchall()
        await cur.execute(_SUGGESTED, params)
        sug_rows = await cur.fetchall()
        await cur.execute(_LLM, params)
        llm = await cur.fetchone() or {}

    jobs: dict[str, dict[str, int]] = {}
    latency: dict[str, dict[str, float | None]] = {}
    dead = 0
    for r in job_rows:
        jobs.setdefault(r["job_type"], {})[r["event_type"]] = int(r["n"])
        if r["event_type"] == "SUCCEEDED":
            latency[r["job_type"]] = {"p50_ms": _r(r["p50"], 1), "p95_ms": _r(r["p95"], 1)}
        if r["event_type"] == "DEAD":
            dead += int(r["n"])
    feedback: dict[str, dict[str, Any]] = {}
    for r in fb_rows:
        feedback.setdefault(r["kind"], {"accepted": 0, "edited": 0, "rejected": 0})[r["feedback"]] = int(r["n"])
    for kind, counts in feedback.items():
        total = sum(counts[k] for k in ("accepted", "edited", "rejected"))
        counts["acceptance_rate"] = round(counts["accepted"] / total, 4) if total else None
        counts["edit_rate"] = round(counts["edited"] / total, 4) if total else None
    resolved = int(t.get("tickets_resolved") or 0)
    return {
        "day": day.isoformat(),
        "timezone": tz,
        "tickets_in": int(t.get("tickets_in") or 0),
        "tickets_resolved": resolved,
        "sla_attainment": round(int(t.get("resolved_within_sla") or 0) / resolved, 4) if resolved else None,
        "median_first_response_minutes": _r(t.get("median_first_response_minutes")),
        "median_resolution_minutes": _r(t.get("median_resolution_minutes")),
        "jobs": jobs,
        "job_latency": latency,
        "dead_jobs": dead,
        "suggestions_created": {r["kind"]: int(r["n"]) for r in sug_rows},
        "feedback": feedback,
        "llm": {"calls": int(llm.get("calls") or 0), "prompt_tokens": int(llm.get("prompt_tokens") or 0),
                "completion_tokens": int(llm.get("completion_tokens") or 0),
                "cost_usd": _r(llm.get("cost_usd"), 6) or 0.0},
    }
