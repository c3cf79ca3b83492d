"""The ``atum-ai`` CLI on hostile input, as a real process on a real PostgreSQL.

Each test reproduces a defect QA found; the rule they check is the CLI's contract: a mistake
the user can fix gives exit code 2 and exactly one line on stderr, ``error: <flag>: ...``,
never a traceback nor "unexpected <Exception>", and user text (payload keys, error messages,
dedupe keys) is printed exactly as it is, never read as Rich markup.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.processes import run_atum


def _one_error_line(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """Assert exit ``code`` and a single ``error:`` line on stderr holding every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert line.startswith("error: "), line
    assert not line.startswith("error: unexpected") and "Traceback" not in proc.stderr, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _enqueue(db_url: str, *args: str, env: dict[str, str] | None = None,
             input_: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["enqueue", "--org", str(uuid.uuid4()), *args]
    if input_ is None:
        return run_atum(db_url, *cmd, env=env)
    from tests.support.processes import REPO_ROOT, atum_command, atum_env

    return subprocess.run(atum_command(*cmd, log_json=False), env=atum_env(db_url, env), cwd=REPO_ROOT,
                          input=input_, capture_output=True, text=True, timeout=60, check=False)


def _rows(db_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as c:
        return list(c.execute(sql, params).fetchall())


# ================================================================== 1. Rich markup in user data
def test_a_payload_key_that_looks_like_a_closing_tag_is_reported_not_a_crash(db_url):
    proc = _enqueue(db_url, "--type", "TEST_NOOP", "--payload", '{"[/x]": 1}')
    _one_error_line(proc, '["[/x]"]', "Extra inputs")


def test_a_run_after_that_looks_like_markup_is_echoed_as_given(db_url):
    proc = _enqueue(db_url, "--type", "TEST_NOOP", "--payload", "{}", "--run-after", "[/y]")
    _one_error_line(proc, "--run-after", "'[/y]'")


@pytest.mark.parametrize("job_type", ["[bold red]X", "^[a-z]{2}$", "[/x]"])
def test_brackets_in_an_error_message_are_not_swallowed(db_url, job_type):
    # "[a-z]" and "[bold red]" are valid Rich tags: they used to vanish from the message.
    proc = _enqueue(db_url, "--type", job_type, "--payload", "{}")
    _one_error_line(proc, "--type", f"unknown job type {job_type!r}")


def test_jobs_show_and_list_print_markup_in_last_error_and_dedupe_key_literally(db_url):
    job_id = _enqueue(db_url, "--type", "TEST_NOOP", "--payload", "{}",
                      "--dedupe-key", "key [/k] :x:").stdout.strip()
    last_error = "bad [/x] thing [bold red]kept[/bold red] ^[a-z]{2}$"
    with psycopg.connect(db_url) as c:
        c.execute("UPDATE job_queue SET status = 'DEAD', last_error = %s WHERE id = %s", (last_error, job_id))
    show = run_atum(db_url, "jobs", "show", job_id)
    assert show.returncode == 0, show.stderr[-2000:]
    assert last_error in show.stdout and "key [/k] :x:" in show.stdout
    listed = run_atum(db_url, "jobs", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert last_error in listed.stdout


# ========================================================================= 2. zero-valued flags
@pytest.mark.parametrize("flag, value, needle", [
    ("--concurrency", "0", "between 1 and"),
    ("--concurrency", "-3", "between 1 and"),
    ("--lease", "0", "between 1 and 86400"),
    ("--lease", "86401", "between 1 and 86400"),
    ("--lease", "inf", "inf"),
    ("--lease", "nan", "nan"),
    ("--grace", "-1", "between 0 and"),
    ("--grace", "inf", "inf"),
    ("--pool-size", "0", "between 1 and"),
    ("--metrics-port", "0", "between 1 and 65535"),
    ("--metrics-port", "65536", "between 1 and 65535"),
])
def test_worker_flags_out_of_range_are_refused_not_replaced_by_defaults(db_url, flag, value, needle):
    # --burst: before the fix, 0 silently became the default and the worker ran (exit 0).
    proc = run_atum(db_url, "worker", "--burst", "--no-schedules", flag, value)
    _one_error_line(proc, flag, needle)


def test_pool_size_given_explicitly_is_checked_against_concurrency(db_url):
    proc = run_atum(db_url, "worker", "--burst", "--no-schedules", "--concurrency", "4", "--pool-size", "2")
    _one_error_line(proc, "pool size 2")


def test_worker_runs_with_explicit_small_values(db_url):
    proc = run_atum(db_url, "worker", "--burst", "--no-schedules", "--concurrency", "1", "--lease", "1",
                    "--grace", "0", "--pool-size", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_metrics_port_in_use_is_one_clear_line(db_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = run_atum(db_url, "worker", "--burst", "--no-schedules", "--metrics-port", str(port))
    _one_error_line(proc, "--metrics-port", f"127.0.0.1:{port}", "already in use")


# ================================================================= 3. limits, batches, durations
def test_purge_with_batch_zero_is_refused_instead_of_looping_forever(db_url):
    proc = run_atum(db_url, "purge", "--older-than", "0s", "--batch", "0", timeout=30)
    _one_error_line(proc, "--batch")


@pytest.mark.parametrize("argv, flag", [
    (["purge", "--older-than", "7d", "--batch", "-1"], "--batch"),
    (["purge", "--older-than", "99999999999w"], "--older-than"),
    (["purge", "--older-than", "1" + "0" * 400 + "s"], "--older-than"),
    (["purge", "--older-than", "36501d"], "--older-than"),
    (["jobs", "list", "--limit", "-1"], "--limit"),
    (["jobs", "list", "--limit", "0"], "--limit"),
    (["suggestions", "--org", str(uuid.uuid4()), "--limit", "-1"], "--limit"),
])
def test_negative_or_huge_limits_and_durations_name_the_flag(db_url, argv, flag):
    _one_error_line(run_atum(db_url, *argv), flag)


def test_purge_at_the_limits_works(db_url):
    job_id = _enqueue(db_url, "--type", "TEST_NOOP", "--payload", "{}").stdout.strip()
    run_atum(db_url, "cancel", job_id)  # PENDING -> DEAD: finished, purgeable
    assert run_atum(db_url, "purge", "--older-than", "36500d", "--batch", "1").returncode == 0
    assert _rows(db_url, "SELECT count(*) FROM job_queue") == [(1,)]
    proc = run_atum(db_url, "purge", "--older-than", "0s", "--batch", "1", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"purged": 1}


# ============================================================================ 4. lone surrogates
@pytest.mark.parametrize("argv, flag", [
    (["enqueue", "--org", str(uuid.uuid4()), "--type", "TEST_NOOP", "--payload", "{}",
      "--dedupe-key", "k\udcff"], "--dedupe-key"),
    (["enqueue", "--org", str(uuid.uuid4()), "--type", "T\udcff", "--payload", "{}"], "--type"),
    (["enqueue", "--org", str(uuid.uuid4()), "--type", "TEST_NOOP", "--payload", '{"n": "\udcff"}'],
     "--payload"),
    (["jobs", "list", "--type", "\udcff"], "--type"),
    (["jobs", "show", "\udcff"], "ID"),
    (["suggestions", "--org", str(uuid.uuid4()), "--ticket", "t\udcff"], "--ticket"),
])
def test_bytes_that_are_not_utf8_in_an_argument_name_the_flag(db_url, argv, flag):
    # subprocess encodes "\udcff" as the byte 0xff, exactly what bash's $'\xff' passes.
    _one_error_line(run_atum(db_url, *argv), flag, "not valid UTF-8")


# ======================================================================== 5. --payload @file / -
def test_payload_from_a_file_beyond_the_argument_limit(db_url, tmp_path):
    payload = {"text": "x" * 300_000, "n": 1}  # > 128 KiB: cannot be one argv string
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    proc = _enqueue(db_url, "--type", "BIG_PAYLOAD", "--allow-unknown", "--payload", f"@{path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _rows(db_url, "SELECT payload FROM job_queue WHERE id = %s", proc.stdout.strip()) == [(payload,)]


def test_payload_from_standard_input(db_url):
    proc = _enqueue(db_url, "--type", "TEST_NOOP", "--payload", "-", input_='{"n": 7}\n')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _rows(db_url, "SELECT payload FROM job_queue WHERE id = %s", proc.stdout.strip()) == [({"n": 7},)]


def test_payload_file_problems_are_one_line_naming_payload(db_url, tmp_path):
    _one_error_line(_enqueue(db_url, "--type", "TEST_NOOP", "--payload", f"@{tmp_path / 'missing.json'}"),
                    "--payload", "no such file", "missing.json")
    _one_error_line(_enqueue(db_url, "--type", "TEST_NOOP", "--payload", f"@{tmp_path}"),
                    "--payload", "directory")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"n": "\xff"}')
    _one_error_line(_enqueue(db_url, "--type", "TEST_NOOP", "--payload", f"@{bad}"), "--payload", "UTF-8")
    bad.write_text('{"n": ', encoding="utf-8")
    _one_error_line(_enqueue(db_url, "--type", "TEST_NOOP", "--payload", f"@{bad}"), "--payload",
                    "not valid JSON")
    _one_error_line(_enqueue(db_url, "--type", "TEST_NOOP", "--payload", "-", input_=""),
                    "--payload", "empty")


def test_enqueue_help_documents_file_and_stdin_payloads(db_url):
    proc = run_atum(db_url, "enqueue", "--help")
    assert proc.returncode == 0
    assert "@FILE" in proc.stdout and "standard input" in proc.stdout


# ================================================================== 6. a bad ATUM_DATABASE_URL
@pytest.mark.parametrize("url, detail", [
    ("not a url", 'missing "="'),
    ("postgresql://user:s3cretpw d@localhost/db", "spaces"),
    ("postgresql://user:s3cret%zzpw@localhost/db", "percent-encoded"),
])
def test_an_unparseable_database_url_is_one_line_naming_the_variable(db_url, url, detail):
    proc = run_atum(db_url, "status", env={"ATUM_DATABASE_URL": url})
    line = _one_error_line(proc, "ATUM_DATABASE_URL", detail)
    assert "s3cret" not in proc.stderr and "ProgrammingError" not in line


# ================================================================ 7. retry against a held dedupe key
def test_retry_of_a_dead_job_whose_dedupe_key_is_taken_explains_why(db_url):
    org = str(uuid.uuid4())
    common = ["enqueue", "--org", org, "--type", "TEST_NOOP", "--payload", "{}", "--dedupe-key", "nightly[/x]"]
    dead = run_atum(db_url, *common).stdout.strip()
    assert run_atum(db_url, "cancel", dead).returncode == 0  # PENDING -> DEAD
    live = run_atum(db_url, *common).stdout.strip()
    assert live and live != dead
    proc = run_atum(db_url, "retry", dead)
    line = _one_error_line(proc, "cannot requeue", "another unfinished job", live, "'nightly[/x]'")
    assert "duplicate key" not in line and "ux_job_queue_dedupe" not in line
    assert _rows(db_url, "SELECT status FROM job_queue WHERE id = %s", dead) == [("DEAD",)]
    # Once the holder is finished, the retry goes through.
    assert run_atum(db_url, "cancel", live).returncode == 0
    assert run_atum(db_url, "retry", dead).returncode == 0
    assert _rows(db_url, "SELECT status FROM job_queue WHERE id = %s", dead) == [("PENDING",)]


# ======================================================================== file paths stay usable
def test_a_file_name_that_is_not_utf8_is_still_a_valid_file(db_url, tmp_path):
    # Only text arguments are refused for undecodable bytes: file names may hold any byte.
    path = Path(str(tmp_path / "events-\udcff.jsonl"))
    path.write_bytes(b'{"type": "ticket.created", "ticket_id": "F-1", "subject": "s", "body": "b"}\n')
    proc = run_atum(db_url, "ingest", str(path), "--org", str(uuid.uuid4()), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["events"] == 1


@pytest.mark.parametrize("argv", [["kb", "import", "{path}"], ["train", "--tickets", "{path}"]])
def test_a_training_or_kb_file_that_is_not_utf8_is_one_line_naming_it(db_url, tmp_path, argv):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": "a1", "title": "caf\xe9", "body": "x"}\n')
    args = [a.format(path=path) for a in argv]
    _one_error_line(run_atum(db_url, *args, "--org", str(uuid.uuid4())), "UTF-8", "rows.jsonl")
