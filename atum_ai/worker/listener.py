"""A dedicated LISTEN connection that wakes idle workers the moment work is enqueued.

It reconnects with capped backoff after a PostgreSQL restart or a dropped connection and
logs each loss once; meanwhile the worker's polling covers the gap, so no job waits for
more than one poll interval even without notifications.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg

from atum_ai.queue.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class Listener:
    def __init__(
        self,
        conninfo: str,
        on_notify: Callable[[str], None],
        *,
        job_types: Sequence[str] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.on_notify = on_notify
        self.on_connected = on_connected
        self.job_types = set(job_types) if job_types else None
        self.connected = asyncio.Event()
        self.reconnects = 0

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self.reconnects:
                        log.info("listener reconnected", extra={"attempts": self.reconnects})
                    self.reconnects = 0
                    delay = 0.2
                    self.connected.set()
                    if self.on_connected:
                        # Work may have arrived while we were deaf: poll once now.
                        self.on_connected()
                    async for notify in conn.notifies():
                        if self.job_types is None or notify.payload in self.job_types or not notify.payload:
                            self.on_notify(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # psycopg.OperationalError and friends
                self.connected.clear()
                if self.reconnects == 0:
                    log.warning("listener connection lost; polling until it is back",
                                extra={"error": type(exc).__name__})
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
