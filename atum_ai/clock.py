"""One injectable clock. Core and handlers never call ``datetime.now()`` directly.

Queries take ``%(now)s`` from the clock (River's ``sqlc.narg('now')`` habit), so
backoff, lease and schedule tests use :class:`FrozenClock` instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._now = when.astimezone(UTC)


def require_aware(value: datetime, field: str) -> datetime:
    """Reject naive datetimes: their meaning depends on a server's TimeZone setting."""
    from atum_ai.errors import ValidationError

    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError("naive datetime; give a timezone (e.g. 2026-01-01T09:00:00Z)", field=field)
    return value.astimezone(UTC)
