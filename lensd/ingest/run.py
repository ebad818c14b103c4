"""``lensd ingest``: PyAutoFit output folders into a database, through its one writer.

If no daemon holds the database, this process takes the writer's lock and writes batches itself
(the same ``BatchWriter`` the daemon uses). If a daemon holds it, the records go to that daemon
over its socket: there is never a second writer. Either way a folder whose signature (names,
sizes, mtimes of the files read) matches what is stored is skipped without being read, so a second
ingest of the same tree costs a directory walk.

Reading a folder is most of the cost (samples.csv's numbers above all), so from
``readers.PARALLEL_FROM`` folders on, forked reader processes (one per CPU, ``lensd.ingest.readers``)
read them and hand each record back as msgpack over a pipe; this process validates and writes, in
folder order (or, through a daemon, sends the records as read: the daemon validates them). The
readers are forked before anything starts a thread.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lensd.client.address import Target, TargetLike
from lensd.domain.records import Record, validate_record
from lensd.errors import AlreadyRunning, DaemonUnavailable, LensdError, innermost
from lensd.ingest import pyautofit
from lensd.ingest.pyautofit import fit_records
from lensd.ingest.readers import Readers, start_readers
from lensd.settings import Database
from lensd.store import batchplan, writerlock
from lensd.store.sqlite_errors import readonly_uri
from lensd.store.writeops import Upsert

if TYPE_CHECKING:  # anyio (and asyncio) are imported after the readers fork: they do not need them
    from anyio.streams.memory import MemoryObjectReceiveStream

BATCH = 256
FIRST_BATCH = 32  # the direct writer's smallest batch: see ``batch_size``
DAEMON_CONNECTIONS = 4
T = TypeVar("T")


@dataclass
class IngestReport:
    """What one ``lensd ingest`` did; ``skipped`` are folders not ingested because an earlier one
    (in the order the roots were given) holds the same fit id: the first one is kept."""

    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[pyautofit.FolderFailure] = field(default_factory=list)
    skipped: list[pyautofit.FolderFailure] = field(default_factory=list)
    via: str = "direct"
    claimed: dict[str, str] = field(default_factory=dict, repr=False)  # fit id -> its folder in this run
    stored_ids: dict[str, str] = field(default_factory=dict, repr=False)  # stored folder -> its fit id

    def claim(self, fit_id: str, source: str) -> bool:
        """Whether ``source`` is the first folder of this run with ``fit_id`` (else it is skipped).

        Two roots holding the same fit id (a copied output tree, say) would otherwise both be
        written, the later replacing the earlier, and flip back on every later ingest.
        """
        first = self.claimed.setdefault(fit_id, source)
        if first == source:
            return True
        self.skipped.append(pyautofit.FolderFailure(
            source, f"same fit id {fit_id!r} as {first}, given first, which is kept"))
        return False


SIGNATURES_SQL = "SELECT source, source_sig, id FROM fits WHERE source IS NOT NULL"


def stored_folders(db: Database) -> dict[str, tuple[str, str]]:
    """Folder path → (signature, fit id) of every ingested folder already in ``db`` (none when unreadable)."""
    if isinstance(db, str):
        from lensd.store import pgstore

        try:
            conn = pgstore.connect(db, read_only=True)
        except LensdError:
            return {}
        try:
            rows = conn.execute(SIGNATURES_SQL).fetchall() if pgstore.read_version(conn) else []
        except (LensdError, pgstore._psycopg().Error):
            rows = []
        finally:
            conn.close()
        return {str(source): (str(sig), str(fit_id)) for source, sig, fit_id in rows if sig}
    if not db.exists():
        return {}
    try:
        conn_ = sqlite3.connect(readonly_uri(db), uri=True)
        try:
            rows = conn_.execute(SIGNATURES_SQL).fetchall()
        finally:
            conn_.close()
    except sqlite3.Error:
        return {}
    return {str(source): (str(sig), str(fit_id)) for source, sig, fit_id in rows if sig}


def stored_signatures(db: Database) -> dict[str, str]:
    """Folder path → signature of every ingested folder already in ``db`` (none when unreadable)."""
    return {source: sig for source, (sig, _) in stored_folders(db).items()}


def _load(folder: Path, root: Path, known: dict[str, str], cache: dict[Path, Path | None]) -> tuple[str, Any]:
    """One discovered folder: ("unchanged", source), ("read", its fit dict) or ("failed", reason).

    ``known``: the stored signature of each source; ``cache``: the nearest fit above each folder,
    kept by the caller for the whole scan.
    """
    source = str(folder.resolve())
    try:
        stored = known.get(source)  # a folder never ingested needs no signature here: the read takes it
        if stored is not None and stored == pyautofit.folder_signature(folder):
            return "unchanged", source
        return "read", pyautofit.read_in_scan(folder, root, cache, source)
    except LensdError as exc:
        return "failed", pyautofit.FolderFailure(source, str(exc))
    except OSError as exc:
        return "failed", pyautofit.FolderFailure(source, f"cannot read: {exc}")
    except Exception as exc:  # one odd folder must not end an ingest of thousands (as ``scan``)
        return "failed", pyautofit.FolderFailure(source, f"unexpected {type(exc).__name__}: {exc}")


def validate_fit(data: dict[str, Any]) -> list[Record]:
    """``fit_records`` of a read fit, each validated: what a writer in this process stores."""
    return [validate_record(item) for item in fit_records(data)]


def _fit_dicts(kind: str, value: Any, report: IngestReport) -> list[dict[str, Any]]:
    """The record dicts of one loaded folder; [] when it was unchanged or failed (reported)."""
    if kind == "unchanged":
        fit_id = report.stored_ids.get(value)
        if fit_id is None or report.claim(fit_id, value):
            report.unchanged.append(value)
        return []
    if kind == "failed":
        report.failed.append(value)
        return []
    fits = fit_records(value)
    if fits and not report.claim(str(fits[0].get("id")), str(fits[0].get("source"))):
        return []
    return fits


def _load_ready(folder: Path, root: Path, known: dict[str, str],
                cache: dict[Path, Path | None]) -> tuple[str, Any]:
    """``_load`` for the direct writer: a fit read is also validated and planned here (in a reader
    process, when there are some), so the writing process only plans keys and writes.

    ("ready", one ``_ready`` list a record), or ("invalid", [fit id, source, reason]): the writing
    process claims the id before it reports the failure, as it would for a fit it validates itself.
    """
    kind, value = _load(folder, root, known, cache)
    if kind != "read":
        return kind, value
    fit_id, source = str(value.get("id")), str(value.get("source"))
    try:
        return "ready", [_ready(record) for record in validate_fit(value)]
    except LensdError as exc:
        return "invalid", [fit_id, source, str(exc)]


def _ready(record: Record) -> list[Any]:
    """A validated record as what writing it needs (msgpack values: it crosses a pipe)."""
    prepared = batchplan.prepare(Upsert(record))
    assert prepared is not None
    return [record.id, record.status, record.source, record.source_sig, record.completed_at,
            record.created_at, prepared.columns, list(prepared.facts.items()), prepared.nodes,
            prepared.payloads]


def _records(kind: str, value: Any, report: IngestReport) -> list[tuple[Record, batchplan.Prepared]]:
    """The records of one folder ``_load_ready`` loaded, each with its rows (for the direct writer).

    The record keeps what planning a batch reads (id, status, source, times); its rows were
    worked out from the whole validated record where it was read.
    """
    if kind == "invalid":
        fit_id, source, reason = value
        if report.claim(fit_id, source):
            report.failed.append(pyautofit.FolderFailure(source, reason))
        return []
    if kind != "ready":
        _fit_dicts(kind, value, report)  # unchanged or failed: reported
        return []
    if not value or not report.claim(value[0][0], value[0][2]):
        return []
    return [(Record(id=fit_id, status=status, source=source, source_sig=sig, completed_at=completed,
                    created_at=created),
             batchplan.Prepared(columns, dict(facts), nodes, payloads))
            for fit_id, status, source, sig, completed, created, columns, facts, nodes, payloads in value]


def batch_size(done: int, total: int) -> int:
    """Folders in the next batch, ``done`` of ``total`` read: ``FIRST_BATCH`` doubling up to ``BATCH``,
    then halving again towards the end.

    The direct writer writes a batch while the readers read the next. Whatever batch is read last
    is written with both cores' readers finished, one core idle: a last batch of 232 kept the
    writer alone for ~70 ms of a ~1.1 s ingest of 1,000 folders (docs/performance.md, "Round 2,
    seventh pass: folder ingest"). Small batches at the start let the writer begin sooner, those
    at the end shorten that tail; the ones between stay large, each commit's fixed cost spread
    over many.
    """
    return max(FIRST_BATCH, min(BATCH, done, (total - done) // 2))


def _loaded(folders: list[tuple[Path, Path]], known: dict[str, str], load: Callable[..., tuple[str, Any]],
            workers: Readers | None) -> Iterator[tuple[str, Any]]:
    """``load`` of every folder in order, by the reader processes when there are some."""
    if workers is not None:
        yield from workers.results()
        return
    cache: dict[Path, Path | None] = {}
    for folder, root in folders:
        yield load(folder, root, known, cache)


def discover_all(dirs: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    found: list[tuple[Path, Path]] = []
    for root in dirs:
        base = Path(root)
        if not base.exists():
            raise LensdError(f"no such folder: {base}")
        found.extend((folder, base) for folder in pyautofit.discover(base))
    return found


async def _write_direct(db: Database, batches: Iterable[list[tuple[Record, batchplan.Prepared]]],
                        report: IngestReport) -> None:
    """Write each batch while the next one is read, in a thread (reading the readers' pipes
    blocks): else the readers stop once their pipes are full (a few folders each) and wait for
    as long as the batch's commit takes, a core left idle. ``progress`` is called from that
    thread; the report is changed by one side at a time (the outcomes after both are done)."""
    import anyio.to_thread

    from lensd.store.writers import open_writer

    writer = await open_writer(db)
    folders = iter(batches)

    async def read_next(into: list[list[tuple[Record, batchplan.Prepared]] | None]) -> None:
        into.append(await anyio.to_thread.run_sync(next, folders, None))

    try:
        batch = await anyio.to_thread.run_sync(next, folders, None)
        while batch is not None:
            ahead: list[list[tuple[Record, batchplan.Prepared]] | None] = []
            async with anyio.create_task_group() as group:
                group.start_soon(read_next, ahead)
                outcomes = await writer.apply([Upsert(record) for record, _ in batch], [rows for _, rows in batch])
            for (record, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, LensdError):
                    report.failed.append(pyautofit.FolderFailure(record.source or record.id, str(outcome)))
                else:
                    report.ingested.append(record.id)
            batch = ahead[0]
    finally:
        await writer.close()


async def _write_daemon(socket: TargetLike, batches: Iterable[list[dict[str, Any]]], report: IngestReport) -> None:
    """Send the records as read: the daemon validates what it receives, once."""
    import anyio

    from lensd.client.connection import Client

    send, receive = anyio.create_memory_object_stream[dict[str, Any]](BATCH)

    async def worker(records: MemoryObjectReceiveStream[dict[str, Any]]) -> None:
        client = await Client.open(socket)
        try:
            async with records:
                async for record in records:
                    try:
                        await client.request("submit", record=record)
                        report.ingested.append(str(record.get("id")))
                    except DaemonUnavailable:
                        raise
                    except LensdError as exc:
                        where = record.get("source") or record.get("id")
                        report.failed.append(pyautofit.FolderFailure(str(where), str(exc)))
        finally:
            await client.aclose()

    async with anyio.create_task_group() as group:
        for _ in range(DAEMON_CONNECTIONS):
            group.start_soon(worker, receive.clone())
        receive.close()
        async with send:
            for records in batches:
                for record in records:
                    try:
                        await send.send(record)
                    except anyio.BrokenResourceError:
                        return  # every worker has ended: the error they raised says why


def _named_socket(socket: TargetLike) -> TargetLike:
    """The socket the caller named, if any (a bare Target names none: the lock file says where)."""
    if isinstance(socket, Target):
        return socket if socket.socket is not None else None
    return socket


def ingest(dirs: Iterable[str | os.PathLike[str]], db: Database, socket: TargetLike = None,
           progress: Callable[[int], None] | None = None, total: Callable[[int], None] | None = None,
           readers: int | None = None) -> IngestReport:
    """Ingest every fit under ``dirs`` into ``db``; failures are reported, never raised per folder.

    ``readers``: processes reading folders (default: one per CPU, from ``readers.PARALLEL_FROM`` folders).
    """
    folders = discover_all(dirs)
    if total is not None:
        total(len(folders))
    stored = stored_folders(db)
    known = {source: sig for source, (sig, _) in stored.items()}
    report = IngestReport(stored_ids={source: fit_id for source, (_, fit_id) in stored.items()})
    # --address (or $LENSD_ADDRESS): the daemon may be on another node; its lock is not ours to see
    remote = isinstance(socket, Target) and bool(socket.address or os.environ.get("LENSD_ADDRESS"))
    lock, target = None, None
    if not (isinstance(db, str) and not remote and _named_socket(socket) is None):
        # (PostgreSQL takes several writers, pgwriter.py: without a daemon named, this process writes)
        try:
            if remote or isinstance(db, str):
                raise AlreadyRunning("ingest through the daemon named by --socket or --address")
            lock = writerlock.acquire(db)
        except AlreadyRunning:
            holder = writerlock.read_holder(db) if isinstance(db, Path) else None
            target = socket if remote else _named_socket(socket)
            target = target or (Path(holder.socket) if holder and holder.socket else None)
            if target is None:
                raise
    load = _load if target is not None else _load_ready  # a daemon validates what it receives
    pool = None

    def batches(records_of: Callable[[str, Any, IngestReport], list[T]]) -> Iterable[list[T]]:
        batch: list[T] = []
        size = batch_size(0, len(folders))
        for done, loaded in enumerate(_loaded(folders, known, load, pool), start=1):
            batch += records_of(*loaded, report)
            if progress is not None:
                progress(1)
            if len(batch) >= size:
                yield batch
                batch = []
                size = batch_size(done, len(folders))
        if batch:
            yield batch

    try:
        pool = start_readers(folders, lambda folder, root, cache: load(folder, root, known, cache), readers)
        import anyio  # here, not above: imported while the readers already read (~30-50 ms of CPU)

        if target is None:
            anyio.run(_write_direct, db, batches(_records), report, backend="asyncio")
            return report
        report.via = f"daemon at {target}"
        try:  # a daemon that dies mid-ingest is one DaemonUnavailable (exit 3), not a traceback
            anyio.run(_write_daemon, target, batches(_fit_dicts), report, backend="asyncio")
        except* LensdError as group:
            raise innermost(group) from None
        return report
    finally:
        if pool is not None:
            pool.close()
        if lock is not None:
            assert isinstance(db, Path)
            writerlock.release(lock, db)
