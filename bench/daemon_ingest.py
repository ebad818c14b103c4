"""Daemon ingest: K = 1, 8, 64 client processes submit finished records (1,000 samples × 4
parameters each) to one real daemon at once, against sqlite itself inserting the same rows.

    .venv/bin/python -m bench.daemon_ingest [--quick]

- **lensd**: a real ``lensd start --foreground`` (default ``--durability full``: every commit is
  fsynced), and K forked processes, each with its share of the records already made, connected
  with ``lensd.connect()`` and released together; each ``await client.submit(record)`` returns once
  the daemon committed it (one request in flight per process, as a job has). fits/s is records
  over the wall time from release to the last acknowledgement; MB/s counts the msgpack bytes sent.
  Each line also gives the CPU time per fit of the daemon process (/proc/<pid>/stat: its event
  loop and its writer thread) and of the client processes (their ``time.process_time()`` while
  submitting): on a 2-core machine the clients share the cores with the daemon.
- **baseline, same run**: one process inserting exactly the rows the writer would write for those
  records (``lensd.store.batchplan.plan_batch``, made before the clock starts) with plain ``sqlite3``
  ``executemany`` in one transaction, into a fresh database with the same PRAGMAs: the fastest of
  ``REPEATS`` (``_fastest``).
- **decomposition**: the daemon's writer alone (``BatchWriter.apply`` of the validated records in
  one batch, in-process, the fastest of ``REPEATS`` too), which separates what sqlite costs from
  what the socket, decoding and validation cost.
- **stages and the two-core bound**: the CPU a fit of each step the daemon path cannot skip,
  timed in-process on the same records with no socket (the client's ``encode_frame``, the daemon's
  ``decode_body``, ``validate_record``, ``prepare``, and the writer's batches of 32, about the
  daemon's mean batch at K = 64); their sum over two cores is the fastest any K could go on this
  machine if both cores did nothing else and no process waited on another. The bound is printed
  against the target so that a missed target reads as the machine's or the design's, not a guess
  (docs/performance.md, "Round 2, sixth pass"). Each K line gives the same bound for the CPU the
  run really spent (daemon and clients): what perfect use of both cores would make of that work.
- **contrast**: K processes committing the same records straight to one sqlite file (WAL, Python's
  default 5 s busy timeout, one transaction per fit, no retry: what PyAutoFit's ``session=`` does);
  lock errors counted, fits lost = those whose commit failed.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import Options, Row
from bench._common import cpu_seconds, daemon, main, rate, times, verdict

SECTION = "daemon ingest (1,000 samples/fit)"
N_SAMPLES = 1000
CLIENTS = (1, 8, 64)
TARGET = 0.5  # fits/s at K = 64 over raw sqlite executemany


def _records(indices: range, seed: int) -> list[dict[str, Any]]:
    from lensd.demo.synthetic import record

    return [record(i, N_SAMPLES, seed) for i in indices]


def _client(socket: str, indices: range, seed: int, go: Any, out: Any) -> None:
    """One job process: make its records, connect, wait for the start, submit them one by one."""
    import anyio

    import lensd
    from lensd.wire import codec

    records = _records(indices, seed)
    sent = sum(len(codec.pack(r)) for r in records)

    async def submit_all() -> tuple[float, float, float]:
        async with lensd.connect(socket) as client:
            await anyio.to_thread.run_sync(go.wait)
            began, cpu = time.perf_counter(), time.process_time()
            for record in records:
                await client.submit(record)
            return began, time.perf_counter(), time.process_time() - cpu

    began, ended, cpu = anyio.run(submit_all, backend="asyncio")
    out.put((began, ended, len(records), sent, cpu))


def _direct(db: str, indices: range, seed: int, go: Any, out: Any) -> None:
    """The contrast: a process that writes its fits straight into the shared file, one commit each."""
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import plan_batch
    from lensd.store.writeops import Upsert

    records = [validate_record(r) for r in _records(indices, seed)]
    conn = sqlite3.connect(db, isolation_level=None)  # Python's default 5 s busy timeout
    go.wait()
    stored = errors = other = 0
    began = time.perf_counter()
    for record in records:
        try:
            conn.execute("BEGIN")
            key = conn.execute("SELECT coalesce(max(fit_key), 0) + 1 FROM fits").fetchone()[0]
            plan, _, _ = plan_batch([Upsert(record)], {}, key, time.time())
            for sql, rows in plan.statements:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
            stored += 1
        except sqlite3.OperationalError as exc:
            text = str(exc)
            errors += "locked" in text or "busy" in text
            other += not ("locked" in text or "busy" in text)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    out.put((began, time.perf_counter(), stored, errors, other))
    conn.close()


def _spread(n: int, k: int) -> list[range]:
    step, extra = divmod(n, k)
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + step + (i < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot: /proc/stat's first line, where idle
    and iowait are the 4th and 5th numbers."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _processes(target: Any, k: int, n: int, first: Any, seed: int, timeout: float,
               busy: list[float] | None = None) -> list[tuple[Any, ...]]:
    """Fork ``k`` workers over ``n`` records, release them together, collect what each reports.

    ``busy``, when given, gets the share of the machine's CPU time that was busy from the release
    to the last report: under 1.0, the run waited on something other than the cores."""
    context = multiprocessing.get_context("fork")
    go, out = context.Event(), context.Queue()
    workers = [context.Process(target=target, args=(first, part, seed, go, out), daemon=True)
               for part in _spread(n, k)]
    for worker in workers:
        worker.start()
    time.sleep(min(30.0, 1.0 + 0.15 * k))  # let every process make its records and connect
    start = _machine_ticks()
    go.set()
    results = []
    deadline = time.monotonic() + timeout
    try:
        for _ in workers:
            results.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
        end = _machine_ticks()
        if busy is not None:
            busy.append((end[0] - start[0]) / max(1, end[1] - start[1]))
    finally:
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
    return results


def raw_sqlite(db: Path, records: list[dict[str, Any]]) -> float:
    """Seconds for plain sqlite to insert the writer's rows for ``records`` in one transaction."""
    from lensd.domain.records import validate_record
    from lensd.store import schema
    from lensd.store.batchplan import plan_batch
    from lensd.store.writeops import Upsert
    from lensd.store.writer import prepare_database

    prepare_database(db)
    plan, _, _ = plan_batch([Upsert(validate_record(r)) for r in records], {}, 1, time.time())
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in schema.writer_pragmas("full"):
        conn.execute(pragma)
    began = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for sql, rows in plan.statements:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed


def writer_alone(db: Path, records: list[dict[str, Any]]) -> float:
    """Seconds for the daemon's BatchWriter to apply the validated records as one batch."""
    import anyio

    from lensd.domain.records import validate_record
    from lensd.store.writeops import Upsert
    from lensd.store.writer import BatchWriter

    ops = [Upsert(validate_record(r)) for r in records]

    async def apply() -> float:
        writer = await BatchWriter.open(db)
        try:
            began = time.perf_counter()
            await writer.apply(ops)
            return time.perf_counter() - began
        finally:
            await writer.close()

    return float(anyio.run(apply, backend="asyncio"))


def _cpu_per_fit(step: Callable[[], object], n: int) -> float:
    """Least CPU seconds a fit of ``step()`` (all ``n`` records) over ``REPEATS`` runs."""
    best = float("inf")
    for _ in range(REPEATS):
        began = time.process_time()
        step()
        best = min(best, time.process_time() - began)
    return best / n


def _writer_batches(db: Path, ops: list[Any], prepared: list[Any], size: int) -> float:
    """CPU seconds for the BatchWriter to apply ``ops`` in batches of ``size`` (every commit fsynced)."""
    import anyio

    from lensd.store.writer import BatchWriter

    async def apply() -> float:
        writer = await BatchWriter.open(db)
        try:
            began = time.process_time()
            for start in range(0, len(ops), size):
                await writer.apply(ops[start:start + size], prepared[start:start + size])
            return time.process_time() - began
        finally:
            await writer.close()

    return float(anyio.run(apply, backend="asyncio"))


BATCH = 32  # about the daemon's mean batch at K = 64 (``lensd status``, docs/performance.md)


def stages(stem: Path, records: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds a fit of each step of the daemon path, in-process and without a socket."""
    from lensd.domain.records import validate_record
    from lensd.store.batchplan import prepare
    from lensd.store.writeops import Upsert
    from lensd.wire import protocol

    n = len(records)
    frames = [protocol.encode_frame(protocol.request("submit", i, record=r)) for i, r in enumerate(records)]
    bodies = [frame[protocol.HEADER.size:] for frame in frames]
    decoded = [protocol.decode_body(body)["record"] for body in bodies]
    ops = [Upsert(validate_record(r)) for r in decoded]
    prepared = [prepare(op) for op in ops]
    timings = {
        "client encode_frame": _cpu_per_fit(
            lambda: [protocol.encode_frame(protocol.request("submit", i, record=r)) for i, r in enumerate(records)], n),
        "decode_body": _cpu_per_fit(lambda: [protocol.decode_body(body) for body in bodies], n),
        "validate_record": _cpu_per_fit(lambda: [validate_record(r) for r in decoded], n),
        "prepare": _cpu_per_fit(lambda: [prepare(op) for op in ops], n),
    }

    def writer(db: Path, _: list[dict[str, Any]]) -> float:
        return _writer_batches(db, ops, prepared, BATCH)

    timings[f"writer, batches of {BATCH}"] = _fastest(writer, stem, records) / n
    return timings


REPEATS = 3  # the baseline and the in-process writer: the fastest of this many fresh databases


def _fastest(measure: Callable[[Path, list[dict[str, Any]]], float], stem: Path,
             records: list[dict[str, Any]]) -> float:
    """The least of ``REPEATS`` timings of ``measure``, each into a fresh database.

    The first insert of a process ran 1.5 x slower than the ones after it (0.62 against ~0.40 ms a
    fit, 2026-12-03: the file system's and sqlite's first allocations): timed once, the baseline
    was slow and every ratio against it flattered lensd. The fastest of three is the baseline's
    best, so a ratio against it is never better than lensd earned.
    """
    best = float("inf")
    for attempt in range(REPEATS):
        db = stem.with_name(f"{stem.name}{attempt}.sqlite")
        best = min(best, measure(db, records))
        for leftover in db.parent.glob(db.name + "*"):
            leftover.unlink()
    return best


def run(options: Options) -> list[Row]:
    from lensd.wire import codec

    n = 960 if options.quick else 3200
    records = _records(range(n), 0)
    megabytes = sum(len(codec.pack(r)) for r in records) / 1e6
    raw = n / _fastest(raw_sqlite, options.work / "raw", records)
    alone = n / _fastest(writer_alone, options.work / "writer", records)
    steps = stages(options.work / "stages", records)
    del records
    rows = [Row(SECTION, f"raw sqlite executemany, {n} fits in 1 transaction ({1000 / raw:.2f} ms a fit, 1 core)",
                rate(raw, "fits"),
                baseline="(the baseline)"),
            Row(SECTION, "BatchWriter.apply in-process, 1 batch", rate(alone, "fits"), rate(raw, "fits"),
                f"{times(alone / raw)} raw")]
    floor = sum(steps.values())
    bound = 2 / floor  # fits/s with both cores busy on these steps alone
    rows.append(Row(SECTION, "stages, CPU a fit in-process, no socket: " +
                    ", ".join(f"{name} {seconds * 1000:.3f} ms" for name, seconds in steps.items()),
                    f"{floor * 1000:.2f} ms a fit"))
    rows.append(Row(SECTION, "two-core bound: 2 cores / the stages' CPU (no socket, no waiting)",
                    rate(bound, "fits"), rate(raw, "fits"), f"{times(bound / raw)} raw",
                    target=f"bound >= {TARGET}x raw: {'yes' if bound / raw >= TARGET else 'no'}"))
    for k in CLIENTS:
        db, socket = options.work / f"d{k}.sqlite", options.work / f"d{k}.s"
        with daemon(db, socket) as process:
            before, busy = cpu_seconds(process.pid), list[float]()
            reports = _processes(_client, k, n, str(socket), 0, timeout=600, busy=busy)
            daemon_cpu = cpu_seconds(process.pid) - before  # includes accepting the K connections
        began = min(r[0] for r in reports)
        elapsed = max(r[1] for r in reports) - began
        fits = sum(r[2] for r in reports)
        per_second = fits / elapsed
        client_cpu = sum(r[4] for r in reports)
        ceiling = 2 * fits / (daemon_cpu + client_cpu)  # both cores busy on this run's work, no waiting
        cpu = (f"; CPU/fit: daemon {daemon_cpu / fits * 1000:.2f} ms, "
               f"clients {client_cpu / fits * 1000:.2f} ms; 2 cores on that: <= {times(ceiling / raw)} raw; "
               f"machine busy {busy[0]:.0%}")
        target = f">= {TARGET}x raw: {verdict(per_second / raw >= TARGET)}" if k == CLIENTS[-1] else ""
        rows.append(Row(SECTION, f"K={k} client processes, {fits} fits, {megabytes / elapsed:,.0f} MB/s{cpu}",
                        rate(per_second, "fits"), rate(raw, "fits"), f"{times(per_second / raw)} raw", target=target))
    for k in CLIENTS[1:]:
        db = options.work / f"direct{k}.sqlite"
        from lensd.store.writer import prepare_database

        prepare_database(db)
        reports = _processes(_direct, k, n, str(db), 0, timeout=300)
        elapsed = max(r[1] for r in reports) - min(r[0] for r in reports)
        stored, errors, other = (sum(r[i] for r in reports) for i in (2, 3, 4))
        rows.append(Row(SECTION, f"contrast: K={k} processes committing to one file, 1 fit/commit",
                        rate(stored / elapsed, "fits"), rate(raw, "fits"),
                        f"{errors} lock errors, {n - stored} of {n} fits lost"
                        + (f", {other} other errors" if other else "")))
        os.remove(db)
    return rows


if __name__ == "__main__":
    main(run, __doc__)
