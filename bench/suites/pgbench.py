"""The hardware reference: pgbench running the simplest possible SKIP LOCKED claim (an UPDATE
of the oldest pending rows of a bare table with one partial index), 1 and 100 rows per
transaction, 16 clients. No queue can claim faster than this on the same server."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import Stat, bench_database
from bench.suites import Row
from atum_ai.testing.pg import _pg_bin

SCHEMA = """
CREATE TABLE q (id bigserial PRIMARY KEY, status text NOT NULL, payload jsonb, locked_at timestamptz);
CREATE INDEX q_pending ON q (id) WHERE status = 'P';
"""
CLAIM = """UPDATE q SET status = 'R', locked_at = now()
 WHERE id IN (SELECT id FROM q WHERE status = 'P' ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED);
"""


def pgbench_suite(dsn: str, *, runs: int, seconds: int, clients: int = 16) -> list[Row]:
    exe = shutil.which("pgbench") or _pg_bin("pgbench")
    if not exe:
        return [Row("pgbench", "claim rows/s", "pgbench", Stat([]), note="skipped: pgbench not found")]
    rows: list[Row] = []
    with bench_database(dsn, "pgbench") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        for n in (1, 100):
            rates, tps_l = [], []
            for _ in range(runs):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE q")
                    conn.execute("INSERT INTO q (status, payload) SELECT 'P', '{}'::jsonb"
                                 " FROM generate_series(1, %s)", (600_000 if n == 100 else 100_000,))
                    conn.execute("VACUUM ANALYZE q")
                with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
                    fh.write(CLAIM.format(n=n))
                t0 = time.monotonic()
                out = subprocess.run([exe, "-n", "-c", str(clients), "-j", "2", "-T", str(seconds),
                                      "-f", fh.name, url], capture_output=True, text=True, timeout=seconds + 60)
                elapsed = time.monotonic() - t0
                Path(fh.name).unlink()
                m = re.search(r"tps = ([\d.]+)", out.stdout)
                with psycopg.connect(url, autocommit=True) as conn:
                    claimed = conn.execute("SELECT count(*) FROM q WHERE status = 'R'").fetchone()[0]
                tps = float(m.group(1)) if m else float("nan")
                # rows/s from the rows really claimed (tps x n would count empty claims too)
                rates.append(min(tps * n, claimed / max(seconds, 1e-9)) if m else claimed / elapsed)
                tps_l.append(tps)
                print(f"[bench] pgbench {n} row(s)/tx: {tps:,.0f} tps, {rates[-1]:,.0f} rows/s", flush=True)
            rows.append(Row("pgbench", f"SKIP LOCKED claim, {n} row(s)/transaction, rows/s", "pgbench",
                            Stat(rates, "rows/s"), note=f"{clients} clients, {seconds}s, "
                            f"{Stat(tps_l).fmt()} tps"))
    return rows
