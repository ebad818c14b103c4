"""``len(agg)``: counting the selected fits from the indexes alone, without reading fits rows.

``statements.select_count`` counts ``SELECT count(*) FROM fits AS f WHERE ...``: every candidate is
a seek into the ``fits`` table (or its parent_id index, for the default ``top_level_only``), about
1.4 µs a fit at 10^6 fits, so counting half of them took 0.7 s (docs/performance.md). But a count
does not need the fits rows. A leaf's index search yields each matching fit once (a fit has one
fact per key and one node per path), so:

- a predicate that is a union of index-searchable alternatives ``A_1 | ... | A_n`` (a facts or
  nodes ``Leaf``, or a test of an indexed fits column) counts as the sum of the disjoint terms
  ``A_i AND NOT (A_1 | ... | A_(i-1))``: the first term is a plain count of an index range, each
  later one probes the alternatives before it (largest first, so the big ranges pay no probes);
- an ``AND`` of such a union with other conditions is driven by that union (the conjunct whose
  driving costs least by the leaf estimates ``compiler.Access`` already holds), and the other
  conjuncts are probed per fit through the covering ``*_probe`` indexes;
- ``top_level_only`` (``f.parent_id IS NULL``) is the count over all fits minus the count over
  child fits, which walks the ``fits_parent_id`` index from the children, usually few or none.

A term whose conditions test a fits column (``unique_tag``...) is counted over ``fits AS f`` as
before. Anything else (slices, ``parent_id``, a parent state, ``completed_only``, ``grid_only``, predicates that
are not unions) falls back to ``statements.select_count``, which is always right. The SQL is plain
SQL-92 (scalar subqueries, ``CROSS JOIN``), valid in PostgreSQL as in sqlite; in sqlite ``CROSS
JOIN`` also fixes the join order, so the child count starts from the children.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from lensd.query import compiler, statements
from lensd.query.compiler import Access, Fragment, Leaf
from lensd.query.dialect import Dialect
from lensd.query.nodes import And, ClassIs, Column, Compare, Contains, In, Not, Or, Predicate
from lensd.query.state import QueryState

Alternative: TypeAlias = Leaf | Predicate  # a Leaf, or a Predicate testing one fits column
_BIG, _COLUMN, _SMALL = 1.0, 0.5, 0.0  # a probed leaf (many matches), a column test, a searched leaf


@dataclass(frozen=True)
class _Driven:
    """The conjunct a count walks (``alternatives``, one union) and the ones it tests per fit."""

    alternatives: list[Alternative]
    rest: list[Predicate]


def select_count(state: QueryState, access: Access | None = None) -> Fragment:
    """How many fits ``state`` selects: ``statements.select_count``'s answer, from indexes when it can."""
    access = Access() if access is None else access
    fast = _fast_count(state, access)
    return fast if fast is not None else statements.select_count(state, access)


def _fast_count(state: QueryState, access: Access) -> Fragment | None:
    if (state.predicate is None or state.limit is not None or state.offset or state.parent_id is not None
            or state.parent is not None or state.completed_only or state.grid_only):
        return None
    driven = _drive(state.predicate, access)
    if driven is None:
        return None
    terms = [_term(alternative, driven.alternatives[:i], driven.rest, access.dialect)
             for i, alternative in enumerate(driven.alternatives)]
    sql = " + ".join(f"({term})" for term, _ in terms)
    params = [p for _, term_params in terms for p in term_params]
    if state.top_level_only:
        children, children_params = _children(state.predicate, access.dialect)
        sql, params = f"{sql} - ({children})", [*params, *children_params]
    return f"SELECT {sql}", params


def _alternatives(node: Predicate, dialect: Dialect) -> list[Alternative] | None:
    """The index-searchable parts whose union is exactly ``node``, or None if it is no such union."""
    if isinstance(node, Or):
        found: list[Alternative] = []
        for item in node.items:
            part = _alternatives(item, dialect)
            if part is None:
                return None
            found += part
        return found
    if isinstance(node, (Compare, In, Contains)) and isinstance(node.operand, Column):
        return [node]
    if isinstance(node, (Compare, In, Contains, ClassIs)):
        # Each of these compiles to one leaf or to the union of its leaves (classes and facts).
        return list(compiler.leaves(QueryState(predicate=node, top_level_only=False), dialect)) or None
    return None


def _size(alternative: Alternative, access: Access) -> float:
    if isinstance(alternative, Leaf):
        return _BIG if alternative in access.probed else _SMALL
    return _COLUMN


def _leaf_count(node: Predicate) -> int:
    return len(compiler.leaves(QueryState(predicate=node, top_level_only=False)))


def _drive(predicate: Predicate, access: Access) -> _Driven | None:
    """The cheapest conjunct to walk: rows walked times the probes each row then needs."""
    conjuncts = list(predicate.items) if isinstance(predicate, And) else [predicate]
    best: tuple[float, _Driven] | None = None
    for i, conjunct in enumerate(conjuncts):
        found = _alternatives(conjunct, access.dialect)
        if found is None:
            continue
        ordered = sorted(found, key=lambda a: -_size(a, access))  # big ranges first: they pay no probes
        rest = conjuncts[:i] + conjuncts[i + 1:]
        probes = sum(_leaf_count(node) for node in rest)
        cost = sum(_size(a, access) * (1 + probes + j) for j, a in enumerate(ordered))
        if best is None or cost < best[0]:
            best = (cost, _Driven(ordered, rest))
    return None if best is None else best[1]


def _uses_columns(node: Predicate) -> bool:
    """Whether compiling ``node`` refers to a fits column (``f.unique_tag``...), not only ``f.fit_key``."""
    if isinstance(node, (And, Or)):
        return any(_uses_columns(item) for item in node.items)
    if isinstance(node, Not):
        return _uses_columns(node.item)
    return isinstance(getattr(node, "operand", None), Column)


def _probed(node: Predicate, dialect: Dialect) -> Fragment:
    """``node`` as a condition on ``f`` with every leaf probed through its covering index."""
    found = compiler.leaves(QueryState(predicate=node, top_level_only=False), dialect)
    return compiler.compile_predicate(node, 0, Access(found, dialect, paged=False))


def _term(alternative: Alternative, before: Sequence[Alternative], rest: Sequence[Predicate],
          dialect: Dialect) -> Fragment:
    """``count(alternative AND NOT any(before) AND all(rest))``."""
    conditions: list[Fragment] = []
    for other in before:
        sql, other_params = other.probe() if isinstance(other, Leaf) else _probed(other, dialect)
        conditions.append((f"NOT ({sql})", other_params))
    conditions += [_probed(node, dialect) for node in rest]
    where = " AND ".join(sql for sql, _ in conditions)
    params: list[Any] = [p for _, ps in conditions for p in ps]
    needs_row = any(not isinstance(o, Leaf) for o in before) or any(_uses_columns(n) for n in rest)
    if isinstance(alternative, Leaf) and not needs_row:
        search, search_params = alternative.search()
        # The leaf's own index range, aliased f: the probes only ever read f.fit_key.
        return (f"SELECT count(*) FROM ({search}) AS f" + (f" WHERE {where}" if where else ""),  # noqa: S608
                [*search_params, *params])
    own, own_params = (alternative.search() if isinstance(alternative, Leaf) else _probed(alternative, dialect))
    if isinstance(alternative, Leaf):
        own = f"f.fit_key IN ({own})"
    return (f"SELECT count(*) FROM fits AS f WHERE {own}" + (f" AND {where}" if where else ""),  # noqa: S608
            [*own_params, *params])


def _children(predicate: Predicate, dialect: Dialect) -> Fragment:
    """How many child fits (``parent_id`` set) match ``predicate``: a walk from the children."""
    sql, params = _probed(predicate, dialect)
    return ("SELECT count(*) FROM fits AS c CROSS JOIN fits AS f "  # noqa: S608
            f"WHERE c.parent_id IS NOT NULL AND f.fit_key = c.fit_key AND {sql}", params)
