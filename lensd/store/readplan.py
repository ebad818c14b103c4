"""The one read path: what a read runs (access plan, SQL) and how its rows decode, without I/O.

The sync ``Aggregator`` (a connection of its own) and the daemon's query service (an async
connection) answer the same reads. Everything they have in common lives here, written once, as
httpx's clients share one base: a planner is a generator that yields the small statements it
needs answered (the size of the database, how many fits each leaf matches) and returns the
``Read`` to stream; ``run`` and ``run_async`` drive it over a blocking or an awaiting "scalar"
function, and that is the only difference between the two paths. Decoding the rows is
``Read.decode``, also shared.

Every statement is written for the reader's ``Dialect``; passing its text through
``Dialect.sql`` is the executor's job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, TypeAlias, TypeVar

from lensd.errors import QueryError
from lensd.query import blockcount, compiler, counting
from lensd.query.dialect import Dialect
from lensd.query.state import QueryState
from lensd.store import reader

Statement: TypeAlias = tuple[str, list[Any]]
Planner: TypeAlias = Generator[Statement, int, "Read"]
T = TypeVar("T")

FIT: Final = "fit"
VALUE: Final = "value"
COUNT: Final = "count"
BLOCKS: Final = "blocks"  # rows of count_blocks, made into the count by ``reduce`` (blockcount.py)


@dataclass(frozen=True)
class Read:
    """One statement to stream and what its rows are: fit rows, values of ``name``, or a count."""

    sql: str
    params: list[Any]
    shape: str
    name: str = ""
    reduce: Callable[[Iterable[Any]], int | None] | None = None

    def decode(self, row: Any) -> Any:
        """One row as the value the reader hands out (a fit row dict, a value, an int)."""
        if self.shape == FIT:
            return reader.row_dict(tuple(row))
        if self.shape == VALUE:
            return reader.decode_value(self.name, row)
        return int(row[0])


def access(state: QueryState, dialect: Dialect, paged: bool = True) -> Generator[Statement, int, compiler.Access]:
    """Which leaves of ``state`` to probe fit by fit rather than search (compiler.py says why):
    those whose match count, read from their index and capped, reaches the break-even point.
    ``paged``: the read is streamed and may stop early (``compiler.Access``); a count is not."""
    found = compiler.leaves(state, dialect)
    if not found:
        return compiler.Access(dialect=dialect, paged=paged)
    threshold = compiler.probe_threshold((yield compiler.SIZE_SQL, []))
    counts = []
    for leaf in found:
        counts.append((yield leaf.count(threshold, dialect)))
    return compiler.access_from(found, counts, threshold, dialect, paged)


def resolve(state: QueryState, dialect: Dialect) -> Generator[Statement, int, QueryState]:
    """``state`` with its negative slices applied (``agg[-2:]``): they need the count of its fits.
    A parent state's (``agg[-2:].children()``) are applied first, as its fits decide the count."""
    if not state.needs_total:
        return state
    if state.parent is not None and state.parent.needs_total:
        state = replace(state, parent=(yield from resolve(state.parent, dialect)))
        if not state.slices:
            return state
    every = state.unwindowed()
    chosen = yield from access(every, dialect, paged=False)
    return state.resolved((yield counting.select_count(every, chosen)))


def fits(state: QueryState, dialect: Dialect) -> Planner:
    """The selected fits' rows (``reader.FIT_ROW_COLUMNS``), in order."""
    state = yield from resolve(state, dialect)
    chosen = yield from access(state, dialect)
    return Read(*reader.fit_rows_sql(state, chosen), FIT)


def values(state: QueryState, name: str, dialect: Dialect) -> Planner:
    """``values(name)``: a row per selected fit for a record field (``decode`` gives None where the
    fit lacks it, and callers yield that None, so the values line up with the fits), a row per fit
    that has it for a payload (samples, a file)."""
    if not isinstance(name, str) or not name:
        raise QueryError("values() takes the name of a field or file")
    state = yield from resolve(state, dialect)
    chosen = yield from access(state, dialect)
    return Read(*reader.values_plan(state, name, chosen), VALUE, name)


def count(state: QueryState, dialect: Dialect, use_blocks: bool = True) -> Planner:
    """How many fits the state selects: one row, one int; or (shape ``BLOCKS``) the block rows
    that ``reduce`` makes into the count. When ``reduce`` gives None (a block row lensd never
    wrote), ``count(state, dialect, use_blocks=False)`` is the SQL count."""
    state = yield from resolve(state, dialect)
    served = blockcount.plan(state) if use_blocks else None
    if served is not None and (yield blockcount.HAS_BLOCKS[dialect.name], []):
        return Read(*served.sql(dialect), BLOCKS, reduce=served.reduce)
    chosen = yield from access(state, dialect, paged=False)
    return Read(*counting.select_count(state, chosen), COUNT)


def run(planner: Generator[Statement, int, T], scalar: Callable[[str, list[Any]], int]) -> T:
    """Drive ``planner`` with a blocking ``scalar(sql, params)``; returns what it returns (for
    ``fits``, ``values`` and ``count``, the read to stream)."""
    try:
        question = next(planner)
        while True:
            question = planner.send(scalar(*question))
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(planner: Generator[Statement, int, T], scalar: Callable[[str, list[Any]], Awaitable[int]]) -> T:
    """``run`` with an awaiting ``scalar``: the daemon's way."""
    try:
        question = next(planner)
        while True:
            question = planner.send(await scalar(*question))
    except StopIteration as done:
        result: T = done.value
        return result
