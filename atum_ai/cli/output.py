"""Printing for the CLI: rich tables for people, ``--json`` for programs.

User and database text is never parsed as Rich markup: a ticket subject, a payload key or an
error message may contain ``[/x]`` (which made Rich raise) or ``[a-z]`` / ``[bold red]``
(which Rich silently swallowed). Such text goes out as :class:`rich.text.Text` (see
:func:`plain` and :func:`styled`); markup is only ever used in our own constant strings.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table
from rich.text import Text

from atum_ai.redact import redact_secrets

# Piped output is read by people too (CI logs, `| less`): do not squeeze tables into 80 columns.
# emoji=False: ":x:" in a ticket is text, not an emoji code.
console = Console(highlight=False, soft_wrap=True, emoji=False,
                  width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

# C0/C1 control characters other than tab and newline (ESC could drive the terminal), DEL,
# and lone surrogates (cannot be written to a UTF-8 stream).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def clean(value: Any, *, one_line: bool = False) -> str:
    """``str(value)`` made safe for a terminal: secrets masked, control characters shown as
    ``\\xNN``; with ``one_line``, line breaks become spaces."""
    text = redact_secrets(str(value))
    if one_line:
        text = " ".join(part.strip() for part in text.replace("\r", "\n").split("\n") if part.strip())
    return _CONTROL.sub(_visible, text)


def plain(value: Any, style: str = "", *, one_line: bool = False) -> Text:
    """Data as Rich text: printed exactly as it is, brackets and all."""
    return Text(clean(value, one_line=one_line), style=style)


def styled(*parts: str | tuple[str, str] | Text) -> Text:
    """Join our own styled labels with data, e.g. ``styled(("skipped", "yellow"), " ", msg)``:
    strings are data (never markup), ``(text, style)`` pairs are styled."""
    out = Text()
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(clean(part[0]), style=part[1])
        else:
            out.append(clean(part))
    return out


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, UUID):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def print_json(data: Any) -> None:
    sys.stdout.write(redact_secrets(json.dumps(data, default=_default, ensure_ascii=False, indent=2)) + "\n")


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S%z")
    return clean(v)


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table whose title, headers and cells are all printed as text (never markup)."""
    table = Table(title=plain(title) if title is not None else None, show_lines=False)
    for c in columns:
        table.add_column(plain(c))
    for r in rows:
        table.add_row(*(Text(fmt(v)) for v in r))
    console.print(table)


def info(message: str | Text) -> None:
    """A status line on stderr. A ``str`` is Rich markup (our own constant text only; use
    :func:`say` or pass a :class:`Text` when the line holds data)."""
    err_console.print(message)


def say(message: Any) -> None:
    """A status line on stderr, printed exactly as it is (no markup)."""
    err_console.print(message if isinstance(message, Text) else plain(message))
