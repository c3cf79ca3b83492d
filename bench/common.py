"""Shared helpers of the benchmark suites: throw-away databases, worker processes, statistics.

Every suite works on its own database named ``atum_bench_<suite>_<pid>`` on the server given
by ``--dsn`` (default: the local trust server), created fresh and dropped at the end, so runs
never touch another database on the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEFAULT_DSN = os.environ.get("ATUM_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


# ---------------------------------------------------------------------------- statistics
@dataclass
class Stat:
    """Median of repeated runs with its spread (min..max)."""

    values: list[float]
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "runs": self.values,
                "unit": self.unit}

    def fmt(self, digits: int = 0) -> str:
        if not self.values:
            return "-"
        f = f"{{:,.{digits}f}}"
        if len(self.values) == 1:
            return f.format(self.median)
        return f"{f.format(self.median)} ({f.format(self.lo)}-{f.format(self.hi)})"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def rate_first_to_last(starts: Sequence[float]) -> float:
    """Jobs/s from the first to the last handler start (n-1 intervals)."""
    if len(starts) < 2:
        return float("nan")
    span = max(starts) - min(starts)
    return (len(starts) - 1) / span if span > 0 else float("inf")


# ---------------------------------------------------------------------------- databases
def with_dbname(dsn: str, name: str) -> str:
    u = urlparse(dsn)
    return urlunparse(u._replace(path="/" + name))


def admin_dsn(dsn: str) -> str:
    return with_dbname(dsn, "postgres")


def create_database(dsn: str, name: str) -> str:
    assert name.startswith("atum_bench_"), name  # never touch anybody else's database
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_dbname(dsn, name)


def drop_database(dsn: str, name: str) -> None:
    assert name.startswith("atum_bench_"), name
    with contextlib.suppress(Exception), psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_database(dsn: str, label: str) -> Iterator[str]:
    name = f"atum_bench_{label}_{os.getpid()}"
    url = create_database(dsn, name)
    try:
        yield url
    finally:
        drop_database(dsn, name)


async def migrate_atum(url: str) -> None:
    from atum_ai.queue.migrate import migrate

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)


def reset_atum(url: str) -> None:
    """Empty the queue tables between runs and settle the table statistics."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE job_queue, job_events")
        conn.execute("VACUUM ANALYZE job_queue")
        conn.execute("VACUUM ANALYZE job_events")


@contextlib.asynccontextmanager
async def aconnect(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield conn


def server_version(dsn: str) -> str:
    with psycopg.connect(admin_dsn(dsn), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        sc = conn.execute("SHOW synchronous_commit").fetchone()
        return f"PostgreSQL {row[0] if row else '?'} (synchronous_commit={sc[0] if sc else '?'})"


# ---------------------------------------------------------------------------- processes
def atum_env(url: str, **extra: str) -> dict[str, str]:
    # ATUM_BENCH_SRC: a different checkout of atum_ai to run the workers from (before/after).
    src = os.environ.get("ATUM_BENCH_SRC", "")
    path = os.pathsep.join(p for p in (src, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "ATUM_DATABASE_URL": url, "ATUM_NO_BUILTINS": "1", "PYTHONPATH": path}
    env.update(extra)
    return env


def atum_worker_cmd(concurrency: int, *, burst: bool = True, plugin: str | None = "tests.support.handlers:ALL",
                    extra: Sequence[str] = ()) -> list[str]:
    cmd = [PY, "-m", "atum_ai", "--log-level", "WARNING"]
    if plugin:
        cmd += ["--plugin", plugin]
    cmd += ["worker", "--concurrency", str(concurrency), "--no-schedules"]
    if burst:
        cmd.append("--burst")
    return [*cmd, *extra]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    log_path: Path | None = None

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise RuntimeError(f"process {self.popen.args!r} did not finish in {timeout:.0f}s: "
                               f"{self.tail()}") from None

    def tail(self, n: int = 2000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


LOG_DIR = Path(os.environ.get("ATUM_BENCH_LOGS", "/tmp/atum_bench_logs"))


def spawn(cmd: Sequence[str], env: dict[str, str], name: str) -> Proc:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    fh = open(log_path, "wb")  # noqa: SIM115 - lives as long as the child
    # `python -m` puts the working directory first on sys.path: run from ATUM_BENCH_SRC when set.
    cwd = env.get("ATUM_BENCH_SRC") or str(ROOT)
    p = subprocess.Popen(list(cmd), env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)
    return Proc(p, log_path=log_path)


def peak_rss_kb_of_children() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
