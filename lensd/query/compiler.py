"""Predicates -> parameterised SQL conditions, and the access plan of each leaf.

With ``statements.py`` (which wraps these conditions in whole SELECTs), the only place query SQL
is written.

Every path, key, tag and value is a ``?`` parameter. The SQL text is put together only from the
constant fragments of this module and from names looked up in its whitelists (column names,
operators), never from anything a user typed; that is why the few ``noqa: S608`` below are safe.

Each leaf is an index search (schema.py names the indexes):

    value/info/job  f.fit_key IN (SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND num > ?)
    class           f.fit_key IN (SELECT fit_key FROM nodes WHERE path = ? AND class_name = ?)
    column          (f.unique_tag IS NOT NULL AND f.unique_tag = ?)

and every leaf is two-valued (never NULL), so ``NOT (...)`` means exactly Python's ``not``: a
comparison on a missing value is false, and its negation true. Searches joined by ``|`` become one
search (``f.fit_key IN (SELECT ... UNION ALL SELECT ...)``), so sqlite reads the fits they name
instead of testing every fit against each.

A facts or nodes leaf (``Leaf``) can take a second, equivalent form: a probe of each fit,

    EXISTS (SELECT 1 FROM facts WHERE fit_key = f.fit_key AND kind = ? AND key = ? AND num > ?)

(a covering index keyed on fit_key answers it). A search costs the number of fits the leaf
matches before the first row comes out, since sqlite gathers them all; a probe costs one index
seek per fit looked at, and fits come out in order as they are found. So a leaf that matches a
few fits is searched and one that matches many is probed: the first page of
``einstein_radius > 1.0`` over 10^6 fits then takes a millisecond instead of half a second, and
``einstein_radius > 2.4`` still finds its few fits without looking at the others. sqlite has no
per-value statistics to make that choice itself; ``leaves`` and ``access_from`` count each leaf's matches with an
index search capped at ``probe_threshold`` (the break-even point, about sqrt(256 × fits)), and
``Access`` carries the decision into the compiled statement. Both forms select the same fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from lensd.errors import QueryError
from lensd.query.dialect import SQLITE, Dialect
from lensd.query.nodes import (
    MAX_DEPTH,
    And,
    ClassIs,
    Column,
    Compare,
    Contains,
    In,
    IsNone,
    ModelPath,
    Not,
    Operand,
    Or,
    Predicate,
    Scalar,
    fact_address,
)
from lensd.query.state import QueryState

Fragment: TypeAlias = tuple[str, list[Any]]

MAX_PARAMS: Final = 32766  # sqlite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32
COMPLETED: Final = "completed"
_SQL_OPS: Final = {"==": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
JSON_COLUMNS: Final = {
    "info": "f.id, f.info", "model": "f.id, f.model", "search": "f.id, f.search",
    "instance": "f.id, f.instance", "summary": "f.id, f.summary", "job": "f.id, f.job",
}
_FACT_LEAF: Final = "kind = ? AND key = ? AND {}"
_FACT_NOT_NONE: Final = "f.fit_key NOT IN (SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND json {} ?)"
# A model node that names a class or has values beneath it (a tuple, a sub-model) is a value, not
# None: ``source.disk == None`` must not match a fit whose source has a disk. Keys under ``p`` are
# those strictly between "p." and "p/" ('/' follows '.'), one range of the facts index.
_NODE_NOT_NONE: Final = (
    " AND f.fit_key NOT IN (SELECT fit_key FROM nodes WHERE path = ?)"
    " AND f.fit_key NOT IN (SELECT fit_key FROM facts WHERE kind = ? AND key > ? AND key < ?)"
)
# Numbers sort before strings (sqlite's type order); NaN, None, lists and missing values are NULL
# (Dialect.fact_order).
FACT_ORDER_KEY: Final = "kind = ? AND key = ?"
_NODE_LEAF: Final = {"class_path": "path = ? AND class_path {}", "class_name": "path = ? AND class_name {}"}
_TABLES: Final = frozenset({"facts", "nodes"})
PROBE_PAGE: Final = 256  # the first page the probe/search break-even is reckoned for
PROBE_MIN: Final = 1000


@dataclass(frozen=True)
class Leaf:
    """One index-searchable test: the fits with a row in ``table`` meeting ``condition``.

    ``table`` is "facts" or "nodes" and ``condition`` a constant of this module: only ``params``
    come from the query.
    """

    table: str
    condition: str
    params: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.table not in _TABLES:
            raise QueryError(f"no leaf table {self.table!r}")

    def search(self) -> Fragment:
        """The fit keys it matches, as a subquery (an index search)."""
        return f"SELECT fit_key FROM {self.table} WHERE {self.condition}", list(self.params)  # noqa: S608

    def probe(self, fence: str = "") -> Fragment:
        """Whether fit ``f`` matches (one seek in the table's fit_key index); ``fence`` is the
        dialect's ``probe_fence`` when the engine must keep it a seek per fit."""
        return (f"EXISTS (SELECT 1 FROM {self.table} WHERE fit_key = f.fit_key AND {self.condition}"  # noqa: S608
                f"{fence})", list(self.params))

    def count(self, cap: int, dialect: Dialect = SQLITE) -> Fragment:
        """How many rows match, counting no further than ``cap``."""
        sql, params = self.search()
        return f"SELECT count(*) FROM ({sql} LIMIT ?){dialect.subquery_alias}", [*params, cap]  # noqa: S608


class Access:
    """How a compiled statement reaches each leaf's fits: searched (IN), or probed fit by fit
    (EXISTS) for the leaves in ``probed``, in ``dialect``. Compiling also records every leaf it met.

    ``paged``: the statement is read a page at a time and may stop early, so a probe must stay one
    seek per fit (the dialect's fence). A count reads every match instead, and there the engine's
    own choice (PostgreSQL hashes a leaf's matches once) is the cheaper plan."""

    def __init__(self, probed: Iterable[Leaf] = (), dialect: Dialect = SQLITE, paged: bool = True) -> None:
        self.probed = frozenset(probed)
        self.dialect = dialect
        self.paged = paged
        self.leaves: list[Leaf] = []

    def render(self, part: Part) -> Fragment:
        if not isinstance(part, Leaf):
            return part
        self.leaves.append(part)
        if part in self.probed:
            return part.probe(self.dialect.probe_fence if self.paged else "")
        sql, params = part.search()
        return f"f.fit_key IN ({sql})", params

    def union(self, parts: Sequence[Part]) -> Fragment:
        """``parts`` joined by OR; the searched leaves among them become one search."""
        searched = [p for p in parts if isinstance(p, Leaf) and p not in self.probed]
        if len(searched) < 2:
            return _any([self.render(p) for p in parts], self.dialect)
        self.leaves.extend(searched)
        subqueries = [leaf.search() for leaf in searched]
        merged = (f"f.fit_key IN ({' UNION ALL '.join(sql for sql, _ in subqueries)})",
                  [p for _, params in subqueries for p in params])
        rendered, placed = [], False
        for part in parts:
            if part in searched:
                if not placed:
                    rendered.append(merged)
                    placed = True
            else:
                rendered.append(self.render(part))
        return _any(rendered, self.dialect)


Part: TypeAlias = Fragment | Leaf


def probe_threshold(fits: int) -> int:
    """Matches from which probing a leaf beats searching it, for a database of ``fits`` fits.

    Searching gathers all m matches before the first row (cost ~ m); probing in fit order finds a
    page after ~PROBE_PAGE × fits / m seeks. They cost the same near m = sqrt(PROBE_PAGE × fits).
    """
    return max(PROBE_MIN, math.isqrt(PROBE_PAGE * max(0, fits)))


SIZE_SQL: Final = "SELECT coalesce(max(fit_key), 0) FROM fits"  # the number of fits, near enough


def leaves(state: QueryState, dialect: Dialect = SQLITE) -> list[Leaf]:
    """The facts and nodes leaves of ``state``'s predicate, each once.

    To weigh them: run ``SIZE_SQL``, then each ``leaf.count(probe_threshold(size))``, and compile
    with ``access_from(leaves, counts, threshold)``.
    """
    seen = Access(dialect=dialect)
    compile_where(state, seen)
    return list(dict.fromkeys(seen.leaves))


def access_from(found: Sequence[Leaf], counts: Sequence[int], threshold: int,
                dialect: Dialect = SQLITE, paged: bool = True) -> Access:
    """Probe the leaves that match ``threshold`` fits or more; search the others."""
    return Access((leaf for leaf, n in zip(found, counts, strict=True) if n >= threshold), dialect, paged)


def marks(values: Sequence[object]) -> str:
    """``= ?`` for one value, ``IN (?, ?, ...)`` for several."""
    return "= ?" if len(values) == 1 else f"IN ({', '.join('?' * len(values))})"


def _any(parts: list[Fragment], dialect: Dialect) -> Fragment:
    if not parts:
        return dialect.false, []
    if len(parts) == 1:
        return parts[0]
    return f"({' OR '.join(sql for sql, _ in parts)})", [p for _, params in parts for p in params]


def column_sql(name: str, dialect: Dialect) -> Fragment:
    """The SQL expression of a fit column; is_complete is derived from status (a number, 1 or 0)."""
    if name == "is_complete":
        return dialect.truth.format("f.status = ?"), [COMPLETED]
    return f"f.{name}", []  # name is whitelisted by Column


def _param(value: Scalar) -> str | float:
    """Strings compare as text, everything else as REAL (bools as 1.0/0.0, as encode_fact stores)."""
    return value if isinstance(value, str) else float(value)


def _column_test(name: str, condition: str, params: list[Any], dialect: Dialect) -> Fragment:
    """``condition`` formatted with the column; a NULL column makes it false, not NULL."""
    if name == "is_complete":  # derived from status, which is never NULL
        expr, expr_params = column_sql(name, dialect)
        return condition.format(expr), [*expr_params, *params]
    return f"(f.{name} IS NOT NULL AND {condition.format(f'f.{name}')})", params


def _fact_test(operand: Operand, condition: str, params: list[Any]) -> Leaf:
    kind, key = fact_address(operand) or (0, "")
    return Leaf("facts", _FACT_LEAF.format(condition), (kind, key, *params))


def _classes(path: str, names: Sequence[str]) -> list[Leaf]:
    """Class tests for strings compared with a model node: dotted means a class path."""
    parts = []
    for by, chosen in (("class_path", [n for n in names if "." in n]),
                       ("class_name", [n for n in names if "." not in n])):
        if chosen:
            parts.append(Leaf("nodes", _NODE_LEAF[by].format(marks(chosen)), (path, *chosen)))
    return parts


def _compare(node: Compare, access: Access) -> Part:
    op, value = _SQL_OPS[node.op], node.value
    if isinstance(node.operand, Column):
        return _column_test(node.operand.name, "{} " + op + " ?", [_param(value)], access.dialect)
    column = "txt" if isinstance(value, str) else "num"
    leaf = _fact_test(node.operand, f"{column} {op} ?", [_param(value)])
    if isinstance(node.operand, ModelPath) and isinstance(value, str) and node.op == "==":
        return access.union([*_classes(node.operand.path, [value]), leaf])
    return leaf


def _in(node: In, access: Access) -> Part:
    if not node.values:
        return access.dialect.false, []
    if isinstance(node.operand, Column):
        params = [_param(v) for v in node.values]
        return _column_test(node.operand.name, "{} IN (" + ", ".join("?" * len(params)) + ")", params,
                            access.dialect)
    texts = [v for v in node.values if isinstance(v, str)]
    numbers = [float(v) for v in node.values if not isinstance(v, str)]
    parts: list[Part] = list(_classes(node.operand.path, texts)) if isinstance(node.operand, ModelPath) else []
    for column, values in (("num", numbers), ("txt", texts)):
        if values:
            parts.append(_fact_test(node.operand, f"{column} {marks(values)}", list(values)))
    return parts[0] if len(parts) == 1 else access.union(parts)


def _is_none(operand: Operand, dialect: Dialect) -> Fragment:
    if isinstance(operand, Column):
        return (dialect.false, []) if operand.name == "is_complete" else (f"f.{operand.name} IS NULL", [])
    kind, key = fact_address(operand) or (0, "")
    not_none = _FACT_NOT_NONE.format(dialect.is_not)
    if isinstance(operand, ModelPath) and key:
        return f"({not_none}{_NODE_NOT_NONE})", [kind, key, "null", key, kind, f"{key}.", f"{key}/"]
    return not_none, [kind, key, "null"]


def _part(node: Predicate, depth: int, access: Access) -> Part:
    """One predicate; a single leaf is returned unrendered, so that ``|`` can merge searches."""
    if depth > MAX_DEPTH:
        raise QueryError(f"query too deeply nested (more than {MAX_DEPTH} levels)")
    if isinstance(node, Or):
        return access.union([_part(item, depth + 1, access) for item in node.items])
    if isinstance(node, And):
        parts = [access.render(_part(item, depth + 1, access)) for item in node.items]
        return f"({' AND '.join(sql for sql, _ in parts)})", [p for _, params in parts for p in params]
    if isinstance(node, Not):
        sql, params = access.render(_part(node.item, depth + 1, access))
        return f"NOT ({sql})", params
    if isinstance(node, Compare):
        return _compare(node, access)
    if isinstance(node, In):
        return _in(node, access)
    if isinstance(node, Contains):
        if isinstance(node.operand, Column):
            return _column_test(node.operand.name, access.dialect.contains, [node.value], access.dialect)
        return _fact_test(node.operand, access.dialect.contains.format("txt"), [node.value])
    if isinstance(node, IsNone):
        return _is_none(node.operand, access.dialect)
    if isinstance(node, ClassIs):
        return Leaf("nodes", _NODE_LEAF[node.by].format("= ?"), (node.path, node.name))
    raise QueryError(f"cannot compile {type(node).__name__}")


def compile_predicate(node: Predicate, depth: int = 0, access: Access | None = None) -> Fragment:
    """One predicate as a two-valued SQL condition on ``fits AS f``; ``access`` says which leaves
    are probed rather than searched (default: all searched)."""
    access = Access() if access is None else access
    return access.render(_part(node, depth, access))


def _conditions(state: QueryState, access: Access) -> list[Fragment]:
    conditions: list[Fragment] = []
    if state.top_level_only:
        conditions.append(("f.parent_id IS NULL", []))
    if state.parent_id is not None:
        conditions.append(("f.parent_id = ?", [state.parent_id]))
    if state.parent is not None:
        conditions.append(_children_of(state.parent, access))
    if state.completed_only:
        conditions.append(("f.status = ?", [COMPLETED]))
    if state.grid_only:
        conditions.append(("f.is_grid_search = 1", []))
    if state.predicate is not None:
        conditions.append(compile_predicate(state.predicate, 0, access))
    return conditions


def _children_of(parent: QueryState, access: Access) -> Fragment:
    """The fits whose parent ``parent`` selects: one subquery, whatever the number of parents.

    Its ``fits AS f`` hides the outer one, so its leaves test the parents; its ORDER BY and
    LIMIT pick the same parents a sliced aggregator iterates over."""
    window = [order_by(parent, access.dialect), limit_offset(parent, access.dialect)] if sliced(parent) else []
    sql, params = join_fragments([("SELECT f.id FROM fits AS f", []), compile_where(parent, access), *window])
    return f"f.parent_id IN ({sql})", params


def order_by(state: QueryState, dialect: Dialect) -> Fragment:
    """ORDER BY the state's keys, fits lacking a value last either way, then by insertion."""
    terms: list[Fragment] = []
    for key in state.order:
        address = fact_address(key.operand)
        expr, params = column_sql(key.operand.name, dialect) if isinstance(key.operand, Column) else (
            dialect.fact_order.format(FACT_ORDER_KEY), list(address or ()))
        terms += [(f"{expr} IS NULL", params), (expr + (" DESC" if key.reverse else ""), params)]
    sql, params = join_fragments([*terms, ("f.fit_key", [])], ", ")
    return f"ORDER BY {sql}", params


def sliced(state: QueryState) -> bool:
    """Whether the state selects a window (``LIMIT ... OFFSET ...``) of its fits."""
    if state.needs_total:  # a reader's bug, not a user's: resolve() runs before compiling
        raise QueryError("a slice with a negative bound must be resolved against the fit count first")
    return state.limit is not None or state.offset > 0


def limit_offset(state: QueryState, dialect: Dialect) -> Fragment:
    if not sliced(state):
        return "", []
    return "LIMIT ? OFFSET ?", [dialect.no_limit if state.limit is None else state.limit, state.offset]


def join_fragments(parts: Iterable[Fragment], separator: str = " ") -> Fragment:
    parts = [(sql, params) for sql, params in parts if sql]
    sql = separator.join(sql for sql, _ in parts)
    params = [p for _, ps in parts for p in ps]
    if len(params) > MAX_PARAMS:
        raise QueryError(f"query too large: {len(params)} values (sqlite takes at most {MAX_PARAMS})")
    return sql, params


def compile_where(state: QueryState, access: Access | None = None) -> Fragment:
    """``WHERE ...`` (or ``""``) selecting the state's fits, with its parameters.

    ``access`` (here and in every ``select_*``) says which leaves are probed and in which
    dialect to write; None means every leaf searched, in sqlite's.
    """
    sql, params = join_fragments(_conditions(state, Access() if access is None else access), " AND ")
    return (f"WHERE {sql}" if sql else ""), params
