"""``atum-ai demo``: the whole product on one machine, in one command.

migrate -> import the KB -> set the taxonomy and train the local models on part of the
tickets -> ingest the others as ``ticket.created`` events -> run an in-process worker until
the queue is drained -> print each ticket's suggestions, the metrics snapshot and totals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atum_ai.cli.output import console, err_console, info, plain, print_json, say, styled
from atum_ai.cli.runner import CommandEnv
from atum_ai.errors import ValidationError
from atum_ai.resources import fixtures_dir

JOBS_PER_TICKET = 4  # TRIAGE_TICKET -> KB_SUGGEST -> SMART_REPLY, and SLA_PREDICT
TRAIN_SHARE = 0.6
MAX_TRAIN = 3000


@dataclass(frozen=True)
class DemoInputs:
    tickets: Path  # labelled tickets: split into training and events, unless ``training`` is set
    kb: tuple[Path, ...]
    training: Path | None = None  # the project's own fixtures: a separate training set
    taxonomy: Path | None = None


def demo_inputs(tickets: str | None, kb: str | None) -> DemoInputs:
    """The files the demo reads, checked before anything starts (a wrong path is one line,
    not a database start-up followed by an error)."""
    fx = fixtures_dir()
    if (tickets is None or kb is None) and fx is None:
        raise ValidationError("the project's fixtures are not installed here; pass --tickets and --kb",
                              field="--tickets")
    t = Path(tickets) if tickets else fx / "tickets.jsonl"  # type: ignore[operator]
    kbs = (Path(kb),) if kb else tuple(  # the fixtures' KB, with its translated articles
        p for p in (fx / "kb.jsonl", fx / "kb_translations.jsonl") if p.is_file())  # type: ignore[operator]
    if not kbs:
        raise ValidationError("the project's fixtures hold no kb.jsonl; pass --kb", field="--kb")
    for p, flag in ((t, "--tickets"), *((k, "--kb") for k in kbs)):
        if not p.is_file():
            raise ValidationError(f"no such file: {p}", field=flag)
    training = taxonomy = None
    if tickets is None and fx is not None:
        training = fx / "training_tickets.jsonl" if (fx / "training_tickets.jsonl").is_file() else None
        taxonomy = fx / "taxonomy.json" if (fx / "taxonomy.json").is_file() else None
    return DemoInputs(t, kbs, training, taxonomy)


def _split(rows: list[dict[str, Any]], limit: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = list(rows)
    random.Random(20261203).shuffle(rows)  # a fixed seed: the same demo every time
    if limit is not None:
        events, train = rows[:limit], rows[limit:]
        if not train:  # small files: train on the part we do not ingest, keep a minimum
            cut = max(1, int(len(rows) * TRAIN_SHARE))
            events, train = rows[cut:][:limit], rows[:cut]
    else:
        cut = max(1, int(len(rows) * TRAIN_SHARE))
        train, events = rows[:cut], rows[cut:]
    return train[:MAX_TRAIN], events


async def _drain(env: CommandEnv, org: uuid.UUID, concurrency: int, expected: int, label: str) -> float:
    from atum_ai.runtime import build_context_builder, open_pool
    from atum_ai.worker.service import Worker, WorkerConfig, required_pool_size

    registry = env.registry()
    store = env.store(registry)
    config = WorkerConfig(concurrency=concurrency, burst=True, lease_seconds=60, grace_seconds=5,
                          poll_interval=0.5, retention=None)
    started = time.perf_counter()
    async with open_pool(env.url, max_size=required_pool_size(concurrency), min_size=2) as pool:
        builder = build_context_builder(env.settings, pool, env.clock)
        worker = Worker(pool=pool, conninfo=env.url, store=store, registry=registry,
                        context_factory=builder, config=config)
        run = asyncio.create_task(worker.run(install_signals=False))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console) as progress:
            task = progress.add_task(label, total=expected)
            while not run.done():
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT count(*) FILTER (WHERE status IN ('DONE','DEAD')), count(*)"
                        " FROM job_queue WHERE organization_id = %s", (org,))
                    row = await cur.fetchone()
                finished, total = (row or (0, 0))
                progress.update(task, completed=finished, total=max(expected, total))
                await asyncio.wait({run}, timeout=0.3)
            progress.update(task, completed=progress.tasks[0].total)
        await run
        if builder.llm is not None:
            await builder.llm.aclose()
    return time.perf_counter() - started


async def run_demo(env: CommandEnv, *, tickets: str | None, kb: str | None, limit: int | None,
                   concurrency: int, show: int, as_json: bool) -> int:
    from atum_ai.local.kb_search import import_articles
    from atum_ai.pipeline.ingest import ensure_organization, ingest_event, parse_event
    from atum_ai.pipeline.suggestions import list_suggestions
    from atum_ai.pipeline.training import (
        load_taxonomy_file,
        read_labelled_tickets,
        set_taxonomy,
        train_triage,
    )
    from atum_ai.queue.models import NewJob

    logging.getLogger("atum_ai.worker").setLevel(logging.WARNING)
    if limit is not None and limit < 1:
        raise ValidationError("must be at least 1", field="--limit")
    inputs = demo_inputs(tickets, kb)
    taxonomy_path = inputs.taxonomy
    rows = read_labelled_tickets(inputs.tickets)
    articles = [a for path in inputs.kb for a in read_labelled_tickets(path)]
    if inputs.training is not None:
        # The project's fixtures: a training set of their own, and every ticket as an event.
        train_rows = read_labelled_tickets(inputs.training)[:MAX_TRAIN]
        event_rows = rows[:limit] if limit is not None else rows
    else:
        train_rows, event_rows = _split(rows, limit)
    org = uuid.uuid4()
    mode = "an OpenAI-compatible LLM at " + str(env.settings.llm_base_url) if env.settings.llm_configured \
        else "local models (no LLM configured)"
    info(f"[bold]atum-ai demo[/bold]: organization {org}, {len(event_rows)} ticket event(s), "
         f"{len(train_rows)} training ticket(s), {len(articles)} KB article(s), {mode}")
    t0 = time.perf_counter()
    store = env.store(env.registry())
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        await ensure_organization(conn, org, "atum-ai demo")
        with err_console.status("importing the knowledge base"):
            async with conn.transaction():
                await import_articles(conn, org, articles)
        if taxonomy_path:
            await set_taxonomy(conn, org, load_taxonomy_file(taxonomy_path))
        with err_console.status(f"training local triage models on {len(train_rows)} tickets"):
            version, meta = await train_triage(conn, org, train_rows, derive_taxonomy=True)
        info(f"triage model v{version} trained on {meta['n_examples']} tickets; SLA model: cold start "
             "(no history for a new organization: policy targets + priority base rates)")
        now = env.clock.now()
        # Tickets opened over the last few hours, so SLA risk varies, but never before today's
        # midnight (UTC): the snapshot of today must count every one of them.
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        spread_minutes = min(240.0, (now - midnight).total_seconds() / 60)
        rng = random.Random(7)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console) as progress:
            task = progress.add_task("ingesting ticket events", total=len(event_rows))
            async with conn.transaction():
                for r in event_rows:
                    ev = parse_event(r)
                    ev = ev.model_copy(update={
                        "occurred_at": now - timedelta(minutes=rng.uniform(0, spread_minutes))})
                    await ingest_event(conn, org, ev, store=store)
                    progress.advance(task)
    t_pipeline = await _drain(env, org, concurrency, len(event_rows) * JOBS_PER_TICKET, "running the pipeline")
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        day = env.clock.now().date()
        await store.enqueue(conn, NewJob(organization_id=org, job_type="METRICS_SNAPSHOT",
                                         payload={"day": day.isoformat(), "timezone": "UTC"},
                                         dedupe_key=f"metrics:{day}"))
    await _drain(env, org, 1, len(event_rows) * JOBS_PER_TICKET + 1, "metrics snapshot")
    elapsed = time.perf_counter() - t0
    async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
        sugg = await list_suggestions(conn, org, limit=100_000)
        cur = await conn.execute("SELECT metrics FROM metrics_snapshots WHERE organization_id = %s", (org,))
        snap = await cur.fetchone()
        counts = await store.status_counts(conn, organization_id=org)
    by_ticket: dict[str, dict[str, Any]] = {}
    for s in sugg:
        by_ticket.setdefault(s["ticket_id"], {})[s["kind"]] = s["content"]
    jobs_total = sum(n for _, _, n in counts)
    dead = sum(n for _, st, n in counts if st == "DEAD")
    summary = {"organization_id": str(org), "tickets": len(event_rows), "jobs": jobs_total, "dead_jobs": dead,
               "pipeline_seconds": round(t_pipeline, 2), "total_seconds": round(elapsed, 2),
               "tickets_per_second": round(len(event_rows) / t_pipeline, 2) if t_pipeline else None,
               "jobs_by_type_status": [{"job_type": t, "status": s, "count": n} for t, s, n in counts],
               "metrics": snap[0] if snap else None}
    if as_json:
        print_json({**summary, "suggestions": by_ticket})
        return 0 if dead == 0 else 1
    shown = _sample_by_language(event_rows, by_ticket, show)
    more = f"; --show {len(event_rows)} for all" if len(shown) < len(event_rows) else ""
    table = Table(title=f"suggestions ({len(shown)} of {len(event_rows)} tickets, taken in turn from "
                        f"each language{more}; * = needs review, ? = weak KB match)")
    for col in ("ticket", "lang", "queue · type", "priority", "sentiment", "top KB article", "SLA risk",
                "reply draft"):
        table.add_column(col, overflow="fold")
    for tid in shown:
        k = by_ticket.get(tid, {})
        tri, kbs, sla, rep = k.get("triage", {}), k.get("kb", {}), k.get("sla", {}), k.get("reply", {})
        label = lambda d, f: (d.get(f) or {}).get("label", "-")  # noqa: E731
        top = (kbs.get("articles") or [{}])[0]
        # The draft's first line is a greeting; show it with the sentence that follows.
        lines = [ln.strip() for ln in (rep.get("draft") or "").splitlines() if ln.strip()]
        first_line = " ".join(lines[:2]) if lines else "-"
        review = "*" if tri.get("needs_review") else ""
        # Cells are data (ticket text, article titles): Text, never Rich markup.
        table.add_row(*(plain(c, one_line=True) for c in (
            tid + review, label(tri, "language"), f"{label(tri, 'queue')} · {label(tri, 'type')}",
            label(tri, "priority"),
            (tri.get("sentiment") or {}).get("label", "-"),
            f"{top.get('article_id', '-')}{'' if top.get('title_match', True) else '?'} "
            f"{top.get('title', '')[:40]}",
            f"{sla.get('risk_band', '-')} {sla.get('breach_probability', 0):.0%}" if sla else "-",
            first_line[:70])))
    console.print(table)
    if snap:
        m = snap[0]
        say(styled((f"metrics snapshot {m['day']}", "bold"),
                   f": tickets in {m['tickets_in']}, resolved {m['tickets_resolved']}, DEAD jobs "
                   f"{m['dead_jobs']}, suggestions "
                   + ", ".join(f"{k} {v}" for k, v in m["suggestions_created"].items())
                   + ", latency p50 "
                   + ", ".join(f"{k} {v['p50_ms']} ms" for k, v in m["job_latency"].items())))
    info(f"[bold]done[/bold]: {len(event_rows)} tickets, {jobs_total} jobs ({dead} DEAD) in "
         f"{t_pipeline:.1f} s of pipeline ({summary['tickets_per_second']} tickets/s), {elapsed:.1f} s in all")
    say(f"next: {_program()} suggestions --org {org} --ticket {event_rows[0]['id'] if event_rows else 'ID'}")
    return 0 if dead == 0 else 1


def _sample_by_language(event_rows: list[dict[str, Any]], by_ticket: dict[str, dict[str, Any]],
                        show: int) -> list[str]:
    """Up to ``show`` ticket ids, one language after another in turn (in ticket order within
    each), so that a short table still shows every language the tickets came in."""
    queues: dict[str, list[str]] = {}
    for r in event_rows:
        tid = str(r["id"])
        lang = ((by_ticket.get(tid, {}).get("triage") or {}).get("language") or {}).get("label") or "?"
        queues.setdefault(lang, []).append(tid)
    picked: list[str] = []
    while len(picked) < show and any(queues.values()):
        for ids in queues.values():
            if ids and len(picked) < show:
                picked.append(ids.pop(0))
    order = {str(r["id"]): i for i, r in enumerate(event_rows)}
    return sorted(picked, key=order.__getitem__)


def _program() -> str:
    """How to call the CLI again: plain ``atum-ai`` when it is on PATH, else the path it was
    started by (``.venv/bin/atum-ai`` right after the README's install, no venv activated)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if shutil.which("atum-ai") or "/" not in argv0:
        return "atum-ai"
    rel = os.path.relpath(argv0)
    return argv0 if rel.startswith("..") else rel
