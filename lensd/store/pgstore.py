"""PostgreSQL as the database: connections, the schema's version and creation, and the reader.

A PostgreSQL database holds the same tables as a sqlite file (schema.DDL_V1), and is read with
the same plans and decoded by the same code; only the connections differ. The driver is psycopg 3
(``pip install 'lensd[postgres]'``), imported only when a ``postgresql://`` URL is used.

- The password never appears in anything lensd prints or logs: it comes from ``~/.pgpass`` or
  ``PGPASSWORD`` (libpq reads them), and a URL that carries one is shown with it masked
  (``redact``).
- The schema's version lives in ``lensd_meta`` (``schema_version``, and ``application`` =
  ``lensd``, the mark sqlite files carry in ``application_id``). Creating or migrating it takes a
  transaction-scoped advisory lock first, so two daemons starting together on an empty database
  make it once: the second waits, then finds it current.
- Readers run in REPEATABLE READ, read-only transactions, and stream rows through server-side
  cursors (``DECLARE ... FETCH``), a page at a time, so memory stays flat at any result size.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from lensd.errors import LensdError, StorageError, UnsupportedDatabase
from lensd.query.dialect import POSTGRESQL
from lensd.settings import redact as redact  # lensd's one masking rule (settings prints databases too)
from lensd.store import budget, reader, schema

if TYPE_CHECKING:
    import psycopg

APPLICATION: Final = "lensd"
# pg_advisory_xact_lock key of schema creation and migration: "LENS" as in sqlite's application_id.
SCHEMA_LOCK: Final = schema.APPLICATION_ID


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StorageError("PostgreSQL databases need psycopg: pip install 'lensd[postgres]'") from None
    return psycopg


def storage_error(exc: BaseException, url: str = "") -> StorageError:
    """A psycopg error as one line a user can act on (libpq never puts the password in its text)."""
    where = f"{redact(url)}: " if url else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"{where}PostgreSQL error: {text}")


# Every lensd session, sync or async: lensd's statements are index seeks and short ranges, and
# compiling one with JIT (7 ms at 10^5 fits, more at 10^6) costs more than running it; the
# planner's cost estimate of a cursor over many rows crosses jit_above_cost often.
SESSION_SQL: Final = "SET jit = off"


def connect(url: str, autocommit: bool = False, read_only: bool = False) -> psycopg.Connection[Any]:
    """A connection to ``url``; connection failures become a StorageError naming the redacted URL."""
    driver = _psycopg()
    try:
        conn: psycopg.Connection[Any] = driver.connect(url, autocommit=autocommit, connect_timeout=30,
                                                       application_name="lensd")
    except driver.Error as exc:
        raise storage_error(exc, url) from None
    try:
        conn.execute(SESSION_SQL)
        if not autocommit:
            conn.commit()
    except driver.Error as exc:
        conn.close()
        raise storage_error(exc, url) from None
    if read_only:
        conn.read_only = True
        conn.isolation_level = driver.IsolationLevel.REPEATABLE_READ
    return conn


def _tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Kind of each lensd relation present in the connection's schema search path (r = table)."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = ANY(%s)",
        [["lensd_meta", *schema.DATA_TABLES]]).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def read_version(conn: psycopg.Connection[Any]) -> int:
    """The database's schema version (0 when it holds no lensd tables); refuses others' and newer."""
    tables = _tables(conn)
    if not tables:
        return 0
    if tables.get("lensd_meta") != "r":
        raise UnsupportedDatabase("not a lensd database (it has lensd's table names but no lensd_meta)")
    meta = dict(conn.execute("SELECT key, value FROM lensd_meta").fetchall())
    application = APPLICATION if meta.get("application") == APPLICATION else ""
    version = int(meta.get("schema_version", "0")) if str(meta.get("schema_version", "0")).isdigit() else -1
    return schema.check_version(schema.APPLICATION_ID if application else 0, max(version, 0), True)


def check_tables(conn: psycopg.Connection[Any]) -> None:
    """Refuse a database whose data tables are missing or are views."""
    kinds = _tables(conn)
    for name in schema.DATA_TABLES:
        if kinds.get(name) != "r":
            found = f"of kind {kinds[name]!r}" if name in kinds else "missing"
            raise UnsupportedDatabase(f"not a usable lensd database: its {name} table is {found}")


class QmarkCursor:
    """A psycopg connection or cursor that runs lensd's ``?`` SQL, for the code written against
    sqlite3 (adminops, the count blocks)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._cursor.execute(POSTGRESQL.sql(sql), list(params))

    def executemany(self, sql: str, rows: Any) -> None:
        self._cursor.executemany(POSTGRESQL.sql(sql), [list(row) for row in rows])


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create the schema, or bring it to SCHEMA_VERSION, in one transaction under the schema lock.

    ``conn`` must not be in autocommit mode. Whoever holds the lock second sees the first's work.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
        version = read_version(conn)
        if version == schema.SCHEMA_VERSION:
            return
        statements = (schema.create_statements("postgresql") if version == 0
                      else schema.migration_statements(version, "postgresql"))
        for statement in statements:
            conn.execute(statement)
        if version:
            schema.fill_blocks(QmarkCursor(conn.cursor()), version)
        conn.execute("INSERT INTO lensd_meta (key, value) VALUES ('application', %s), ('schema_version', %s) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     [APPLICATION, str(schema.SCHEMA_VERSION)])


def prepare_database(url: str) -> None:
    """Create or migrate the database at ``url`` (a short connection of its own)."""
    conn = connect(url)
    try:
        migrate(conn)
    except _psycopg().Error as exc:
        raise storage_error(exc, url) from None
    finally:
        conn.close()


class PgSource:
    """A read-only PostgreSQL connection for the sync Aggregator (``sources.ReadSource``).

    Reads share one transaction while any of them is open (so ``zip(agg.fits(), agg.values(...))``
    and ``to_rows`` see one snapshot), and it ends when the last one closes, so the next read sees
    what was committed since.
    """

    dialect = POSTGRESQL
    _names = itertools.count(1)

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self._conn = conn
        self._url = url
        self._open = 0
        self._error: type[BaseException] = _psycopg().Error

    @classmethod
    def open(cls, url: str) -> PgSource:
        conn = connect(url, read_only=True)
        try:
            version = read_version(conn)
            if version == 0:
                raise StorageError("an empty database, not a lensd database")
            check_tables(conn)
            conn.rollback()
        except LensdError as exc:
            conn.close()
            raise type(exc)(f"{redact(url)}: {exc}") from None
        except _psycopg().Error as exc:
            conn.close()
            raise storage_error(exc, url) from None
        return cls(conn, url)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self._conn

    def _done(self) -> None:
        if self._open == 0:
            self._conn.rollback()  # read-only: ends the transaction, so the next read sees new commits

    def scalar(self, sql: str, params: list[Any]) -> int:
        rows = self._rows(sql, params, "query")
        return 0 if not rows or rows[0][0] is None else int(rows[0][0])

    def stream(self, sql: str, params: list[Any], page: int = reader.PAGE_SIZE) -> Iterator[tuple[Any, ...]]:
        self._open += 1
        failed = False
        try:
            with self._conn.cursor(name=f"lensd_read_{next(self._names)}") as cursor:
                cursor.itersize = page
                cursor.execute(POSTGRESQL.sql(sql), params)
                yield from budget.paced(cursor.fetchmany, page)  # rows within a byte budget
        except self._error as exc:
            failed = True
            raise StorageError(f"query failed: {storage_error(exc)}") from None
        finally:  # also when the caller stops early (GeneratorExit): the snapshot must not outlive it
            self._open -= 1
            if failed:
                self._reset()
            else:
                self._done()

    def _reset(self) -> None:
        """After an error the transaction is aborted: end it, and with it every open read."""
        self._open = 0
        try:
            self._conn.rollback()
        except self._error:
            pass

    def _rows(self, sql: str, params: list[Any], what: str) -> list[tuple[Any, ...]]:
        try:
            rows = self._conn.execute(POSTGRESQL.sql(sql), params).fetchall()
        except self._error as exc:
            self._reset()
            raise StorageError(f"{what} failed: {storage_error(exc)}") from None
        self._done()
        return rows

    def payload(self, fit_key: int, name: str) -> Any:
        rows = self._rows("SELECT data FROM payloads WHERE fit_key = ? AND name = ?", [fit_key, name],
                          "reading a payload")
        return bytes(rows[0][0]) if rows else None

    def history(self, fit_key: int) -> list[reader.ProgressPoint]:
        return [reader.ProgressPoint(*row) for row in self._rows(reader.HISTORY_SQL, [fit_key],
                                                                 "reading a progress history")]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            self._done()

    def close(self) -> None:
        self._conn.close()
