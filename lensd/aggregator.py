"""Aggregators: the query API over a database file (sync) or a daemon's socket (async).

Both share ``_Base``, which holds an immutable ``QueryState`` and returns a new aggregator from
every refinement (``query``, ``order_by``, slices, ``limit``, ``grid_searches``), as PyAutoFit's
aggregator does. Only iterating touches the database, a page at a time.

PyAutoFit's habits hold: ``agg(predicate)`` is ``agg.query(predicate)``, ``agg[0]`` and ``agg[-1]``
are fits, ``agg[:-1]`` and ``agg[-2:]`` are aggregators with list semantics (negative bounds are
resolved against the fit count when the query runs, by the reader or the daemon), and ``len``
is a COUNT. docs/query.md lists where lensd deliberately differs.
"""

from __future__ import annotations

import operator
import os
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Iterator, Sequence
from contextlib import aclosing
from copy import copy
from typing import TYPE_CHECKING, Any, Self, overload

from lensd.errors import LensdError
from lensd.query import compiler, statements
from lensd.query.nodes import Column, Predicate
from lensd.query.state import QueryFields, QueryState
from lensd.store import flatrows, names, reader, readplan, schema
from lensd.store.reader import Fit
from lensd.store.sources import ReadSource, open_source

if TYPE_CHECKING:
    from lensd.client.connection import Client


class _Base(QueryFields):
    _state: QueryState

    def _with(self, state: QueryState) -> Self:
        new = copy(self)
        new._state = state
        return new

    @property
    def state(self) -> QueryState:
        """The immutable description of what this aggregator selects."""
        return self._state

    def query(self, predicate: Predicate | Column) -> Self:
        """Fits matching ``predicate`` too (combined with any earlier query by ``&``); a boolean
        column alone (``agg.is_complete``) is a predicate."""
        return self._with(self._state.where(predicate))

    def __call__(self, predicate: Predicate | Column) -> Self:
        """``agg(predicate)``: the same as ``agg.query(predicate)``, as in PyAutoFit."""
        return self.query(predicate)

    def order_by(self, key: Any, reverse: bool = False) -> Self:
        return self._with(self._state.ordered(key, reverse))

    def limit(self, n: int) -> Self:
        return self._with(self._state.limited(n))

    def _sliced(self, item: slice) -> Self:
        return self._with(self._state.sliced(item.start, item.stop, item.step))

    def _one(self, item: object) -> tuple[int, Self]:
        """``agg[i]`` as a one-fit aggregator (``fits[i:i+1]``, negatives from the end)."""
        if isinstance(item, bool):
            raise TypeError("aggregator indices are whole numbers or slices, not bool")
        try:
            index = operator.index(item)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"aggregator indices are whole numbers or slices, not {type(item).__name__}") from None
        return index, self._sliced(slice(index, index + 1 or None))

    def grid_searches(self) -> Self:
        """Grid-search and sensitivity-map parents only; ``.children()`` reaches their cells."""
        return self._with(self._state.grids())

    def _describe(self, state: QueryState | None = None) -> str:
        """The state in the words of the API, for reprs: ``query(...) order_by(...) [2:5]``."""
        state, parts = self._state if state is None else state, []
        if state.parent is not None:
            parts.append(f"children() of ({self._describe(state.parent)})")
        if state.predicate is not None:
            parts.append(f"query({state.predicate!r})")
        parts += [f"order_by({key.operand!r}{', reverse=True' if key.reverse else ''})" for key in state.order]
        if state.offset or state.limit is not None:
            stop = "" if state.limit is None else state.offset + state.limit
            parts.append(f"[{state.offset or ''}:{stop}]")
        parts += [f"[{'' if a is None else a}:{'' if b is None else b}]" for a, b in state.slices]
        for flag, word in ((state.completed_only, "completed_only"), (not state.top_level_only, "all levels"),
                           (state.grid_only, "grid_searches()")):
            if flag:
                parts.append(word)
        if state.parent_id is not None:
            parts.append(f"children of {state.parent_id!r}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()}>".replace(" >", ">")


class Aggregator(_Base):
    """Query a lensd database directly: read-only, safe while the daemon writes.

    Reads are planned by ``readplan`` (the same plans the daemon runs) and executed by a
    ``ReadSource``: a sqlite file, or a PostgreSQL database.
    """

    def __init__(self, source: ReadSource, state: QueryState, path: str = "") -> None:
        self._source = source
        self._conn = source.conn
        self._state = state
        self._path = path

    @classmethod
    def from_database(cls, path: str | os.PathLike[str], completed_only: bool = False,
                      top_level_only: bool = True) -> Aggregator:
        """Open a sqlite file, or a PostgreSQL database by its ``postgresql://`` URL."""
        return cls(open_source(path), QueryState(completed_only=completed_only, top_level_only=top_level_only),
                   os.fspath(path))

    def __repr__(self) -> str:
        return super().__repr__().replace("<Aggregator", f"<Aggregator {self._path!r}", 1)

    def _read(self, planner: readplan.Planner) -> readplan.Read:
        return readplan.run(planner, self._source.scalar)

    def _resolved(self) -> QueryState:
        return readplan.run(readplan.resolve(self._state, self._source.dialect), self._source.scalar)

    def __len__(self) -> int:
        """How many fits are selected: one COUNT in SQL, no fit is loaded."""
        read = self._read(readplan.count(self._state, self._source.dialect))
        counted = read.reduce(self._source.stream(read.sql, read.params)) if read.reduce else None
        if counted is None and read.reduce:  # a block row lensd never wrote: count with SQL
            read = self._read(readplan.count(self._state, self._source.dialect, use_blocks=False))
        count = counted if counted is not None else self._source.scalar(read.sql, read.params)
        if not count:
            self._explain_nothing()
        return count

    def _explain_nothing(self, value: str | None = None) -> None:
        """An empty answer: warn (NoSuchName, once each) about the names no fit has."""
        if self._source.dialect.name != "sqlite":  # names.py reads a sqlite file
            return
        for note in names.notes_for(self._conn, self._state.predicate, value):
            names.warn_once(note, stacklevel=4)

    def __iter__(self) -> Iterator[Fit]:
        return self.fits()

    @overload
    def __getitem__(self, item: slice) -> Aggregator: ...
    @overload
    def __getitem__(self, item: int) -> Fit: ...
    def __getitem__(self, item: slice | int) -> Aggregator | Fit:
        """``agg[2:5]``, ``agg[-2:]``: a new aggregator; ``agg[0]``, ``agg[-1]``: one Fit."""
        if isinstance(item, slice):
            return self._sliced(item)
        index, one = self._one(item)
        for fit in one.fits():
            return fit
        raise IndexError(f"aggregator index {index} out of range: it selects {len(self)} fit(s)")

    def fits(self) -> Generator[Fit, None, None]:
        read = self._read(readplan.fits(self._state, self._source.dialect))
        found = False
        for row in self._source.stream(read.sql, read.params):
            found = True
            yield Fit(read.decode(row), self._source.payload, self._source.history)
        if not found:
            self._explain_nothing()

    def values(self, name: str) -> Iterator[Any]:
        """``name``'s value of each selected fit, in order: "model", "search", "instance", "info", ...

        A record field gives one item per fit, None where the fit lacks it (``{}`` for ``info``),
        so ``zip(agg.fits(), agg.values(name))`` lines up as PyAutoFit users expect; samples and
        files are payloads, given for the fits that have them (readplan.values), and so is a field
        asked for by PyAutoFit's file name (``samples_summary``: reader.skips_missing)."""
        read = self._read(readplan.values(self._state, name, self._source.dialect))
        found = False
        skips = reader.skips_missing(name)
        for row in self._source.stream(read.sql, read.params, page=32):
            value = read.decode(row)
            if value is None and skips:
                continue
            found = True
            yield value
        if not found:
            self._explain_nothing(name)

    def children(self) -> Aggregator:
        """The cells and sensitivity fits of the selected grid searches.

        The selection of parents stays part of the query (a subquery), so no fit is read here
        and any number of parents works."""
        return self._with(self._state.children())

    def columns(self, median: bool = False) -> list[str]:
        """The columns ``to_rows`` and ``lensd export`` give for these fits (see lensd.store.flatrows).

        Read from the facts index (the distinct parameter paths and info keys of the selected
        fits), not from the fits themselves, so it costs one indexed query.
        """
        kinds = (schema.KIND_VALUE, schema.KIND_INFO, *((schema.KIND_MEDIAN,) if median else ()))
        access = compiler.Access(dialect=self._source.dialect)
        sql, params = statements.select_fact_keys(self._resolved(), kinds, access)
        paths: list[str] = []
        info: list[str] = []
        for kind, key in self._source.stream(sql, params):
            (info if kind == schema.KIND_INFO else paths).append(key)
        return flatrows.columns_of(paths, info)

    def to_rows(self, columns: Sequence[str] | None = None,
                median: bool = False) -> Generator[dict[str, Any], None, None]:
        """One flat dict per fit, streamed: fit columns, a column per parameter path (max-likelihood
        values, or median-PDF values with ``median=True``) and ``info.<key>`` columns.

        Every row has the same keys: ``columns``, or else ``self.columns(median)``. The columns and
        the rows are read in one snapshot of the database, so a fit the daemon commits meanwhile
        cannot bring a column the header lacks.
        """
        with self._source.snapshot():
            fits = self.fits()
            try:
                chosen = list(columns) if columns is not None else self.columns(median)
                yield from flatrows.rows_of(fits, chosen, median)
            finally:
                fits.close()  # its cursor first, should the caller stop early and close the connection

    def to_dataframe(self, columns: Sequence[str] | None = None, median: bool = False) -> Any:
        """The rows of ``to_rows`` as a pandas DataFrame (``pip install 'lensd[pandas]'``)."""
        chosen = list(columns) if columns is not None else self.columns(median)
        return flatrows.dataframe_of(self.to_rows(chosen, median), chosen)

    def _repr_html_(self) -> str:
        first = self[:flatrows.HTML_ROWS]
        return flatrows.html_table(first.to_rows(), first.columns(), len(self))

    def as_autofit(self, trust: bool = False) -> Any:
        """These fits with PyAutoFit's interface, for ``al.agg.TracerAgg(aggregator=...)`` and
        friends (lensd.autofit). It rebuilds models with PyAutoFit's ``from_dict``, which imports
        every class path stored in the database: pass ``trust=True`` only for a database you trust."""
        if trust is not True:
            raise LensdError("as_autofit imports the class paths stored in the database; "
                             "call as_autofit(trust=True) only for a database you trust")
        from lensd.autofit import Aggregator as AutofitAggregator  # needs autofit installed

        return AutofitAggregator(self, trust=True)

    def close(self) -> None:
        self._source.close()


class AsyncAggregator(_Base):
    """The same queries, answered by the daemon (Unix socket or TCP) and streamed in pages."""

    def __init__(self, client: Client, state: QueryState) -> None:
        self._client = client
        self._state = state

    @classmethod
    async def connect(cls, socket: str | os.PathLike[str] | None = None, completed_only: bool = False,
                      top_level_only: bool = True, *, address: str | None = None,
                      secret_file: str | os.PathLike[str] | None = None,
                      tls_ca: str | os.PathLike[str] | None = None,
                      contact: str | os.PathLike[str] | None = None) -> AsyncAggregator:
        """Ask the daemon, found as ``lensd.connect()`` finds it (``address=``, the contact file, ...)."""
        from lensd.client.connection import Client
        from lensd.client.fits import target_of

        client = await Client.open(target_of(socket, address, secret_file, tls_ca, contact))
        return cls(client, QueryState(completed_only=completed_only, top_level_only=top_level_only))

    def __repr__(self) -> str:
        where = getattr(self._client, "path", None)
        return super().__repr__().replace("<AsyncAggregator", f"<AsyncAggregator {str(where)!r}", 1)

    def __len__(self) -> int:
        raise TypeError("len() cannot wait for the daemon: use `await agg.count()`")

    def __iter__(self) -> Iterator[Fit]:
        raise TypeError("an AsyncAggregator is iterated with `async for fit in agg.fits()`")

    def __aiter__(self) -> AsyncIterator[Fit]:
        return self.fits()

    @overload
    def __getitem__(self, item: slice) -> AsyncAggregator: ...
    @overload
    def __getitem__(self, item: int) -> Coroutine[Any, Any, Fit]: ...
    def __getitem__(self, item: slice | int) -> AsyncAggregator | Coroutine[Any, Any, Fit]:
        """``agg[2:5]``, ``agg[-2:]``: a new aggregator; ``await agg[0]``, ``await agg[-1]``: one Fit."""
        if isinstance(item, slice):
            return self._sliced(item)
        return self._fit_at(*self._one(item))

    async def _fit_at(self, index: int, one: AsyncAggregator) -> Fit:
        async with aclosing(one.fits()) as fits:  # closed here, in this task: it holds the connection
            async for fit in fits:
                return fit
        raise IndexError(f"aggregator index {index} out of range: it selects {await self.count()} fit(s)")

    async def count(self) -> int:
        reply = await self._client.request("count", query=self._state.to_wire())
        return int(reply["count"])

    async def fits(self) -> AsyncGenerator[Fit, None]:
        found = False
        async with aclosing(self._client.stream("query", query=self._state.to_wire())) as rows:
            async for row in rows:  # closed with this generator, in the task that closes it
                found = True
                yield Fit(row)
        if not found:
            await self._explain_nothing()

    async def values(self, name: str) -> AsyncGenerator[Any, None]:
        """As ``Aggregator.values``: one item per fit for a record field (None where it lacks it)."""
        found = False
        skips = reader.skips_missing(name)
        async with aclosing(self._client.stream("values", name=name, query=self._state.to_wire())) as items:
            async for item in items:
                value = reader.decode_value(name, item)  # the daemon streams readplan.values rows
                if value is None and skips:
                    continue
                found = True
                yield value
        if not found:
            await self._explain_nothing(name)

    async def _explain_nothing(self, value: str | None = None) -> None:
        """As ``Aggregator``'s: the names are looked up in the daemon's database file, read-only,
        when this machine can read it (the same node); otherwise nothing is said."""
        import anyio

        if self._state.predicate is None and value is None:
            return
        reply = await self._client.request("status")
        database = (reply.get("status") or {}).get("database")
        if isinstance(database, str):
            notes = await anyio.to_thread.run_sync(names.notes_for_file, database, self._state.predicate, value)
            for note in notes:
                names.warn_once(note, stacklevel=4)

    async def children(self) -> AsyncAggregator:
        """As ``Aggregator.children``: the daemon gets the parents' state, never a list of ids
        (a coroutine still, as it always was, though nothing is awaited)."""
        return self._with(self._state.children())

    async def to_rows(self, columns: Sequence[str] | None = None,
                      median: bool = False) -> list[dict[str, Any]]:
        """The rows of ``Aggregator.to_rows``, as a list (the daemon has no fact-key op, so the
        columns come from the fits once they are all here)."""
        fits = [fit async for fit in self.fits()]
        chosen = list(columns) if columns is not None else flatrows.columns_of_fits(fits, median)
        return list(flatrows.rows_of(fits, chosen, median))

    async def to_dataframe(self, columns: Sequence[str] | None = None, median: bool = False) -> Any:
        rows = await self.to_rows(columns, median)
        chosen = list(columns) if columns is not None else list(rows[0]) if rows else list(flatrows.FIT_FIELDS)
        return flatrows.dataframe_of(rows, chosen)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
