"""Queue commands: migrate, enqueue, status, jobs, retry, cancel, purge."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg

from atum_ai.cli.output import print_json, print_table, say
from atum_ai.cli.runner import Command, CommandEnv
from atum_ai.errors import DuplicateJobError, JobNotFoundError, ValidationError
from atum_ai.queue.migrate import migrate
from atum_ai.queue.models import NewJob
from atum_ai.queue.queries import QUERIES

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_DAYS = 36_500  # 100 years: beyond that a "duration" is a typo
MAX_LIST_LIMIT = 100_000
MAX_PURGE_BATCH = 100_000
# A payload file or stdin may be pretty-printed; the store checks the real payload size.
MIN_PAYLOAD_READ_LIMIT = 16 * 1024 * 1024


# ------------------------------------------------------------------ argument types and checks
def path_arg(text: str) -> str:
    """argparse ``type`` of arguments that name a file (exempt from the UTF-8 check: an
    undecodable byte in a file name is valid on POSIX)."""
    return text


def payload_arg(text: str) -> str:
    """argparse ``type`` of ``--payload``: JSON text, ``@FILE`` or ``-`` (stdin)."""
    return text


def is_path_argument(action: argparse.Action, value: str) -> bool:
    return action.type is path_arg or (action.type is payload_arg and value.startswith("@"))


def check_int(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValidationError(f"must be between {low} and {high}, not {value}", field=field)
    return value


def check_seconds(value: float, field: str, low: float, high: float) -> float:
    """A number of seconds in [low, high]; inf and nan are refused (argparse's float() takes them)."""
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(f"must be a number of seconds between {low:g} and {high:g}, not {value!r}",
                              field=field)
    return value


def parse_duration(text: str, field: str = "--older-than") -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValidationError("use a number and a unit, e.g. 30m, 12h, 7d, 2w", field=field)
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if not seconds <= MAX_DURATION_DAYS * 86400:  # also inf, from a number with 400 digits
        raise ValidationError(f"must be at most {MAX_DURATION_DAYS}d (100 years)", field=field)
    return timedelta(seconds=seconds)


def read_json_argument(text: str, field: str, *, limit: int) -> Any:
    """The JSON value of an argument given inline, as ``@FILE`` or as ``-`` (standard input):
    one argv string cannot exceed 128 KiB on Linux, a file or a pipe can."""
    source = None
    data: bytes | None = None
    if text == "-":
        source = "standard input"
        if sys.stdin is None:
            raise ValidationError("'-' reads standard input, but there is none", field=field)
        data = sys.stdin.buffer.read(limit + 1)
    elif text.startswith("@"):
        path = text[1:]
        source = path
        if not path:
            raise ValidationError("give a file name after @, e.g. @payload.json", field=field)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise ValidationError(f"no such file: {path}", field=field) from None
        except IsADirectoryError:
            raise ValidationError(f"is a directory, not a file: {path}", field=field) from None
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror or exc}", field=field) from None
    if data is not None:
        if len(data) > limit:
            raise ValidationError(f"{source} is larger than {limit:,} bytes", field=field)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{source} is not valid UTF-8 (byte {exc.start})", field=field) from None
        if not text.strip():
            raise ValidationError(f"{source} is empty", field=field)
    where = f" in {source}" if source else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON{where} ({exc.msg} at line {exc.lineno} column {exc.colno})",
                              field=field) from None
    except RecursionError:
        raise ValidationError(f"JSON{where} is nested too deeply", field=field) from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise ValidationError(f"not usable JSON{where} ({exc})", field=field) from None


def payload_read_limit(env: CommandEnv) -> int:
    return max(MIN_PAYLOAD_READ_LIMIT, 16 * env.settings.max_payload_bytes)


def parse_uuid(text: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except (ValueError, AttributeError):
        raise ValidationError(f"not a UUID: {text!r}", field=field) from None


def parse_iso(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"not an ISO 8601 time: {text!r}", field=field) from None
    if value.tzinfo is None:
        raise ValidationError("naive time; add a timezone, e.g. 2026-01-01T09:00:00Z", field=field)
    return value


async def cmd_migrate(env: CommandEnv, args: argparse.Namespace) -> int:
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        applied = await migrate(conn)
    if args.json:
        print_json({"applied": applied})
    else:
        say(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
            else "schema is up to date")
    return 0


async def cmd_enqueue(env: CommandEnv, args: argparse.Namespace) -> int:
    payload = read_json_argument(args.payload, "--payload", limit=payload_read_limit(env))
    registry = env.registry()
    if args.type not in registry and not args.allow_unknown:
        raise ValidationError(
            f"unknown job type {args.type!r} (known: {', '.join(registry.job_types)}; "
            "--allow-unknown to enqueue for a worker with other plugins)", field="--type")
    job = NewJob(
        organization_id=parse_uuid(args.org, "--org"),
        job_type=args.type,
        payload=payload,
        run_after=parse_iso(args.run_after, "--run-after") if args.run_after else None,
        priority=args.priority,
        dedupe_key=args.dedupe_key,
        max_retries=args.max_retries,
    )
    store = env.store(registry)
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        res = await store.enqueue(conn, job)
    if args.json:
        print_json({"id": res.id, "created": res.created})
    else:
        print(res.id)
        if not res.created:
            say("a job with this dedupe key is still unfinished; returned its id")
    return 0


async def cmd_status(env: CommandEnv, args: argparse.Namespace) -> int:
    org = parse_uuid(args.org, "--org") if args.org else None
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        counts = await env.store().status_counts(conn, organization_id=org)
    if args.json:
        print_json([{"job_type": t, "status": s, "count": n} for t, s, n in counts])
    else:
        print_table("jobs by type and status", ["job_type", "status", "count"], counts)
    return 0


async def cmd_jobs_show(env: CommandEnv, args: argparse.Namespace) -> int:
    job_id = parse_uuid(args.id, "ID")
    org = parse_uuid(args.org, "--org") if args.org else None
    store = env.store()
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        job = await store.get(conn, job_id, organization_id=org)
        if job is None:
            raise JobNotFoundError(f"no job {job_id}")
        events = await store.events(conn, job_id)
    from dataclasses import asdict

    if args.json:
        print_json({"job": asdict(job), "events": [asdict(e) for e in events]})
        return 0
    d = asdict(job)
    print_table(f"job {job_id}", ["field", "value"],
                [(k, json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, dict | list) else v)
                 for k, v in d.items()])
    print_table("events", ["at", "event", "from", "to", "attempt", "worker", "message"],
                [(e.created_at, e.event_type, e.from_status, e.to_status, e.attempt,
                  str(e.worker_id)[:8] if e.worker_id else None, (e.message or "")[:80])
                 for e in events])
    return 0


async def cmd_jobs_list(env: CommandEnv, args: argparse.Namespace) -> int:
    org = parse_uuid(args.org, "--org") if args.org else None
    check_int(args.limit, "--limit", 1, MAX_LIST_LIMIT)
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        rows = await env.store().list_jobs(conn, organization_id=org, status=args.status,
                                           job_type=args.type, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        print_table("jobs", ["id", "type", "status", "attempts", "updated", "last_error"],
                    [(r["id"], r["job_type"], r["status"], f"{attempts(r)}/{r['max_retries']}",
                      r["updated_at"], (r["last_error"] or "")[:60]) for r in rows])
    return 0


def attempts(row: dict[str, Any]) -> int:
    """Attempts made so far: retry_count counts the failed ones; a DONE or RUNNING job adds
    the one that succeeded or is in progress."""
    return int(row["retry_count"]) + (1 if row["status"] in ("DONE", "RUNNING") else 0)


async def cmd_retry(env: CommandEnv, args: argparse.Namespace) -> int:
    job_id = parse_uuid(args.id, "ID")
    org = parse_uuid(args.org, "--org") if args.org else None
    store = env.store()
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        try:
            ok = await store.requeue(conn, job_id, organization_id=org)
        except DuplicateJobError:
            # ux_job_queue_dedupe: an unfinished job of the same type and organization took
            # the dedupe key while this one was DEAD.
            raise ValidationError(await _dedupe_conflict(conn, store, job_id, org), field="ID") from None
    if not ok:
        raise ValidationError("only DEAD jobs can be retried", field="ID")
    _report(args, {"id": job_id, "status": "PENDING"}, f"requeued {job_id}")
    return 0


async def _dedupe_conflict(conn: psycopg.AsyncConnection[Any], store: Any, job_id: uuid.UUID,
                           org: uuid.UUID | None) -> str:
    job = await store.get(conn, job_id, organization_id=org)
    if job is None or job.dedupe_key is None:
        return "cannot requeue: another unfinished job holds its dedupe key"
    cur = await conn.execute(QUERIES["job_find_live_duplicate"], {
        "organization_id": job.organization_id, "job_type": job.job_type, "dedupe_key": job.dedupe_key})
    row = await cur.fetchone()
    holder = f" ({row[0]})" if row else ""
    return (f"cannot requeue: another unfinished job{holder} holds dedupe key {job.dedupe_key!r}; "
            "cancel it or wait until it finishes")


async def cmd_cancel(env: CommandEnv, args: argparse.Namespace) -> int:
    job_id = parse_uuid(args.id, "ID")
    org = parse_uuid(args.org, "--org") if args.org else None
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        out = await env.store().cancel(conn, job_id, organization_id=org)
    if out.from_status == out.to_status and not out.stopping:
        msg = f"job {job_id} already finished ({out.to_status}); nothing to cancel"
    elif out.stopping:
        msg = f"job {job_id} is running; its worker stops it within one heartbeat"
    else:
        msg = f"cancelled {job_id} ({out.from_status} -> DEAD)"
    _report(args, {"id": job_id, "from": out.from_status, "to": out.to_status,
                   "stopping": out.stopping}, msg)
    return 0


async def cmd_purge(env: CommandEnv, args: argparse.Namespace) -> int:
    older = parse_duration(args.older_than)
    check_int(args.batch, "--batch", 1, MAX_PURGE_BATCH)
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        n = await env.store().purge(conn, older, batch=args.batch)
    _report(args, {"purged": n}, f"purged {n} finished job(s) older than {args.older_than}")
    return 0


def _report(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        print_json(data)
    else:
        say(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, func: Command, help_: str, *, schema: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func, needs_db=True, needs_schema=schema)
        return p

    add("migrate", cmd_migrate, "apply pending database migrations", schema=False)

    p = add("enqueue", cmd_enqueue, "enqueue one job (prints its id)")
    p.add_argument("--org", required=True, help="organization UUID")
    p.add_argument("--type", required=True, help="job type, e.g. TRIAGE_TICKET")
    p.add_argument("--payload", required=True, type=payload_arg, metavar="JSON|@FILE|-",
                   help="the payload, a JSON object: inline, @FILE to read it from a file, or - to "
                        "read it from standard input (for payloads over the ~128 KiB argument limit)")
    p.add_argument("--run-after", help="ISO 8601 time with timezone")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    p.add_argument("--dedupe-key", help="no second unfinished job with this key")
    p.add_argument("--max-retries", type=int, help="attempts allowed (default 5)")
    p.add_argument("--allow-unknown", action="store_true", help="allow a type no handler knows here")

    p = add("status", cmd_status, "job counts by type and status")
    p.add_argument("--org", help="only this organization")

    jobs = sub.add_parser("jobs", help="inspect jobs")
    jsub = jobs.add_subparsers(dest="jobs_cmd", required=True)
    p = jsub.add_parser("show", help="one job and its events")
    p.add_argument("id")
    p.add_argument("--org")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs_show, needs_db=True, needs_schema=True)
    p = jsub.add_parser("list", help="recent jobs")
    p.add_argument("--org")
    p.add_argument("--status", choices=["PENDING", "RUNNING", "DONE", "FAILED", "DEAD"])
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=50, help=f"at most this many (1-{MAX_LIST_LIMIT}, default 50)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs_list, needs_db=True, needs_schema=True)

    p = add("retry", cmd_retry, "requeue a DEAD job with fresh attempts")
    p.add_argument("id")
    p.add_argument("--org")
    p = add("cancel", cmd_cancel, "cancel a job (a running one stops within one heartbeat)")
    p.add_argument("id")
    p.add_argument("--org")
    p = add("purge", cmd_purge, "delete DONE/DEAD jobs older than a duration")
    p.add_argument("--older-than", required=True,
                   help=f"e.g. 7d, 12h (units s, m, h, d, w; at most {MAX_DURATION_DAYS}d)")
    p.add_argument("--batch", type=int, default=1000,
                   help=f"rows deleted per transaction (1-{MAX_PURGE_BATCH}, default 1000)")
