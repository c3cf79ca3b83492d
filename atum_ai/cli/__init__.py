"""The ``atum-ai`` command line.

Errors a user can fix print one line and exit non-zero, without a traceback:
2 for bad input or configuration, 3 when PostgreSQL cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import psycopg

from atum_ai.cli.output import err_console
from atum_ai.cli.runner import CommandEnv
from atum_ai.config import Settings
from atum_ai.errors import AtumError
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


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from atum_ai.runtime import database_url, ensure_schema

    env = CommandEnv(settings=settings, plugin_specs=args.plugin)
    if not getattr(args, "needs_db", False):
        return await args.func(env, args)
    with database_url(settings, announce=lambda m: err_console.print(m)) as (url, embedded):
        env.url, env.embedded = url, embedded
        if getattr(args, "needs_schema", True):
            await ensure_schema(url, auto=embedded)
        return await args.func(env, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        settings = Settings.from_env()
        if settings.llm_api_key:
            register_secret(settings.llm_api_key.get_secret_value())
        return asyncio.run(_run(args, settings))
    except AtumError as exc:
        err_console.print(f"[red]error:[/red] {sanitize_error(exc, 1000)}", markup=True)
        return 2
    except psycopg.OperationalError as exc:
        err_console.print(
            "[red]error:[/red] cannot reach PostgreSQL: "
            + redact_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__),
            markup=True)
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        err_console.print(
            f"[red]error:[/red] unexpected {type(exc).__name__}: {sanitize_error(exc, 500)} "
            "(rerun with --log-level DEBUG for a traceback)", markup=True)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
