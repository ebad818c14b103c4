"""The daemon's query service: read-only connections that never block the writer.

What each read runs is planned by ``lensd.store.readplan``, the same plans the sync Aggregator runs:
this module only executes them: ``Reads`` on aiosqlite connections, ``lensd.daemon.pgreads.PgReads``
on PostgreSQL's; ``ReadService`` holds what the two share.

Streams are pulled, not pushed: ``ReadStream.next_page`` fetches one page from an open cursor when
the client has asked for it, so a slow reader costs the daemon one page of memory. A page stops at
its rows (``page_size``) or at ``page_budget`` bytes, whichever comes first, and holds one row at
least: a few fits of 50,000 samples x 50 parameters are past the frame limit together, each alone
is not. A row alone past the limit is one error naming its fit (``page_frame``).

``jobs`` pages hold one map per fit, keyed by ``JOB_FIELDS`` (``job`` already parsed), newest
change first, so ``lensd jobs`` needs no knowledge of the column order.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol

import aiosqlite
import anyio

from lensd.errors import FrameTooLarge, QueryError
from lensd.query.dialect import SQLITE, Dialect
from lensd.query.state import QueryState
from lensd.store import reader, readplan, schema
from lensd.store.budget import PAGE_BYTES, next_batch, wire_size
from lensd.store.sqlite_errors import readonly_uri, storage_error
from lensd.wire import protocol

DEFAULT_PAGE: Final = 256
MAX_PAGE: Final = 10_000
VALUES_PAGE: Final = 16  # most rows in a values page; its bytes are held to page_budget
JOB_FIELDS: Final = ("id", "unique_tag", "name", "status", "progress", "n_samples", "max_log_likelihood",
                      "error", "created_at", "updated_at", "completed_at", "last_event_at", "job")
MAX_OPEN_STREAMS: Final = 64  # read connections the daemon holds for streams; more wait their turn
JOBS_SQL: Final = f"SELECT {', '.join(JOB_FIELDS)} FROM fits "  # noqa: S608 - fixed column names


def jobs_sql(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """The statement of ``lensd jobs`` (the daemon's ``jobs`` stream, or ``--db`` read directly):
    newest update first, ties by the newest key, so both engines list the same fits in the same order."""
    status, limit = fields.get("status"), fields.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 1_000_000:
        raise QueryError("limit must be a positive integer")
    if status is None:
        return JOBS_SQL + "ORDER BY updated_at DESC, fit_key DESC LIMIT ?", [limit]
    if not isinstance(status, str):
        raise QueryError("status must be a string")
    return JOBS_SQL + "WHERE status = ? ORDER BY updated_at DESC, fit_key DESC LIMIT ?", [status, limit]


def job_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(JOB_FIELDS, row, strict=True))
    try:
        item["job"] = json.loads(item["job"]) if item["job"] else {}
    except ValueError:
        item["job"] = {}
    return item


def page_size(fields: dict[str, Any], default: int) -> int:
    size = fields.get("page_size", default)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE:
        raise QueryError(f"page_size must be an integer from 1 to {MAX_PAGE}")
    return size


def page_of(shape: str, rows: list[Any]) -> list[Any]:
    """A page of rows as the client gets it: fit maps, job maps, or plain lists."""
    if shape == "fit":
        return [reader.row_dict(tuple(row)) for row in rows]
    if shape == "job":
        return [job_dict(tuple(row)) for row in rows]
    return [[bytes(v) if isinstance(v, memoryview) else v for v in row] for row in rows]


def page_budget(max_frame: int) -> int:
    """How many bytes a page may hold past its first row: well under ``max_frame``, so that the
    page's envelope and ``wire_size``'s rounding never take a page of several rows over it."""
    return max(1, min(PAGE_BYTES, max_frame // 8))


def page_frame(rid: int, op: str, fields: dict[str, Any], items: list[Any], max_frame: int) -> bytes:
    """The frame of one page. Pages stop at ``page_budget``, so only a page of one row can be past
    ``max_frame``: that is one error naming the fit (and the way round it), not a broken stream."""
    try:
        return protocol.encode_frame(protocol.page(rid, items), max_frame)
    except FrameTooLarge as exc:
        first = items[0]
        fit = first.get("id") if isinstance(first, dict) else first[0]
        what = f"values({protocol.shown(fields.get('name'))})" if op == "values" else f"the {op} row"
        raise FrameTooLarge(f"{what} of fit {protocol.shown(fit)} is too large for one reply ({exc}); "
                            "read it from the database file with lensd.Aggregator.from_database") from None


class Pager:
    """Pages of at most ``size`` rows and, past the first row, at most ``budget`` bytes (``wire_size``).

    Rows are fetched as many as the budget has room for at the largest row of the last fetch (one,
    at first: ``lensd.store.budget.next_batch``, the sync reader's rule too), so the daemon holds a
    page and few more rows, however large each row is.
    """

    def __init__(self, fetch: Callable[[int], Awaitable[list[Any]]], size: int, shape: str, budget: int) -> None:
        self._fetch = fetch
        self._size = size
        self._shape = shape
        self._budget = budget
        self._held: deque[tuple[Any, int]] = deque()  # fetched, not yet sent: (item, wire size)
        self._row_bytes = 0  # the largest row of the last fetch; 0 before any
        self._drained = False  # the cursor has given its last row
        self.exhausted = False

    async def next_page(self) -> list[Any]:
        page: list[Any] = []
        used = 0
        while len(page) < self._size and used < self._budget:
            if not self._held:
                if self._drained:
                    break
                want = next_batch(self._size - len(page), self._budget - used, self._row_bytes)
                rows = await self._fetch(want)
                self._drained = len(rows) < want
                costs = [(item, wire_size(item)) for item in page_of(self._shape, rows)]
                self._held.extend(costs)
                if costs:
                    self._row_bytes = max(1, max(cost for _, cost in costs))
                continue
            item, cost = self._held[0]
            if page and used + cost > self._budget:
                break
            self._held.popleft()
            page.append(item)
            used += cost
        self.exhausted = self._drained and not self._held
        return page


class Stream(Protocol):
    """One open read of one client request, a page at a time (sqlite's or PostgreSQL's)."""

    @property
    def exhausted(self) -> bool: ...

    async def next_page(self) -> list[Any]: ...

    async def aclose(self) -> None: ...


class ReadStream:
    """One open cursor of one client request, on a read connection of its own.

    A cursor left open holds its snapshot: on a connection shared with other streams every later
    stream would read that old snapshot too, and the WAL could not be checkpointed past it. So each
    stream has its own connection, closed with it (the connection's ``idle`` timeout in
    ``lensd.daemon.connection`` ends a stream nobody pulls).
    """

    def __init__(self, cursor: aiosqlite.Cursor, size: int, shape: str,
                 conn: aiosqlite.Connection | None = None, release: Callable[[], None] | None = None,
                 budget: int = PAGE_BYTES) -> None:
        self._cursor = cursor
        self._pager = Pager(self._fetch, size, shape, budget)
        self._conn = conn
        self._release = release

    @property
    def exhausted(self) -> bool:
        return self._pager.exhausted

    async def _fetch(self, n: int) -> list[Any]:
        try:
            return list(await self._cursor.fetchmany(n))
        except sqlite3.Error as exc:
            raise storage_error(exc, "query failed") from None

    async def next_page(self) -> list[Any]:
        return await self._pager.next_page()

    async def aclose(self) -> None:
        try:
            await self._cursor.close()
        except (sqlite3.Error, ValueError):
            pass
        if self._conn is not None:
            try:
                await self._conn.close()
            except (sqlite3.Error, ValueError):
                pass
            self._conn = None
        if self._release is not None:
            self._release()
            self._release = None


class ReadService:
    """The statements behind each read op, whatever the engine; subclasses run them.

    A subclass gives ``_stream`` (a cursor on a connection of its own), ``_rows`` (a short read
    on the shared connection, which holds no snapshot after), ``size`` and ``aclose``.
    """

    dialect: Dialect

    def __init__(self) -> None:
        self._streams = anyio.Semaphore(MAX_OPEN_STREAMS)

    async def _stream(self, sql: str, params: list[Any], size: int, shape: str, budget: int) -> Stream:
        raise NotImplementedError

    async def _rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def size(self) -> int:
        """The database's size in bytes."""
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def open_stream(self, op: str, fields: dict[str, Any],
                          max_frame: int = protocol.DEFAULT_MAX_FRAME) -> Stream:
        """A paged stream for ``query``, ``values`` or ``jobs``, its pages sized for ``max_frame``."""
        budget = page_budget(max_frame)
        if op == "jobs":
            sql, params = jobs_sql(fields)
            return await self._stream(sql, params, page_size(fields, DEFAULT_PAGE), "job", budget)
        state = QueryState.from_wire(fields.get("query"))
        if op == "query":
            read = await readplan.run_async(readplan.fits(state, self.dialect), self._scalar)
            return await self._stream(read.sql, read.params, page_size(fields, DEFAULT_PAGE), "fit", budget)
        name = fields.get("name")
        if not isinstance(name, str):
            raise QueryError("values needs a name")
        read = await readplan.run_async(readplan.values(state, name, self.dialect), self._scalar)
        return await self._stream(read.sql, read.params, page_size(fields, VALUES_PAGE), "row", budget)

    async def count(self, fields: dict[str, Any]) -> int:
        state = QueryState.from_wire(fields.get("query"))
        read = await readplan.run_async(readplan.count(state, self.dialect), self._scalar)
        if read.reduce is not None:
            rows = await self._rows(read.sql, read.params)
            counted = await anyio.to_thread.run_sync(read.reduce, rows)  # numpy, off the event loop
            if counted is not None:
                return counted
            read = await readplan.run_async(readplan.count(state, self.dialect, use_blocks=False), self._scalar)
        return await self._scalar(read.sql, read.params)

    async def _scalar(self, sql: str, params: list[Any]) -> int:
        rows = await self._rows(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def fits_by_status(self) -> dict[str, int]:
        rows = await self._rows("SELECT status, count(*) FROM fits GROUP BY status", [])
        return {str(status): int(n) for status, n in rows}


class Reads(ReadService):
    """The daemon's reads of a sqlite file: aiosqlite connections, read-only."""

    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        super().__init__()
        self._conn = conn  # for one-value reads (count, status), which hold no snapshot after
        self.path = path

    @classmethod
    async def open(cls, target: Path) -> Reads:
        """Open ``target`` (an absolute path) read-only."""
        return cls(await _connect(target), target)

    async def _stream(self, sql: str, params: list[Any], size: int, shape: str, budget: int) -> ReadStream:
        """A cursor on a connection of its own; at most ``MAX_OPEN_STREAMS`` at once (others wait)."""
        await self._streams.acquire()
        try:
            conn = await _connect(self.path)
        except BaseException:
            self._streams.release()
            raise
        try:
            cursor = await conn.execute(sql, params)
        except BaseException as exc:
            await conn.close()
            self._streams.release()
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, "query failed") from None
            raise
        return ReadStream(cursor, size, shape, conn, self._streams.release, budget)

    async def aclose(self) -> None:
        await self._conn.close()

    async def size(self) -> int:
        files = (self.path, Path(f"{self.path}-wal"))
        return sum(p.stat().st_size for p in files if p.exists())

    async def _rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        try:
            cursor = await self._conn.execute(sql, params)
            rows = await cursor.fetchall()
            await cursor.close()
        except sqlite3.Error as exc:
            raise storage_error(exc, "query failed") from None
        return [tuple(row) for row in rows]


async def _connect(target: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(readonly_uri(target), uri=True, isolation_level=None)
    try:
        for pragma in schema.READER_PRAGMAS:
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn
