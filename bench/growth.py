"""How cost grows with the work: bytes per fit, ingest rate as the database fills, daemon memory.

    .venv/bin/python -m bench.growth [--quick]

- **bytes per fit**: ``N`` records of 1,000 samples × 4 parameters (``lensd.demo.synthetic.record``)
  written by the daemon's ``BatchWriter`` into a fresh file, checkpointed; the file's size over
  ``N`` against the raw bytes of each fit's sample arrays (parameters, log likelihood, log prior,
  weight: 7 float64 columns × 1,000 = 56,000 bytes). The rest is the fit row, its facts, nodes and
  indexes.
- **ingest rate with fits already stored**: the cached query databases of 10^4, 10^5, 10^6 fits
  (``bench._dbcache``, the same files the query benchmark reads) and a fresh one: ``ADD`` more
  fits, planned by ``batchplan.plan_batch`` before the clock starts, inserted in transactions of 32
  (the daemon's batch size under load) with the writer's PRAGMAs. Each transaction is rolled back
  after it is timed, so the cached files stay as they were: the figure is the CPU sqlite spends to
  insert the rows and grow the indexes at that size (fits per CPU second; no fsync, no commit; CPU
  because the machine is shared). Flat is the goal.
- **daemon RSS**: a real daemon on a copy of the 10^6-fit database; 8 client processes submit
  ``RSS_FITS`` fits (1,000 samples each) in rounds; its resident set (/proc VmRSS) at start and after
  each round. The slope says whether memory grows with the fits ingested.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench._common import daemon, main, rate, times
from bench._dbcache import database
from bench.daemon_ingest import _client, _processes, _records

SECTION = "growth: bytes per fit, ingest as the database fills, daemon memory"
ADD = 640
BATCH = 32
RSS_FITS = 8000
RSS_ROUNDS = 4
RAW_SAMPLE_BYTES = 7 * 1000 * 8


def _bytes_per_fit(db: Path, n: int) -> float:
    import anyio

    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    async def write() -> None:
        writer = await BatchWriter.open(db)
        try:
            for start in range(0, n, 500):
                await writer.apply([Upsert(validate_record(r)) for r in _records(range(start, min(n, start + 500)), 7)])
        finally:
            await writer.close()

    anyio.run(write, backend="asyncio")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db.stat().st_size / n


def _plans(first_key: int) -> list[list[tuple[str, list[tuple[Any, ...]]]]]:
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import plan_batch
    from lensd.store.writeops import Upsert

    plans = []
    records = [validate_record(r) for r in _records(range(ADD), 99)]  # ids of their own: no conflicts
    for start in range(0, ADD, BATCH):
        plan, _, _ = plan_batch([Upsert(r) for r in records[start:start + BATCH]], {}, first_key + start, time.time())
        plans.append(plan.statements)
    return plans


def _insert_rate(db: Path) -> float:
    """Fits per CPU second inserted in batches of BATCH, each rolled back after it is timed."""
    from lensd.store import schema

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for pragma in schema.writer_pragmas("normal"):
            conn.execute(pragma)
        first = int(conn.execute("SELECT coalesce(max(fit_key), 0) + 1 FROM fits").fetchone()[0])
        plans = _plans(first)
        conn.execute("SELECT count(*) FROM fits").fetchone()  # the file's top pages into the cache
        spent = 0.0
        for statements in plans:
            began = time.process_time()
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                conn.executemany(sql, rows)
            spent += time.process_time() - began
            conn.execute("ROLLBACK")
        return ADD / spent
    finally:
        conn.close()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(options: Options) -> list[Row]:
    from lensd.store.writer import prepare_database

    rows: list[Row] = []
    n = 300 if options.quick else 2000
    per_fit = _bytes_per_fit(options.work / "bytes.sqlite", n)
    rows.append(Row(SECTION, f"database bytes per fit, {n} fits of 1,000 samples x 4 parameters",
                    f"{per_fit / 1000:,.1f} kB", f"raw samples: {RAW_SAMPLE_BYTES / 1000:,.1f} kB",
                    f"{times(per_fit / RAW_SAMPLE_BYTES)} raw"))
    fresh = options.work / "fresh.sqlite"
    prepare_database(fresh, "normal")
    sizes = [10**4, 10**5] if options.quick else [10**4, 10**5, 10**6]
    base = _insert_rate(fresh)
    rows.append(Row(SECTION, f"ingest rate (per CPU s), empty database ({ADD} fits in batches of {BATCH})",
                    rate(base, "fits"),
                    baseline="(the baseline)"))
    for size in sizes:
        path, _ = database(options.cache, size)
        found = _insert_rate(path)
        rows.append(Row(SECTION, f"ingest rate (per CPU s) with 10^{len(str(size)) - 1} fits stored",
                        rate(found, "fits"), rate(base, "fits"), f"{times(found / base)} empty"))
    big, _ = database(options.cache, sizes[-1])
    copy = options.work / "rss.sqlite"
    shutil.copyfile(big, copy)
    socket = options.work / "rss.s"
    total = 800 if options.quick else RSS_FITS
    with daemon(copy, socket, "--durability", "normal") as process:
        start = _rss_mb(process.pid)
        figures = []
        for round_ in range(RSS_ROUNDS):
            _processes(_client, 8, total // RSS_ROUNDS, str(socket), 1000 + round_, timeout=600)
            figures.append(_rss_mb(process.pid))
    slope = (figures[-1] - figures[0]) / (total - total // RSS_ROUNDS) * 1000
    rows.append(Row(SECTION, f"daemon RSS on 10^{len(str(sizes[-1])) - 1} fits: at start, then after each "
                             f"{total // RSS_ROUNDS} more ingested",
                    " / ".join(f"{mb:.0f}" for mb in [start, *figures]) + " MB",
                    ratio=f"{slope:+.1f} MB per 1,000 fits after the first round"))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
