"""A histogram of one numeric fact read from the fit-key blocks, as ``len()`` is counted.

The SQL histogram (aggregate.py) reads one index range of the x fact, but a query or a colour joins
every fit of that range to the query's set and to its class: 3.5 s at 10^6 fits
(docs/performance.md). When the blocks hold all of it (lensd.store.blocks: the fact's numbers per
block, each class's fits as a bitmap, and a query ``lensd.query.blockcount`` answers), the same
counts are a few hundred rows read by primary key and numpy. The bins are aggregate.py's, to the
bit: the same edges from the same minimum and maximum, and the same ``(x - low) / step`` cut to
``[0, bins - 1]``. Anything else (a column or a y axis, a colour other than a class at a model
path, a query the blocks cannot answer, a block row lensd never writes) returns None, and the SQL
statement counts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from lensd.query import blockcount, text
from lensd.query.dialect import Dialect
from lensd.query.nodes import Column, ModelPath, Operand, fact_address
from lensd.query.state import QueryState
from lensd.store import blocks

MAX_CLASSES: Final = 64  # classes at one path read as bitmaps; past that, SQL groups them
Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
Counted = tuple[list[list[float]], list[tuple[Any, ...]]]  # (edges, (bin, label text, None, count) rows)


def _classes_at(rows: Rows, path: str) -> list[str] | None:
    """The class names of the nodes at ``path``, one index seek each; None past ``MAX_CLASSES``."""
    found: list[str] = []
    sql = "SELECT min(class_name) FROM nodes WHERE path = ? AND class_name > ?"
    while len(found) <= MAX_CLASSES:
        (name,), = rows(sql, [path, found[-1] if found else ""])
        if name is None:
            return found
        found.append(str(name))
    return None


def histogram(rows: Rows, dialect: Dialect, state: QueryState, x: Operand, colour: str,
              bins: int) -> Counted | None:
    """The counted rows of ``x`` over ``state``'s fits by bin (and class, for a ``colour`` that is
    a model path with classes), for ``aggregate._series``; None when the blocks cannot answer."""
    import numpy as np

    address = fact_address(x)
    counted = blockcount.plan(state)
    if isinstance(x, Column) or address is None or counted is None:
        return None
    labels: list[tuple[str, str]] = []
    if colour:
        operand = text.parse_operand(colour)
        if not isinstance(operand, ModelPath):
            return None
        classes = _classes_at(rows, operand.path)
        if not classes:
            return None  # no class there: aggregate colours by the fact of that path
        labels = [(name, blocks.class_name("class_name", operand.path, name)) for name in classes]
    if not rows(blockcount.HAS_BLOCKS[dialect.name], [])[0][0]:
        return None
    x_name = blocks.number_name(*address)
    wanted = replace(counted, names=tuple(dict.fromkeys([*counted.names, x_name, *(n for _, n in labels)])))
    if len(wanted.names) > blockcount.MAX_NAMES:
        return None
    chosen = wanted.select(rows(*wanted.sql(dialect)))
    if chosen is None:
        return None
    arrays, selected = chosen
    numbers = arrays.numbers(x_name)
    selected = selected & ~np.isnan(numbers)
    values = numbers[selected]
    if not len(values):
        return [], []
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return [], []
    width = (high - low) / bins if high > low else 1.0
    edges = [low + i * width for i in range(bins + 1)]
    step = (edges[-1] - edges[0]) / bins or 1.0
    index = np.clip(np.floor((values - edges[0]) / step), 0, bins - 1).astype(np.intp)
    found: list[tuple[Any, ...]] = []

    def add(label: str | None, which: Any) -> None:
        counts = np.bincount(index[which], minlength=bins)
        found.extend((int(i), label, None, int(counts[i])) for i in np.flatnonzero(counts))

    if not labels:
        add(None, np.ones(len(values), dtype=bool))
        return [edges], found
    unlabelled = np.ones(len(values), dtype=bool)
    for label, name in labels:
        member = arrays.bits(name)[selected]
        add(label, member)
        unlabelled &= ~member
    add(None, unlabelled)
    return [edges], found
