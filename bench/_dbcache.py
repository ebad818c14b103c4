"""Databases of 10^3 to 10^6 synthetic fits, built fast and kept in ``bench/.cache`` between runs.

A database is built with the writer's own code path at scale: records from
``lensd.demo.synthetic.record``, validated, planned by ``lensd.store.batchplan.plan_batch`` into the exact rows
the daemon writes, and inserted with ``executemany`` in large transactions (durability normal),
each followed by the writer's own upkeep of the count blocks (``lensd.store.blocks``).
Making and planning the records is most of the work, so it runs in worker processes while this
process inserts. A file is keyed on the schema (its version and the text of its DDL and
migrations), the generator and its size, so a schema change rebuilds it and nothing else does.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 2000
BUILDER = 1  # bump when the generated data changes


def cache_key(n: int, n_samples: int) -> str:
    from lensd.store import blocks, schema

    text = "\n".join([*schema.create_statements(), *map(str, schema.MIGRATIONS), str(BUILDER), str(blocks.BLOCK)])
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"fits{n}-samples{n_samples}-v{schema.SCHEMA_VERSION}-{digest}"


def _plan(task: tuple[int, int, int]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Rows of fits ``start..stop`` (fit keys from ``start + 1``), as the writer plans them."""
    from lensd.demo.synthetic import record
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import plan_batch
    from lensd.store.writeops import Upsert

    start, stop, n_samples = task
    ops = [Upsert(validate_record(record(i, n_samples))) for i in range(start, stop)]
    plan, _, _ = plan_batch(ops, {}, start + 1, time.time())
    return plan.statements


def _plans(n: int, n_samples: int) -> Iterator[list[tuple[str, list[tuple[Any, ...]]]]]:
    tasks = [(start, min(n, start + CHUNK), n_samples) for start in range(0, n, CHUNK)]
    if n <= CHUNK:
        yield from map(_plan, tasks)
        return
    workers = max(1, (os.cpu_count() or 1))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_plan, tasks)


def build(path: Path, n: int, n_samples: int) -> float:
    """Write ``n`` fits into a new database at ``path``; returns the seconds it took."""
    from lensd.store import blocks, schema
    from lensd.store.writer import prepare_database

    began = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    prepare_database(path, "normal")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in schema.writer_pragmas("normal"):
            conn.execute(pragma)
        conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the build touches every index
        first = 1
        for statements in _plans(n, n_samples):
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                conn.executemany(sql, rows)
            last = int(conn.execute("SELECT max(fit_key) FROM fits").fetchone()[0])
            blocks.maintain(conn, {}, blocks.entries(conn, range(first, last + 1)))  # as the writer does
            first = last + 1
            conn.execute("COMMIT")
        conn.execute("PRAGMA optimize")  # what the writer runs when it closes
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - began


def database(cache: Path, n: int, n_samples: int = 4) -> tuple[Path, float | None]:
    """The cached database of ``n`` fits, built if missing; returns it and its build time (None if
    it was already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{cache_key(n, n_samples)}.sqlite"
    if path.exists():
        return path, None
    for stale in cache.glob(f"fits{n}-samples{n_samples}-*.sqlite*"):
        stale.unlink()  # an older schema's file of the same size
    partial = path.with_suffix(".partial")
    seconds = build(partial, n, n_samples)
    os.replace(partial, path)
    return path, seconds
