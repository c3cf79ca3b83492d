"""Named SQL blocks, parsed once at import from ``queue/sql/*.sql`` (procrastinate's habit).

Nothing else in the queue holds SQL strings: a query is looked up by name, so a unit test
can check that every block parses and every name is used.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.M)


def parse_sql_blocks(text: str) -> dict[str, LiteralString]:
    """Split a file into ``{name: sql}``; the description comment line stays with the SQL."""
    blocks: dict[str, LiteralString] = {}
    matches = list(_HEADER.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end].strip()
        name = m.group("name")
        if name in blocks:
            raise ValueError(f"duplicate SQL block name {name!r}")
        if not body.rstrip(";").strip():
            raise ValueError(f"empty SQL block {name!r}")
        blocks[name] = cast(LiteralString, body.rstrip().rstrip(";"))
    return blocks


def load_queries(package: str, folder: str = "sql") -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    for entry in sorted(resources.files(package).joinpath(folder).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse_sql_blocks(entry.read_text(encoding="utf-8")).items():
                if name in queries:
                    raise ValueError(f"SQL block {name!r} defined twice")
                queries[name] = sql
    return queries


QUERIES: dict[str, LiteralString] = load_queries("atum_ai.queue")
