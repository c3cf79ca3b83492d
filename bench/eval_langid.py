"""Evaluate atum_ai.local.langid on labelled tickets (JSONL with subject, body, language).

    python bench/eval_langid.py [../shared/data/tickets/dev.jsonl] [--show N] [--languages en,de,...]

Prints accuracy, a confusion table (gold rows x predicted columns), per-language recall,
throughput, and the first N disagreements so they can be checked by eye. The gold labels
of the public ticket set are noisy (some English tickets are labelled ``de``): inspect the
disagreements before "fixing" the detector toward them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from atum_ai.local.langid import DEFAULT_LANGUAGES, detect_language

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tickets" / "dev.jsonl"


def ticket_text(row: dict[str, object]) -> str:
    """Subject and body together, as the triage handler sees them."""
    return f"{row.get('subject') or ''}\n{row.get('body') or ''}".strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--show", type=int, default=10, help="disagreements to print")
    parser.add_argument("--languages", default=",".join(DEFAULT_LANGUAGES))
    args = parser.parse_args(argv)

    rows = [
        json.loads(line)
        for line in args.path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    languages = [c.strip() for c in args.languages.split(",") if c.strip()]
    detect_language("warm up", languages)  # load the model outside the timed loop

    start = time.perf_counter()
    predictions = [detect_language(ticket_text(r), languages) for r in rows]
    elapsed = time.perf_counter() - start

    gold = [str(r.get("language")) for r in rows]
    pairs = Counter((g, p) for g, (p, _) in zip(gold, predictions, strict=True))
    correct = sum(n for (g, p), n in pairs.items() if g == p)
    labels = sorted({g for g in gold} | {p for _, (p, _) in zip(gold, predictions, strict=True)})

    print(f"tickets      {len(rows)}")
    print(f"accuracy     {correct / len(rows):.4f}  ({correct}/{len(rows)}) against the raw labels")
    print(
        f"throughput   {len(rows) / elapsed:,.0f} tickets/s  ({elapsed * 1000 / len(rows):.2f} ms each)"
    )
    print()
    print("confusion (rows: gold, columns: predicted)")
    print("gold  " + "".join(f"{p:>7}" for p in labels) + "   recall")
    for g in labels:
        total = sum(n for (gg, _), n in pairs.items() if gg == g)
        if not total:
            continue
        cells = "".join(f"{pairs.get((g, p), 0):>7}" for p in labels)
        print(f"{g:<6}{cells}   {pairs.get((g, g), 0) / total:.3f}")

    low = sorted(c for _, c in predictions)
    print()
    print(
        f"confidence   min {low[0]:.3f}  p05 {low[len(low) // 20]:.3f}  median {low[len(low) // 2]:.3f}"
    )

    shown = 0
    for row, g, (p, conf) in zip(rows, gold, predictions, strict=True):
        if g != p and shown < args.show:
            shown += 1
            snippet = ticket_text(row).replace("\n", " ")[:110]
            print(f"  gold={g} pred={p} conf={conf:.2f} {row.get('id')}: {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
