"""Third-party handlers (issue 4): a package adds a job type through the ``atum_ai.handlers``
entry-point group, with no fork and no ``--plugin`` flag.

The test package (``tests/support/plugin_pkg``) is installed for real with ``pip`` into a
temporary virtual environment layered on the project's one; the CLI runs there as a
separate process, and in-process tests put that environment's site-packages on ``sys.path``
(importlib.metadata then sees the installed distribution and its entry points).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import psycopg
import pytest

from atum_ai.errors import ConfigError, PayloadValidationError
from atum_ai.handlers.registry import ENTRY_POINT_GROUP, build_registry
from atum_ai.queue.models import NewJob
from atum_ai.runtime import load_registry
from tests.support.pipeline import LLM_ENV, local_settings, run_burst_worker, run_cli, store_for

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "support" / "plugin_pkg"
PLUGIN_DIST = "atum-ai-echo-plugin"
PLUGIN_MODULE = "atum_echo_plugin"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory) -> Path:
    """A throw-away venv that sees the project's environment (a .pth adds its site-packages,
    editable install included) and has the plugin pip-installed into its own site-packages."""
    venv = tmp_path_factory.mktemp("plugin-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    host_site = sysconfig.get_path("purelib")
    _site_packages(venv).joinpath("_atum_host_env.pth").write_text(
        f"import site; site.addsitedir({host_site!r})\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(_venv_python(venv)), "install", "--quiet",
         "--no-deps", "--no-build-isolation", "--no-index", str(PLUGIN_SRC)],
        check=True, timeout=300, capture_output=True)
    return venv


@pytest.fixture
def plugin_installed(plugin_venv, monkeypatch) -> Iterator[Path]:
    """Make the plugin venv's site-packages importable in this process for one test."""
    site = _site_packages(plugin_venv)
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib caches
    yield site
    for name in [m for m in sys.modules if m == PLUGIN_MODULE or m.startswith(PLUGIN_MODULE + ".")]:
        del sys.modules[name]


def _run_in_venv(venv: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in LLM_ENV and k != "ATUM_NO_BUILTINS"}
    if db_url:
        env["ATUM_DATABASE_URL"] = db_url
    return subprocess.run([str(_venv_python(venv)), "-m", "atum_ai", "--log-level", "WARNING", *args],
                          check=False, capture_output=True, text=True, timeout=120, env=env, cwd=venv)


# ========================================================================== discovery
def test_build_registry_discovers_the_pip_installed_plugin(plugin_installed):
    [ep] = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.dist and e.dist.name == PLUGIN_DIST]
    assert (ep.name, ep.value) == ("echo", "atum_echo_plugin:EchoHandler")
    assert Path(str(ep.dist.locate_file(""))).resolve() == plugin_installed.resolve()  # the real install

    registry = build_registry()
    assert "PLUGIN_ECHO" in registry
    assert registry.origin("PLUGIN_ECHO") == f"plugin {PLUGIN_DIST}:echo"
    assert {"TRIAGE_TICKET", "KB_SUGGEST", "SMART_REPLY", "SLA_PREDICT", "METRICS_SNAPSHOT"} <= set(registry.job_types)
    # Its payload model is the enqueue-time validator, and errors name the field.
    assert registry.validate_payload("PLUGIN_ECHO", {"message": "hi"}) == {"message": "hi", "times": 1}
    with pytest.raises(PayloadValidationError) as info:
        registry.validate_payload("PLUGIN_ECHO", {"message": "hi", "times": 9})
    assert info.value.field == "payload.times"


def test_without_the_package_there_is_no_plugin_job_type():
    assert "PLUGIN_ECHO" not in build_registry()
    assert build_registry(plugins=False).job_types == [
        "KB_SUGGEST", "METRICS_SNAPSHOT", "SLA_PREDICT", "SMART_REPLY", "TRIAGE_TICKET"]


def test_handlers_json_of_the_installed_cli_lists_the_plugin_with_its_payload_schema(plugin_venv):
    proc = _run_in_venv(plugin_venv, "handlers", "--json")
    assert proc.returncode == 0, proc.stderr
    handlers = {h["job_type"]: h for h in json.loads(proc.stdout)}
    echo = handlers["PLUGIN_ECHO"]
    assert echo["origin"] == f"plugin {PLUGIN_DIST}:echo"
    assert echo["description"] == "Echo a message (atum_ai plugin test)"
    schema = echo["payload_schema"]
    assert set(schema["properties"]) == {"message", "times"} and schema["required"] == ["message"]
    assert schema["properties"]["times"]["maximum"] == 5 and schema["additionalProperties"] is False
    assert set(echo["result_schema"]["properties"]) == {"echoed", "organization_id", "attempt"}
    assert handlers["TRIAGE_TICKET"]["origin"] == "built-in"

    # The host environment itself does not have the plugin: discovery is by installation.
    host = subprocess.run([sys.executable, "-m", "atum_ai", "handlers", "--json"], check=False, capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items() if k not in LLM_ENV})
    assert host.returncode == 0 and "PLUGIN_ECHO" not in {h["job_type"] for h in json.loads(host.stdout)}


# ========================================================================== running
async def test_plugin_job_runs_end_to_end_in_a_worker(plugin_installed, db_url, conn, org):
    settings = local_settings()
    registry = load_registry()
    store = store_for(settings, registry)
    with pytest.raises(PayloadValidationError) as info:
        await store.enqueue(conn, NewJob(org, "PLUGIN_ECHO", {"message": ""}))
    assert info.value.field == "payload.message"
    res = await store.enqueue(conn, NewJob(org, "PLUGIN_ECHO", {"message": "ping", "times": 3}))

    worker = await run_burst_worker(db_url, settings, registry=registry)
    assert worker.processed == 1
    job = await store.get(conn, res.id)
    assert job.status == "DONE"
    assert job.result == {"echoed": "ping ping ping", "organization_id": str(org), "attempt": 1}
    kinds = [(e.event_type, (e.data or {}).get("source")) for e in await store.events(conn, res.id)]
    assert kinds == [("ENQUEUED", None), ("CLAIMED", None), ("SUCCEEDED", "plugin")]


def test_plugin_job_runs_in_the_installed_cli_worker(plugin_venv, db_url):
    org = str(uuid.uuid4())
    proc = _run_in_venv(plugin_venv, "enqueue", "--org", org, "--type", "PLUGIN_ECHO",
                        "--payload", '{"message": "from the cli"}', "--json", db_url=db_url)
    assert proc.returncode == 0, proc.stderr
    proc = _run_in_venv(plugin_venv, "worker", "--burst", "--no-schedules", "--concurrency", "2",
                        db_url=db_url)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(db_url) as c:
        rows = c.execute("SELECT job_type, status, result FROM job_queue WHERE organization_id = %s",
                         (uuid.UUID(org),)).fetchall()
    assert rows == [("PLUGIN_ECHO", "DONE", {"echoed": "from the cli", "organization_id": org, "attempt": 1})]


# ====================================================================== duplicate type
@pytest.fixture
def duplicate_plugin(plugin_installed, tmp_path, monkeypatch) -> Path:
    """A second installed distribution whose entry point claims TRIAGE_TICKET."""
    dist = tmp_path / "site" / "atum_dup_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    dist.joinpath("METADATA").write_text("Metadata-Version: 2.1\nName: atum-dup-plugin\nVersion: 0.1\n")
    dist.joinpath("entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntriage = atum_echo_plugin:DuplicateTriageHandler\n")
    monkeypatch.syspath_prepend(str(dist.parent))
    return dist.parent


def test_a_plugin_registering_a_builtin_type_is_a_config_error(duplicate_plugin):
    with pytest.raises(ConfigError) as info:
        build_registry()
    message = str(info.value)
    assert "TRIAGE_TICKET" in message and "registered twice" in message
    assert "built-in" in message and "atum-dup-plugin:triage" in message


def test_worker_refuses_to_start_with_a_duplicate_job_type(duplicate_plugin, db_url, monkeypatch, capsys):
    monkeypatch.setenv("ATUM_DATABASE_URL", db_url)
    for name in LLM_ENV:
        monkeypatch.delenv(name, raising=False)
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("INSERT INTO job_queue (id, organization_id, job_type, payload) VALUES (%s, %s, 'PLUGIN_ECHO', %s)",
                  (uuid.uuid4(), uuid.uuid4(), json.dumps({"message": "never run"})))
    code = run_cli(["worker", "--burst", "--no-schedules", "--concurrency", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "TRIAGE_TICKET" in err and "registered twice" in err
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT status, retry_count FROM job_queue").fetchall() == [("PENDING", 0)]
