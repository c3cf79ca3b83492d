"""Every named SQL block parses, and every name is used by the code (procrastinate's habit)."""

import re
from pathlib import Path

import pytest

from atum_ai.queue.queries import QUERIES, parse_sql_blocks

ROOT = Path(__file__).resolve().parents[3] / "atum_ai"


def test_blocks_parse_and_have_a_description():
    text = (ROOT / "queue" / "sql" / "jobs.sql").read_text()
    for m in re.finditer(r"^-- name: (\w+)\n(.*)$", text, re.M):
        assert m.group(2).startswith("-- "), f"{m.group(1)} lacks a description line"
    assert set(parse_sql_blocks(text)) == set(QUERIES)


def test_every_query_is_used():
    code = "\n".join(p.read_text() for p in ROOT.rglob("*.py"))
    unused = [name for name in QUERIES if f'"{name}"' not in code]
    assert unused == []


def test_duplicate_and_empty_blocks_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        parse_sql_blocks("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    with pytest.raises(ValueError, match="empty"):
        parse_sql_blocks("-- name: a\n;\n")


def test_time_is_a_parameter_not_now():
    # Time comes from the injected clock (%(now)s); the SQL never reads the server clock.
    for name, sql in QUERIES.items():
        body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        assert "now()" not in body.lower(), name


def test_claim_returns_the_columns_job_from_claim_expects_in_order():
    import re

    from atum_ai.queue.models import CLAIM_COLUMNS

    last_select = QUERIES["job_claim"].rsplit("SELECT", 1)[1].split("FROM claimed")[0]
    assert tuple(re.findall(r"[a-z_]+", last_select)) == CLAIM_COLUMNS
