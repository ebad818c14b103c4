"""Where the sync ``Aggregator`` reads from: a blocking connection behind five operations.

The planning, SQL and decoding of a read are ``readplan``'s; a source only runs statements. One
class per engine (``SqliteSource`` here; ``PgSource`` in ``lensd.store.pgstore``), chosen by ``open_source``
from the database's name: a ``postgresql://`` URL or a sqlite file path.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from lensd.query.dialect import SQLITE, Dialect
from lensd.settings import POSTGRES_SCHEMES
from lensd.store import reader


def is_postgres(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names a PostgreSQL database (a libpq URL) rather than a sqlite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


class ReadSource(Protocol):
    """A read-only connection that runs lensd's statements (written with ``?``, in ``dialect``)."""

    dialect: Dialect

    @property
    def conn(self) -> Any: ...

    def scalar(self, sql: str, params: list[Any]) -> int:
        """The first column of the first row, as an int."""

    def stream(self, sql: str, params: list[Any], page: int = reader.PAGE_SIZE) -> Iterator[tuple[Any, ...]]:
        """The rows of a statement, a page at a time, so memory stays flat."""

    def payload(self, fit_key: int, name: str) -> Any:
        """One payload's bytes, or None."""

    def history(self, fit_key: int) -> list[reader.ProgressPoint]:
        """One fit's convergence history, oldest first."""

    def snapshot(self) -> Any:
        """A context in which every read sees the same state of the database."""

    def close(self) -> None: ...


class SqliteSource:
    """A read-only sqlite connection (``reader.open_readonly``): WAL readers never block the writer."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._load = reader.payload_loader(conn)
        self._history = reader.history_loader(conn)

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def scalar(self, sql: str, params: list[Any]) -> int:
        row = next(reader.stream(self._conn, sql, params), None)
        return 0 if row is None or row[0] is None else int(row[0])

    def stream(self, sql: str, params: list[Any], page: int = reader.PAGE_SIZE) -> Iterator[tuple[Any, ...]]:
        return reader.stream(self._conn, sql, params, page)

    def payload(self, fit_key: int, name: str) -> Any:
        return self._load(fit_key, name)

    def history(self, fit_key: int) -> list[reader.ProgressPoint]:
        return self._history(fit_key)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        began = not self._conn.in_transaction
        if began:
            self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if began and self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def open_source(target: str | os.PathLike[str]) -> ReadSource:
    """A read-only source for a sqlite file or a ``postgresql://`` URL."""
    if is_postgres(target):
        from lensd.store.pgstore import PgSource

        return PgSource.open(str(target))
    return SqliteSource(reader.open_readonly(target))
