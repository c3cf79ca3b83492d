"""Periodic jobs, fired exactly once per slot however many workers run the scheduler.

Each worker computes the most recent due slot of every schedule (croniter, timezone-aware)
and tries to insert ``(schedule, slot)`` into ``job_schedule_fires`` in the same transaction
that enqueues the slot's jobs. The primary key lets exactly one worker win; the table is
separate from ``job_queue`` so purging finished jobs never re-opens a slot. After downtime
only the latest missed slot fires (once), not every slot that was missed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from psycopg import AsyncConnection

from atum_ai.errors import ConfigError
from atum_ai.queue.models import NewJob
from atum_ai.queue.store import JobStore

log = logging.getLogger(__name__)

JobFactory = Callable[[AsyncConnection[Any], datetime], Awaitable[Sequence[NewJob]]]


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    make_jobs: JobFactory
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ConfigError(f"schedule {self.name}: invalid cron expression {self.cron!r}")
        try:
            ZoneInfo(self.timezone)
        except Exception as exc:
            raise ConfigError(f"schedule {self.name}: unknown timezone {self.timezone!r}") from exc

    def latest_slot(self, now: datetime) -> datetime:
        """The most recent fire time at or before ``now`` (UTC)."""
        local_now = now.astimezone(ZoneInfo(self.timezone))
        on_the_minute = local_now.replace(second=0, microsecond=0)
        if on_the_minute == local_now and croniter.match(self.cron, local_now):
            return local_now.astimezone(UTC)  # get_prev() is strictly before its start
        return croniter(self.cron, local_now).get_prev(datetime).astimezone(UTC)

    def next_slot(self, now: datetime) -> datetime:
        local_now = now.astimezone(ZoneInfo(self.timezone))
        return croniter(self.cron, local_now).get_next(datetime).astimezone(UTC)


async def fire_due(conn: AsyncConnection[Any], store: JobStore, schedule: Schedule) -> int | None:
    """Fire the latest due slot if nobody has; returns the number of jobs enqueued, or None
    when the slot was already fired (by this or another worker)."""
    slot = schedule.latest_slot(store.clock.now())
    last = await store.last_schedule_fire(conn, schedule.name)
    if last is not None and last >= slot:
        return None
    async with conn.transaction():
        if not await store.claim_schedule_fire(conn, schedule.name, slot):
            return None
        jobs = await schedule.make_jobs(conn, slot)
        if jobs:
            await store.enqueue_many(conn, list(jobs))
    log.info("schedule fired", extra={"schedule": schedule.name, "slot": slot.isoformat(),
                                      "jobs": len(jobs)})
    return len(jobs)
