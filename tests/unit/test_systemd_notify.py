"""sd_notify client: real AF_UNIX datagram sockets, path and abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from atum_ai.worker import systemd


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    address = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"atum-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    assert systemd.ready() is False
    assert systemd.stopping() is False
    assert systemd.watchdog() is False
    assert systemd.status("idle") is False


def test_ready_on_path_socket(path_socket: socket.socket) -> None:
    assert systemd.ready() is True
    assert _recv(path_socket) == "READY=1"


def test_all_messages_on_abstract_socket(abstract_socket: socket.socket) -> None:
    assert systemd.ready("3 running")
    assert _recv(abstract_socket) == "READY=1\nSTATUS=3 running"
    assert systemd.watchdog()
    assert _recv(abstract_socket) == "WATCHDOG=1"
    assert systemd.status("draining:\n 2 left")
    assert _recv(abstract_socket) == "STATUS=draining: 2 left"  # one line, always
    assert systemd.stopping()
    assert _recv(abstract_socket) == "STOPPING=1"
    assert systemd.notify("EXTEND_TIMEOUT_USEC=5000000")
    assert _recv(abstract_socket) == "EXTEND_TIMEOUT_USEC=5000000"


def test_each_call_is_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound end plays systemd: each call must arrive as exactly one datagram.
    address = tmp_path / "n"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(address))
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    try:
        systemd.notify("READY=1\nSTATUS=up")
        systemd.watchdog()
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
        assert server.recv(4096) == b"WATCHDOG=1"
    finally:
        server.close()


def test_send_failure_returns_false_not_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.ready() is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None

    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 30.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 30.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None

    monkeypatch.setenv("WATCHDOG_PID", "garbage")
    assert systemd.watchdog_interval() is None

    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert systemd.watchdog_interval() is None
