"""Forward-only migrations: ``migrations/NNNN_name.sql`` applied in order, once each.

Safe when several processes start at once: a session advisory lock serialises runners, and
each file is applied in its own transaction together with its row in
``atum_schema_migrations``, so a crash leaves either all of a file or none of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql

from atum_ai.errors import ConfigError
from atum_ai.resources import migrations_dir

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Arbitrary constant shared by every atum_ai process ("atum" in ASCII).
_ADVISORY_LOCK_KEY = 0x6174756D


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ConfigError(f"migration file {path.name!r} is not named NNNN_snake_name.sql")
        found.append(Migration(int(m.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"two migrations share a number in {directory}")
    return found


async def applied(conn: AsyncConnection[Any]) -> dict[str, str]:
    cur = await conn.execute("SELECT to_regclass('atum_schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}
    cur = await conn.execute("SELECT name, checksum FROM atum_schema_migrations")
    return {r[0]: r[1] for r in await cur.fetchall()}


async def migrate(conn: AsyncConnection[Any], directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied now (empty when up to date).

    ``conn`` must be in autocommit mode (each migration gets its own transaction)."""
    if not conn.autocommit:
        raise ConfigError("migrate() needs an autocommit connection")
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS atum_schema_migrations ("
            " name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = await applied(conn)
        newly: list[str] = []
        for m in migrations:
            if m.name in done:
                if done[m.name] != m.checksum:
                    raise ConfigError(
                        f"migration {m.name} changed after it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(sql.SQL(m.sql))  # type: ignore[arg-type]
                await conn.execute(
                    "INSERT INTO atum_schema_migrations (name, checksum) VALUES (%s, %s)",
                    (m.name, m.checksum),
                )
            newly.append(m.name)
        return newly
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
