"""The daemon's reads of a PostgreSQL database: the same plans as sqlite's, on psycopg's async side.

As for sqlite (``reads.Reads``), each stream has a connection of its own, so its snapshot ends with
it, and one shared connection answers the one-value reads (counts, status). A stream's connection
is read-only, REPEATABLE READ, and pages its rows from a server-side cursor (``DECLARE ... FETCH``)
only as the client asks for them, so a large result never sits in the daemon's memory.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from lensd.daemon.reads import Pager, ReadService
from lensd.errors import StorageError
from lensd.query.dialect import POSTGRESQL
from lensd.store import pgstore
from lensd.store.budget import PAGE_BYTES

if TYPE_CHECKING:
    import psycopg


async def _connect(url: str, read_only: bool) -> psycopg.AsyncConnection[Any]:
    driver = pgstore._psycopg()
    try:
        conn: psycopg.AsyncConnection[Any] = await driver.AsyncConnection.connect(
            url, autocommit=not read_only, connect_timeout=30, application_name="lensd")
        await conn.execute(pgstore.SESSION_SQL)
        if read_only:
            await conn.commit()  # the SET began a transaction; the session's settings change outside one
            await conn.set_read_only(True)
            await conn.set_isolation_level(driver.IsolationLevel.REPEATABLE_READ)
    except driver.Error as exc:
        raise pgstore.storage_error(exc, url) from None
    return conn


class PgStream:
    """One client's stream: a named cursor on a read-only connection of its own."""

    _names = itertools.count(1)

    def __init__(self, conn: psycopg.AsyncConnection[Any], size: int, shape: str, release: Any,
                 budget: int = PAGE_BYTES) -> None:
        self._conn = conn
        self._cursor = conn.cursor(name=f"lensd_stream_{next(self._names)}")
        self._size = size
        self._pager = Pager(self._fetch, size, shape, budget)  # pages of rows and of bytes, as sqlite's
        self._release = release

    @property
    def exhausted(self) -> bool:
        return self._pager.exhausted

    async def start(self, sql: str, params: list[Any]) -> None:
        self._cursor.itersize = self._size
        await self._cursor.execute(POSTGRESQL.sql(sql), params)

    async def _fetch(self, n: int) -> list[Any]:
        try:
            return list(await self._cursor.fetchmany(n))
        except pgstore._psycopg().Error as exc:
            raise StorageError(f"query failed: {pgstore.storage_error(exc)}") from None

    async def next_page(self) -> list[Any]:
        return await self._pager.next_page()

    async def aclose(self) -> None:
        error = pgstore._psycopg().Error
        try:
            await self._cursor.close()
        except error:
            pass
        try:
            await self._conn.close()
        except error:
            pass
        if self._release is not None:
            self._release()
            self._release = None


class PgReads(ReadService):
    """The read connections of a daemon on PostgreSQL."""

    dialect = POSTGRESQL

    def __init__(self, conn: psycopg.AsyncConnection[Any], url: str) -> None:
        super().__init__()
        self._conn = conn  # autocommit: each one-value read sees what is committed, and holds nothing
        self._url = url

    @classmethod
    async def open(cls, url: str) -> PgReads:
        return cls(await _connect(url, read_only=False), url)

    async def _stream(self, sql: str, params: list[Any], size: int, shape: str, budget: int) -> PgStream:
        """A cursor on a connection of its own; at most ``MAX_OPEN_STREAMS`` at once (others wait)."""
        await self._streams.acquire()
        try:
            stream = PgStream(await _connect(self._url, read_only=True), size, shape, self._streams.release,
                              budget)
        except BaseException:
            self._streams.release()
            raise
        try:
            await stream.start(sql, params)
        except BaseException as exc:
            await stream.aclose()
            if isinstance(exc, pgstore._psycopg().Error):
                raise StorageError(f"query failed: {pgstore.storage_error(exc)}") from None
            raise
        return stream

    async def _rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            cursor = await self._conn.execute(POSTGRESQL.sql(sql), params)
            return list(await cursor.fetchall())
        except pgstore._psycopg().Error as exc:
            raise StorageError(f"query failed: {pgstore.storage_error(exc)}") from None

    async def size(self) -> int:
        return await self._scalar("SELECT pg_database_size(current_database())", [])

    async def aclose(self) -> None:
        await self._conn.close()
