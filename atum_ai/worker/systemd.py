"""A tiny sd_notify client (stdlib only) for running the worker as ``Type=notify``.

The protocol (sd_notify(3)): send newline-separated ``KEY=VALUE`` assignments as one
datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET``; a name starting with ``@`` is
in the abstract namespace (the ``@`` becomes a NUL byte). Outside systemd the variable is
unset and every call is a no-op that returns False, so the worker calls these
unconditionally.

The worker's use::

    ready()                                 # after migrations check + pool up + first claim loop
    interval = watchdog_interval()          # None unless WatchdogSec= is set for us
    ... every interval / 2:  watchdog()     # only while the claim loop is healthy
    status("12 running, 0 waiting")         # shows in `systemctl status`
    stopping()                              # on SIGTERM, before draining for --grace seconds
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to the service manager.

    Returns True when the datagram was sent, False when not under systemd
    (``NOTIFY_SOCKET`` unset) or the send failed; it never raises, since a lost
    notification must not take the worker down (systemd acts on its absence).
    """
    name = os.environ.get("NOTIFY_SOCKET")
    if not name or not state:
        return False
    if not name.startswith(("/", "@")):
        return False  # e.g. vsock: addresses this client does not speak
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(name))
            payload = state.encode()
            return sock.send(payload) == len(payload)
    except OSError:
        return False


def ready(status_text: str | None = None) -> bool:
    """READY=1: startup is finished (``systemctl start`` returns, dependants start)."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status_text)}" if status_text else ""))


def stopping(status_text: str | None = None) -> bool:
    """STOPPING=1: shutdown has begun (sent on SIGTERM, before draining)."""
    return notify("STOPPING=1" + (f"\nSTATUS={_one_line(status_text)}" if status_text else ""))


def watchdog() -> bool:
    """WATCHDOG=1: keep-alive; send at least every ``watchdog_interval() / 2`` seconds."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """STATUS=...: a one-line free-form status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog applies to this process.

    Reads ``WATCHDOG_USEC`` and, when set, ``WATCHDOG_PID`` (the watchdog is for that pid
    only, so a child that inherited the environment gets None), like sd_watchdog_enabled(3).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())
