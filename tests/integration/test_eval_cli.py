"""``atum-ai eval`` end to end through ``atum_ai.cli.main`` on the project's fixtures.

Tickets: the fixture set split in halves (written to tmp_path). KB: the fixture articles with
a few invented queries. SLA: a small invented ServiceNow-style incident log. The KB part runs
against the test server (``pg_server_url``) and must leave no scratch database behind.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from atum_ai.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

KB_QUERIES = [  # invented; gold ids are articles of fixtures/kb.jsonl
    {"query": "I forgot my password and the reset link never arrives", "article_id": "KB-01"},
    {"query": "how do I get a refund when I cancel", "article_id": "KB-04"},
    {"query": "files are not syncing on my laptop", "article_id": "KB-06"},
    {"query": "where can I download an invoice with our VAT number", "article_id": "KB-03"},
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _tickets() -> list[dict[str, Any]]:
    lines = (FIXTURES / "tickets.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _write_incident_log(path: Path, n: int = 60) -> Path:
    """Invented audit log: two rows per incident; high priority and 'Network' breach often."""
    start = datetime(2031, 3, 1, 8, 0)
    fmt = "%d-%m-%Y %H:%M"
    cols = ["number", "incident_state", "made_sla", "opened_at", "sys_updated_at", "priority",
            "impact", "urgency", "category", "assignment_group", "contact_type", "resolved_at"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(n):
            opened = start + timedelta(hours=7 * i)
            prio = ("1 - Critical", "2 - High", "3 - Moderate", "4 - Low")[i % 4]
            cat = ("Network", "Email", "Printer")[i % 3]
            breached = (i % 4 == 1 and cat != "Printer") or (cat == "Network" and i % 2 == 0)
            hours = 30 + (i % 5) * 12 if breached else 4 + (i % 3)
            resolved = opened + timedelta(hours=hours)
            made = "FALSE" if breached else "TRUE"
            base = [f"INC{i:05d}", "New", made, opened.strftime(fmt), opened.strftime(fmt), prio,
                    "2 - Medium", "2 - Medium", cat, f"Group {i % 2}", "Phone",
                    resolved.strftime(fmt)]
            w.writerow(base)
            w.writerow([*base[:1], "Resolved", *base[2:4], resolved.strftime(fmt), *base[5:]])
    return path


def _scratch_databases(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'atum_eval_%'").fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def split(tmp_path: Path) -> tuple[Path, Path]:
    rows = _tickets()
    return (_write_jsonl(tmp_path / "train.jsonl", rows[::2]),
            _write_jsonl(tmp_path / "test.jsonl", rows[1::2]))


@pytest.fixture
def pg_env(pg_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ATUM_DATABASE_URL", pg_server_url)
    return pg_server_url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["eval", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_eval_json_holdout_kb_and_sla(split: tuple[Path, Path], tmp_path: Path, pg_env: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    train, test = split
    queries = _write_jsonl(tmp_path / "queries.jsonl", KB_QUERIES)
    log = _write_incident_log(tmp_path / "incidents.csv")
    before = _scratch_databases(pg_env)

    rc, out, err = _run(capsys, "--train", str(train), "--test", str(test),
                        "--kb-articles", str(FIXTURES / "kb.jsonl"), "--kb-queries", str(queries),
                        "--sla-train", str(log), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert set(report) == {"triage", "language", "kb", "sla", "notes"}

    tri = report["triage"]
    assert tri["mode"] == "holdout" and tri["train_n"] == 24 and tri["test_n"] == 24
    assert set(tri["fields"]) == {"queue", "type", "priority"}
    for m in tri["fields"].values():
        assert m["n"] == 24
        for block in (m["model"], m["majority_baseline"]):
            assert 0.0 <= block["accuracy"] <= 1.0 and 0.0 <= block["macro_f1"] <= 1.0
        assert m["majority_baseline"]["label"]
    for mode in ("batch", "single"):
        t = tri["timing"][mode]
        assert t["n"] > 0 and t["ms_per_ticket"] > 0 and t["tickets_per_s"] > 0

    lang = report["language"]
    assert lang["n"] == 24 and 0.8 <= lang["accuracy"] <= 1.0
    assert sum(sum(row.values()) for row in lang["confusion"].values()) == 24
    assert set(lang["confusion"]) <= {"en", "de", "es", "fr", "pt"}

    kb = report["kb"]
    assert kb["articles"] == 14 and kb["queries"] == len(KB_QUERIES)
    assert kb["where"] == "scratch database" and kb["unknown_gold_ids"] == []
    for method in ("model", "py_bm25_baseline"):
        m = kb[method]
        assert 0.0 <= m["recall@1"] <= m["recall@3"] <= m["recall@5"] <= 1.0
        assert m["recall@1"] <= m["mrr"] <= m["recall@5"]
    assert kb["model"]["recall@5"] >= 0.5  # these queries are easy for the fixture KB

    sla = report["sla"]
    assert sla["train"]["n"] == 42 and sla["test"]["n"] == 18
    assert sla["train"]["to"] <= sla["test"]["from"]  # earliest 70 % train
    for name in ("model", "priority_base_rate", "constant_base_rate"):
        b = sla["breach"][name]
        assert b["auroc"] is None or 0.0 <= b["auroc"] <= 1.0
        assert 0.0 <= b["brier"] <= 1.0
    assert sla["resolution_hours"]["n"] == 18

    assert _scratch_databases(pg_env) <= before  # dropped its own scratch database


def test_eval_tables_and_cross_validation(split: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = split
    rc, out, err = _run(capsys, "--train", str(train), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["triage"]["mode"] == "5-fold-cv" and report["triage"]["n"] == 24
    assert report["kb"] is None and report["sla"] is None
    assert any("cross-validation" in n for n in report["notes"])

    rc, out, _ = _run(capsys, "--train", str(train))
    assert rc == 0
    assert "Triage" in out and "macro-F1" in out and "Language detection" in out


def test_eval_refuses_training_data_as_test(split: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = split
    rc, out, err = _run(capsys, "--train", str(train), "--test", str(train), "--json")
    assert rc == 2 and out == ""
    assert "--test" in err and "same file" in err

    overlapping = _write_jsonl(tmp_path / "overlap.jsonl", _tickets()[:3])
    rc, _, err = _run(capsys, "--train", str(train), "--test", str(overlapping))
    assert rc == 2 and "--test" in err and "both" in err


def test_eval_input_errors_name_the_flag(split: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    train, test = split
    rc, _, err = _run(capsys, "--train", str(tmp_path / "missing.jsonl"))
    assert rc == 2 and "--train" in err and "no such file" in err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(test.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    rc, _, err = _run(capsys, "--train", str(train), "--test", str(bad))
    assert rc == 2 and "--test" in err and "line 25" in err

    rc, _, err = _run(capsys, "--kb-articles", str(FIXTURES / "kb.jsonl"))
    assert rc == 2 and "--kb-queries" in err
