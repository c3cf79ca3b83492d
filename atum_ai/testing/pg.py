"""Find or start a PostgreSQL server for tests, and hand out per-test databases.

Order of preference: ``ATUM_TEST_DATABASE_URL``; a server on 127.0.0.1:5432; a throw-away
cluster started with the ``initdb``/``pg_ctl`` binaries found on the machine. Tests never
assume that somebody started a server by hand.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    """PostgreSQL refuses to run as root; run the server as an unprivileged account then."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            runuser = shutil.which("runuser") or shutil.which("su")
            if runuser and runuser.endswith("runuser"):
                return [runuser, "-u", user, "--"]
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


@dataclass
class TemporaryCluster:
    """A private PostgreSQL cluster in a temp dir, on its own port; stop/start/restart it
    at will (outage and restart tests)."""

    port: int = field(default_factory=free_port)
    datadir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="atum-pg-")))
    _prefix: list[str] = field(default_factory=_run_as)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._prefix, *args], check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> TemporaryCluster:
        initdb = _pg_bin("initdb")
        if not initdb:
            raise RuntimeError("initdb not found")
        if self._prefix:
            user = self._prefix[2]
            pw = pwd.getpwnam(user)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        self._run(initdb, "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nmax_connections = 200\nshared_buffers = 128MB\n"
            )
        return self

    def start(self) -> None:
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl
        self._run(pg_ctl, "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
                  "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl
        self._run(pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def _can_connect(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def find_or_start_server() -> Iterator[str]:
    """Yield a URL to a maintenance database of a reachable server (see module docstring)."""
    url = os.environ.get("ATUM_TEST_DATABASE_URL")
    if url:
        yield url
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _can_connect(local):
        yield local
        return
    if _pg_bin("initdb") and _pg_bin("pg_ctl"):
        cluster = TemporaryCluster().init()
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.destroy()
        return
    from atum_ai.embedded import start_embedded  # last resort: the wheel's own binaries

    with start_embedded(Path(tempfile.mkdtemp(prefix="atum-emb-"))) as server:
        yield server.url


def with_database(url: str, dbname: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/" + dbname))


class DatabaseFactory:
    """Creates a migrated template once, then one cloned database per test."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.template = f"atum_tpl_{uuid.uuid4().hex[:12]}"
        self.created: list[str] = []

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.server_url, autocommit=True)

    def create_template(self) -> None:
        import asyncio

        from atum_ai.queue.migrate import migrate

        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')

        async def _migrate() -> None:
            async with await psycopg.AsyncConnection.connect(
                with_database(self.server_url, self.template), autocommit=True
            ) as aconn:
                await migrate(aconn)

        asyncio.run(_migrate())

    def create(self) -> str:
        name = f"atum_t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            version = conn.info.server_version
            strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"{strategy}')
        self.created.append(name)
        return with_database(self.server_url, name)

    def drop(self, url: str) -> None:
        name = urlparse(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_all(self) -> None:
        with self._admin() as conn:
            for name in [*self.created, self.template]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
