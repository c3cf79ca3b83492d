"""The ``atum-ai`` command line.

Errors a user can fix print one line and exit non-zero, without a traceback:
2 for bad input or configuration, 3 when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys

import psycopg

from atum_ai.cli.output import err_console, plain, say, styled
from atum_ai.cli.runner import CommandEnv
from atum_ai.config import Settings
from atum_ai.errors import AtumError, ConfigError, ValidationError
from atum_ai.logs import setup_logging
from atum_ai.redact import redact_secrets, register_secret, sanitize_error


def build_parser() -> argparse.ArgumentParser:
    from atum_ai.cli import queue_cmds, worker_cmd

    parser = argparse.ArgumentParser(
        prog="atum-ai",
        description="AI-task pipeline for helpdesk tickets on a PostgreSQL job queue.",
        epilog="Database from ATUM_DATABASE_URL (unset: an embedded PostgreSQL).",
    )
    parser.add_argument("--log-level", default=os.environ.get("ATUM_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE:ATTR",
                        help="load extra handler(s) (development; packages use entry points)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    queue_cmds.register(sub)
    worker_cmd.register(sub)
    try:
        from atum_ai.cli import pipeline_cmds
    except ImportError:  # pragma: no cover - during bootstrap only
        pass
    else:
        pipeline_cmds.register(sub)
    return parser


# Log levels accepted by --log-level / ATUM_LOG_LEVEL.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _flag_name(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    if longs or action.option_strings:
        return (longs or action.option_strings)[0]
    return str(action.metavar or action.dest.upper())


def _selected_actions(parser: argparse.ArgumentParser,
                      args: argparse.Namespace) -> list[argparse.Action]:
    """The arguments of the parser and of each sub-command the user chose."""
    out: list[argparse.Action] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                out += _selected_actions(action.choices[chosen], args)
        else:
            out.append(action)
    return out


def check_text_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    r"""Refuse arguments that cannot be encoded as UTF-8, naming the flag.

    Bytes that are not UTF-8 in argv reach Python as lone surrogates ($'\xff' is '\udcff');
    they would fail much later, in the database driver, as "unexpected UnicodeEncodeError".
    File paths are exempt: such a name is a valid file name on POSIX.
    """
    from atum_ai.cli.queue_cmds import is_path_argument

    for action in _selected_actions(parser, args):
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str) or is_path_argument(action, v):
                continue
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(
                    "contains bytes that are not valid UTF-8 (a lone surrogate)",
                    field=_flag_name(action)) from None


def check_database_url(url: str | None) -> None:
    """A ConfigError naming ATUM_DATABASE_URL for a string libpq cannot parse (psycopg's own
    error spans two lines, says "ProgrammingError" and may quote the password)."""
    if not url:
        return
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        # libpq quotes the offending part, which may be (part of) the password.
        if "@" in url or "password" in url.lower():
            detail = re.sub(r'"[^"]*"', '"..."', detail)
        raise ConfigError(
            "ATUM_DATABASE_URL is not a valid PostgreSQL URL or connection string"
            + (f" ({redact_secrets(detail)})" if detail else "")
            + "; expected e.g. postgresql://user@host:5432/dbname") from None


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from atum_ai.runtime import database_url, ensure_schema

    env = CommandEnv(settings=settings, plugin_specs=args.plugin)
    if not getattr(args, "needs_db", False):
        return await args.func(env, args)
    check_database_url(settings.database_url)
    precheck = getattr(args, "precheck", None)
    if precheck is not None:  # argument checks that need no database: fail before starting one
        precheck(args)
    with database_url(settings, announce=lambda m: say(m)) as (url, embedded):
        env.url, env.embedded = url, embedded
        if getattr(args, "needs_schema", True):
            await ensure_schema(url, auto=embedded)
        return await args.func(env, args)


def _error(message: str) -> None:
    """One line on stderr: our red "error:" label, then the message as plain text (it may
    hold user data such as "[/x]" or "^[a-z]{2}$", which must not be read as markup)."""
    err_console.print(styled(("error:", "red"), " ", plain(message, one_line=True)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        level = str(args.log_level).upper()
        if level not in LOG_LEVELS:
            raise ValidationError(f"must be one of {', '.join(LOG_LEVELS)}",
                                  field="--log-level (or ATUM_LOG_LEVEL)")
        setup_logging(level, json_lines=args.log_json)
        check_text_arguments(parser, args)
        settings = Settings.from_env()
        if settings.llm_api_key:
            register_secret(settings.llm_api_key.get_secret_value())
        return asyncio.run(_run(args, settings))
    except AtumError as exc:
        _error(sanitize_error(exc, 1000))
        return 2
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        _error("cannot reach PostgreSQL: "
               + redact_secrets(text.splitlines()[0] if text else type(exc).__name__))
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        _error(f"unexpected {type(exc).__name__}: {sanitize_error(exc, 500)} "
               "(rerun with --log-level DEBUG for a traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
