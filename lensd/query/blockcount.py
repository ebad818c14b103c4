"""``len(agg)`` from the fit-key blocks (``count_blocks``, lensd.store.blocks): a few hundred rows read
by primary key and the predicate evaluated over them with numpy, for the predicates whose every leaf
the blocks answer exactly.

Why: a count from the indexes (counting.py) still pays one B-tree seek per candidate fit, and an
``&`` or ``|`` of two leaves that each select half of 10^6 fits cost 0.3-0.7 s that way; sqlite has
no bitmap intersection. The blocks hold, per 4,096 fit keys, a fact's numbers as one float64 array
and each text fact, class and tag value as one bitmap, so the same count is ~250 rows a leaf and
array arithmetic (docs/performance.md, "Counts from fit-key blocks").

Served, with exactly the compiler's meaning (compiler.py): a number compared with a fact (``num op
v``; a fit without a number, NaN in the array, is false), ``==``/``in_`` of strings with a fact,
and for a model path also with its node's class (a dotted string is a class path), class tests,
``==``/``in_`` on ``SERVED_COLUMNS``, and ``&``, ``|``, ``~`` of those (two-valued, as in SQL:
``~`` of a leaf on a missing value is true). The result is then limited to the fits that exist, and
to top-level fits for ``top_level_only``. Anything else (string order, ``contains``, ``is_none``,
other columns, NaN operands, slices and the other scopes) returns None from ``plan`` and is counted
by counting.py as before. A block row lensd never writes (wrong type or size: a crafted file)
makes ``BlockCount.reduce`` return None, and the caller counts with SQL instead.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from lensd.query.compiler import Fragment
from lensd.query.dialect import Dialect
from lensd.query.nodes import And, ClassIs, Column, Compare, In, ModelPath, Not, Or, Predicate, fact_address
from lensd.query.state import QueryState
from lensd.store import blocks

Evaluator: TypeAlias = Callable[["BlockArrays"], Any]
MAX_NAMES: Final = 10_000  # rows a statement may name (sqlite takes 32,766 parameters)
_OPS: Final = {"==": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# Whether the database has the blocks (a v3 file opened by this reader has not): a plain table, not a
# view or one with generated columns, whose reads could compute anything (schema.check_tables).
HAS_BLOCKS: Final = {
    "sqlite": ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'count_blocks' "
               "AND NOT EXISTS (SELECT 1 FROM pragma_table_xinfo('count_blocks') WHERE hidden IN (2, 3))"),
    "postgresql": ("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                   "AND tablename = 'count_blocks'"),
}


class BlockArrays:
    """The rows read, as one array per name over every block that holds fits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.found: dict[str, Any] = {}

    def bits(self, name: str) -> Any:
        import numpy as np

        return self.found.get(name, np.zeros(self.size, dtype=bool))

    def numbers(self, name: str) -> Any:
        import numpy as np

        return self.found.get(name, np.full(self.size, np.nan))


def _any(names: list[str]) -> Evaluator:
    def evaluate(arrays: BlockArrays) -> Any:
        import numpy as np

        result = np.zeros(arrays.size, dtype=bool)
        for name in names:
            result |= arrays.bits(name)
        return result
    return evaluate


def _texts(node: Compare | In, values: list[str]) -> list[str]:
    """The bitmaps a string test reads: the text fact, and for a model path its class nodes."""
    kind, key = fact_address(node.operand) or (0, "")
    names = [blocks.text_name(kind, key, v) for v in values]
    if isinstance(node.operand, ModelPath):
        names += [blocks.class_name("class_path" if "." in v else "class_name", node.operand.path, v) for v in values]
    return names


def _numbers(node: Compare | In, test: Callable[[Any], Any]) -> Evaluator:
    kind, key = fact_address(node.operand) or (0, "")
    name = blocks.number_name(kind, key)
    return lambda arrays: test(arrays.numbers(name))


def _leaf(node: Predicate) -> tuple[Evaluator, list[str]] | None:
    if isinstance(node, ClassIs):
        names = [blocks.class_name(node.by, node.path, node.name)]
        return _any(names), names
    if not isinstance(node, (Compare, In)):
        return None
    values = [node.value] if isinstance(node, Compare) else list(node.values)
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return None  # NaN compares unlike NULL on PostgreSQL: left to SQL
    texts = [v for v in values if isinstance(v, str)]
    numbers = [float(v) for v in values if not isinstance(v, str)]
    if isinstance(node.operand, Column):
        if node.operand.name not in blocks.SERVED_COLUMNS or numbers or (isinstance(node, Compare) and node.op != "=="):
            return None
        names = [blocks.column_name(node.operand.name, v) for v in texts]
        return _any(names), names
    if isinstance(node, Compare):
        if texts:
            if node.op != "==":
                return None
            names = _texts(node, texts)
            return _any(names), names
        op, value = _OPS[node.op], numbers[0]
        return _numbers(node, lambda column: op(column, value)), [blocks.number_name(*_address(node))]
    names = _texts(node, texts)
    text_part = _any(names)
    if not numbers:
        return text_part, names

    def isin(column: Any) -> Any:
        import numpy as np

        return np.isin(column, np.array(numbers))
    number_part = _numbers(node, isin)
    return (lambda arrays: text_part(arrays) | number_part(arrays)), [*names, blocks.number_name(*_address(node))]


def _address(node: Compare | In) -> tuple[int, str]:
    return fact_address(node.operand) or (0, "")


def _compile(node: Predicate) -> tuple[Evaluator, list[str]] | None:
    """``node`` as a function of the arrays and the names it reads; None if the blocks cannot serve it."""
    if isinstance(node, (And, Or)):
        parts = [_compile(item) for item in node.items]
        if any(part is None for part in parts):
            return None
        evaluators = [part[0] for part in parts if part is not None]
        join = operator.and_ if isinstance(node, And) else operator.or_

        def junction(arrays: BlockArrays) -> Any:
            result = evaluators[0](arrays)
            for evaluate in evaluators[1:]:
                result = join(result, evaluate(arrays))
            return result
        return junction, [name for part in parts if part is not None for name in part[1]]
    if isinstance(node, Not):
        inner = _compile(node.item)
        if inner is None:
            return None
        evaluate = inner[0]
        return (lambda arrays: ~evaluate(arrays)), inner[1]
    return _leaf(node)


@dataclass(frozen=True)
class BlockCount:
    """One count from the blocks: the rows to read (``sql``) and how they make the count (``reduce``)."""

    names: tuple[str, ...]
    evaluate: Evaluator | None
    top_level_only: bool

    def sql(self, dialect: Dialect) -> Fragment:
        """The rows of every name it reads: one primary-key search per name, one statement (one snapshot)."""
        data = dialect.bounded_blob.format("data")
        marks = ", ".join("?" * len(self.names))
        return (f"SELECT name, block, {data} FROM count_blocks WHERE name IN ({marks})",  # noqa: S608
                [blocks.NUMBERS_BYTES, *self.names])

    def reduce(self, rows: Iterable[Any]) -> int | None:
        """The count from ``sql``'s rows; None when a row is not one lensd writes (count with SQL)."""
        import numpy as np

        chosen = self.select(rows)
        return None if chosen is None else int(np.count_nonzero(chosen[1]))

    def select(self, rows: Iterable[Any]) -> tuple[BlockArrays, Any] | None:
        """``sql``'s rows as arrays over every block that holds fits, and the mask of the fits the
        state selects; None when a row is not one lensd writes."""
        rows = [tuple(row) for row in rows]
        if any(not isinstance(row[1], int) or isinstance(row[1], bool) for row in rows):
            return None
        held = sorted(row[1] for row in rows if row[0] == blocks.FITS)
        position = {block: i for i, block in enumerate(held)}
        arrays = BlockArrays(len(held) * blocks.BLOCK)
        for name, block, data in rows:
            if block not in position:
                continue  # no fit there: nothing it says can be counted
            values = blocks.decode(name, data)
            if values is None:
                return None
            if name not in arrays.found:
                arrays.found[name] = arrays.numbers(name) if blocks.is_number(name) else arrays.bits(name)
            start = position[block] * blocks.BLOCK
            arrays.found[name][start:start + blocks.BLOCK] = values
        selected = arrays.bits(blocks.FITS)
        if self.top_level_only:
            selected = selected & arrays.bits(blocks.TOP)
        if self.evaluate is not None:
            selected = selected & self.evaluate(arrays)
        return arrays, selected


def plan(state: QueryState) -> BlockCount | None:
    """The blocks' count of ``state``, or None when they cannot answer it exactly."""
    if (state.limit is not None or state.offset or state.parent_id is not None or state.parent is not None
            or state.completed_only or state.grid_only):
        return None
    evaluate: Evaluator | None = None
    names = [blocks.FITS, *([blocks.TOP] if state.top_level_only else [])]
    if state.predicate is not None:
        compiled = _compile(state.predicate)
        if compiled is None:
            return None
        evaluate, names = compiled[0], [*names, *compiled[1]]
    if len(names) > MAX_NAMES:
        return None
    return BlockCount(tuple(dict.fromkeys(names)), evaluate, state.top_level_only)
