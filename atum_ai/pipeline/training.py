"""Fit the local models of one organization and store them in PostgreSQL (versioned), so
every worker on every machine loads the same model. Also the taxonomy the models and the
LLM prompts draw their labels from."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from atum_ai.clock import Clock, SystemClock
from atum_ai.errors import ValidationError
from atum_ai.local.triage_model import LabelledTicket, TriageModel

TAXONOMY_FIELDS = ("queue", "type", "priority", "intent")
MAX_LABEL_CHARS = 200


async def store_model(conn: AsyncConnection[Any], organization_id: uuid.UUID, kind: str,
                      blob: bytes, metadata: Mapping[str, Any]) -> int:
    """Insert the next version; concurrent trainers serialise on the (org, kind) advisory lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                           (f"atum-model:{organization_id}:{kind}",))
        cur = await conn.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM trained_models WHERE organization_id = %s AND kind = %s",
            (organization_id, kind))
        row = await cur.fetchone()
        version = int(row[0]) if row else 1
        await conn.execute(
            "INSERT INTO trained_models (organization_id, kind, version, metadata, model)"
            " VALUES (%s, %s, %s, %s, %s)",
            (organization_id, kind, version, Jsonb(json.loads(json.dumps(dict(metadata), default=str))), blob))
    return version


def _taxonomy_from_file(data: Any) -> dict[str, dict[str, str]]:
    if not isinstance(data, dict):
        raise ValidationError("must be a JSON object of fields", field="taxonomy")
    out: dict[str, dict[str, str]] = {}
    for field, labels in data.items():
        if field not in TAXONOMY_FIELDS:
            raise ValidationError(f"unknown field (use {', '.join(TAXONOMY_FIELDS)})", field=f"taxonomy.{field}")
        if isinstance(labels, list):
            labels = {(x["label"] if isinstance(x, dict) else x): (x.get("description", "") if isinstance(x, dict) else "")
                      for x in labels}
        if not isinstance(labels, dict):
            raise ValidationError("must map labels to descriptions", field=f"taxonomy.{field}")
        for label, desc in labels.items():
            if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS or "\x00" in label:
                raise ValidationError("labels must be 1-200 characters", field=f"taxonomy.{field}")
            if not isinstance(desc, str) or "\x00" in desc or len(desc) > 2000:
                raise ValidationError("descriptions must be text up to 2,000 characters",
                                      field=f"taxonomy.{field}.{label}")
        out[field] = dict(labels)
    return out


async def set_taxonomy(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                       taxonomy: Mapping[str, Mapping[str, str]] | Any, *, replace: bool = True) -> dict[str, int]:
    """Replace (or extend) the organization's label sets. Returns labels per field."""
    parsed = _taxonomy_from_file(taxonomy)
    async with conn.transaction():
        for field, labels in parsed.items():
            if replace:
                await conn.execute("DELETE FROM taxonomy_labels WHERE organization_id = %s AND field = %s",
                                   (organization_id, field))
            for label, desc in labels.items():
                await conn.execute(
                    "INSERT INTO taxonomy_labels (organization_id, field, label, description) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (organization_id, field, label) DO UPDATE SET description = EXCLUDED.description",
                    (organization_id, field, label, desc))
    return {f: len(v) for f, v in parsed.items()}


def load_taxonomy_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON ({exc.msg}, line {exc.lineno})", field=str(path)) from None


def read_labelled_tickets(path: Path) -> list[dict[str, Any]]:
    from atum_ai.pipeline.ingest import decode_jsonl_line, split_jsonl

    rows = []
    for n, raw in enumerate(split_jsonl(path.read_bytes()), 1):
        try:
            line = decode_jsonl_line(raw)
        except ValidationError as exc:
            raise ValidationError(f"line {n}: {exc}", field=str(path)) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ValidationError(f"line {n}: not valid JSON ({msg})", field=str(path)) from None
        if not isinstance(row, dict):
            raise ValidationError(f"line {n}: expected a JSON object", field=str(path))
        rows.append(row)
    return rows


def to_examples(rows: Iterable[Mapping[str, Any]]) -> list[LabelledTicket]:
    return [
        LabelledTicket(subject=str(r.get("subject") or ""), body=str(r.get("body") or ""),
                       labels={f: (str(r[f]) if r.get(f) not in (None, "") else None)
                               for f in TAXONOMY_FIELDS if f in r})
        for r in rows
    ]


async def train_triage(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                       rows: Sequence[Mapping[str, Any]], *, clock: Clock | None = None,
                       derive_taxonomy: bool = True) -> tuple[int, dict[str, Any]]:
    """Fit queue/type/priority (and intent) classifiers on labelled tickets; store version N+1.
    With ``derive_taxonomy`` and no taxonomy yet, the training labels become the taxonomy."""
    examples = to_examples(rows)
    if not examples:
        raise ValidationError("no labelled tickets to train on", field="tickets")
    now = (clock or SystemClock()).now()
    model = await asyncio.to_thread(TriageModel.fit, examples, None, trained_at=now)
    blob = await asyncio.to_thread(model.to_bytes)
    meta = model.metadata
    metadata = {"n_examples": meta.n_examples, "fields": list(meta.fields),
                "label_counts": meta.label_counts, "degraded_fields": meta.degraded_fields,
                "trained_at": now.isoformat(), "sklearn_version": meta.sklearn_version}
    version = await store_model(conn, organization_id, "triage", blob, metadata)
    if derive_taxonomy:
        cur = await conn.execute("SELECT count(*) FROM taxonomy_labels WHERE organization_id = %s",
                                 (organization_id,))
        row = await cur.fetchone()
        if row and row[0] == 0:
            await set_taxonomy(conn, organization_id, {
                f: {label: "" for label in counts} for f, counts in meta.label_counts.items()
                if f in TAXONOMY_FIELDS and counts})
    return version, metadata


async def train_sla_from_mirror(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                                *, clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
    """Fit the SLA model on the organization's own ticket history (the mirror)."""
    from atum_ai.local.sla_import import records_from_ticket_rows
    from atum_ai.pipeline.repository import DEFAULT_SLA_POLICY

    now = (clock or SystemClock()).now()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT ticket_id AS id, priority, queue, ticket_type AS type, language, channel, created_at,"
            " first_response_at, resolved_at, length(body) AS body_chars FROM tickets WHERE organization_id = %s",
            (organization_id,))
        rows = await cur.fetchall()
        await cur.execute("SELECT priority, first_response_minutes, resolution_minutes FROM sla_policies"
                          " WHERE organization_id = %s", (organization_id,))
        policy: dict[str, Any] = {p: {"first_response_minutes": fr, "resolution_minutes": r}
                                  for p, (fr, r) in DEFAULT_SLA_POLICY.items()}
        policy.update({r["priority"]: r for r in await cur.fetchall()})
    records = records_from_ticket_rows(rows, policy, as_of=now)
    return await _fit_store_sla(conn, organization_id, records, now)


async def train_sla_from_incident_log(conn: AsyncConnection[Any], organization_id: uuid.UUID,
                                      path: Path, *, clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
    """Fit the SLA model on a ServiceNow-style incident log (see local/sla_import.py)."""
    from atum_ai.local.sla_import import read_servicenow_incident_log

    records = await asyncio.to_thread(read_servicenow_incident_log, path)
    return await _fit_store_sla(conn, organization_id, records, (clock or SystemClock()).now())


async def _fit_store_sla(conn: AsyncConnection[Any], organization_id: uuid.UUID, records: list[Any],
                         now: Any) -> tuple[int, dict[str, Any]]:
    from atum_ai.local.sla_tuning import fit_tuned

    # The configuration is chosen on the organization's own history (rolling validation,
    # oldest first): a few hundred small logistic fits, well under a second for thousands.
    model, _ = await asyncio.to_thread(fit_tuned, records)
    metadata = {**model.metadata, "trained_at": now.isoformat(), "cold_start": model.cold_start_reason}
    version = await store_model(conn, organization_id, "sla", model.to_bytes(), metadata)
    return version, metadata
