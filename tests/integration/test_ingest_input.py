"""Ingest on hostile files and events, on a real PostgreSQL: ``atum-ai ingest`` as a real
process, and ``parse_event`` / ``ingest_event`` for the field rules.

Defects reproduced here: a line that is not UTF-8 aborted the whole file; ``splitlines()``
broke JSON strings at raw U+2028/U+2029/U+0085 and shifted the reported line numbers; a
labelled ticket's ``id`` went through ``str()`` (null -> "None", 1e400 -> "inf"); an
``occurred_at`` in year 10000 UTC was stored and then broke reading the tickets back; a key
"[/x]" crashed the summary (Rich markup).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from atum_ai.errors import ValidationError
from atum_ai.pipeline.ingest import ingest_event, parse_event
from tests.support.processes import run_atum


def _ingest(db_url: str, path: Path, org: uuid.UUID, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
    proc = run_atum(db_url, "ingest", str(path), "--org", str(org), *extra)
    assert "Traceback" not in proc.stderr and "error: unexpected" not in proc.stderr, proc.stderr[-3000:]
    data = json.loads(proc.stdout) if "--json" in extra else None
    return proc.returncode, data, proc.stderr


def _tickets(db_url: str, org: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(db_url) as c:
        return {r[0]: r[1:] for r in c.execute(
            "SELECT ticket_id, subject, body, created_at FROM tickets WHERE organization_id = %s", (org,))}


def _count(db_url: str, table: str) -> int:
    with psycopg.connect(db_url) as c:
        return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _event(ticket_id: str, **kw: Any) -> bytes:
    return json.dumps({"type": "ticket.created", "ticket_id": ticket_id, "subject": "s", "body": "b", **kw},
                      ensure_ascii=False).encode("utf-8")


# ==================================================================== a. invalid UTF-8 on a line
def _file_with_a_bad_byte(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([
        _event("U-1"),
        b'{"type": "ticket.created", "ticket_id": "U-2", "subject": "caf\xe9"}',  # latin-1, not UTF-8
        _event("U-3"),
    ]) + b"\n")
    return path


def test_a_line_that_is_not_utf8_is_reported_and_skipped(db_url, org, tmp_path):
    code, stats, err = _ingest(db_url, _file_with_a_bad_byte(tmp_path), org, "--json")
    assert code == 1
    assert stats is not None and stats["events"] == 2 and stats["skipped"] == 1
    [error] = stats["errors"]
    assert error.startswith("line 2: ") and "UTF-8" in error
    assert "line 2" in err
    assert set(_tickets(db_url, org)) == {"U-1", "U-3"}


def test_a_line_that_is_not_utf8_with_on_error_abort_writes_nothing(db_url, org, tmp_path):
    code, _, err = _ingest(db_url, _file_with_a_bad_byte(tmp_path), org, "--on-error", "abort")
    assert code == 2
    [line] = err.strip().splitlines()[-1:]
    assert line.startswith("error: ") and "line 2" in line and "UTF-8" in line and "nothing was written" in line
    assert _count(db_url, "tickets") == 0 and _count(db_url, "job_queue") == 0


# ============================================ b. only "\n" ends a line (not U+2028, U+2029, U+0085)
def test_unicode_line_separators_inside_json_strings_stay_in_the_string(db_url, org, tmp_path):
    subject = "first\u2028second\u2029third\x85fourth"
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\r\n".join([  # CRLF line ends are fine too
        _event("S-1", subject=subject),
        _event("S-2", subject="plain"),
        b'{"type": "ticket.created", "ticket_id": ',  # line 3: broken JSON
        _event("S-4", body="a\u2028b"),
    ]) + b"\r\n")
    code, stats, _ = _ingest(db_url, path, org, "--json")
    assert stats is not None
    assert code == 1 and stats["events"] == 3 and stats["skipped"] == 1
    # The line number counts "\n" only: the broken line is line 3, not 6.
    assert [e.split(":")[0] for e in stats["errors"]] == ["line 3"]
    tickets = _tickets(db_url, org)
    assert set(tickets) == {"S-1", "S-2", "S-4"}
    assert tickets["S-1"][0] == subject
    assert tickets["S-4"][1] == "a\u2028b"


def test_split_jsonl_splits_on_newline_only():
    from atum_ai.pipeline.ingest import split_jsonl

    data = "\ufeff".encode() + b'{"a": "x\xe2\x80\xa8y"}\r\n\n{"b": 1}\n'
    assert split_jsonl(data) == [b'{"a": "x\xe2\x80\xa8y"}', b"", b'{"b": 1}']
    assert split_jsonl(b'{"c": 2}') == [b'{"c": 2}']  # no final newline
    assert split_jsonl(b"") == []


# ================================================================ c. ids are strings or integers
@pytest.mark.parametrize("raw_id, what", [
    (None, "null"),
    ({"x": 1}, "object"),
    (["1"], "array"),
    (True, "boolean"),
    (float("inf"), "inf"),
    (1.5, "1.5"),
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 201, "200"),
    (10 ** 300, "digits"),
    ("a\x00b", "NUL"),
    ("\ud800", "surrogate"),
])
def test_a_labelled_ticket_id_that_is_not_a_string_or_integer_is_refused(raw_id, what):
    with pytest.raises(ValidationError) as info:
        parse_event({"id": raw_id, "subject": "s", "body": "b"})
    assert info.value.field == "id"
    assert what in str(info.value), str(info.value)


@pytest.mark.parametrize("raw_id, ticket_id", [(42, "42"), (" 7 ", "7"), ("T-1", "T-1"), (-3, "-3")])
def test_a_labelled_ticket_id_string_or_integer_is_accepted(raw_id, ticket_id):
    ev = parse_event({"id": raw_id, "subject": "s", "body": "b"})
    assert ev.ticket_id == ticket_id and ev.event_id == f"import:{ticket_id}"


@pytest.mark.parametrize("labels, field", [
    ({"queue": {"x": 1}}, "labels.queue"),
    ({"priority": float("inf")}, "labels.priority"),
    ({"type": [1]}, "labels.type"),
])
def test_a_labelled_ticket_label_that_is_not_text_is_refused(labels, field):
    with pytest.raises(ValidationError) as info:
        parse_event({"id": "1", "subject": "s", "body": "b", **labels})
    assert info.value.field == field


def test_canonical_event_ids_accept_integers_and_refuse_the_rest():
    assert parse_event({"type": "ticket.created", "ticket_id": 4711}).ticket_id == "4711"
    assert parse_event({"type": "ticket.created", "ticket_id": "1", "event_id": 9}).event_id == "9"
    for raw, field in [
        ({"type": "ticket.created", "ticket_id": None}, "ticket_id"),
        ({"type": "ticket.created", "ticket_id": True}, "ticket_id"),
        ({"type": "ticket.created", "ticket_id": 1e300}, "ticket_id"),
        ({"type": "ticket.created", "ticket_id": {"x": 1}}, "ticket_id"),
        ({"type": "ticket.created", "ticket_id": 10 ** 700}, "ticket_id"),
        ({"type": "ticket.created", "ticket_id": "1", "event_id": "   "}, "event_id"),
        ({"type": "ticket.created", "ticket_id": "1", "event_id": False}, "event_id"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_event(raw)
        assert info.value.field == field, raw


def test_null_ids_in_a_file_no_longer_collapse_into_one_ticket_named_none(db_url, org, tmp_path):
    path = tmp_path / "labelled.jsonl"
    rows = [{"id": None, "subject": "one", "body": "x"}, {"id": None, "subject": "two", "body": "y"},
            {"id": 1e400, "subject": "three", "body": "z"}, {"id": 5, "subject": "five", "body": "w"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, stats, _ = _ingest(db_url, path, org, "--json")
    assert stats is not None
    assert code == 1 and stats["events"] == 1 and stats["skipped"] == 3
    assert all(": id: " in e for e in stats["errors"]), stats["errors"]
    assert set(_tickets(db_url, org)) == {"5"}


# ================================================================== d. occurred_at within bounds
@pytest.mark.parametrize("occurred_at", [
    "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
    "0001-01-01T00:00:00+14:00",  # 1 BC in UTC
    "9000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
])
def test_an_occurred_at_outside_1970_to_9000_utc_is_refused(occurred_at):
    with pytest.raises(ValidationError) as info:
        parse_event({"type": "ticket.created", "ticket_id": "T", "occurred_at": occurred_at})
    assert info.value.field == "occurred_at" and "1970-01-01" in str(info.value)


async def test_occurred_at_at_the_bounds_is_stored_and_reads_back(conn, org):
    for n, at in enumerate(["1970-01-01T00:00:00Z", "8999-12-31T23:59:59+00:00"]):
        await ingest_event(conn, org, {"type": "ticket.created", "ticket_id": f"B-{n}", "occurred_at": at})
    cur = await conn.execute("SELECT ticket_id, created_at FROM tickets WHERE organization_id = %s ORDER BY 1",
                             (org,))
    got = [(t, c.year) for t, c in await cur.fetchall()]
    assert got == [("B-0", 1970), ("B-1", 8999)]


def test_a_far_future_occurred_at_in_a_file_is_one_skipped_line(db_url, org, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([
        _event("D-1", occurred_at="9999-12-31T23:59:59-14:00"),
        _event("D-2", occurred_at="2026-01-01T09:00:00Z"),
    ]) + b"\n")
    code, stats, _ = _ingest(db_url, path, org, "--json")
    assert stats is not None
    assert code == 1 and stats["events"] == 1
    assert stats["errors"][0].startswith("line 1: occurred_at")
    # The organization stays readable (the bad time never reached the database).
    assert set(_tickets(db_url, org)) == {"D-2"}


# ===================================================================== e. markup in the summary
def test_markup_in_an_event_does_not_crash_the_summary(db_url, org, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([
        _event("M-1", **{"[/x]": 1}),
        _event("[bold red]M-2[/bold red]", language="x[a-z]"),
        _event("[/y]"),
    ]) + b"\n")
    code, _, err = _ingest(db_url, path, org)
    assert code == 1
    assert '["[/x]"]' in err  # the unknown key, printed as it is
    assert "'^[a-z]{2}$'" in err  # the pattern of "language", not "^{2}$"
    assert "1 event(s)" in err and "2 skipped" in err
    assert set(_tickets(db_url, org)) == {"[/y]"}


def test_a_file_name_with_brackets_is_shown_as_it_is(db_url, org, tmp_path):
    path = tmp_path / "events [bold] [a-z].jsonl"
    path.write_bytes(_event("N-1") + b"\n")
    proc = run_atum(db_url, "ingest", str(path), "--org", str(org))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ingest events [bold] [a-z].jsonl" in proc.stdout  # the progress line
    assert set(_tickets(db_url, org)) == {"N-1"}
