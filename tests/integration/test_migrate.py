"""Migrations: the ATUM DESK job_queue schema exactly, an idempotent runner that records what
it applied and refuses edited history, two processes migrating at once, and migrations that
ship inside a non-editable (wheel) install."""

from __future__ import annotations

import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from atum_ai.errors import ConfigError
from atum_ai.queue.migrate import applied, discover, migrate
from atum_ai.testing.pg import with_database
from tests.support.processes import REPO_ROOT, atum_command, atum_env

# The ATUM DESK columns: name -> (type, nullable, default). Additive columns may follow.
ATUM_DESK_COLUMNS = {
    "id": ("uuid", "NO", "gen_random_uuid()"),
    "organization_id": ("uuid", "NO", None),
    "job_type": ("text", "NO", None),
    "payload": ("jsonb", "NO", "'{}'::jsonb"),
    "status": ("text", "NO", "'PENDING'::text"),
    "locked_by": ("uuid", "YES", None),
    "locked_at": ("timestamp with time zone", "YES", None),
    "run_after": ("timestamp with time zone", "NO", "now()"),
    "retry_count": ("integer", "NO", "0"),
    "max_retries": ("integer", "NO", "5"),
    "last_error": ("text", "YES", None),
    "created_at": ("timestamp with time zone", "NO", "now()"),
    "updated_at": ("timestamp with time zone", "NO", "now()"),
}
ATUM_DESK_INDEXES = {
    "ix_job_queue_status_run_after": "(status, run_after)",
    "ix_job_queue_locked_at": "(locked_at)",
    "ix_job_queue_organization_id": "(organization_id)",
    "ix_job_queue_job_type": "(job_type)",
}


@pytest.fixture
def empty_db(pg_server_url: str) -> Iterator[str]:
    name = f"atum_m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_job_queue_keeps_the_atum_desk_schema_exactly(conn):
    cur = await conn.execute(
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_name = 'job_queue' ORDER BY ordinal_position")
    columns = {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}
    assert list(columns)[: len(ATUM_DESK_COLUMNS)] == list(ATUM_DESK_COLUMNS)  # same order first
    for name, spec in ATUM_DESK_COLUMNS.items():
        assert columns[name] == spec, name
    cur = await conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'job_queue'")
    indexes = dict(await cur.fetchall())
    for name, cols in ATUM_DESK_INDEXES.items():
        assert indexes[name].endswith(f"USING btree {cols}"), indexes[name]
    cur = await conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'job_queue'::regclass AND i.indisprimary")
    assert [r[0] for r in await cur.fetchall()] == ["id"]


async def test_migrate_is_idempotent_and_records_every_file(empty_db):
    async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
        first = await migrate(conn)
        assert first == [m.name for m in discover()] and first[0].startswith("0001_")
        assert await migrate(conn) == []
        recorded = await applied(conn)
        assert set(recorded) == set(first)
        assert all(recorded[m.name] == m.checksum for m in discover())


async def test_an_applied_migration_that_changed_is_refused(empty_db, tmp_path: Path):
    for m in discover():
        (tmp_path / m.name).write_text(m.sql)
    async with await psycopg.AsyncConnection.connect(empty_db, autocommit=True) as conn:
        await migrate(conn, tmp_path)
        first = discover(tmp_path)[0]
        (tmp_path / first.name).write_text(first.sql + "\n-- edited afterwards\n")
        with pytest.raises(ConfigError, match="changed after it was applied"):
            await migrate(conn, tmp_path)
        # A new file is the way forward, and it is applied.
        (tmp_path / first.name).write_text(first.sql)
        (tmp_path / "9999_extra_table.sql").write_text("CREATE TABLE extra_table (x int);")
        assert await migrate(conn, tmp_path) == ["9999_extra_table.sql"]


def test_two_processes_migrating_at_once_apply_each_file_once(empty_db):
    procs = [subprocess.Popen(atum_command("migrate", plugin=False, log_json=False),
                              env=atum_env(empty_db), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with psycopg.connect(empty_db) as c:
        rows = c.execute("SELECT name, count(*) FROM atum_schema_migrations GROUP BY 1").fetchall()
        assert sorted(r[0] for r in rows) == [m.name for m in discover()]
        assert all(r[1] == 1 for r in rows)
        assert c.execute("SELECT to_regclass('job_queue') IS NOT NULL").fetchone()[0]


def test_the_wheel_carries_migrations_prompts_and_fixtures(tmp_path: Path):
    """A non-editable install (the README's demo command) must find migrations/ and prompts/
    inside the package: the wheel ships them as atum_ai/_data/."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(f"cannot build a wheel offline here: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("atum_ai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for m in discover():
        assert f"atum_ai/_data/migrations/{m.name}" in names
    for prompt in (REPO_ROOT / "prompts").glob("*.j2"):
        assert f"atum_ai/_data/prompts/{prompt.name}" in names
    assert "atum_ai/_data/fixtures/tickets.jsonl" in names
    assert "atum_ai/queue/sql/jobs.sql" in names
