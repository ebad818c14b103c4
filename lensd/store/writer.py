"""The single writer: the only code that writes to a lensd database.

``BatchWriter`` applies a batch of operations in one ``BEGIN IMMEDIATE`` transaction made of
``executemany`` calls. If a batch fails, its operations are retried one by one so that one bad
record fails alone (``Writer``, which PostgreSQL's writer, ``lensd.store.pgwriter``, shares). The
daemon feeds it through ``lensd.daemon.committer.GroupCommitter``; ``lensd ingest`` calls it
directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from lensd.errors import InvalidRecord, LensdError, StorageError, StorageFull
from lensd.store import blocks, plannedblocks, schema
from lensd.store.adminops import apply_admin
from lensd.store.batchplan import Existing, Prepared, plan_batch
from lensd.store.sqlite_errors import is_full, storage_error
from lensd.store.writeops import AdminOp, Delete, Op, Tag, superseded

log = logging.getLogger("lensd.writer")
T = TypeVar("T")
_LOOKUP_CHUNK = 500
ADMIN_OPS = (Delete, Tag)
# The WAL's size when checkpoints keep up (its autocheckpoint in 4 KiB pages); past it, a reader held it back.
WAL_NORMAL_MAX = schema.WAL_AUTOCHECKPOINT * 4096


def prepare_database(path: str | Path, durability: str = "full") -> None:
    """Create or migrate the database file (one short synchronous connection, before serving)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
    except sqlite3.Error as exc:
        raise storage_error(exc, f"cannot create or open {path}") from None
    try:
        for pragma in schema.writer_pragmas(durability):
            conn.execute(pragma)
        schema.migrate(conn)
    except (sqlite3.Error, OSError) as exc:
        raise storage_error(exc, str(path)) from None
    finally:
        conn.close()


class Writer:
    """What every engine's writer shares: one connection used by one worker thread at a time, and
    a failed batch retried op by op so that one bad record fails alone.

    A batch is one call into a worker thread that runs the whole transaction and comes back once.
    Going back to the event loop between statements (as an awaited call per statement would) makes
    each of them wait for the loop, which under load is busy decoding the next requests: at 64
    clients that wait was as long as the writing itself. Subclasses give ``_apply`` (the batch's
    transaction), ``_op_error`` (what the sender of a failed op is told) and ``_close``.
    """

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(1)
        self.batches = 0
        self.records = 0

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread, the only user of the connection while it runs."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def close(self) -> None:
        await self._run(self._close)

    async def shrink_wal(self, force: bool = False) -> bool:
        """Give back the write-ahead log a long reader held back (sqlite's, ``BatchWriter``); an
        engine that keeps no such file beside the database has nothing to do."""
        return False

    def _close(self) -> None:
        raise NotImplementedError

    def _apply(self, ops: Sequence[Op | AdminOp],
               prepared: Sequence[Prepared | None] | None) -> list[str | LensdError]:
        raise NotImplementedError

    def _op_error(self, exc: Exception) -> LensdError:
        raise NotImplementedError

    async def apply(self, ops: Sequence[Op | AdminOp], prepared: Sequence[Prepared | None] | None = None
                    ) -> list[str | LensdError]:
        """Commit ``ops``; one outcome per op: "applied", "duplicate", or the error for that op.

        ``prepared`` is ``batchplan.prepare`` of each op, when the caller worked it out already.
        """
        if not ops:
            return []
        try:
            return list(await self._run(self._apply, ops, prepared))
        except Exception as exc:  # any failure, not only the driver's: one poison op must fail alone
            if len(ops) == 1:
                log.warning("write failed: %s", exc)
                return [await self._run(self._op_error, exc)]
        results: list[str | LensdError] = []
        for index, op in enumerate(ops):  # find the bad one: each alone
            try:
                results.extend(await self._run(self._apply, [op],
                                               None if prepared is None else [prepared[index]]))
            except Exception as exc:
                log.warning("write failed for %s: %s", op.ids[:1], exc)
                results.append(await self._run(self._op_error, exc))
        return results

    def _counted(self, outcomes: list[str | LensdError]) -> list[str | LensdError]:
        self.batches += 1
        self.records += len(outcomes)
        return outcomes


class BatchWriter(Writer):
    """One sqlite connection that writes batches; there is never a second one per database.

    The batch's transaction is ``BEGIN IMMEDIATE``, the lookup of the batch's fits, planning, every
    ``executemany``, ``COMMIT``, all in one worker-thread call (``Writer``).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None,
                 max_db_mb: int | None = None, durability: str = "normal") -> None:
        super().__init__()
        self._conn = conn
        self._path = path
        self._max_db_mb = max_db_mb
        # At "full", a batch of superseded events only (writeops.superseded) commits without the
        # fsync: docs/decisions.md. "normal" never fsyncs at commit, so there is nothing to switch.
        self._switch_sync = durability == "full"
        self._synced = True  # the connection's PRAGMA synchronous is FULL (as _connect set it)
        self._next_key = 1

    @classmethod
    async def open(cls, path: str | Path, durability: str = "full", max_db_mb: int | None = None) -> BatchWriter:
        """The writer for ``path``; ``max_db_mb`` caps the database's size (``PRAGMA max_page_count``)."""
        writer = cls(await anyio.to_thread.run_sync(_connect, path, durability), Path(path), max_db_mb, durability)
        await writer._run(writer._setup)
        return writer

    def _setup(self) -> None:
        if self._max_db_mb is not None:
            page_size = _pragma(self._conn, "page_size")
            self._conn.execute(f"PRAGMA max_page_count={self._max_db_mb * 1024 * 1024 // page_size}")
        row = self._conn.execute("SELECT coalesce(max(fit_key), 0) + 1 FROM fits").fetchone()
        self._next_key = int(row[0]) if row else 1

    def _close(self) -> None:
        try:
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._conn.close()

    async def shrink_wal(self, force: bool = False) -> bool:
        """Checkpoint the WAL into the database and truncate it, when a reader may have held it back.

        A read snapshot held open (a stalled stream) stops every checkpoint from passing it, so the
        WAL grows; once that reader is gone, the ordinary checkpoints would only reuse the grown
        file, never shrink it (``journal_size_limit`` cuts it back only to 64 MiB, and only when a
        checkpoint restarts it). ``force`` (after a stream that stalled) or a WAL past what regular
        checkpoints let it reach runs ``wal_checkpoint(TRUNCATE)`` without waiting for readers:
        one still reading makes it a no-op, and the next stream to close tries again. True when
        the WAL was emptied.
        """
        if self._path is None:
            return False
        try:
            size = os.stat(f"{self._path}-wal").st_size
        except OSError:
            return False
        if size == 0 or not (force or size > WAL_NORMAL_MAX):
            return False
        return await self._run(self._truncate_wal)

    def _truncate_wal(self) -> bool:
        try:
            self._conn.execute("PRAGMA busy_timeout=0")  # never make the writer wait on a reader
            row = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.info("could not checkpoint the WAL: %s", exc)
            return False
        finally:
            self._conn.execute(f"PRAGMA busy_timeout={schema.BUSY_TIMEOUT_MS}")
        return bool(row is not None and row[0] == 0)

    def _existing(self, ids: Sequence[str]) -> dict[str, Existing]:
        found: dict[str, Existing] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = ("SELECT id, fit_key, seq, created_at, source_sig, updated_at FROM fits "  # noqa: S608
                   f"WHERE id IN ({marks})")
            for fit_id, key, seq, created, sig, updated in self._conn.execute(sql, chunk):
                found[fit_id] = Existing(key, seq, created, sig, updated)
        return found

    def _apply(self, ops: Sequence[Op | AdminOp],
               prepared: Sequence[Prepared | None] | None) -> list[str | LensdError]:
        """The batch's transaction, in the worker thread (admin ops after the planned ones)."""
        planned = [i for i, op in enumerate(ops) if not isinstance(op, ADMIN_OPS)]
        if self._switch_sync:
            self._set_synced(not all(superseded(op) for op in ops))
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # The next free key is read under the write lock, never trusted from memory: a key
            # another writer took since would make this batch's new fit replace that fit's row.
            row = self._conn.execute("SELECT coalesce(max(fit_key), 0) + 1 FROM fits").fetchone()
            self._next_key = max(self._next_key, int(row[0]) if row else 1)
            regular: list[Op] = [ops[i] for i in planned]  # type: ignore[misc]
            changed = blocks.changed_ids(ops)
            existing = self._existing([*(i for op in regular for i in op.ids), *changed])
            stored = blocks.stored_keys(changed, existing)
            before = blocks.entries(self._conn, stored)
            plan, planned_outcomes, next_key = plan_batch(
                regular, existing, self._next_key, time.time(),
                None if prepared is None else [prepared[i] for i in planned])
            for sql, rows in plan.statements:
                self._conn.executemany(sql, rows)
            outcomes: list[str | LensdError] = [
                apply_admin(self._conn, op) if isinstance(op, ADMIN_OPS) else "" for op in ops]
            new = range(self._next_key, next_key)
            # New fits' state from the plan's rows (an admin op of the batch may change them after).
            after = {} if len(planned) < len(ops) else \
                plannedblocks.planned_entries(plan.statements, new, signed_zero=False)
            after.update(blocks.entries(self._conn, [*stored, *(key for key in new if key not in after)]))
            blocks.maintain(self._conn, before, after)
            for index, outcome in zip(planned, planned_outcomes, strict=True):
                outcomes[index] = outcome
            self._conn.execute("COMMIT")
        except BaseException:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self._next_key = next_key
        return self._counted(outcomes)

    def _set_synced(self, synced: bool) -> None:
        """FULL or NORMAL for the next commit (outside a transaction, as sqlite requires).

        In WAL mode the WAL is one file written in order: the fsync of the next FULL commit (or of
        a checkpoint) also makes every NORMAL commit before it durable.
        """
        if synced != self._synced:
            self._conn.execute(f"PRAGMA synchronous={'FULL' if synced else 'NORMAL'}")
            self._synced = synced

    def _op_error(self, exc: Exception) -> LensdError:
        """What the sender of a failed op is told: the storage facts, or why its data was refused."""
        if isinstance(exc, LensdError):
            return exc
        if isinstance(exc, sqlite3.Error):
            return self._storage_error(exc)
        return InvalidRecord(f"the write could not be stored ({type(exc).__name__}: {exc})")

    def _storage_error(self, exc: sqlite3.Error) -> StorageError:
        """``storage_error``, and for a full database the facts needed to act: quota, size, free disk."""
        if not is_full(exc) or self._path is None:
            return storage_error(exc)
        facts = []
        try:
            size = _pragma(self._conn, "page_count") * _pragma(self._conn, "page_size")
            if self._max_db_mb is not None:
                facts.append(f"the database is {size / 2**20:.1f} MiB and may not grow past its quota of "
                             f"{self._max_db_mb} MiB (lensd start --max-db-mb)")
            free = shutil.disk_usage(self._path.resolve().parent).free
            facts.append(f"{free / 2**20:.1f} MiB of disk space is free next to it")
        except (sqlite3.Error, OSError):
            pass
        remedy = "raise the quota or free disk space" if self._max_db_mb is not None else "free disk space"
        detail = "" if str(exc) == "database or disk is full" else f" ({exc})"
        return StorageFull(f"database or disk is full{detail}: {'; '.join(facts) or 'no space left'}; "
                           f"nothing of this write was stored: {remedy}, then resend")


def _connect(path: str | Path, durability: str) -> sqlite3.Connection:
    """The writer's connection: the file created or migrated, the writer's PRAGMAs set."""
    prepare_database(path, durability)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        for pragma in schema.writer_pragmas(durability):
            conn.execute(pragma)
    except sqlite3.Error as exc:
        conn.close()
        raise storage_error(exc) from None
    return conn


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0]) if row else 0
