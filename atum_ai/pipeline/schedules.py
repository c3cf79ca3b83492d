"""Periodic jobs of the pipeline: the nightly METRICS_SNAPSHOT per active organization."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from atum_ai.config import Settings
from atum_ai.queue.models import NewJob
from atum_ai.worker.scheduler import Schedule

# An organization is active for a day when it had a ticket or a job touched that day.
_ACTIVE_ORGS = """
SELECT organization_id FROM tickets WHERE updated_at >= %(start)s AND updated_at < %(end)s
UNION
SELECT organization_id FROM job_queue
 WHERE updated_at >= %(start)s AND updated_at < %(end)s AND job_type <> 'METRICS_SNAPSHOT'
"""


def metrics_schedule(settings: Settings) -> Schedule:
    tz = ZoneInfo(settings.metrics_timezone)

    async def make_jobs(conn: AsyncConnection[Any], slot: datetime) -> list[NewJob]:
        # The snapshot at a night's slot covers the previous local calendar day.
        day = (slot.astimezone(tz) - timedelta(days=1)).date()
        start = datetime.combine(day, datetime.min.time(), tz)
        cur = await conn.execute(_ACTIVE_ORGS, {"start": start, "end": start + timedelta(days=1)})
        orgs = [r[0] for r in await cur.fetchall()]
        return [
            NewJob(organization_id=org, job_type="METRICS_SNAPSHOT",
                   payload={"day": day.isoformat(), "timezone": settings.metrics_timezone},
                   dedupe_key=f"metrics:{day.isoformat()}")
            for org in orgs
        ]

    return Schedule("metrics_snapshot_nightly", settings.metrics_cron, make_jobs,
                    timezone=settings.metrics_timezone)


def default_schedules(settings: Settings) -> list[Schedule]:
    return [metrics_schedule(settings)]
