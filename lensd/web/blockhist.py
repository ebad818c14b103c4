"""A histogram of one numeric fact read from the fit-key blocks, as ``len()`` is counted.

The SQL histogram (aggregate.py) reads one index range of the x fact, but a query or a colour joins
every fit of that range to the query's set and to its class: 3.5 s at 10^6 fits
(docs/performance.md). When the blocks hold all of it (lensd.store.blocks: the fact's numbers per
block, each class's fits as a bitmap, and a query ``lensd.query.blockcount`` answers), the same
counts are a few hundred rows read by primary key and numpy. The bins are aggregate.py's, to the
bit: the same edges from the same minimum and maximum, and the same rule against them (``bin_of``:
bin i holds ``edges[i] <= x < edges[i + 1]``, the last also ``x == high``), and the same values left
out of them: inf and -inf, counted as ``left_out``. Colours the blocks
hold: the class at a model path, a text fact (an info key), ``unique_tag``; a fit with none of
their values is "none", as SQL's left join gives.
A binned scatter (a y fact as well) is counted the same way, one cell number a fit.
Anything else (a column on either axis, a colour by a number or another column, more than
``MAX_LABELS_READ`` values, a query the blocks cannot answer, a block row lensd never writes)
returns None, and the SQL statement counts it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from lensd.query import blockcount, text
from lensd.query.dialect import Dialect
from lensd.query.nodes import Column, ModelPath, Operand, fact_address
from lensd.query.state import QueryState
from lensd.store import blocks

MAX_LABELS_READ: Final = 64  # values of a colour read as bitmaps; past that, SQL groups them
Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
# (edges, (bin(s), label text, None, count) rows, fits left out: a value not finite)
Counted = tuple[list[list[float]], list[tuple[Any, ...]], int]


def _distinct(rows: Rows, column: str, table: str, where: str, params: list[Any]) -> list[str] | None:
    """The distinct values of ``column`` where ``where`` holds, in order, one index seek each (the
    first without a lower bound, so "" is found too); None past ``MAX_LABELS_READ``."""
    found: list[str] = []
    first = f"SELECT min({column}) FROM {table} WHERE {where}"  # noqa: S608 - lensd's own names
    after = f"{first} AND {column} > ?"
    while len(found) <= MAX_LABELS_READ:
        (value,), = rows(after if found else first, [*params, found[-1]] if found else params)
        if value is None:
            return found
        found.append(str(value))
    return None


def _labels(rows: Rows, colour: str) -> tuple[list[tuple[str, str]], str | None] | None:
    """(label, bitmap name) for each value of ``colour`` (a class at a model path, a text fact, a
    served column), and the numbers row of a fact colour (a fit with a number there is labelled by
    it, which no bitmap holds); None when the blocks do not hold the colour."""
    operand = text.parse_operand(colour)
    if isinstance(operand, ModelPath):
        classes = _distinct(rows, "class_name", "nodes", "path = ?", [operand.path])
        if classes is None:
            return None
        if classes:
            return [(name, blocks.class_name("class_name", operand.path, name)) for name in classes], None
    if isinstance(operand, Column):
        if operand.name not in blocks.SERVED_COLUMNS:
            return None
        values = _distinct(rows, operand.name, "fits", f"{operand.name} IS NOT NULL", [])
        if values is None:
            return None
        return [(value, blocks.column_name(operand.name, value)) for value in values], None
    address = fact_address(operand)
    if address is None:
        return None
    texts = _distinct(rows, "txt", "facts", "kind = ? AND key = ?", list(address))
    if texts is None:
        return None
    return [(value, blocks.text_name(*address, value)) for value in texts], blocks.number_name(*address)


def edges_between(low: float, high: float, bins: int) -> list[float] | None:
    """The edges of every plot, counted here or in SQL (aggregate.py): ``bins`` equal steps from
    ``low`` to ``high``, the last edge ``high`` itself: ``low + bins * step`` may round below it (0.2
    to 0.9 in 7 steps ends at 0.8999999999999999), and the largest value would fall outside every bin.

    Any finite ends have edges: a span that overflows (-1.5e308 to 1.5e308) is stepped at a quarter
    of the scale, a power of two, so each edge is the one the unbounded arithmetic gives. A lone
    value steps by 1, or by 2**-40 of its size where 1 is below its precision (a lone 1e17), and
    ends the edges instead of starting them where stepping up would overflow (a lone 1.79e308).
    None (no bins: an empty plot) when an end is not finite, or when the values are too close
    together for distinct edges (1.0 and the next float up, in 40 bins)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    if high > low:
        scale = 1.0 if math.isfinite(high - low) else 0.25
        step = (high * scale - low * scale) / bins
        edges = [low, *((low * scale + i * step) / scale for i in range(1, bins)), high]
    else:
        step = 1.0 if abs(low) < 2.0**52 else abs(low) * 2.0**-40
        up = math.isfinite(low + bins * step)
        edges = [low + i * step if up else low - (bins - i) * step for i in range(bins + 1)]
    if any(a >= b for a, b in itertools.pairwise(edges)):
        return None
    return edges


def _edges(values: Any, bins: int) -> list[float] | None:
    """``edges_between`` the values' minimum and maximum; None when there are no values."""
    return edges_between(float(values.min()), float(values.max()), bins) if len(values) else None


def bin_of(values: Any, edges: list[float]) -> Any:
    """The bin of each value by the one rule of every plot: bin i holds ``edges[i] <= v < edges[i +
    1]``, and the last bin also ``v == edges[-1]``. Compared with the edges themselves, never by
    ``floor((v - low) / step)``: that quotient rounds across an edge (0.2 to 0.9 in 7 bins: 0.3 is
    edge 1, but (0.3 - 0.2) / step is 0.9999999999999999, bin 0). SQL's bins (``aggregate.bin_sql``)
    are these."""
    import numpy as np

    return np.minimum(np.searchsorted(edges, values, side="right") - 1, len(edges) - 2).astype(np.intp)


def histogram(rows: Rows, dialect: Dialect, state: QueryState, x: Operand, colour: str,
              bins: int, y: Operand | None = None) -> Counted | None:
    """The counted rows of ``x`` (and ``y``: a binned scatter) over ``state``'s fits by bin and by
    the value of ``colour``, for ``aggregate._series``; None when the blocks cannot answer.

    As the SQL statement does, x's edges span every selected fit with a finite x, y's only the fits
    with both finite, and only the fits with both finite are counted. A fit with an inf or -inf
    there is left out of the bins and counted apart: one such value used to make an end of the
    edges infinite, so no fit was plotted at all.
    """
    import numpy as np

    address = fact_address(x)
    y_address = None if y is None else fact_address(y)
    counted = blockcount.plan(state)
    if (address is None or (y is not None and y_address is None) or counted is None
            or not rows(blockcount.HAS_BLOCKS[dialect.name], [])[0][0]):
        return None
    labels: list[tuple[str, str]] = []
    unlabelled_numbers: str | None = None
    if colour:
        read = _labels(rows, colour)
        if read is None:
            return None
        labels, unlabelled_numbers = read
    x_name = blocks.number_name(*address)
    y_name = None if y_address is None else blocks.number_name(*y_address)
    extra = [x_name, *([y_name] if y_name else []), *(n for _, n in labels),
             *([unlabelled_numbers] if unlabelled_numbers else [])]
    wanted = replace(counted, names=tuple(dict.fromkeys([*counted.names, *extra])))
    if len(wanted.names) > blockcount.MAX_NAMES:
        return None
    chosen = wanted.select(rows(*wanted.sql(dialect)))
    if chosen is None:
        return None
    arrays, selected = chosen
    numbers = arrays.numbers(x_name)  # NaN where a fit has no number there
    has_x = selected & ~np.isnan(numbers)
    selected = has_x & np.isfinite(numbers)
    x_edges = _edges(numbers[selected], bins)
    unplotted = has_x & ~selected
    if y_name is not None:
        y_numbers = arrays.numbers(y_name)
        unplotted = has_x & ~np.isnan(y_numbers) & ~(np.isfinite(numbers) & np.isfinite(y_numbers))
        selected = selected & np.isfinite(y_numbers)
    left_out = int(unplotted.sum())
    if unlabelled_numbers is not None and not np.isnan(arrays.numbers(unlabelled_numbers)[selected]).all():
        return None  # some fit is labelled by a number: SQL groups those
    if x_edges is None:
        return [], [], left_out
    edges = [x_edges]
    index = bin_of(numbers[selected], x_edges)
    if y_name is not None:
        y_edges = _edges(y_numbers[selected], bins)
        if y_edges is None:
            return [], [], left_out
        edges.append(y_edges)
        index = index * bins + bin_of(y_numbers[selected], y_edges)  # one cell number a (x, y)
    cells = bins ** len(edges)
    found: list[tuple[Any, ...]] = []

    def add(label: str | None, which: Any) -> None:
        counts = np.bincount(index[which], minlength=cells)
        for cell in np.flatnonzero(counts):
            place = (int(cell) // bins, int(cell) % bins) if len(edges) == 2 else (int(cell),)
            found.append((*place, label, None, int(counts[cell])))

    if not labels:
        add(None, np.ones(len(index), dtype=bool))
        return edges, found, left_out
    unlabelled = np.ones(len(index), dtype=bool)
    for label, name in labels:
        member = arrays.bits(name)[selected]
        add(label, member)
        unlabelled &= ~member
    add(None, unlabelled)
    return edges, found, left_out
