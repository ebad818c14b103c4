"""The two databases lensd runs on, behind one small connection type, for tests that run on both.

``open_db("sqlite", ...)`` is a real sqlite file; ``open_db("postgresql", ...)`` a fresh database
in the session's PostgreSQL cluster (tests/pg_server.py). Both take lensd's ``?`` SQL, carry their
``dialect`` for the compiler, and hold the current schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from pg_server import PgServer

from lensd.query.dialect import POSTGRESQL, SQLITE, Dialect
from lensd.store import pgstore, schema

BACKENDS = ["sqlite", "postgresql"]


class SqliteDb(sqlite3.Connection):
    dialect: Dialect = SQLITE


class PgDb:
    """A psycopg connection in autocommit that reads lensd's ``?`` SQL (BEGIN/COMMIT work as text)."""

    dialect: Dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        self.url = url
        self.raw = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(POSTGRESQL.sql(sql), list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(POSTGRESQL.sql(sql), [list(row) for row in rows])

    def close(self) -> None:
        self.raw.close()


Db = SqliteDb | PgDb


@contextmanager
def open_db(kind: str, folder: Path, pg_server: PgServer | None) -> Iterator[Any]:
    """A database with the current schema, removed afterwards."""
    if kind == "sqlite":
        conn = sqlite3.connect(str(folder / "lensd.sqlite"), isolation_level=None, factory=SqliteDb)
        conn.execute("PRAGMA synchronous=OFF")  # a scratch file: speed over durability
        for statement in schema.create_statements():
            conn.execute(statement)
        try:
            yield conn
        finally:
            conn.close()
        return
    assert pg_server is not None
    name = pg_server.create_database()
    url = pg_server.url(name)
    pgstore.prepare_database(url)
    db = PgDb(url)
    try:
        yield db
    finally:
        db.close()
        pg_server.drop_database(name)


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters replaced: PostgreSQL text cannot hold them (docs/decisions.md),
    so data drawn for both engines is mapped the same way before either sees it."""
    if isinstance(value, str):
        return value.replace("\x00", "\x01")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, tuple):
        return tuple(without_nul(v) for v in value)
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value
