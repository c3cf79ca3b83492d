"""Start and stop real ``atum-ai worker`` processes for tests, and wait for conditions.

Workers run as ``python -m atum_ai --log-json --plugin tests.support.handlers:ALL worker ...``
with ``ATUM_NO_BUILTINS=1`` (only the test handlers), their output going to a file (under
pytest's basetemp) so a chatty worker can never block on a full pipe. The ``worker_processes`` fixture kills, by
pid, every worker a test started and did not reap itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.support.handlers:ALL"

# Short everything so process tests stay fast; a test overrides what it is about.
FAST_ENV = {
    "ATUM_NO_BUILTINS": "1",
    "ATUM_POLL_INTERVAL_SECONDS": "0.5",
    "ATUM_BACKOFF_BASE_SECONDS": "0.2",
    "ATUM_BACKOFF_CAP_SECONDS": "1",
    "ATUM_LOG_LEVEL": "INFO",
}

T = TypeVar("T")


def atum_command(*args: str, plugin: bool = True, log_json: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "atum_ai"]
    if log_json:
        cmd.append("--log-json")
    if plugin:
        cmd += ["--plugin", PLUGIN]
    return [*cmd, *args]


def atum_env(db_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATUM_")}
    env.update(FAST_ENV)
    env["ATUM_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_atum(db_url: str, *args: str, env: Mapping[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one short ``atum-ai`` command to completion."""
    return subprocess.run(atum_command(*args, log_json=False), env=atum_env(db_url, env),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    args: Sequence[str] = field(default_factory=tuple)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (non-JSON lines, e.g. a traceback, are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line still being written
        return out

    def records(self, msg: str) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("msg") == msg]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    async def wait_async(self, timeout: float) -> int:
        """Wait for exit without blocking the test's event loop."""
        return await wait_until(lambda: self.proc.poll(), timeout, interval=0.05,
                                what=f"worker pid {self.pid} to exit", accept_zero=True)

    async def wait_for_record(self, msg: str, timeout: float = 20,
                              count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            if not self.alive() and len(self.records(msg)) < count:
                raise AssertionError(f"worker exited ({self.proc.returncode}) before logging "
                                     f"{msg!r}:\n{self.log_text()[-3000:]}")
            recs = self.records(msg)
            return recs if len(recs) >= count else None

        return await wait_until(found, timeout, what=f"log line {msg!r}", log=self.log_text)

    async def wait_ready(self, timeout: float = 30) -> str:
        """Wait for "worker started"; returns the worker id."""
        [rec] = (await self.wait_for_record("worker started", timeout))[:1]
        return str(rec["worker_id"])

    def stop(self) -> None:
        """Kill (by pid) if still running; used in teardown only."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class WorkerFactory:
    def __init__(self, log_dir: Path | None = None) -> None:
        self.started: list[WorkerProcess] = []
        self._dir = log_dir or Path(tempfile.mkdtemp(prefix="atum-workers-"))

    def start(self, db_url: str, *worker_args: str, env: Mapping[str, str] | None = None,
              schedules: bool = False) -> WorkerProcess:
        args = ["worker", *worker_args]
        if not schedules:
            args.append("--no-schedules")
        log_path = self._dir / f"worker-{len(self.started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(atum_command(*args), env=atum_env(db_url, env), cwd=REPO_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        wp = WorkerProcess(proc, log_path, args)
        self.started.append(wp)
        return wp

    def cleanup(self) -> None:
        for wp in self.started:
            wp.stop()


@pytest.fixture
def worker_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFactory]:
    # Logs go under pytest's basetemp, which keeps the last few runs for a post-mortem.
    factory = WorkerFactory(tmp_path_factory.mktemp("workers"))
    try:
        yield factory
    finally:
        factory.cleanup()


async def wait_until(
    check: Callable[[], T | None | Awaitable[T | None]],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
    log: Callable[[], str] | None = None,
    accept_zero: bool = False,
) -> T:
    """Call ``check`` (sync or async) until it returns something truthy (or, with
    ``accept_zero``, anything but None); return that. Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value  # type: ignore[misc]
        if (value is not None) if accept_zero else bool(value):
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            tail = f"\n--- worker log ---\n{log()[-4000:]}" if log else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{tail}")
        await asyncio.sleep(interval)
