"""The two ends of ``lensd migrate``: reading a database's rows by key range, writing them.

One class per engine and direction. Rows travel as the tuples the drivers give (floats, ints,
text, bytes), unchanged, so a copy is exact: sqlite's REAL and PostgreSQL's DOUBLE PRECISION are
both IEEE doubles, and psycopg writes and reads floats in their shortest exact form.

- A source reads everything in ONE read transaction (sqlite: ``BEGIN`` on a read-only
  connection, a WAL snapshot that a daemon writing the file does not disturb; PostgreSQL: a
  REPEATABLE READ, read-only transaction), so what it copies is one consistent state.
- A target writes each chunk in one transaction together with the resume mark in ``lensd_meta``
  (``migrate.source``, ``migrate.done``), so after a kill the mark names exactly what is there.
  sqlite: the writer lock on the file (no daemon may start on it meanwhile) and ``executemany``;
  PostgreSQL: ``COPY ... FROM STDIN`` (docs/performance.md has the measurement) and a session
  advisory lock, so two migrates into one database refuse each other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from lensd.errors import LensdError, StorageError
from lensd.query.dialect import POSTGRESQL
from lensd.store import blocks, pgstore, reader, schema, writerlock
from lensd.store.sqlite_errors import storage_error

# Every table holding data, and the order its rows are copied in within a chunk of fit keys.
TABLES: Final = {"fits": "fit_key", "facts": "fit_key, kind, key", "nodes": "fit_key, path",
                 "payloads": "fit_key, name", "progress_history": "fit_key, point"}
assert set(schema.DATA_TABLES) <= set(TABLES)
# Columns filled from a sequence on PostgreSQL, set past the largest copied value at the end.
IDENTITIES: Final = (("fits", "fit_key"), ("progress_history", "point"))
MARK_SOURCE: Final = "migrate.source"
MARK_DONE: Final = "migrate.done"
MIGRATE_LOCK: Final = (schema.APPLICATION_ID, 1)  # pg_try_advisory_lock(int, int): not the schema's key

Rows = Iterable[Sequence[Any]]
Chunk = Sequence[tuple[str, Sequence[str], Rows]]


def schema_columns() -> dict[str, list[str]]:
    """Each table's stored columns (generated ones are not copied) in the current schema, read from
    a new in-memory database: the only column names that ever go into a statement here."""
    conn = sqlite3.connect(":memory:")
    try:
        for statement in schema.create_statements():
            conn.execute(statement)
        return {table: [str(row[1]) for row in conn.execute(f"PRAGMA table_xinfo({table})") if row[6] == 0]
                for table in TABLES}
    finally:
        conn.close()


def _range_sql(table: str, columns: Sequence[str]) -> str:
    return (f"SELECT {', '.join(columns)} FROM {table} WHERE fit_key > ? AND fit_key <= ? "  # noqa: S608 - names
            f"ORDER BY {TABLES[table]}")  # from schema_columns and TABLES, never from a database


def _exists_sql(table: str) -> str:
    return f"SELECT EXISTS (SELECT 1 FROM {table})"  # noqa: S608 - a name of TABLES


FINGERPRINT_SQL: Final = "SELECT count(*), max(fit_key), max(updated_at), (SELECT count(*) FROM payloads) FROM fits"
BOUNDARY_SQL: Final = "SELECT fit_key FROM fits WHERE fit_key > ? ORDER BY fit_key LIMIT 1 OFFSET ?"
COUNT_UPTO_SQL: Final = "SELECT count(*) FROM fits WHERE fit_key <= ?"


class _Reading:
    """What both sources answer from their one statement runner, ``_all``."""

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, None when there is no row."""
        found = self._all(sql, params)
        return found[0][0] if found else None

    def fingerprint(self) -> str:
        """What a resume checks the source against: fits, largest key, latest update, payloads."""
        return "|".join(map(repr, self._all(FINGERPRINT_SQL)[0]))


class SqliteSource(_Reading):
    """A sqlite file read in one snapshot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self._conn = reader.open_readonly(path)
        self._conn.execute("BEGIN")  # the snapshot starts with the first read and lasts the run

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, f"reading {self.path}") from None

    def columns(self, table: str) -> list[str] | None:
        """The table's stored columns (generated ones are not copied), None when it has none."""
        found = [str(row[1]) for row in self._all(f"PRAGMA table_xinfo({table})") if row[6] == 0]
        return found or None

    def rows(self, table: str, columns: Sequence[str], low: int, high: int) -> Rows:
        try:
            yield from self._conn.execute(_range_sql(table, columns), [low, high])
        except sqlite3.Error as exc:
            raise storage_error(exc, f"reading {self.path}") from None

    def close(self) -> None:
        self._conn.close()


class PgSource(_Reading):
    """A PostgreSQL database read in one REPEATABLE READ transaction, rows by server-side cursor."""

    def __init__(self, url: str) -> None:
        self.name = pgstore.redact(url)
        self._url = url
        self._conn = pgstore.connect(url, read_only=True)
        self._error: type[BaseException] = pgstore._psycopg().Error
        try:
            if pgstore.read_version(self._conn) == 0:
                raise StorageError("an empty database, not a lensd database")
            pgstore.check_tables(self._conn)
        except LensdError as exc:
            self._conn.close()
            raise type(exc)(f"{self.name}: {exc}") from None
        self._cursors = 0

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(POSTGRESQL.sql(sql), list(params)).fetchall()
        except self._error as exc:
            raise pgstore.storage_error(exc, self._url) from None

    def columns(self, table: str) -> list[str] | None:
        found = [str(row[0]) for row in self._all(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND is_generated = 'NEVER' ORDER BY ordinal_position", [table])]
        return found or None

    def rows(self, table: str, columns: Sequence[str], low: int, high: int) -> Rows:
        self._cursors += 1
        try:
            with self._conn.cursor(name=f"lensd_migrate_{self._cursors}") as cursor:
                cursor.itersize = 2000
                cursor.execute(POSTGRESQL.sql(_range_sql(table, columns)), [low, high])
                while page := cursor.fetchmany(2000):
                    yield from page
        except self._error as exc:
            raise pgstore.storage_error(exc, self._url) from None

    def close(self) -> None:
        self._conn.close()


class SqliteTarget:
    """A sqlite file written under the writer's lock, one transaction a chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self._lock = writerlock.acquire(path)
        try:
            from lensd.store.writer import prepare_database

            prepare_database(path, "normal")  # WAL, normal: a kill loses at most the chunk in flight
            self._conn = sqlite3.connect(str(path), isolation_level=None)
            for pragma in schema.writer_pragmas("normal"):
                self._conn.execute(pragma)
        except BaseException:
            writerlock.release(self._lock, path)
            raise

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc, f"writing {self.path}") from None

    def holds_data(self) -> bool:
        return any(self._all(_exists_sql(table))[0][0] for table in TABLES)

    def mark(self) -> dict[str, str]:
        return dict(self._all("SELECT key, value FROM lensd_meta WHERE key IN (?, ?)", [MARK_SOURCE, MARK_DONE]))

    def write(self, chunk: Chunk, marks: dict[str, str], rebuild: bool = False) -> None:
        """One transaction: the chunk's rows, the count blocks made again if ``rebuild``, the marks."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for table, columns, rows in chunk:
                    places = ", ".join("?" for _ in columns)
                    self._conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - our names
                                           f"VALUES ({places})", rows)
                if rebuild:
                    blocks.rebuild(self._conn)
                self._set_marks(marks)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise storage_error(exc, f"writing {self.path}") from None

    def _set_marks(self, marks: dict[str, str]) -> None:
        self._conn.execute("DELETE FROM lensd_meta WHERE key IN (?, ?)", [MARK_SOURCE, MARK_DONE])
        self._conn.executemany("INSERT INTO lensd_meta (key, value) VALUES (?, ?)", list(marks.items()))

    def finish(self) -> None:
        """Build the count blocks from the copied rows and drop the resume mark, in one transaction
        (a run killed before it commits finds the mark and builds them again); keys need no care:
        the writer takes max(fit_key) + 1."""
        self.write([], {}, rebuild=True)
        self._all("PRAGMA optimize")
        self._all("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            writerlock.release(self._lock, self.path)


class PgTarget:
    """A PostgreSQL database written with COPY, one transaction a chunk."""

    def __init__(self, url: str) -> None:
        self.name = pgstore.redact(url)
        self._url = url
        pgstore.prepare_database(url)
        self._conn = pgstore.connect(url)
        self._error: type[BaseException] = pgstore._psycopg().Error
        if not self._all("SELECT pg_try_advisory_lock(?, ?)", MIGRATE_LOCK)[0][0]:
            self._conn.close()
            raise LensdError(f"{self.name}: another lensd migrate is writing this database")
        self._conn.commit()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            cursor = self._conn.execute(POSTGRESQL.sql(sql), list(params))
            return cursor.fetchall() if cursor.description else []
        except self._error as exc:
            self._conn.rollback()
            raise pgstore.storage_error(exc, self._url) from None

    def holds_data(self) -> bool:
        found = any(self._all(_exists_sql(table))[0][0] for table in TABLES)
        self._conn.commit()
        return found

    def mark(self) -> dict[str, str]:
        found = dict(self._all("SELECT key, value FROM lensd_meta WHERE key IN (?, ?)", [MARK_SOURCE, MARK_DONE]))
        self._conn.commit()
        return found

    def write(self, chunk: Chunk, marks: dict[str, str], rebuild: bool = False) -> None:
        """One transaction: the chunk's rows, the count blocks made again if ``rebuild``, the marks."""
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                for table, columns, rows in chunk:
                    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                if rebuild:
                    blocks.rebuild(pgstore.QmarkCursor(cursor))
                cursor.execute("DELETE FROM lensd_meta WHERE key IN (%s, %s)", [MARK_SOURCE, MARK_DONE])
                for key, value in marks.items():
                    cursor.execute("INSERT INTO lensd_meta (key, value) VALUES (%s, %s)", [key, value])
        except self._error as exc:
            raise pgstore.storage_error(exc, self._url) from None

    def set_sequences(self) -> None:
        """Each identity's next value past the largest key copied, so a daemon never reuses one."""
        for table, column in IDENTITIES:
            self._all(f"SELECT setval(pg_get_serial_sequence(?, ?), coalesce(max({column}), 0) + 1, "  # noqa: S608
                      f"false) FROM {table}", [table, column])  # names of IDENTITIES
        self._conn.commit()

    def finish(self) -> None:
        """As ``SqliteTarget.finish``, then the identities set past the copied keys."""
        self.write([], {}, rebuild=True)
        self.set_sequences()
        # Fresh statistics for the planner's index choices, and the visibility map that lets a
        # count be answered from an index alone (a bulk load leaves both to autovacuum, later).
        self._conn.autocommit = True  # VACUUM runs outside a transaction
        self._all("VACUUM (ANALYZE)")

    def close(self) -> None:
        self._conn.close()


Source = SqliteSource | PgSource
Target = SqliteTarget | PgTarget


def source_of(name: str) -> Source:
    from lensd.store.sources import is_postgres

    return PgSource(name) if is_postgres(name) else SqliteSource(Path(name))


def target_of(name: str) -> Target:
    from lensd.store.sources import is_postgres

    return PgTarget(name) if is_postgres(name) else SqliteTarget(Path(name))


def ranges(source: Source, after: int, size: int) -> Iterator[tuple[int, int]]:
    """Key ranges ``(low, high]`` of ``size`` fits each from ``after``; the last one is open-ended,
    so rows of any table past the last fit's key are copied too."""
    top = 2**63 - 1
    low = after
    while low < top:
        boundary = source.scalar(BOUNDARY_SQL, [low, size - 1])
        high = top if boundary is None else int(boundary)
        yield low, high
        low = high
