"""``lensd query`` and ``lensd export``: fits from the file or the daemon, written as they stream.

The expression is text read by the grammar of text.py (never ``eval``) into the same
QueryState the Python API builds, so the shell and a notebook get the same fits. Fits come from
the database file (read-only) or, when only ``--socket``/``--address`` is given, from the daemon, one page at a
time in both cases.

CSV and JSON are written row by row, so exporting 10^5 fits holds one page of fits, not the
table. Their columns must be known before the first row (a CSV header, a uniform JSON list):

- from the file, ``Aggregator.to_rows`` asks the facts index for the distinct parameter paths
  and info keys of the selected fits, then streams the rows, both in one read snapshot;
- from the daemon, which has no such op, each row is spilled to a temporary file while the
  columns are collected, then read back under the header: one pass over the socket, memory flat,
  disk about the size of the output.

``--format table`` needs every row to size its columns, so it is for ``lensd query`` only.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from lensd.client.address import Target
from lensd.query.state import QueryState
from lensd.settings import Database
from lensd.store import flatrows
from lensd.store.reader import Fit

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

QUERY_COLUMNS: Final = ("id", "unique_tag", "name", "status", "max_log_likelihood")
PAGE: Final = 256  # fits buffered between the socket reader and the writer


def state_of(expression: str, limit: int | None = None, order_by: str | None = None,
             all_fits: bool = False) -> QueryState:
    """The QueryState a command line describes (``--order-by -x`` is descending)."""
    from lensd.query import text

    state = QueryState(top_level_only=not all_fits)
    if expression.strip():
        state = state.where(text.parse(expression))
    if order_by:
        reverse = order_by.startswith("-")
        state = state.ordered(text.parse_operand(order_by.removeprefix("-")), reverse)
    if limit is not None:
        state = state.limited(limit)
    return state


def remote_fits(state: QueryState, target: Target) -> Iterator[Fit]:
    """The daemon's fits for ``state``, one at a time, for synchronous code.

    An event loop in a thread (a blocking portal) runs one task that reads the socket stream and
    hands fits over a small buffer; the client paces the daemon, so memory stays at a page.
    """
    import anyio
    from anyio.from_thread import start_blocking_portal

    from lensd.aggregator import AsyncAggregator

    send, receive = anyio.create_memory_object_stream[Fit](max_buffer_size=PAGE)

    async def pump() -> None:
        async with send, await AsyncAggregator.connect(
                socket=target.socket, address=target.address, secret_file=target.secret_file,
                tls_ca=target.tls_ca) as remote:
            async for fit in remote._with(state).fits():
                await send.send(fit)

    with start_blocking_portal(backend="asyncio") as portal:
        task = portal.start_task_soon(pump)
        try:
            while True:
                try:
                    fit = portal.call(receive.receive)
                except anyio.EndOfStream:
                    break
                yield fit
            task.result()  # the daemon's error, if the stream ended with one
        finally:
            task.cancel()
            portal.call(receive.aclose)


def is_local(db: Database | None, target: Target | None) -> bool:
    """Read the file unless the daemon was named (--socket, --address, $LENSD_ADDRESS) and --db was not."""
    return db is not None or target is None or not target.explicit


def selected_fits(state: QueryState, db: Database | None, target: Target | None) -> Iterator[Fit]:
    """The fits of ``state``, read from the database or from the daemon (``is_local``)."""
    if is_local(db, target):
        from lensd import settings
        from lensd.aggregator import Aggregator

        agg = Aggregator.from_database(settings.resolve_db(db))
        fits = agg._with(state).fits()
        try:
            yield from fits
        finally:
            fits.close()  # its cursor before the connection, when the reader stops early
            agg.close()
    else:
        assert target is not None
        yield from remote_fits(state, target)


def query_rows(state: QueryState, db: Database | None, target: Target | None) -> Iterator[dict[str, Any]]:
    """``lensd query``: id, unique_tag, name, status, max_log_likelihood of each fit."""
    return ({c: getattr(fit, c) for c in QUERY_COLUMNS} for fit in selected_fits(state, db, target))


def export_rows(state: QueryState, db: Database | None, target: Target | None,
                median: bool = False) -> Iterator[dict[str, Any]]:
    """``lensd export``: one flat row per fit, every row with the same columns (see lensd.store.flatrows)."""
    if is_local(db, target):
        from lensd import settings
        from lensd.aggregator import Aggregator

        agg = Aggregator.from_database(settings.resolve_db(db))
        rows = agg._with(state).to_rows(median=median)
        try:
            yield from rows
        finally:
            rows.close()
            agg.close()
    else:
        assert target is not None
        yield from _spilled(remote_fits(state, target), median)


def _spilled(fits: Iterable[Fit], median: bool) -> Iterator[dict[str, Any]]:
    """Rows of fits whose columns are not known in advance: spill, collect columns, read back."""
    found = flatrows.ColumnSet(median)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spill:
        for fit in fits:
            found.add(fit)
            spill.write(json.dumps(flatrows.full_row(fit, median)) + "\n")  # NaN and inf round-trip
        columns = found.columns()
        spill.seek(0)
        for line in spill:
            row = json.loads(line)
            yield {column: row.get(column) for column in columns}


def strict_json(value: Any) -> Any:
    """JSON (RFC 8259) has no NaN or infinity: they become null, so jq and browsers can read it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)  # a nested info value, as JSON text
    return value


def write(rows: Iterable[dict[str, Any]], fmt: str, out: SupportsWrite[str],
          columns: Sequence[str] | None = None) -> None:
    """Write rows as ``table``, ``csv`` or ``json``; CSV and JSON as they come.

    Without ``columns`` the first row's keys are the columns (rows of ``export_rows`` all share them).
    """
    from lensd.cli import render

    rows = iter(rows)
    if fmt == "table":
        shown = list(rows)
        out.write(render.table(shown, columns) if shown else "no fits\n")
        return
    first = next(rows, None)
    names = list(columns or (first or dict.fromkeys(flatrows.FIT_FIELDS)))
    everything = rows if first is None else _chain(first, rows)
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for row in everything:
            writer.writerow([_csv_cell(row.get(c)) for c in names])
    elif fmt == "json":
        out.write("[")
        for i, row in enumerate(everything):
            out.write(("\n" if i == 0 else ",\n") + json.dumps(strict_json({c: row.get(c) for c in names})))
        out.write("\n]\n" if first is not None else "]\n")
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def emit(produce: Callable[[TextIO], None], out: TextIO | None = None) -> None:
    """Run ``produce(stdout)``; a reader that went away (``lensd export | head``) ends it quietly."""
    stream = out or sys.stdout
    try:
        produce(stream)
        stream.flush()
    except BrokenPipeError:
        # Python would report the failed flush of stdout at exit; point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        sys.exit(1)
