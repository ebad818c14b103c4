"""The cost of ``--backup-every``: a daemon backing up a large database while clients write to it.

    .venv/bin/python -m bench.backup [--quick]            # a 256 MB database (128 MB with --quick)
    LENSD_BENCH_BACKUP_GB=5 nice -n 10 .venv/bin/python -m bench.backup   # the 5 GB run (opt-in: minutes)

- A lensd database of the asked size is built first, quickly: fits with large samples (100,000
  samples x 4 parameters, ~5.6 MB of payload each) written by ``BatchWriter`` in this process.
- **lensd**: a real ``lensd start --foreground`` on it with ``--backup-every`` set so that its first
  backup starts ``LEAD`` seconds after start. ``CLIENTS`` client processes submit fits (1,000
  samples each, one request in flight each, as jobs do) from start until that backup is done. The
  row gives the backup's wall time (from ``lensd status``) and its throughput.
- **ingest during the backup vs without** (same run, same daemon, same clients): the clients'
  acknowledgements per second while the backup ran, against the seconds before it started.
- **baseline, same run**: ``shutil.copyfile`` of the same database file while nothing writes
  (what a plain copy of the bytes costs on this disk; a copy that is not consistent).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench._common import daemon, main, rate, times

SECTION = "backup of a live database (--backup-every)"
CLIENTS = 2
LEAD = 20.0  # seconds of ingest measured before the first backup starts
BIG_SAMPLES = 100_000


def _build(db: Path, target_bytes: int) -> int:
    """A lensd database of about ``target_bytes``; returns the number of fits."""
    import anyio

    from lensd.demo.synthetic import record
    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    async def fill() -> int:
        writer = await BatchWriter.open(db, "normal")
        count = 0
        wanted = target_bytes // (BIG_SAMPLES * 7 * 8)  # 4 parameters + 3 columns of float64 a sample
        try:
            while count < wanted:
                batch = [Upsert(validate_record(record(count + i, BIG_SAMPLES, seed=7))) for i in range(8)]
                await writer.apply(batch)
                count += len(batch)
        finally:
            await writer.close()
        return count

    return anyio.run(fill, backend="asyncio")


def _flush(db: Path) -> None:
    for path in (db, Path(f"{db}-wal")):
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _client(socket: str, first: int, stop: Any, out: Any) -> None:
    """One job: submit fits one at a time until told to stop; report every acknowledgement's time."""
    import lensd
    from lensd.demo.synthetic import record

    acked: list[float] = []
    with lensd.connect_sync(socket=socket) as client:
        i = first
        while not stop.is_set():
            client.submit(record(i, 1000, seed=11))
            acked.append(time.time())
            i += CLIENTS
    out.put(acked)


def _status(socket: Path) -> dict[str, Any]:
    from lensd.cli.render import daemon_status

    return dict(daemon_status(socket)["backup"])


def run(options: Options) -> list[Row]:
    gb = float(os.environ.get("LENSD_BENCH_BACKUP_GB") or (0.125 if options.quick else 0.25))
    db = options.work / "big.sqlite"
    began = time.perf_counter()
    fits = _build(db, int(gb * 2**30))
    _flush(db)  # its dirty pages written out first: neither measure below should pay for the build
    built = time.perf_counter() - began
    size = db.stat().st_size
    copy = options.work / "copy.sqlite"
    began = time.perf_counter()
    shutil.copyfile(db, copy)
    fd = os.open(copy, os.O_RDONLY)
    os.fsync(fd)  # the backup is fsynced too
    os.close(fd)
    copied = time.perf_counter() - began
    copy.unlink()
    folder = options.work / "backups"
    context = multiprocessing.get_context("fork")
    stop, out = context.Event(), context.Queue()
    with daemon(db, options.work / "b.sock", "--backup-every", str(LEAD / 60), "--backup-to", str(folder),
                "--contact", str(options.work / "contact.json")) as d:
        started = time.time()
        clients = [context.Process(target=_client, args=(str(d.socket), k, stop, out)) for k in range(CLIENTS)]
        for process in clients:
            process.start()
        deadline = time.monotonic() + LEAD + 3600
        while not _status(d.socket).get("count"):
            if time.monotonic() > deadline:
                raise RuntimeError("the backup did not finish within an hour")
            time.sleep(0.5)  # polling the daemon's status: a real state, in a benchmark
        stop.set()
        acked = sorted(t for _ in clients for t in out.get(timeout=120))
        for process in clients:
            process.join(60)
        done = _status(d.socket)
    backup_began, backup_s = float(done["last_at"]), float(done["last_seconds"])
    quiet_from = started + 3.0  # past the clients' start-up
    before = sum(quiet_from <= t < backup_began for t in acked) / max(backup_began - quiet_from, 1e-9)
    during = sum(backup_began <= t < backup_began + backup_s for t in acked) / max(backup_s, 1e-9)
    mb = size / 2**20
    return [
        Row(SECTION, f"database built: {mb:,.0f} MiB, {fits} fits of {BIG_SAMPLES:,} samples",
            f"{built:.0f} s"),
        Row(SECTION, "backup wall time (online, writers on)", f"{backup_s:.1f} s ({mb / backup_s:,.0f} MiB/s)",
            f"cp + fsync idle {copied:.1f} s", f"{times(backup_s / copied)} cp"),
        Row(SECTION, f"ingest during the backup ({CLIENTS} clients, 1,000 samples/fit)", rate(during, "fits"),
            f"before it {rate(before, 'fits')}", f"{during / before:.2f}x" if before else ""),
    ]


if __name__ == "__main__":
    main(run, __doc__)
