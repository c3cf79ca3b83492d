"""Printing for the CLI: rich tables for people, ``--json`` for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from atum_ai.redact import redact_secrets

# Piped output is read by people too (CI logs, `| less`): do not squeeze tables into 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    return redact_secrets(str(v))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(fmt(v) for v in r))
    console.print(table)


def info(message: str) -> None:
    err_console.print(message)
