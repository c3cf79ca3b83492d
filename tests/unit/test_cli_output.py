"""CLI printing: data is never read as Rich markup (no crash on "[/x]", nothing swallowed
from "[a-z]" or "[bold red]", no emoji from ":x:"), terminal control characters are shown,
and an error is one line."""

from __future__ import annotations

import pytest

from atum_ai.cli import main
from atum_ai.cli.output import clean, plain, print_table, say, styled
from atum_ai.cli.pipeline_cmds import describe

TRICKY = ["[/x]", "^[a-z]{2}$", "[bold red]kept[/bold red]", "[en] Hello", ":x: :smile:", "back\\"]


def test_table_cells_titles_and_headers_are_printed_as_they_are(capsys):
    print_table("title [/t]", ["col [/c]", "value"], [(t, t) for t in TRICKY])
    out = capsys.readouterr().out
    for text in [*TRICKY, "title [/t]", "col [/c]"]:
        assert text in out, text


def test_describe_of_a_reply_keeps_its_language_tag(capsys):
    line = describe("reply", {"language": "en", "draft": "Hello [customer],\nthanks"})
    print_table(None, ["suggestion"], [(line,)])
    assert "[en] Hello [customer]," in capsys.readouterr().out


def test_say_and_styled_print_data_exactly(capsys):
    for text in TRICKY:
        say(text)
        say(styled(("skipped", "yellow"), " ", text))
    err = capsys.readouterr().err.splitlines()
    assert err == [x for t in TRICKY for x in (t, f"skipped {t}")]


def test_clean_shows_control_characters_and_can_make_one_line():
    assert clean("a\x1b[31mb\x07") == "a\\x1b[31mb\\x07"
    assert clean("tab\tand\nnewline") == "tab\tand\nnewline"
    assert clean("two\r\nlines\n", one_line=True) == "two lines"
    assert clean("lone \udcff") == "lone \\udcff"
    assert plain("[/x]").plain == "[/x]"


def test_clean_masks_secrets():
    assert "hunter22" not in clean("postgresql://u:hunter22@h/db")


@pytest.mark.parametrize("argv", [["--log-level", "NOPE", "handlers"], ["--log-level", "[/x]", "handlers"]])
def test_a_bad_log_level_is_one_line_naming_the_flag(argv, capsys, monkeypatch):
    monkeypatch.delenv("ATUM_LOG_LEVEL", raising=False)
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --log-level") and "must be one of" in line
