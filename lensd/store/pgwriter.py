"""PostgreSQL's writer: the same ops, plans and payload bytes as sqlite's, one transaction a batch.

``PgBatchWriter`` commits a batch as ``BatchWriter`` does (``batchplan`` plans the rows, one
``executemany`` per statement, acknowledged only after COMMIT), but several daemons may write one
PostgreSQL database at once, so what sqlite's single writer may keep to itself comes from the
database here:

- **Keys.** A new fit's ``fit_key`` comes from the table's identity, never from a counter in
  memory: ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING`` reserves a row for each id the
  batch does not find, keyed in arrival order as sqlite's are (``RESERVE_SQL``) but inserted in id
  order, and whoever inserts an id second waits for the first's COMMIT and then finds the fit stored.
- **Order.** The batch's fits (new and stored) are then locked ``FOR UPDATE`` in id order and read
  under that lock, so their ``seq`` (event idempotency), ``created_at`` and folder signature are
  the committed ones, and two daemons touching the same fits queue instead of deadlocking. A
  deadlock or serialization failure the order cannot rule out (the lost sweep, deletes) makes the
  whole batch run again, up to ``RETRIES`` times.
- **Clock.** Every time the batch stores (``updated_at``, ``last_event_at``, the lost sweep's
  cutoff, a tag's time) is the server's ``now()``, the transaction's start: one clock for every
  daemon, whatever their machines' clocks say (docs/decisions.md).
- **Same values as sqlite.** A NaN in a fit's numeric column is stored as NULL, as sqlite stores
  it; a NUL character, which PostgreSQL text cannot hold, refuses the op that carries it with one
  line (the rest of the batch is stored).

How the rows travel (``MODES``): ``executemany`` (psycopg sends each statement's rows pipelined),
``pipeline`` (the whole batch in one pipeline) or ``copy`` (COPY for the insert-only tables);
bench/pg_writer.py measures them, docs/performance.md has the figures, ``DEFAULT_MODE`` the winner.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Final

from lensd.errors import InvalidRecord, LensdError
from lensd.query.dialect import POSTGRESQL
from lensd.store import blocks, pgstore, plannedblocks
from lensd.store.adminops import FIT_TABLES, apply_admin
from lensd.store.batchplan import (
    INSERT_FACT_SQL,
    INSERT_HISTORY_SQL,
    INSERT_NODE_SQL,
    Existing,
    Prepared,
    plan_batch,
)
from lensd.store.writeops import AdminOp, Delete, Op, Tag, Touch, superseded
from lensd.store.writer import Writer

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("lensd.writer")
ADMIN_OPS: Final = (Delete, Tag)
MODES: Final = ("executemany", "pipeline", "copy")
DEFAULT_MODE: Final = "copy"  # fastest in bench/pg_writer.py (docs/performance.md)
RETRIES: Final = 8
NOW_SQL: Final = "SELECT extract(epoch FROM now())::double precision"
# The batch's ids in arrival order, each with a key drawn from the identity's sequence: the n-th
# smallest key drawn goes to the n-th id to arrive (whatever order nextval ran in), so new fits take
# keys in arrival order as sqlite's writer hands them out, and the default order of fits (by key) is
# the same on both engines. The rows are still inserted in id order: two writers reserving the same
# new ids wait for one another in one order instead of deadlocking. An id already stored (or stored
# meanwhile by another writer) wastes its key, as an identity's conflicting default always did.
RESERVE_SQL: Final = (
    "WITH arrived AS (SELECT id, n FROM unnest(%s::text[]) WITH ORDINALITY AS a(id, n)), "
    "drawn AS (SELECT key, row_number() OVER (ORDER BY key) AS n "
    "FROM (SELECT nextval(pg_get_serial_sequence('fits', 'fit_key')) AS key FROM arrived) AS d) "
    "INSERT INTO fits (fit_key, id, status) SELECT drawn.key, arrived.id, 'running' "
    "FROM arrived JOIN drawn USING (n) ORDER BY arrived.id COLLATE \"C\" "
    "ON CONFLICT (id) DO NOTHING RETURNING id, fit_key")
LOCK_SQL: Final = ("SELECT id, fit_key, seq, created_at, source_sig, updated_at FROM fits "
                   "WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE")
# The insert-only statements COPY can carry, and the table and columns each fills.
COPY_OF: Final = {
    INSERT_FACT_SQL: "COPY facts (fit_key, kind, key, num, txt, json) FROM STDIN",
    INSERT_NODE_SQL: "COPY nodes (fit_key, path, class_path, class_name) FROM STDIN",
    INSERT_HISTORY_SQL: "COPY progress_history (fit_key, t, max_log_likelihood, n_samples, progress) FROM STDIN",
}
NUL_REFUSED: Final = ("the record holds a NUL character (U+0000), which PostgreSQL text cannot store: "
                      "remove it and resend")


def _sql_null_nan(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    """Rows with NaN as NULL: sqlite stores a NaN REAL as NULL, and the two engines must agree."""
    for row in rows:
        yield tuple(None if type(value) is float and math.isnan(value) else value for value in row)


def _keys_of(conn: pgstore.QmarkCursor, ids: Sequence[str]) -> dict[str, Existing]:
    """The stored fits among ``ids`` (an admin op's: the op locks its fits itself)."""
    if not ids:
        return {}
    rows = conn.execute("SELECT id, fit_key FROM fits WHERE id = ANY(?)", [list(ids)]).fetchall()
    return {fit_id: Existing(int(key), None, None) for fit_id, key in rows}


class PgBatchWriter(Writer):
    """One PostgreSQL connection that writes batches; other daemons may hold their own."""

    def __init__(self, conn: psycopg.Connection[Any], url: str, mode: str = DEFAULT_MODE,
                 durability: str = "full") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self._conn = conn
        self._url = url
        self._mode = mode
        # As sqlite's writer: at "full", a batch of superseded events only (progress, heartbeats)
        # commits without waiting for the server's WAL flush (docs/decisions.md).
        self._switch_sync = durability == "full"
        self._driver = pgstore._psycopg()
        self.retries = 0

    @classmethod
    async def open(cls, url: str, durability: str = "full", mode: str = DEFAULT_MODE) -> PgBatchWriter:
        """The writer for ``url``, the schema created or migrated first (under its advisory lock).

        ``durability`` ``normal`` commits with ``synchronous_commit = off``: an acknowledged batch
        survives the daemon's crash, not the server's (as sqlite's ``synchronous=NORMAL``).
        """
        import anyio

        def connect() -> psycopg.Connection[Any]:
            pgstore.prepare_database(url)
            conn = pgstore.connect(url, autocommit=True)
            if durability != "full":
                conn.execute("SET synchronous_commit = off")
            return conn

        return cls(await anyio.to_thread.run_sync(connect), url, mode, durability)

    def _close(self) -> None:
        self._conn.close()

    def _reconnect(self) -> None:
        """After the server dropped the connection (a restart, a failover): a new one."""
        try:
            self._conn.close()
        finally:
            self._conn = pgstore.connect(self._url, autocommit=True)

    def _apply(self, ops: Sequence[Op | AdminOp],
               prepared: Sequence[Prepared | None] | None) -> list[str | LensdError]:
        """The batch's transaction, run again after a deadlock or serialization failure."""
        retryable = (self._driver.errors.DeadlockDetected, self._driver.errors.SerializationFailure)
        for attempt in range(RETRIES):
            if self._conn.broken or self._conn.closed:
                self._reconnect()
            try:
                return self._counted(self._transaction(ops, prepared))
            except retryable as exc:
                if attempt == RETRIES - 1:
                    raise
                self.retries += 1
                log.info("batch of %d ran into another writer (%s): retrying", len(ops), exc.sqlstate)
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    def _transaction(self, ops: Sequence[Op | AdminOp],
                     prepared: Sequence[Prepared | None] | None) -> list[str | LensdError]:
        planned = [i for i, op in enumerate(ops) if not isinstance(op, ADMIN_OPS)]
        regular: list[Op] = [ops[i] for i in planned]  # type: ignore[misc]
        ids = list(dict.fromkeys(i for op in regular for i in op.ids))  # in arrival order: RESERVE_SQL
        touched = {i for op in regular if isinstance(op, Touch) for i in op.fit_ids}
        with self._conn.transaction(), self._conn.cursor() as cursor:
            now = float(cursor.execute(NOW_SQL).fetchone()[0])  # type: ignore[index]
            if self._switch_sync and all(superseded(op) for op in ops):
                cursor.execute("SET LOCAL synchronous_commit = off")
            keys = dict(cursor.execute(RESERVE_SQL, [ids]).fetchall()) if ids else {}
            existing: dict[str, Existing] = {}
            for fit_id, key, seq, created, sig, updated in cursor.execute(LOCK_SQL, [sorted({*ids, *touched})]):
                if fit_id not in keys:
                    existing[fit_id] = Existing(key, seq, created, sig, updated)
            adapter = pgstore.QmarkCursor(cursor)
            changed = blocks.changed_ids(ops)
            # The fits RESERVE_SQL just made (``keys``) are new: the blocks hold nothing of them yet.
            others = _keys_of(adapter, [i for i in changed if i not in existing and i not in keys])
            stored = blocks.stored_keys(changed, {**others, **existing})
            before = blocks.entries(adapter, stored)
            plan, planned_outcomes, _ = plan_batch(
                regular, existing, 0, now, None if prepared is None else [prepared[i] for i in planned], keys)
            with self._conn.pipeline() if self._mode == "pipeline" else nullcontext():
                for sql, rows in plan.statements:
                    if self._mode == "copy" and sql in COPY_OF:
                        with cursor.copy(COPY_OF[sql]) as copy:
                            for row in _sql_null_nan(rows):
                                copy.write_row(row)
                    else:
                        cursor.executemany(POSTGRESQL.sql(sql), list(_sql_null_nan(rows)))
            outcomes: list[str | LensdError] = [
                apply_admin(adapter, op, now, FIT_TABLES) if isinstance(op, ADMIN_OPS) else "" for op in ops]
            new = set(keys.values())  # their state from the plan's rows, unless an admin op may change it
            after = {} if len(planned) < len(ops) else plannedblocks.planned_entries(plan.statements, new)
            after.update(blocks.entries(adapter, [*stored, *(key for key in new if key not in after)]))
            blocks.maintain(adapter, before, after, lock=True)
        for index, outcome in zip(planned, planned_outcomes, strict=True):
            outcomes[index] = outcome
        return outcomes

    def _op_error(self, exc: Exception) -> LensdError:
        """What the sender of a failed op is told: why its data was refused, or the server's words."""
        if isinstance(exc, LensdError):
            return exc
        if isinstance(exc, self._driver.DataError) and "NUL" in str(exc):
            return InvalidRecord(NUL_REFUSED)
        if isinstance(exc, self._driver.Error):
            return pgstore.storage_error(exc, self._url)
        return InvalidRecord(f"the write could not be stored ({type(exc).__name__}: {exc})")
