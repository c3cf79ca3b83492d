"""Pipeline commands: ingest, suggestions, watch, feedback, kb import, taxonomy, train,
handlers, prompt render, demo, eval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import psycopg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from atum_ai.cli.output import clean, console, plain, print_json, print_table, say, styled
from atum_ai.cli.queue_cmds import (
    check_int,
    parse_uuid,
    path_arg,
    payload_arg,
    payload_read_limit,
    read_json_argument,
)
from atum_ai.cli.runner import CommandEnv
from atum_ai.errors import AtumError, ValidationError

MAX_LIMIT = 100_000


def _progress(*, disable: bool = False) -> Progress:
    # Disabled under --json: the bar is drawn on stdout, where it would corrupt the document.
    # markup=False: the description holds a file name, which may contain "[".
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False, disable=disable)


def _file(path: str, field: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no such file: {path}", field=field)
    return p


def _read_with(reader: Any, path: Path, field: str) -> Any:
    """``reader(path)`` (the training module's file readers), with a file that is not UTF-8
    or cannot be read reported as one line naming the argument."""
    try:
        return reader(path)
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                              f"{exc.start})", field=field) from None
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}", field=field) from None


def _read_bytes(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}", field=field) from None


# ---------------------------------------------------------------------------------- ingest
async def cmd_ingest(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.ingest import decode_jsonl_line, ingest_event, parse_event, split_jsonl

    org = parse_uuid(args.org, "--org")
    path = _file(args.file, "FILE")
    # Bytes, split on "\n" only and decoded line by line: a line that is not UTF-8 is one
    # bad line (reported with its number), and U+2028 inside a JSON string is no line break.
    lines = split_jsonl(_read_bytes(path, "FILE"))
    store = env.store(env.registry())
    stats = {"events": 0, "enqueued": 0, "duplicates": 0, "skipped": 0}
    errors: list[str] = []
    abort = args.on_error == "abort"

    def bad_line(n: int, message: str) -> None:
        msg = f"line {n}: {message}"
        if abort:
            raise ValidationError(msg + " (nothing was written)", field=path.name)
        errors.append(msg)
        stats["skipped"] += 1

    async with await psycopg.AsyncConnection.connect(env.url) as conn:
        # --on-error abort: one transaction for the file, so a bad line leaves nothing written.
        tx = conn.transaction() if abort else None
        if tx:
            await tx.__aenter__()
        try:
            with _progress(disable=args.json) as progress:
                task = progress.add_task(clean(f"ingest {path.name}", one_line=True), total=len(lines))
                for n, raw in enumerate(lines, 1):
                    progress.advance(task)
                    if not raw.strip():
                        continue
                    try:
                        event = parse_event(json.loads(decode_jsonl_line(raw)))
                    except json.JSONDecodeError as exc:
                        bad_line(n, exc.msg)
                        continue
                    except RecursionError:
                        bad_line(n, "JSON nested too deeply")
                        continue
                    except ValueError as exc:  # e.g. an integer of more than 4300 digits
                        bad_line(n, str(exc))
                        continue
                    except AtumError as exc:
                        bad_line(n, str(exc))
                        continue
                    try:
                        res = await ingest_event(conn, org, event, store=store)
                    except (AtumError, psycopg.DataError, psycopg.IntegrityError) as exc:
                        # Refused by the queue or the database: the event's own transaction
                        # (a savepoint under --on-error abort) is rolled back; report the line.
                        detail = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
                        bad_line(n, detail)
                        continue
                    if tx is None:
                        await conn.commit()
                    stats["events"] += 1
                    stats["duplicates"] += res.duplicate
                    stats["enqueued"] += res.job_id is not None
        except BaseException as exc:
            if tx:
                await tx.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if tx:
            await tx.__aexit__(None, None, None)
    for e in errors[:20]:
        say(styled(("skipped", "yellow"), " ", plain(e, one_line=True)))
    if len(errors) > 20:
        say(f"... and {len(errors) - 20} more")
    if args.json:
        print_json({**stats, "errors": errors})
    else:
        say(f"{stats['events']} event(s), {stats['enqueued']} triage job(s) enqueued, "
            f"{stats['duplicates']} already seen, {stats['skipped']} skipped")
    return 0 if not errors else 1


# ----------------------------------------------------------------------------- suggestions
async def cmd_suggestions(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.suggestions import list_suggestions

    org = parse_uuid(args.org, "--org")
    check_int(args.limit, "--limit", 1, MAX_LIMIT)
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        rows = await list_suggestions(conn, org, args.ticket, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    print_table(None, ["ticket", "kind", "suggestion", "confidence", "feedback", "id"],
                [(r["ticket_id"], r["kind"], describe(r["kind"], r["content"]),
                  f"{r['confidence']:.2f}" if r["confidence"] is not None else None, r["feedback"], r["id"])
                 for r in rows])
    return 0


def describe(kind: str, c: dict[str, Any]) -> str:
    """A one-line human summary of a suggestion's content."""
    if kind == "triage":
        def lab(k: str) -> str:
            return (c.get(k) or {}).get("label") or "?"
        s = c.get("sentiment") or {}
        return (f"{lab('queue')} / {lab('type')} / {lab('priority')} · {lab('language')} · "
                f"{s.get('label', '?')}{' · REVIEW' if c.get('needs_review') else ''}")
    if kind == "kb":
        arts = c.get("articles") or []
        return ", ".join(f"{a['article_id']} ({a['score']:.1f})" for a in arts[:3]) or "(no article)"
    if kind == "sla":
        return (f"{c.get('risk_band')} {c.get('breach_probability', 0):.0%} · first response "
                f"~{c.get('predicted_first_response_minutes')} min · {c.get('source')}")
    if kind == "reply":
        # The greeting alone says nothing: show the draft's opening, joined into one line.
        text = " ".join((c.get("draft") or "").split())
        cited = ", ".join(c.get("cited_article_ids") or []) or "no article"
        return f"[{c.get('language')}] {text[:110]}{'…' if len(text) > 110 else ''} (cites {cited})"
    return json.dumps(c)[:80]


async def cmd_watch(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.suggestions import watch_suggestions

    org = parse_uuid(args.org, "--org")
    say(f"watching suggestions of {org} (Ctrl-C to stop)")
    async for row in watch_suggestions(env.url, org):
        if args.json:
            print(json.dumps({k: (str(v) if not isinstance(v, dict | list | float | int | type(None)) else v)
                              for k, v in row.items()}, ensure_ascii=False), flush=True)
        else:
            console.print(styled(f"{row['updated_at']:%H:%M:%S} {row['ticket_id']} {row['kind']:<6} "
                                 f"{describe(row['kind'], row['content'])}  ", (str(row["id"]), "dim")))
    return 0


async def cmd_feedback(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.suggestions import record_feedback

    org = parse_uuid(args.org, "--org")
    sid = parse_uuid(args.suggestion_id, "SUGGESTION_ID")
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        row = await record_feedback(conn, org, sid, args.verdict, args.text)
    if args.json:
        print_json({"id": row["id"], "feedback": args.verdict})
    else:
        say(f"recorded {args.verdict} for {row['kind']} suggestion on ticket {row['ticket_id']}")
    return 0


# ------------------------------------------------------------------------------------- kb
async def cmd_kb_import(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.local.kb_search import import_articles
    from atum_ai.pipeline.ingest import ensure_organization
    from atum_ai.pipeline.training import read_labelled_tickets

    org = parse_uuid(args.org, "--org")
    rows = _read_with(read_labelled_tickets, _file(args.file, "FILE"), "FILE")
    async with await psycopg.AsyncConnection.connect(env.url) as conn:
        await ensure_organization(conn, org)
        n = await import_articles(conn, org, rows)
        await conn.commit()
    _say(args, {"articles": len(rows), "written": n}, f"imported {len(rows)} article(s) ({n} new or changed)")
    return 0


async def cmd_kb_search(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.local.kb_search import search_articles

    org = parse_uuid(args.org, "--org")
    check_int(args.k, "-k", 1, 1000)
    language = args.language
    if language is None:  # the query's own language, as KB_SUGGEST passes the ticket's
        from atum_ai.local.langid import detect_language

        detected, confidence = detect_language(args.query)
        language = detected if confidence >= 0.8 and detected != "und" else None
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        hits = await search_articles(conn, org, args.query, k=args.k, query_language=language)
    if args.json:
        print_json([h.model_dump() for h in hits])
    else:
        print_table(None, ["article", "title", "score", "snippet"],
                    [(h.article_id, h.title[:50], f"{h.score:.2f}", h.snippet[:80]) for h in hits])
    return 0


# ------------------------------------------------------------------------ taxonomy, train
async def cmd_taxonomy_set(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.ingest import ensure_organization
    from atum_ai.pipeline.training import load_taxonomy_file, set_taxonomy

    org = parse_uuid(args.org, "--org")
    data = _read_with(load_taxonomy_file, _file(args.file, "FILE"), "FILE")
    async with await psycopg.AsyncConnection.connect(env.url) as conn:
        await ensure_organization(conn, org)
        counts = await set_taxonomy(conn, org, data)
        await conn.commit()
    _say(args, counts, "taxonomy set: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


async def cmd_taxonomy_show(env: CommandEnv, args: argparse.Namespace) -> int:
    org = parse_uuid(args.org, "--org")
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        cur = await conn.execute("SELECT field, label, description FROM taxonomy_labels"
                                 " WHERE organization_id = %s ORDER BY 1, 2", (org,))
        rows = await cur.fetchall()
    if args.json:
        out: dict[str, dict[str, str]] = {}
        for f, label, d in rows:
            out.setdefault(f, {})[label] = d
        print_json(out)
    else:
        print_table("taxonomy", ["field", "label", "description"], rows)
    return 0


async def cmd_train(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.ingest import ensure_organization
    from atum_ai.pipeline.training import (
        read_labelled_tickets,
        train_sla_from_incident_log,
        train_sla_from_mirror,
        train_triage,
    )

    org = parse_uuid(args.org, "--org")
    out: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        await ensure_organization(conn, org)
        if args.tickets:
            rows = _read_with(read_labelled_tickets, _file(args.tickets, "--tickets"), "--tickets")
            with console.status(f"training triage models on {len(rows)} tickets"):
                version, meta = await train_triage(conn, org, rows)
            out["triage"] = {"version": version, **meta}
            say(f"triage model v{version}: {meta['n_examples']} tickets, fields {', '.join(meta['fields'])}")
        if args.sla_incidents:
            version, meta = await train_sla_from_incident_log(conn, org, _file(args.sla_incidents, "--sla-incidents"))
            out["sla"] = {"version": version, **meta}
            say(f"SLA model v{version} from incident log ({meta.get('n_records')} incidents)")
        elif args.sla_from_history:
            version, meta = await train_sla_from_mirror(conn, org)
            out["sla"] = {"version": version, **meta}
            say(f"SLA model v{version} from ticket history ({meta.get('n_records')} tickets)"
                 + (f"; cold start: {meta['cold_start']}" if meta.get("cold_start") else ""))
    if not out:
        raise ValidationError("give --tickets, --sla-incidents or --sla-from-history", field="train")
    if args.json:
        print_json(out)
    return 0


# ------------------------------------------------------------------- handlers, prompts
async def cmd_handlers(env: CommandEnv, args: argparse.Namespace) -> int:
    reg = env.registry()
    items = [{"job_type": h.job_type, "origin": reg.origin(h.job_type), "description": h.description,
              "payload_schema": h.Payload.model_json_schema(),
              "result_schema": h.Result.model_json_schema()} for h in reg]
    if args.json:
        print_json(items)
    else:
        print_table("registered job types", ["job_type", "origin", "payload fields", "description"],
                    [(i["job_type"], i["origin"], ", ".join(i["payload_schema"].get("properties", {})),
                      i["description"]) for i in items])
    return 0


async def cmd_prompt_render(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.ai.prompts import PromptRenderer

    variables = read_json_argument(args.payload, "--payload", limit=payload_read_limit(env))
    if not isinstance(variables, dict):
        raise ValidationError("must be a JSON object of template variables", field="--payload")
    rendered = PromptRenderer().render(args.type, **variables)
    if args.json:
        print_json({"name": rendered.name, "sha256": rendered.sha256, "system": rendered.system,
                    "user": rendered.user})
    else:
        console.print(styled((f"# {rendered.name} (sha256 {rendered.sha256[:12]})", "bold"), "\n",
                             ("## system", "bold")))
        print(rendered.system)
        console.print("[bold]## user[/bold]", markup=True)
        print(rendered.user)
    return 0


# ---------------------------------------------------------------------------------- demo
def _demo_precheck(args: argparse.Namespace) -> None:
    from atum_ai.pipeline.demo import demo_inputs

    demo_inputs(args.tickets, args.kb)


async def cmd_demo(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.pipeline.demo import run_demo

    if args.limit is not None:
        check_int(args.limit, "--limit", 1, 10_000_000)
    check_int(args.concurrency, "--concurrency", 1, 10_000)
    check_int(args.show, "--show", 0, 10_000_000)
    return await run_demo(env, tickets=args.tickets, kb=args.kb, limit=args.limit,
                          concurrency=args.concurrency, show=args.show, as_json=args.json)


async def cmd_eval(env: CommandEnv, args: argparse.Namespace) -> int:
    from atum_ai.cli import check_database_url
    from atum_ai.evaluation import run_eval

    if args.kb_articles or args.kb_queries:  # the KB evaluation runs on PostgreSQL
        check_database_url(env.settings.database_url)
    return await run_eval(env, args)


def _say(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print_json(data)
    else:
        say(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(parent: Any, name: str, func: Any, help_: str, *, db: bool = True) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func, needs_db=db, needs_schema=db)
        return p

    p = add(sub, "ingest", cmd_ingest, "ingest ticket events (JSONL) and enqueue triage")
    p.add_argument("file", metavar="FILE", type=path_arg)
    p.add_argument("--org", required=True)
    p.add_argument("--on-error", choices=["skip", "abort"], default="skip",
                   help="skip bad lines (reported) or abort with nothing written (default skip)")

    p = add(sub, "suggestions", cmd_suggestions, "list suggestions for an organization or ticket")
    p.add_argument("--org", required=True)
    p.add_argument("--ticket")
    p.add_argument("--limit", type=int, default=200)

    p = add(sub, "watch", cmd_watch, "print suggestions live as they arrive (LISTEN)")
    p.add_argument("--org", required=True)

    p = add(sub, "feedback", cmd_feedback, "record agent feedback on a suggestion")
    p.add_argument("suggestion_id", metavar="SUGGESTION_ID")
    p.add_argument("verdict", choices=["accepted", "edited", "rejected"])
    p.add_argument("--org", required=True)
    p.add_argument("--text", help="the edited text (for 'edited')")

    kb = sub.add_parser("kb", help="knowledge base")
    kbs = kb.add_subparsers(dest="kb_cmd", required=True)
    p = add(kbs, "import", cmd_kb_import, "import KB articles (JSONL: id, title, body, language, url)")
    p.add_argument("file", metavar="FILE", type=path_arg)
    p.add_argument("--org", required=True)
    p = add(kbs, "search", cmd_kb_search, "search the organization's KB")
    p.add_argument("query")
    p.add_argument("--org", required=True)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--language", help="ISO 639-1 code of the query's language (default: detected); "
                   "its stopwords are ignored and articles in it rank first")

    tx = sub.add_parser("taxonomy", help="the organization's labels")
    txs = tx.add_subparsers(dest="taxonomy_cmd", required=True)
    p = add(txs, "set", cmd_taxonomy_set, "set labels from a JSON file {field: {label: description}}")
    p.add_argument("file", metavar="FILE", type=path_arg)
    p.add_argument("--org", required=True)
    p = add(txs, "show", cmd_taxonomy_show, "show the labels")
    p.add_argument("--org", required=True)

    p = add(sub, "train", cmd_train, "fit the organization's local models and store them")
    p.add_argument("--org", required=True)
    p.add_argument("--tickets", type=path_arg,
                   help="labelled tickets JSONL (subject, body, queue, type, priority)")
    p.add_argument("--sla-incidents", type=path_arg, help="ServiceNow-style incident log CSV for the SLA model")
    p.add_argument("--sla-from-history", action="store_true", help="fit the SLA model on the ticket mirror")

    add(sub, "handlers", cmd_handlers, "list registered job types with their payload schema", db=False)

    pr = sub.add_parser("prompt", help="prompt templates")
    prs = pr.add_subparsers(dest="prompt_cmd", required=True)
    p = add(prs, "render", cmd_prompt_render, "print a rendered prompt", db=False)
    p.add_argument("type", metavar="TYPE")
    p.add_argument("--payload", required=True, type=payload_arg, metavar="JSON|@FILE|-",
                   help="JSON object of template variables: inline, @FILE or - (standard input)")

    p = add(sub, "demo", cmd_demo, "end to end: KB, training, events in, suggestions out")
    p.add_argument("--tickets", type=path_arg, help="labelled tickets JSONL (default: the project's fixtures)")
    p.add_argument("--kb", type=path_arg, help="KB articles JSONL (default: the project's fixtures)")
    p.add_argument("--limit", type=int, help="ingest this many of the (shuffled) tickets as events; "
                   "the models train on the rest, at most 3,000")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--show", type=int, default=20, help="tickets to print (default 20)")
    p.set_defaults(precheck=_demo_precheck)

    p = add(sub, "eval", cmd_eval, "evaluate the local models on held-out data", db=False)
    p.add_argument("--train", type=path_arg, help="labelled tickets to train on")
    p.add_argument("--test", type=path_arg, help="labelled tickets to test on (never trained on)")
    p.add_argument("--kb-articles", type=path_arg)
    p.add_argument("--kb-queries", type=path_arg)
    p.add_argument("--sla-train", type=path_arg,
                   help="incident log CSV (train); with no --sla-test: time-ordered 70/30 split")
    p.add_argument("--sla-test", type=path_arg)
