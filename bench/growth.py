"""How cost grows with the work: bytes per fit, ingest rate as the database fills, daemon memory.

    .venv/bin/python -m bench.growth [--quick]

- **bytes per fit**: ``N`` records of 1,000 samples × 4 parameters (``lensd.demo.synthetic.record``)
  written by the daemon's ``BatchWriter`` into a fresh file, checkpointed; the file's size over
  ``N`` against the raw bytes of each fit's sample arrays (parameters, log likelihood, log prior,
  weight: 7 float64 columns × 1,000 = 56,000 bytes). The rest is the fit row, its facts, nodes and
  indexes.
- **ingest rate with fits already stored**: a fresh file, then a copy of each cached query database
  of 10^4, 10^5, 10^6 fits (``bench._dbcache``, the files the query benchmark reads). One
  connection with the writer's PRAGMAs commits ``WARM`` fits untimed (its page cache then holds
  what a running daemon's holds), then the clock runs over ``ADD`` more fits (1,000 samples each,
  planned by ``batchplan.plan_batch`` before the clock starts) committed in transactions of 32 (the
  daemon's batch size under load), and over the checkpoint that copies them into the file. That is
  the sqlite work a daemon's writer does per fit: B-tree inserts, the pages read from the OS, the
  WAL writes and the checkpoint (fits per CPU second, user + system; CPU because the machine is
  shared). Flat is the goal; a B-tree insert is O(log n), and an index larger than the page cache
  costs a page read and a page write per entry, so the target is a ratio (``RATE_TARGET``).
  Round 2 timed rolled-back transactions on a fresh connection instead: a cold cache, pages
  re-read after every rollback, no commit: it overstated the fall (0.10 x at 10^6).
- **daemon RSS**: a real daemon on that copy of the 10^6-fit database; 8 client processes submit
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
from bench._common import daemon, main, rate, times, verdict
from bench._dbcache import database
from bench.daemon_ingest import _client, _processes, _records

SECTION = "growth: bytes per fit, ingest as the database fills, daemon memory"
WARM = 640  # fits committed before the clock starts
ADD = 1280  # fits timed
BATCH = 32
RSS_FITS = 8000
RSS_ROUNDS = 4
RAW_SAMPLE_BYTES = 7 * 1000 * 8
# Targets (issue 18, point 5; docs/performance.md "Growth, third pass" says why these figures):
RATE_TARGET = 0.5  # ingest rate with 10^6 fits stored, against the empty database's
BYTES_TARGET = 1.25  # database bytes per fit, against the raw bytes of its samples
RSS_SLOPE_TARGET = 1.0  # daemon RSS growth, MB per 1,000 fits ingested after the first round


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


def _plans(first_key: int, seed: int, n: int) -> list[list[tuple[str, list[tuple[Any, ...]]]]]:
    """The rows of ``n`` new fits (keys from ``first_key``, ids of ``seed``: never in the file), a
    transaction of BATCH each, planned as the writer plans them."""
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import plan_batch
    from lensd.store.writeops import Upsert

    plans = []
    records = [validate_record(r) for r in _records(range(n), seed)]
    for start in range(0, n, BATCH):
        plan, _, _ = plan_batch([Upsert(r) for r in records[start:start + BATCH]], {}, first_key + start, time.time())
        plans.append(plan.statements)
    return plans


def _commit(conn: sqlite3.Connection, plans: list[list[tuple[str, list[tuple[Any, ...]]]]]) -> None:
    for statements in plans:
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in statements:
            conn.executemany(sql, rows)
        conn.execute("COMMIT")


def ingest_rate(db: Path, pragmas: tuple[str, ...] = (), seed: int = 99) -> tuple[float, float]:
    """Fits per CPU second a writer in steady state commits into ``db`` (which it changes: a copy),
    and the read syscalls a fit costs it.

    One connection with the writer's PRAGMAs (and ``pragmas`` after them) first commits WARM fits
    untimed, so that its page cache holds what a running daemon's would; then the clock runs over
    ADD more fits committed in transactions of BATCH and the checkpoint that copies them into the
    file (a daemon pays both). CPU of this process (user + system: writes to the WAL and the
    checkpoint's copies are system time), because the machine is shared.
    """
    from lensd.store import schema

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for pragma in (*schema.writer_pragmas("normal"), *pragmas):
            conn.execute(pragma)
        first = int(conn.execute("SELECT coalesce(max(fit_key), 0) + 1 FROM fits").fetchone()[0])
        warm, plans = _plans(first, seed, WARM), _plans(first + WARM, seed + 1, ADD)
        _commit(conn, warm)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reads = _read_calls()
        began = time.process_time()
        _commit(conn, plans)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        spent = time.process_time() - began
        return ADD / spent, (_read_calls() - reads) / ADD
    finally:
        conn.close()


def _read_calls() -> int:
    with open("/proc/self/io", encoding="ascii") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscr:"))


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rate_rows(options: Options, sizes: list[int]) -> tuple[list[Row], Path]:
    """The ingest rate on a fresh file and on a copy of each cached database; returns the rows and
    the copy of the largest, for the daemon's RSS to be measured on next."""
    from lensd.store.writer import prepare_database

    fresh = options.work / "fresh.sqlite"
    prepare_database(fresh, "normal")
    base, base_reads = ingest_rate(fresh)
    what = f"{ADD} fits committed in batches of {BATCH} after {WARM} untimed"
    rows = [Row(SECTION, f"ingest rate (per CPU s), empty database ({what}; {base_reads:.1f} reads a fit)",
                rate(base, "fits"), baseline="(the baseline)")]
    copy = options.work / "stored.sqlite"
    for size in sizes:
        path, _ = database(options.cache, size)
        shutil.copyfile(path, copy)
        found, reads = ingest_rate(copy)
        ratio = found / base
        target = f">= {RATE_TARGET}x empty: {verdict(ratio >= RATE_TARGET)}" if size == 10**6 else ""
        rows.append(Row(SECTION, f"ingest rate (per CPU s) with 10^{len(str(size)) - 1} fits stored "
                                 f"({reads:.1f} reads a fit)",
                        rate(found, "fits"), rate(base, "fits"), f"{times(ratio)} empty", target=target))
    return rows, copy


def run(options: Options) -> list[Row]:
    n = 300 if options.quick else 2000
    per_fit = _bytes_per_fit(options.work / "bytes.sqlite", n)
    bytes_ratio = per_fit / RAW_SAMPLE_BYTES
    rows = [Row(SECTION, f"database bytes per fit, {n} fits of 1,000 samples x 4 parameters",
                f"{per_fit / 1000:,.1f} kB", f"raw samples: {RAW_SAMPLE_BYTES / 1000:,.1f} kB",
                f"{times(bytes_ratio)} raw", target=f"<= {BYTES_TARGET}x raw: {verdict(bytes_ratio <= BYTES_TARGET)}")]
    sizes = [10**4, 10**5] if options.quick else [10**4, 10**5, 10**6]
    rate_rows, copy = _rate_rows(options, sizes)
    rows += rate_rows
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
                    ratio=f"{slope:+.1f} MB per 1,000 fits after the first round",
                    target="" if options.quick else  # 800 fits: the sqlite caches are still filling
                    f"<= {RSS_SLOPE_TARGET:.0f} MB per 1,000 fits: {verdict(slope <= RSS_SLOPE_TARGET)}"))
    return rows


if __name__ == "__main__":
    main(run, __doc__)
