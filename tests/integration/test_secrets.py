"""A recognisable fake API key never appears in what the CLI prints (stdout, stderr, DEBUG
logs, tracebacks of failures), nor in job_queue.last_error / result or job_events, when
the LLM server echoes the key back in every error it returns.

Real processes, a real HTTP server (stdlib, on localhost) that echoes the Authorization
header, and the CLI exactly as a user runs it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from atum_ai.pipeline.training import set_taxonomy
from tests.support.pipeline import fixture_taxonomy, read_jsonl
from tests.support.processes import run_atum

FAKE_KEY = "sk-proj-FAKEKEY" + "Z9y8X7w6V5u4T3s2R1q0"


class EchoingServer(BaseHTTPRequestHandler):
    """Answers every request with an error that quotes the credentials it was sent; the
    ticket T-1001 gets a 500 (retryable), the others a 401 (permanent)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode()
        auth = self.headers.get("authorization", "")
        status = 500 if "Charged twice" in body else 401
        payload = json.dumps({"error": {"message": f"bad credentials {auth} (key {auth[7:]})",
                                        "type": "invalid_request_error", "param": auth}})
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-echo-auth", auth)
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


async def test_the_api_key_never_leaves_through_the_cli_the_logs_or_the_tables(
        db_url, conn, org, echo_server, tmp_path):
    await set_taxonomy(conn, org, fixture_taxonomy())
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl("tickets.jsonl")[:3]))
    env = {"ATUM_NO_BUILTINS": "0", "ATUM_LLM_BASE_URL": echo_server, "ATUM_LLM_MODEL": "m",
           "ATUM_LLM_API_KEY": FAKE_KEY, "ATUM_BACKOFF_BASE_SECONDS": "30",
           "ATUM_BACKOFF_CAP_SECONDS": "60"}
    outputs = []

    def cli(*args: str) -> str:
        done = run_atum(db_url, *args, env=env)
        outputs.append(done.stdout + done.stderr)
        return done.stdout

    cli("ingest", str(events), "--org", str(org))
    cli("--log-level", "DEBUG", "worker", "--burst", "--no-schedules", "--types", "TRIAGE_TICKET")
    cli("--log-level", "DEBUG", "--log-json", "worker", "--burst", "--no-schedules")
    listed = json.loads(cli("jobs", "list", "--json"))
    for job in listed:
        cli("jobs", "show", str(job["id"]), "--json")
        cli("jobs", "show", str(job["id"]))
    cli("status")
    cli("enqueue", "--org", str(org), "--type", "TRIAGE_TICKET", "--payload", '{"ticket_id": 7}')
    cli("prompt", "render", "TRIAGE_TICKET", "--payload", '{"ticket_id": "T-1"}')

    # The run really went through the failure paths that carry the echoed key.
    statuses = {j["status"] for j in listed}
    assert statuses == {"FAILED", "DEAD"}, listed
    assert any("HTTP 500" in (j["last_error"] or "") for j in listed)
    assert any("401" in (j["last_error"] or "") for j in listed)
    everything = "\n".join(outputs)
    assert "bad credentials" in everything  # the server's message is shown ...
    assert FAKE_KEY not in everything  # ... without the key
    assert "FAKEKEY" not in everything and "Z9y8X7w6V5u4T3s2R1q0" not in everything

    with psycopg.connect(db_url) as c:
        stored = c.execute(
            "SELECT string_agg(coalesce(last_error, '') || coalesce(result::text, ''), '|') FROM job_queue"
        ).fetchone()[0] + c.execute(
            "SELECT string_agg(coalesce(message, '') || coalesce(data::text, ''), '|') FROM job_events"
        ).fetchone()[0]
    assert "bad credentials" in stored and "FAKEKEY" not in stored
