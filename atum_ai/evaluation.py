"""``atum-ai eval``: measure the local models on held-out data, beside naive baselines.

What is measured, and against what:

* **triage** (``--train`` / ``--test``, labelled tickets JSONL): accuracy and macro-F1 per field
  (queue, type, priority) of :class:`~atum_ai.local.triage_model.TriageModel` trained with the
  production defaults, beside the majority class of the training data; and prediction time
  (ms/ticket, tickets/s) batched and one ticket at a time, on one BLAS thread. With only
  ``--train``: stratified 5-fold cross-validation (by queue), metrics over the pooled
  out-of-fold predictions.
* **language**: :func:`~atum_ai.local.langid.detect_language` on subject + body against the
  ``language`` labels of the evaluated tickets (it is not trained, so no split is needed),
  with gold x predicted confusion counts.
* **kb** (``--kb-articles`` / ``--kb-queries``): articles imported into a scratch database
  (created on the configured server and dropped at the end; a scratch organization in the
  configured database when creating databases is not allowed), every query searched with
  :func:`~atum_ai.local.kb_search.search_articles`; recall@1/3/5 and MRR (top 5) beside an
  in-process textbook BM25 (:class:`PyBm25`).
* **sla** (``--sla-train`` [``--sla-test``], ServiceNow incident log CSV): AUROC and Brier of
  :class:`~atum_ai.local.sla_model.SlaModel` (configuration chosen as ``atum-ai train`` chooses
  it: rolling validation inside the training part) beside the per-priority breach
  rate of the training data and the constant base rate; resolution-time MAE beside the
  per-priority median. With only ``--sla-train``: time-ordered split, earliest 70 % train.

Never evaluates on what it trained on: identical train/test files and ticket (incident) ids
present in both are refused with a :class:`~atum_ai.errors.ValidationError` naming the flag.
Exact duplicate texts across the split are counted and reported as a note (the public ticket
set has some).

The metric helpers (:func:`auroc`, :func:`brier`, :func:`retrieval_metrics`, :class:`PyBm25`,
:func:`priority_rate_baseline`, :func:`time_split`) are shared with ``bench/eval_*.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import random
import re
import statistics
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atum_ai.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from atum_ai.local.sla_model import SlaRecord
    from atum_ai.local.triage_model import TriageModel

TRIAGE_FIELDS = ("queue", "type", "priority")
CV_FOLDS = 5
CV_SEED = 13
SLA_TRAIN_FRACTION = 0.7
KB_KS = (1, 3, 5)
KB_DEPTH = 5  # hits fetched per query; MRR counts ranks 1..KB_DEPTH
SINGLE_TICKET_SAMPLE = 200  # tickets timed one at a time (the worker's case)
MIN_TRIAGE_ROWS = 10


# =========================================================================== metrics


def auroc(y: Sequence[bool], p: Sequence[float]) -> float:
    """Mann-Whitney AUROC with tie handling (average ranks); NaN with a single class."""
    pairs = sorted(zip(p, y, strict=True))
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for _, label in pairs if label)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = sum(r for r, (_, label) in zip(ranks, pairs, strict=True) if label)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def brier(y: Sequence[bool], p: Sequence[float]) -> float:
    return sum((pi - float(yi)) ** 2 for yi, pi in zip(y, p, strict=True)) / len(y)


def auroc_ci(
    y: Sequence[bool], p: Sequence[float], *, n: int = 1000, seed: int = 7
) -> tuple[float, float]:
    """95 % bootstrap interval of the AUROC (``n`` resamples, fixed seed)."""
    rng = random.Random(seed)
    idx = range(len(y))
    values = []
    for _ in range(n):
        sample = [rng.choice(idx) for _ in idx]
        value = auroc([y[i] for i in sample], [p[i] for i in sample])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    values.sort()
    return values[int(0.025 * len(values))], values[max(int(0.975 * len(values)) - 1, 0)]


def mae(actual: Sequence[float], predicted: Sequence[float]) -> float:
    return sum(abs(a - b) for a, b in zip(actual, predicted, strict=True)) / len(actual)


def retrieval_metrics(
    ranked: Sequence[Sequence[str]], gold: Sequence[str], ks: Sequence[int] = KB_KS
) -> dict[str, float]:
    """``R@k`` for each k and ``MRR`` (0 when gold is not among the ranked ids)."""
    n = len(gold)
    out = {f"R@{k}": sum(g in r[:k] for r, g in zip(ranked, gold, strict=True)) / n for k in ks}
    out["MRR"] = (
        sum(1 / (list(r).index(g) + 1) if g in r else 0.0 for r, g in zip(ranked, gold, strict=True))
        / n
    )
    return out


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


# =========================================================================== baselines

_TOKEN = re.compile(r"\w+")
_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "how",
    "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "so",
    "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "what", "when",
    "where", "which", "who", "why", "will", "with", "you", "your", "can", "do", "does", "did",
))  # fmt: skip


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


class PyBm25:
    """Okapi BM25, the textbook formula (k1=1.2, b=0.75, no stemming), for comparison only."""

    def __init__(self, docs: Mapping[str, str], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = {doc_id: Counter(_tokens(text)) for doc_id, text in docs.items()}
        self.len = {d: sum(c.values()) for d, c in self.tf.items()}
        self.avgdl = sum(self.len.values()) / max(len(self.len), 1)
        df: Counter[str] = Counter()
        for c in self.tf.values():
            df.update(c.keys())
        n = len(self.tf)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def search(self, query: str, k: int) -> list[str]:
        scores: Counter[str] = Counter()
        for t in set(_tokens(query)):
            idf = self.idf.get(t)
            if idf is None:
                continue
            for d, c in self.tf.items():
                f = c.get(t)
                if f:
                    norm = self.k1 * (1 - self.b + self.b * self.len[d] / self.avgdl)
                    scores[d] += idf * f * (self.k1 + 1) / (f + norm)
        return [d for d, _ in scores.most_common(k)]


def priority_rate_baseline(
    train: Sequence[SlaRecord], strength: float = 5.0
) -> Callable[[SlaRecord], float]:
    """Breach probability = the training breach rate of the ticket's priority, smoothed
    toward the overall rate with ``strength`` pseudo-counts."""
    overall = sum(r.breached for r in train) / len(train)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in train:
        counts[r.priority][0] += int(r.breached)
        counts[r.priority][1] += 1
    rates = {p: (k + strength * overall) / (n + strength) for p, (k, n) in counts.items()}
    return lambda r: rates.get(r.priority, overall)


def priority_median_baseline(train: Sequence[SlaRecord]) -> Callable[[SlaRecord], float]:
    """Resolution hours = the training median of the ticket's priority (>= 5 tickets), else
    the overall median."""
    hours: dict[str, list[float]] = defaultdict(list)
    for r in train:
        if r.resolution_hours is not None:
            hours[r.priority].append(r.resolution_hours)
    everything = [h for v in hours.values() for h in v]
    overall = statistics.median(everything) if everything else 0.0
    medians = {p: statistics.median(v) for p, v in hours.items() if len(v) >= 5}
    return lambda r: medians.get(r.priority, overall)


def time_split(
    records: Sequence[SlaRecord], fraction: float = SLA_TRAIN_FRACTION
) -> tuple[list[SlaRecord], list[SlaRecord]]:
    """Earliest ``fraction`` of the records (by ``opened_at``) to train, the rest to test."""
    ordered = sorted(records, key=lambda r: (r.opened_at, r.ticket_id or ""))
    cut = round(fraction * len(ordered))
    return ordered[:cut], ordered[cut:]


# =========================================================================== input


def _file(value: str | None, flag: str) -> Path:
    if not value:
        raise ValidationError("is required", field=flag)
    path = Path(value)
    if not path.is_file():
        raise ValidationError(f"no such file: {value}", field=flag)
    return path


def read_jsonl(path: Path, flag: str) -> list[dict[str, Any]]:
    """JSON objects, one a line; blank lines skipped. Errors name the flag and the line."""
    rows: list[dict[str, Any]] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", field=flag) from None
    with handle:
        try:
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValidationError(
                        f"{path}: line {n}: not valid JSON ({exc.msg})", field=flag
                    ) from None
                if not isinstance(row, dict):
                    raise ValidationError(f"{path}: line {n}: expected a JSON object", field=flag)
                rows.append(row)
        except UnicodeDecodeError:
            raise ValidationError(f"{path}: not UTF-8 text", field=flag) from None
    if not rows:
        raise ValidationError(f"{path}: no records", field=flag)
    return rows


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _text(row: Mapping[str, Any]) -> str:
    return f"{row.get('subject') or ''}\n{row.get('body') or ''}".strip()


def _check_tickets(rows: list[dict[str, Any]], path: Path, flag: str) -> None:
    for n, row in enumerate(rows, 1):
        for key in ("subject", "body"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise ValidationError(f"{path}: record {n}: '{key}' must be a string", field=flag)
        if not _text(row):
            raise ValidationError(f"{path}: record {n}: no subject or body", field=flag)


def _ids(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(r["id"]) for r in rows if r.get("id") not in (None, "")]


def _label(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    return None if value in (None, "") else str(value)


def _refuse_overlap(train_ids: Sequence[str], test_ids: Sequence[str], what: str, flag: str) -> None:
    both = sorted(set(train_ids) & set(test_ids))
    if both:
        sample = ", ".join(both[:5]) + (", ..." if len(both) > 5 else "")
        raise ValidationError(
            f"{len(both)} {what} id(s) occur in both training and test data ({sample}); "
            "a model must never be scored on what it was trained on",
            field=flag,
        )


# =========================================================================== triage


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread: comparable single-core timings, and polite on shared hosts."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - sklearn depends on it
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _examples(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[Any]:
    from atum_ai.local.triage_model import LabelledTicket

    return [
        LabelledTicket(
            subject=str(r.get("subject") or ""),
            body=str(r.get("body") or ""),
            labels={f: _label(r, f) for f in fields},
        )
        for r in rows
    ]


def _fit(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> tuple[TriageModel, float, float]:
    """The model with production defaults, wall seconds and CPU seconds of the fit."""
    from atum_ai.local.triage_model import TriageModel

    t0, c0 = time.perf_counter(), time.process_time()
    model = TriageModel.fit(_examples(rows, fields), fields)
    return model, time.perf_counter() - t0, time.process_time() - c0


def _majority(rows: Sequence[Mapping[str, Any]], field: str) -> str | None:
    counts = Counter(v for r in rows if (v := _label(r, field)) is not None)
    return counts.most_common(1)[0][0] if counts else None


def _timing(model: TriageModel, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    tickets = [(str(r.get("subject") or ""), str(r.get("body") or "")) for r in rows]
    model.predict_many(tickets[:20])  # warm-up: first-call allocations, caches
    t0 = time.perf_counter()
    model.predict_many(tickets)
    batch_s = time.perf_counter() - t0
    single = tickets[:SINGLE_TICKET_SAMPLE]
    t0 = time.perf_counter()
    for s, b in single:
        model.predict(s, b)
    single_s = time.perf_counter() - t0

    def rate(n: int, seconds: float) -> dict[str, Any]:
        seconds = max(seconds, 1e-9)
        return {"n": n, "ms_per_ticket": 1000 * seconds / n, "tickets_per_s": n / seconds}

    return {"batch": rate(len(tickets), batch_s), "single": rate(len(single), single_s),
            "blas_threads": 1}


def evaluate_triage(
    train_rows: Sequence[Mapping[str, Any]],
    test_rows: Sequence[Mapping[str, Any]] | None,
    *,
    folds: int = CV_FOLDS,
    seed: int = CV_SEED,
) -> dict[str, Any]:
    """Hold-out evaluation when ``test_rows`` is given, else stratified k-fold CV (by queue).

    Returns per-field model and majority-baseline metrics, fit time and prediction timing."""
    fields = [f for f in TRIAGE_FIELDS if any(_label(r, f) for r in train_rows)]
    if not fields:
        raise ValidationError(
            f"no ticket carries a label for any of {', '.join(TRIAGE_FIELDS)}", field="--train"
        )
    # (row index, field) -> predicted / baseline label, over the evaluated rows
    preds: list[dict[str, str]] = []
    base: list[dict[str, str]] = []
    fit_seconds: list[float] = []
    fit_cpu: list[float] = []
    with _one_thread():
        if test_rows is not None:
            evaluated = list(test_rows)
            model, secs, cpu = _fit(train_rows, fields)
            fit_seconds.append(secs)
            fit_cpu.append(cpu)
            majority = {f: _majority(train_rows, f) for f in fields}
            preds = [{f: p[f].label for f in fields} for p in
                     model.predict_many([(r.get("subject"), r.get("body")) for r in evaluated])]
            base = [{f: majority[f] or "" for f in fields} for _ in evaluated]
            timing = _timing(model, evaluated)
            mode = {"mode": "holdout", "train_n": len(train_rows), "test_n": len(evaluated)}
        else:
            import numpy as np
            from sklearn.model_selection import StratifiedKFold

            evaluated = list(train_rows)
            strat_field = "queue" if "queue" in fields else fields[0]
            strat = np.array([_label(r, strat_field) or "" for r in evaluated])
            if len(evaluated) < max(MIN_TRIAGE_ROWS, folds):
                raise ValidationError(
                    f"{len(evaluated)} tickets are too few for {folds}-fold cross-validation",
                    field="--train")
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            preds = [{} for _ in evaluated]
            base = [{} for _ in evaluated]
            with warnings.catch_warnings():  # "least populated class has only N members"
                warnings.simplefilter("ignore", UserWarning)
                splits = list(skf.split(np.zeros(len(evaluated)), strat))
            for train_idx, test_idx in splits:
                part = [evaluated[i] for i in train_idx]
                model, secs, cpu = _fit(part, fields)
                fit_seconds.append(secs)
                fit_cpu.append(cpu)
                majority = {f: _majority(part, f) for f in fields}
                out = model.predict_many(
                    [(evaluated[i].get("subject"), evaluated[i].get("body")) for i in test_idx])
                for i, p in zip(test_idx, out, strict=True):
                    preds[i] = {f: p[f].label for f in fields}
                    base[i] = {f: majority[f] or "" for f in fields}
            timing = _timing(model, [evaluated[i] for i in splits[-1][1]])
            mode = {"mode": f"{folds}-fold-cv", "folds": folds, "stratified_by": strat_field,
                    "seed": seed, "n": len(evaluated)}

    result: dict[str, Any] = {**mode, "fields": {}}
    for f in fields:
        idx = [i for i, r in enumerate(evaluated) if _label(r, f) is not None]
        if not idx:
            continue
        y = [str(_label(evaluated[i], f)) for i in idx]
        result["fields"][f] = {
            "n": len(idx),
            "classes": len(set(y)),
            "model": classification_metrics(y, [preds[i][f] for i in idx]),
            "majority_baseline": {
                "label": base[idx[0]][f] if test_rows is not None else None,
                **classification_metrics(y, [base[i][f] for i in idx]),
            },
        }
    result["config"] = dict(model.metadata.config)  # the defaults in force for this run
    result["fit_seconds"] = statistics.fmean(fit_seconds)
    result["fit_cpu_seconds"] = statistics.fmean(fit_cpu)
    result["timing"] = timing
    return result


# =========================================================================== language


def evaluate_language(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """detect_language(subject + body) against the ``language`` labels (rows without one are
    skipped); None when no row has a label."""
    from atum_ai.local.langid import DEFAULT_LANGUAGES, detect_language

    labelled = [r for r in rows if _label(r, "language")]
    if not labelled:
        return None
    detect_language("warm up", DEFAULT_LANGUAGES)  # model load outside the timed loop
    t0 = time.perf_counter()
    predicted = [detect_language(_text(r), DEFAULT_LANGUAGES)[0] for r in labelled]
    seconds = time.perf_counter() - t0
    gold = [str(_label(r, "language")).lower() for r in labelled]
    confusion: dict[str, dict[str, int]] = {}
    for g, p in zip(gold, predicted, strict=True):
        confusion.setdefault(g, {}).setdefault(p, 0)
        confusion[g][p] += 1
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    return {
        "n": len(labelled),
        "correct": correct,
        "accuracy": correct / len(labelled),
        "candidates": list(DEFAULT_LANGUAGES),
        "recall": {g: row.get(g, 0) / sum(row.values()) for g, row in sorted(confusion.items())},
        "confusion": {g: dict(sorted(row.items())) for g, row in sorted(confusion.items())},
        "ms_per_ticket": 1000 * seconds / len(labelled),
    }


# =========================================================================== KB


def _kb_inputs(
    articles_path: Path, queries_path: Path
) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
    articles = read_jsonl(articles_path, "--kb-articles")
    for n, a in enumerate(articles, 1):
        if not a.get("id") or not a.get("title"):
            raise ValidationError(f"{articles_path}: record {n}: needs 'id' and 'title'",
                                  field="--kb-articles")
    queries = read_jsonl(queries_path, "--kb-queries")
    texts, gold = [], []
    for n, q in enumerate(queries, 1):
        if not isinstance(q.get("query"), str) or not q["query"].strip() or q.get("article_id") in (None, ""):
            raise ValidationError(f"{queries_path}: record {n}: needs 'query' and 'article_id'",
                                  field="--kb-queries")
        texts.append(q["query"])
        gold.append(str(q["article_id"]))
    known = {str(a["id"]) for a in articles}
    unknown = sorted({g for g in gold if g not in known})
    return articles, texts, gold, unknown


@contextlib.asynccontextmanager
async def scratch_kb_database(url: str) -> Any:
    """Yield ``(connection, organization_id, where)`` for a throw-away KB.

    Preferred: a new database ``atum_eval_<random>`` on the server of ``url``, migrated, and
    dropped (WITH FORCE) on exit. When the role may not create databases: a random
    organization in the database of ``url`` (its schema must be up to date), whose KB rows
    are deleted on exit. Nothing else is touched either way."""
    import psycopg
    from psycopg import sql

    from atum_ai.queue.migrate import applied, discover, migrate

    name = f"atum_eval_{uuid.uuid4().hex[:12]}"
    org = uuid.uuid4()
    admin = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        try:
            await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            created = True
        except psycopg.errors.InsufficientPrivilege:
            created = False
        if not created:
            done = await applied(admin)
            pending = [m.name for m in discover() if m.name not in done]
            if pending:
                raise ConfigError(
                    "eval needs a scratch database for the KB part: the role may not CREATE "
                    f"DATABASE and the configured database has {len(pending)} pending "
                    "migration(s); run `atum-ai migrate` or use a role with CREATEDB")
            try:
                yield admin, org, "scratch organization"
            finally:
                for table in ("kb_articles", "kb_lexeme_stats", "kb_corpus_stats"):
                    await admin.execute(
                        sql.SQL("DELETE FROM {} WHERE organization_id = %s").format(
                            sql.Identifier(table)), (org,))
            return
        try:
            dsn = psycopg.conninfo.make_conninfo(url, dbname=name)
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await migrate(conn)
                yield conn, org, "scratch database"
        finally:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        await admin.close()


async def evaluate_kb(url: str, articles_path: Path, queries_path: Path) -> dict[str, Any]:
    from atum_ai.local.kb_search import import_articles, search_articles

    articles, texts, gold, unknown = _kb_inputs(articles_path, queries_path)
    async with scratch_kb_database(url) as (conn, org, where):
        t0 = time.perf_counter()
        imported = await import_articles(conn, org, [
            {k: a[k] for k in ("id", "title", "body", "language", "url") if a.get(k) is not None}
            for a in articles])
        import_s = time.perf_counter() - t0
        for q in texts[:10]:  # warm-up: plans, caches
            await search_articles(conn, org, q, k=KB_DEPTH)
        ranked: list[list[str]] = []
        t0 = time.perf_counter()
        for q in texts:
            ranked.append([h.article_id for h in await search_articles(conn, org, q, k=KB_DEPTH)])
        search_s = time.perf_counter() - t0
    py = PyBm25({str(a["id"]): f"{a['title']}\n{a.get('body') or ''}" for a in articles})
    t0 = time.perf_counter()
    py_ranked = [py.search(q, KB_DEPTH) for q in texts]
    py_s = time.perf_counter() - t0

    def block(r: list[list[str]], seconds: float) -> dict[str, float]:
        m = retrieval_metrics(r, gold)
        return {"recall@1": m["R@1"], "recall@3": m["R@3"], "recall@5": m["R@5"], "mrr": m["MRR"],
                "queries_per_s": len(texts) / max(seconds, 1e-9)}

    return {
        "articles": len(articles),
        "imported": imported,
        "queries": len(texts),
        "where": where,
        "import_seconds": import_s,
        "mrr_depth": KB_DEPTH,
        "unknown_gold_ids": unknown,
        "model": block(ranked, search_s),
        "py_bm25_baseline": block(py_ranked, py_s),
    }


# =========================================================================== SLA


def _read_incidents(path: Path, flag: str) -> list[SlaRecord]:
    from atum_ai.local.sla_import import read_servicenow_incident_log

    try:
        records = read_servicenow_incident_log(path)
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not UTF-8 text", field=flag) from None
    except (csv.Error, OSError, ValueError) as exc:
        raise ValidationError(f"{path}: cannot read the incident log ({exc})", field=flag) from None
    if not records:
        raise ValidationError(
            f"{path}: no incident with 'number', 'opened_at' and a TRUE/FALSE 'made_sla'",
            field=flag)
    return records


def evaluate_sla(train_path: Path, test_path: Path | None) -> dict[str, Any]:
    from atum_ai.local.sla_tuning import fit_tuned

    notes: list[str] = []
    if test_path is None:
        records = _read_incidents(train_path, "--sla-train")
        train, test = time_split(records)
        split = f"time-ordered: earliest {SLA_TRAIN_FRACTION:.0%} of --sla-train to train, rest test"
    else:
        train = sorted(_read_incidents(train_path, "--sla-train"), key=lambda r: r.opened_at)
        test = sorted(_read_incidents(test_path, "--sla-test"), key=lambda r: r.opened_at)
        _refuse_overlap([r.ticket_id or "" for r in train if r.ticket_id],
                        [r.ticket_id or "" for r in test if r.ticket_id], "incident", "--sla-test")
        split = "--sla-train / --sla-test"
        if test[0].opened_at < train[-1].opened_at:
            notes.append("some test incidents opened before the last training incident: "
                         "not a forward-in-time evaluation")
    if not train or not test:
        raise ValidationError(f"{len(train)} training / {len(test)} test incidents: too few",
                              field="--sla-train")
    y = [r.breached for r in test]
    with _one_thread():
        t0 = time.perf_counter()
        model, selection = fit_tuned(train)  # configuration chosen inside train only
        fit_s = time.perf_counter() - t0
        p_model = [model.breach_probability(r) for r in test]
    base = priority_rate_baseline(train)
    p_base = [base(r) for r in test]
    constant = sum(r.breached for r in train) / len(train)
    if len(set(y)) < 2:
        notes.append("the test incidents are all of one class: AUROC is undefined")
    timed = [r for r in test if r.resolution_hours is not None]
    resolution: dict[str, Any] = {"n": len(timed)}
    if timed:
        actual = [float(r.resolution_hours or 0.0) for r in timed]
        median_base = priority_median_baseline(train)
        est = [model.predict_resolution_hours(r) for r in timed]
        resolution.update({
            "model_mae_hours": mae(actual, [e if e is not None else median_base(r)
                                            for e, r in zip(est, timed, strict=True)]),
            "priority_median_mae_hours": mae(actual, [median_base(r) for r in timed]),
            "test_median_hours": statistics.median(actual),
        })
    return {
        "split": split,
        "train": {"n": len(train), "breach_rate": constant,
                  "from": train[0].opened_at.isoformat(), "to": train[-1].opened_at.isoformat()},
        "test": {"n": len(test), "breach_rate": sum(y) / len(y),
                 "from": test[0].opened_at.isoformat(), "to": test[-1].opened_at.isoformat()},
        "model_source": model.metadata.get("source"),
        "cold_start_reason": model.cold_start_reason,
        "configuration": selection.chosen,
        "fit_seconds": fit_s,
        "breach": {
            "model": {"auroc": auroc(y, p_model), "auroc_ci95": list(auroc_ci(y, p_model)),
                      "brier": brier(y, p_model)},
            "priority_base_rate": {"auroc": auroc(y, p_base), "brier": brier(y, p_base)},
            "constant_base_rate": {"auroc": 0.5, "brier": brier(y, [constant] * len(y))},
        },
        "resolution_hours": resolution,
        "notes": notes,
    }


# =========================================================================== orchestration


def _ticket_inputs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, list[str]]:
    notes: list[str] = []
    train_path = _file(args.train, "--train")
    test_path = _file(args.test, "--test") if args.test else None
    if test_path is not None and _same_file(train_path, test_path):
        raise ValidationError(
            "is the same file as --train; evaluating on the training data measures memory, not "
            "skill. Give a held-out file, or only --train for 5-fold cross-validation",
            field="--test")
    train = read_jsonl(train_path, "--train")
    _check_tickets(train, train_path, "--train")
    dup_train = len(_ids(train)) - len(set(_ids(train)))
    if dup_train:
        notes.append(f"--train repeats {dup_train} ticket id(s)")
    if test_path is None:
        texts = Counter(_text(r) for r in train)
        dups = sum(c - 1 for c in texts.values() if c > 1)
        if dups:
            notes.append(f"{dups} ticket(s) in --train repeat another's exact text: they can "
                         "land on both sides of a fold")
        return train, None, notes
    test = read_jsonl(test_path, "--test")
    _check_tickets(test, test_path, "--test")
    _refuse_overlap(_ids(train), _ids(test), "ticket", "--test")
    train_texts = {_text(r) for r in train}
    same_text = sum(_text(r) in train_texts for r in test)
    if same_text:
        notes.append(f"{same_text} --test ticket(s) have exactly the text of a --train ticket "
                     "(different ids): their scores flatter the model")
    if not _ids(train) or not _ids(test):
        notes.append("tickets without 'id': the overlap check relied on exact text only")
    return train, test, notes


async def evaluate(env: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run every part the arguments ask for; returns the report (JSON-ready)."""
    if args.test and not args.train:
        raise ValidationError("--test needs --train", field="--train")
    if bool(args.kb_articles) != bool(args.kb_queries):
        flag = "--kb-queries" if args.kb_articles else "--kb-articles"
        raise ValidationError("--kb-articles and --kb-queries go together", field=flag)
    if args.sla_test and not args.sla_train:
        raise ValidationError("--sla-test needs --sla-train", field="--sla-train")
    if not (args.train or args.kb_articles or args.sla_train):
        raise ValidationError("nothing to evaluate: give --train [--test], "
                              "--kb-articles with --kb-queries, or --sla-train", field="--train")
    # Validate every input before the slow parts start.
    tickets = _ticket_inputs(args) if args.train else None
    kb_paths = (_file(args.kb_articles, "--kb-articles"), _file(args.kb_queries, "--kb-queries")) \
        if args.kb_articles else None
    sla_paths = (_file(args.sla_train, "--sla-train"),
                 _file(args.sla_test, "--sla-test") if args.sla_test else None) \
        if args.sla_train else None
    if sla_paths and sla_paths[1] is not None and _same_file(*sla_paths):  # type: ignore[arg-type]
        raise ValidationError("is the same file as --sla-train; give a held-out log, or only "
                              "--sla-train for a time-ordered 70/30 split", field="--sla-test")

    report: dict[str, Any] = {"triage": None, "language": None, "kb": None, "sla": None, "notes": []}
    if tickets is not None:
        train, test, notes = tickets
        report["notes"].extend(notes)
        report["triage"] = evaluate_triage(train, test)
        if test is None:
            report["notes"].append(
                f"no --test: triage scored by stratified {CV_FOLDS}-fold cross-validation on --train")
        report["language"] = evaluate_language(test if test is not None else train)
    if sla_paths is not None:
        report["sla"] = evaluate_sla(*sla_paths)
        report["notes"].extend(report["sla"].pop("notes"))
    if kb_paths is not None:
        from atum_ai.runtime import database_url

        with database_url(env.settings, announce=_announce) as (url, _embedded):
            report["kb"] = await evaluate_kb(url, *kb_paths)
        if report["kb"]["unknown_gold_ids"]:
            u = report["kb"]["unknown_gold_ids"]
            report["notes"].append(f"{len(u)} gold article id(s) of --kb-queries are not in "
                                   f"--kb-articles (counted as misses): {', '.join(u[:5])}")
    return report


def _announce(message: str) -> None:
    from atum_ai.cli.output import say

    say(message)


# =========================================================================== output


def _f(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def print_report(report: Mapping[str, Any]) -> None:
    from atum_ai.cli.output import console, print_table

    tri = report.get("triage")
    if tri:
        how = (f"hold-out: train {tri['train_n']}, test {tri['test_n']}" if tri["mode"] == "holdout"
               else f"{tri['folds']}-fold CV stratified by {tri['stratified_by']}, n={tri['n']}")
        print_table(
            f"Triage ({how})",
            ["field", "n", "classes", "accuracy", "baseline acc", "macro-F1", "baseline F1",
             "majority label"],
            [[f, m["n"], m["classes"], _f(m["model"]["accuracy"]),
              _f(m["majority_baseline"]["accuracy"]), _f(m["model"]["macro_f1"]),
              _f(m["majority_baseline"]["macro_f1"]), m["majority_baseline"]["label"] or "(per fold)"]
             for f, m in tri["fields"].items()])
        t = tri["timing"]
        print_table(
            f"Triage prediction time (1 BLAS thread; fit {tri['fit_seconds']:.1f} s wall, "
            f"{tri['fit_cpu_seconds']:.1f} s CPU" + (" per fold)" if tri["mode"] != "holdout" else ")"),
            ["mode", "tickets", "ms/ticket", "tickets/s"],
            [["batch (predict_many)", t["batch"]["n"], _f(t["batch"]["ms_per_ticket"], 2),
              f"{t['batch']['tickets_per_s']:,.0f}"],
             ["one at a time (predict)", t["single"]["n"], _f(t["single"]["ms_per_ticket"], 2),
              f"{t['single']['tickets_per_s']:,.0f}"]])
        c = tri["config"]
        console.print(
            f"triage config: {c['estimator']} C={c['C']} word{tuple(c['word_ngram_range'])} "
            f"char{tuple(c['char_ngram_range'])} min_df={c['min_df']} "
            f"calibrate={c['calibrate']} tune_biases={c['tune_biases']}")
    lang = report.get("language")
    if lang:
        preds = sorted({p for row in lang["confusion"].values() for p in row})
        print_table(
            f"Language detection: accuracy {lang['accuracy']:.3f} ({lang['correct']}/{lang['n']}), "
            f"{lang['ms_per_ticket']:.2f} ms/ticket  (rows gold, columns predicted)",
            ["gold", *preds, "recall"],
            [[g, *(row.get(p, 0) or "." for p in preds), _f(lang["recall"][g])]
             for g, row in lang["confusion"].items()])
    kb = report.get("kb")
    if kb:
        print_table(
            f"KB retrieval: {kb['queries']} queries over {kb['articles']} articles "
            f"({kb['where']}, import {kb['import_seconds']:.1f} s)",
            ["method", "recall@1", "recall@3", "recall@5", f"MRR@{kb['mrr_depth']}", "queries/s"],
            [[name, _f(m["recall@1"]), _f(m["recall@3"]), _f(m["recall@5"]), _f(m["mrr"]),
              f"{m['queries_per_s']:,.0f}"]
             for name, m in (("atum_ai (PostgreSQL BM25)", kb["model"]),
                             ("py-bm25 baseline (in-process)", kb["py_bm25_baseline"]))])
    sla = report.get("sla")
    if sla:
        b = sla["breach"]
        lo, hi = b["model"]["auroc_ci95"]
        print_table(
            f"SLA breach ({sla['split']}; train {sla['train']['n']} breach rate "
            f"{sla['train']['breach_rate']:.2f}, test {sla['test']['n']} breach rate "
            f"{sla['test']['breach_rate']:.2f})",
            ["predictor", "AUROC", "AUROC 95% CI", "Brier"],
            [[f"SlaModel ({sla['model_source']}: {sla['configuration']})", _f(b["model"]["auroc"]),
              f"{_f(lo)}-{_f(hi)}",
              _f(b["model"]["brier"], 4)],
             ["priority base rate (train)", _f(b["priority_base_rate"]["auroc"]), "",
              _f(b["priority_base_rate"]["brier"], 4)],
             ["constant base rate (train)", _f(b["constant_base_rate"]["auroc"]), "",
              _f(b["constant_base_rate"]["brier"], 4)]])
        res = sla["resolution_hours"]
        if res.get("n"):
            print_table(
                f"SLA resolution time (test n={res['n']}, median {res['test_median_hours']:.1f} h)",
                ["predictor", "MAE hours"],
                [["SlaModel (group medians)", _f(res["model_mae_hours"], 1)],
                 ["per-priority median (train)", _f(res["priority_median_mae_hours"], 1)]])
    for note in report.get("notes", []):
        from atum_ai.cli.output import plain

        console.print(plain(f"note: {note}"))


def _jsonable(obj: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


async def run_eval(env: Any, args: argparse.Namespace) -> int:
    """The ``atum-ai eval`` command."""
    report = await evaluate(env, args)
    if getattr(args, "json", False):
        from atum_ai.cli.output import print_json

        print_json(_jsonable(report))
    else:
        print_report(report)
    return 0
