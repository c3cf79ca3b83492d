"""The demo's table: which tickets it shows, and how it tells the user to call the CLI again."""

from __future__ import annotations

import sys

from atum_ai.pipeline import demo


def _tickets(langs: str) -> tuple[list[dict], dict[str, dict]]:
    rows = [{"id": f"T-{i}"} for i in range(len(langs.split()))]
    by_ticket = {f"T-{i}": {"triage": {"language": {"label": lang}}} for i, lang in enumerate(langs.split())}
    return rows, by_ticket


def test_a_short_table_shows_every_language_in_ticket_order() -> None:
    rows, by_ticket = _tickets("en en en en en en de de es fr pt")
    picked = demo._sample_by_language(rows, by_ticket, 6)
    langs = [by_ticket[t]["triage"]["language"]["label"] for t in picked]
    assert set(langs) == {"en", "de", "es", "fr", "pt"}
    assert picked == sorted(picked, key=lambda t: int(t.split("-")[1]))  # ticket order kept


def test_the_sample_is_everything_when_show_covers_all_and_tolerates_missing_triage() -> None:
    rows, by_ticket = _tickets("en de")
    rows.append({"id": "T-9"})  # no suggestion at all (e.g. its triage job went DEAD)
    assert demo._sample_by_language(rows, by_ticket, 10) == ["T-0", "T-1", "T-9"]
    assert demo._sample_by_language(rows, by_ticket, 0) == []


def test_the_next_hint_uses_the_path_the_cli_was_started_by(monkeypatch) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", [".venv/bin/atum-ai", "demo"])
    assert demo._program() == ".venv/bin/atum-ai"
    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/local/bin/atum-ai")
    assert demo._program() == "atum-ai"
