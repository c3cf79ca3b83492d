"""Interleaved before/after drain runs of two atum_ai checkouts (alternating, so that the
load of a shared machine hits both alike): python -m bench.before_after OLD_SRC [configs]."""

from __future__ import annotations

import asyncio
import os
import sys

from bench.common import DEFAULT_DSN, Stat, bench_database, rate_first_to_last
from bench.peers import load


async def main(old_src: str, jobs: int = 3000, pairs: int = 3) -> None:
    (s,) = load(["atum_ai"])
    with bench_database(DEFAULT_DSN, "before_after") as url:
        await s.setup(url)
        for conc in (1, 16, 64):
            res: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(pairs):
                for label in ("before", "after"):
                    if label == "before":
                        os.environ["ATUM_BENCH_SRC"] = old_src
                    else:
                        os.environ.pop("ATUM_BENCH_SRC", None)
                    await s.reset(url)
                    await s.module.enqueue_bulk(url, jobs)
                    w = s.start_worker(url, conc)
                    w.wait(300)
                    starts = await s.starts(url, [w])
                    assert len(starts) == jobs, (label, len(starts))
                    res[label].append(rate_first_to_last(list(starts.values())))
            b, a = Stat(res["before"]), Stat(res["after"])
            print(f"concurrency {conc}: before {b.fmt()} after {a.fmt()} jobs/s -> "
                  f"{a.median / b.median:.2f}x", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
