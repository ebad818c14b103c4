"""PostgreSQL's writer beside sqlite's, in the same run: how a group commit travels, and the daemon.

    .venv/bin/python -m bench.pg_writer [--quick]

- **Server**: the tests' throw-away cluster (``tests/pg_server.py``: Debian's binaries, a temp dir,
  a Unix socket) with ``fsync`` and ``full_page_writes`` turned back on (the tests turn them off),
  so a PostgreSQL COMMIT waits for its WAL flush as a sqlite ``synchronous=FULL`` COMMIT waits for
  its fsync; every other setting is the server's default but ``shared_buffers`` (32 MB). Both
  databases sit on the same scratch file system.
- **Writer alone**: batches of 64 whole records (1,000 samples × 4 parameters each, what a K = 64
  group commit holds), validated and ``prepare``d before the clock starts, applied one batch after
  the other by ``BatchWriter`` (sqlite, durability full: the baseline) and by ``PgBatchWriter`` in
  each way its rows can travel (``pgwriter.MODES``): ``executemany`` per statement, the whole batch
  in one ``pipeline``, ``COPY`` for the insert-only tables. fits/s over the wall time.
- **Daemon ingest at K = 64**: 64 forked client processes submitting to a real ``lensd start``
  (``bench.daemon_ingest``'s clients), on a sqlite file and on a PostgreSQL database; and the same
  on PostgreSQL with two daemons sharing the database, 32 clients each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench._common import ROOT, daemon, main, rate, times
from bench.daemon_ingest import N_SAMPLES, _client, _processes, _records

SECTION = f"PostgreSQL writer ({N_SAMPLES:,} samples/fit)"
BATCH = 64


def _pg_server() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pg_server
    finally:
        sys.path.pop(0)
    return pg_server


# fsync and full_page_writes back on (the tests turn them off), as a production server has them.
DURABLE = {"fsync": "on", "full_page_writes": "on"}


def _settings(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level",
                 "shared_buffers", "max_wal_size")
        shown = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}" for name in names]  # type: ignore[index]
    return ", ".join(shown)


def writer_rate(make: Any, batches: list[list[Any]], prepared: list[list[Any]]) -> float:
    """fits/s of a writer applying ``batches`` one after the other."""
    import anyio

    async def apply() -> float:
        writer = await make()
        try:
            began = time.perf_counter()
            for ops, ready in zip(batches, prepared, strict=True):
                await writer.apply(ops, ready)
            return time.perf_counter() - began
        finally:
            await writer.close()

    return sum(len(b) for b in batches) / float(anyio.run(apply, backend="asyncio"))


def _mean_batch(socket: Path) -> float:
    from lensd.client.blocking import BlockingClient

    with BlockingClient(socket) as client:
        return float(client.request("status")["status"]["mean_batch"])


def daemon_rate(dbs: list[Path | str], work: Path, n: int) -> tuple[float, float]:
    """fits/s of K = 64 client processes split over one daemon per entry of ``dbs``, and the
    daemons' mean batch (writes a commit)."""
    import threading
    from contextlib import ExitStack

    with ExitStack() as stack:
        sockets = []
        for index, db in enumerate(dbs):
            socket = work / f"pw{index}.s"
            stack.enter_context(daemon(db, socket, log=work / f"pw{index}.log"))
            sockets.append(socket)
        share = 64 // len(dbs)
        reports: list[tuple[Any, ...]] = []

        def run(socket: Path, first: int) -> None:
            reports.extend(_processes(_client, share, n // len(dbs), str(socket), first, timeout=600))

        threads = [threading.Thread(target=run, args=(s, i)) for i, s in enumerate(sockets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(900)
        batch = sum(_mean_batch(socket) for socket in sockets) / len(sockets)
    began = min(r[0] for r in reports)
    return float(sum(r[2] for r in reports) / (max(r[1] for r in reports) - began)), batch


def run(options: Options) -> list[Row]:
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import prepare
    from lensd.store.pgwriter import MODES, PgBatchWriter
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    n = 640 if options.quick else 1920
    ops = [Upsert(validate_record(r)) for r in _records(range(n), 0)]
    batches = [ops[i:i + BATCH] for i in range(0, n, BATCH)]
    prepared = [[prepare(op) for op in batch] for batch in batches]
    server = _pg_server().start_server(DURABLE)
    try:
        facts = _settings(server.url())
        sqlite_rate = writer_rate(lambda: BatchWriter.open(options.work / "w.sqlite", "full"), batches, prepared)
        rows = [Row(SECTION, f"server: {facts}", "", ""),
                Row(SECTION, f"sqlite BatchWriter, {n} fits in batches of {BATCH} (durability full)",
                    rate(sqlite_rate, "fits"), "(the baseline)")]
        best = ("", 0.0)
        for mode in MODES:
            url = server.url(server.create_database())

            async def make(url: str = url, mode: str = mode) -> PgBatchWriter:
                return await PgBatchWriter.open(url, "full", mode)

            fits = writer_rate(make, batches, prepared)
            best = max(best, (mode, fits), key=lambda pair: pair[1])
            rows.append(Row(SECTION, f"PgBatchWriter, {mode}", rate(fits, "fits"), rate(sqlite_rate, "fits"),
                            f"{times(fits / sqlite_rate)} sqlite"))
        rows.append(Row(SECTION, "fastest way for a group commit", best[0], ""))
        del ops, batches, prepared
        n_daemon = 960 if options.quick else 3200
        on_sqlite, batch = daemon_rate([options.work / "d.sqlite"], options.work, n_daemon)
        rows.append(Row(SECTION, f"daemon, K=64 client processes, {n_daemon} fits, sqlite (mean batch {batch:.0f})",
                        rate(on_sqlite, "fits"), "(the baseline)"))
        url = server.url(server.create_database())
        one, batch = daemon_rate([url], options.work, n_daemon)
        rows.append(Row(SECTION, f"daemon, K=64, PostgreSQL (mean batch {batch:.0f})", rate(one, "fits"),
                        rate(on_sqlite, "fits"), f"{times(one / on_sqlite)} sqlite"))
        url = server.url(server.create_database())
        two, batch = daemon_rate([url, url], options.work, n_daemon)
        rows.append(Row(SECTION, f"two daemons on one PostgreSQL database, 32 clients each (mean batch {batch:.0f})",
                        rate(two, "fits"), rate(on_sqlite, "fits"), f"{times(two / on_sqlite)} sqlite"))
        return rows
    finally:
        server.stop()


if __name__ == "__main__":
    main(run, __doc__)
