"""KB retrieval quality and speed: atum_ai's PostgreSQL BM25 vs two baselines.

Indexes the shared KB articles for a fresh organization in a scratch database (created here and
dropped at the end), runs every dev query and prints recall@1/3/5, MRR and queries/s for

* atum_ai   ``atum_ai.local.kb_search.search_articles`` (OR-ed lexemes + prefix, BM25 in SQL)
* pg-and    PostgreSQL ``websearch_to_tsquery`` + ``ts_rank`` (every word must match)
* py-bm25   a plain in-process BM25 (Okapi, k1=1.2, b=0.75, no stemming) over title + body

Usage::

    python bench/eval_kb.py [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres]
                            [--data ../shared/data/kb] [--keep-db]

The data is not part of the repository (see shared/data/README.md); only paths point to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atum_ai.evaluation import PyBm25, retrieval_metrics
from atum_ai.local.kb_search import (
    DEFAULT_PARAMS,
    Bm25Params,
    import_articles,
    search_articles,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "kb"
DEFAULT_ADMIN_DSN = os.environ.get(
    "ATUM_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# Metrics and the py-bm25 baseline live in atum_ai.evaluation (shared with `atum-ai eval`):
# evaluate() = retrieval_metrics (R@1/3/5, MRR); PyBm25 = Okapi BM25, k1=1.2, b=0.75, no stemming.
evaluate = retrieval_metrics


# --------------------------------------------------------------------------- runners


PG_AND_SQL = """
SELECT article_id FROM kb_articles, websearch_to_tsquery('english', %(q)s) AS q
 WHERE organization_id = %(org)s AND search_vector @@ q
 ORDER BY ts_rank(search_vector, q) DESC, article_id LIMIT %(k)s
"""


async def run_timed(
    queries: Sequence[str], search: Callable[[str], object]
) -> tuple[list[list[str]], float]:
    ranked: list[list[str]] = []
    t0 = time.perf_counter()
    for q in queries:
        result = search(q)
        if asyncio.iscoroutine(result):
            result = await result
        ranked.append(list(result))  # type: ignore[arg-type]
    return ranked, len(queries) / (time.perf_counter() - t0)


async def apply_migrations(conn: psycopg.AsyncConnection) -> None:
    for path in sorted((REPO / "migrations").glob("*.sql")):
        async with conn.transaction():
            await conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--keep-db", action="store_true", help="do not drop the scratch database")
    ap.add_argument("--k1", type=float, default=DEFAULT_PARAMS.k1)
    ap.add_argument("--b", type=float, default=DEFAULT_PARAMS.b)
    ap.add_argument("--title-weight", type=float, default=DEFAULT_PARAMS.title_weight)
    ap.add_argument("--prefix-weight", type=float, default=DEFAULT_PARAMS.prefix_weight)
    ap.add_argument("--min-prefix-len", type=int, default=DEFAULT_PARAMS.min_prefix_len)
    args = ap.parse_args()
    params = Bm25Params(
        k1=args.k1,
        b=args.b,
        title_weight=args.title_weight,
        prefix_weight=args.prefix_weight,
        min_prefix_len=args.min_prefix_len,
    )

    articles = load_jsonl(args.data / "articles.jsonl")
    queries = load_jsonl(args.data / "queries-dev.jsonl")
    texts = [q["query"] for q in queries]
    gold = [q["article_id"] for q in queries]

    db_name = f"atum_kb_eval_{uuid.uuid4().hex[:8]}"
    admin = await psycopg.AsyncConnection.connect(args.admin_dsn, autocommit=True)
    await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    try:
        dsn = psycopg.conninfo.make_conninfo(args.admin_dsn, dbname=db_name)
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await apply_migrations(conn)
            org = uuid.uuid4()
            t0 = time.perf_counter()
            n = await import_articles(
                conn,
                org,
                [{"id": a["id"], "title": a["title"], "body": a["body"]} for a in articles],
            )
            await conn.commit()
            import_s = time.perf_counter() - t0
            cur = await conn.execute(
                "SELECT coalesce(language, '?'), ts_config::text, count(*) FROM kb_articles"
                " WHERE organization_id = %s GROUP BY 1, 2 ORDER BY 3 DESC",
                (org,),
            )
            langs = ", ".join(f"{lang}/{cfg}: {c}" for lang, cfg, c in await cur.fetchall())
            await conn.commit()
            print(f"imported {n} articles in {import_s:.2f}s ({langs}); {len(texts)} queries")
            await conn.set_autocommit(True)

            for q in texts[:20]:  # warm-up (plans, caches)
                await search_articles(conn, org, q, k=5, params=params)

            async def ours(q: str) -> list[str]:
                return [
                    h.article_id for h in await search_articles(conn, org, q, k=5, params=params)
                ]

            async def pg_and(q: str) -> list[str]:
                cur = await conn.execute(PG_AND_SQL, {"q": q, "org": org, "k": 5})  # type: ignore[arg-type]
                return [r[0] for r in await cur.fetchall()]

            py = PyBm25({a["id"]: f"{a['title']}\n{a['body']}" for a in articles})
            rows = [
                ("atum_ai (OR + prefix, BM25 in SQL)", *await run_timed(texts, ours)),
                ("pg-and (websearch_to_tsquery + ts_rank)", *await run_timed(texts, pg_and)),
                (
                    "py-bm25 (in-process, no stemming)",
                    *await run_timed(texts, lambda q: py.search(q, 5)),
                ),
            ]
    finally:
        if not args.keep_db:
            await admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name))
            )
        await admin.close()

    print(f"params: {params}")
    header = (
        f"{'method':<42}" + "".join(f"{m:>8}" for m in ("R@1", "R@3", "R@5", "MRR")) + f"{'q/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, ranked, qps in rows:
        m = evaluate(ranked, gold)
        print(
            f"{name:<42}"
            + "".join(f"{m[k]:>8.3f}" for k in ("R@1", "R@3", "R@5", "MRR"))
            + f"{qps:>9.0f}"
        )
    if args.keep_db:
        print(f"kept database {db_name}")


if __name__ == "__main__":
    asyncio.run(main())
