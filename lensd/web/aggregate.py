"""Histograms and binned scatters over a query, counted in SQL: one statement, whatever the
number of fits, that reads the facts index and never ships fits or values to Python. A histogram
or scatter the fit-key blocks can count (blockhist.py: facts, a query and a colour they hold) is
counted there instead, with the same bins.

The statement is driven from the facts index of the x value (``facts(kind, key, num, fit_key)``),
so it reads one index range; the query's fits are a set it tests keys against
(``fit_key IN (SELECT ...)``, built once), left out when the query selects every fit. The bin edges
come from the value's minimum and maximum: two index seeks when every fit is selected.

Only finite values are binned: sqlite and PostgreSQL store inf and -inf (a log likelihood of -inf,
a median of an unbounded parameter), and one of them made an end of the edges infinite, so the
whole plot was empty. The fits left out for one are counted (``left_out``, two index seeks) and
reported beside the fits plotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from lensd.errors import QueryError
from lensd.query import statements, text
from lensd.query.compiler import Access
from lensd.query.dialect import Dialect
from lensd.query.nodes import NUMBER_COLUMNS, TEXT_COLUMNS, Column, ModelPath, Operand, fact_address
from lensd.query.state import QueryState
from lensd.web import blockhist

MAX_LABELS: Final = 8  # colours of a histogram; the rest is "other"
Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _axis(operand: Operand, alias: str) -> tuple[str, str, list[Any]]:
    """(table with its condition, numeric expression, params) of one value per fit, on ``alias``."""
    if isinstance(operand, Column):
        if operand.name not in NUMBER_COLUMNS:
            raise QueryError(f"{operand.name} is not a number: plot a parameter path, an info key "
                             "or max_log_likelihood / log_evidence")
        return f"fits AS {alias}", f"{alias}.{operand.name}", []
    address = fact_address(operand)
    if address is None:
        raise QueryError(f"cannot plot {operand!r}")
    return (f"facts AS {alias}", f"{alias}.num", list(address))


def _condition(operand: Operand, alias: str, expr: str, params: list[Any],
               finite: bool = True) -> tuple[str, list[Any]]:
    """(condition, params) of a fit with a finite value of ``operand`` (``finite=False``: with any
    number, inf too); ``params`` are ``_axis``'s."""
    fact = "" if isinstance(operand, Column) else f"{alias}.kind = ? AND {alias}.key = ? AND "
    if not finite:
        return f"{fact}{expr} IS NOT NULL", list(params)
    return f"{fact}{expr} > ? AND {expr} < ?", [*params, -math.inf, math.inf]


def _left_out(rows: Rows, table: str, where: str, exprs: list[str], params: list[Any]) -> int:
    """How many of the fits with a number on every axis have an inf or -inf on one, left out of
    the bins: an index seek for each (NaN is stored as no number, so it is never one of them)."""
    infinite = " OR ".join(f"{expr} IN (?, ?)" for expr in exprs)
    sql = f"SELECT count(*) FROM {table} WHERE {where} AND ({infinite})"  # noqa: S608 - our fragments
    return int(rows(sql, [*params, *[math.inf, -math.inf] * len(exprs)])[0][0])


def _label(rows: Rows, colour: str) -> tuple[str, tuple[str, str], list[Any]]:
    """(LEFT JOIN clauses on ``vx``, the label as two columns -- its text, its number -- and
    params) for colouring by a class or value. Two columns rather than ``coalesce(txt, num)``:
    PostgreSQL cannot mix the types in one, and a number reads the same from both engines."""
    if not colour:
        return "", ("NULL", "NULL"), []
    operand = text.parse_operand(colour)
    if isinstance(operand, ModelPath) and rows("SELECT 1 FROM nodes WHERE path = ? LIMIT 1", [operand.path]):
        return ("LEFT JOIN nodes AS cn ON cn.fit_key = vx.fit_key AND cn.path = ?", ("cn.class_name", "NULL"),
                [operand.path])
    if isinstance(operand, Column):
        if operand.name not in TEXT_COLUMNS:
            raise QueryError(f"colour by a text column, a class or an info key, not {operand.name}")
        return "LEFT JOIN fits AS cc ON cc.fit_key = vx.fit_key", (f"cc.{operand.name}", "NULL"), []
    address = fact_address(operand)
    if address is None:
        raise QueryError(f"cannot colour by {operand!r}")
    return ("LEFT JOIN facts AS cf ON cf.fit_key = vx.fit_key AND cf.kind = ? AND cf.key = ?",
            ("cf.txt", "cf.num"), list(address))


def _selection(rows: Rows, state: QueryState, dialect: Dialect) -> tuple[str, list[Any]]:
    """`` AND vx.fit_key IN (the query's fits)``, or nothing when the query selects every fit."""
    every = (state.predicate is None and not state.completed_only and not state.grid_only
             and state.parent_id is None and state.parent is None and not state.offset and state.limit is None)
    if every and (not state.top_level_only
                  or not rows("SELECT 1 FROM fits WHERE parent_id IS NOT NULL LIMIT 1", [])):
        return "", []
    sql, params = statements.select_fits(state, "f.fit_key", Access(dialect=dialect))
    return f" AND vx.fit_key IN ({sql})", params


def _range(rows: Rows, table: str, where: str, expr: str, params: list[Any]) -> tuple[float, float] | None:
    low = rows(f"SELECT min({expr}) FROM {table} WHERE {where}", params)[0][0]  # noqa: S608 - our fragments
    high = rows(f"SELECT max({expr}) FROM {table} WHERE {where}", params)[0][0]  # noqa: S608
    if low is None or high is None:
        return None
    return float(low), float(high)


def _range_counts(rows: Rows, table: str, where: str, expr: str, params: list[Any],
                  edges: list[float]) -> list[tuple[Any, ...]]:
    """Per-bin counts as one range count per bin: each steps through its stretch of the value's
    index without evaluating or grouping anything per row (several times faster than GROUP BY)."""
    found = []
    last = len(edges) - 2
    for i in range(last + 1):
        upper = "<=" if i == last else "<"
        sql = f"SELECT count(*) FROM {table} WHERE {where} AND {expr} >= ? AND {expr} {upper} ?"  # noqa: S608
        n = int(rows(sql, [*params, edges[i], edges[i + 1]])[0][0])
        if n:
            found.append((i, None, None, n))
    return found


def bin_sql(expr: str, edges: list[float], first: int = 0, last: int | None = None) -> tuple[str, list[float]]:
    """(SQL, params) of the bin of ``expr`` by ``blockhist.bin_of``'s rule -- bin i holds ``edges[i]
    <= v < edges[i + 1]``, the last also ``v == edges[-1]`` -- as nested CASEs that halve the bins
    ``first..last`` at each level: log2(bins) comparisons a row, each with an edge value passed as a
    parameter. Compared with the very floats the blocks compare with, so sqlite, PostgreSQL and
    numpy agree to the bit, where ``floor((v - low) / step)`` rounds across an edge."""
    last = len(edges) - 2 if last is None else last
    if first == last:
        return str(first), []
    middle = (first + last + 1) // 2  # the first bin of the upper half
    below, below_params = bin_sql(expr, edges, first, middle - 1)
    above, above_params = bin_sql(expr, edges, middle, last)
    return (f"CASE WHEN {expr} < ? THEN {below} ELSE {above} END",
            [edges[middle], *below_params, *above_params])


def histogram(rows: Rows, dialect: Dialect, state: QueryState, x: str, colour: str = "", y: str = "",
              bins: int = 40) -> dict[str, Any]:
    """Counts of the fits of ``state`` per bin of ``x`` (and ``y``) and per colour label, in
    statements ``rows`` runs on a database of ``dialect``; ``left_out`` counts the fits with a
    value that is not finite (inf, -inf), which no bin holds."""
    empty = {"x": x, "y": y, "colour": colour, "edges": [], "series": {}, "total": 0, "left_out": 0}
    x_operand = text.parse_operand(x)
    y_operand = text.parse_operand(y) if y else None
    served = blockhist.histogram(rows, dialect, state, x_operand, colour, bins, y_operand)
    if served is not None:
        edges, counted, left_out = served
        return _series(counted, x, y, colour, edges, bins, left_out) if edges else {**empty, "left_out": left_out}
    x_table, x_expr, x_params = _axis(x_operand, "vx")
    where, params = _condition(x_operand, "vx", x_expr, x_params)
    present, present_params = _condition(x_operand, "vx", x_expr, x_params, finite=False)
    joins, present_joins = "", ""
    join_params: list[Any] = []
    present_join_params: list[Any] = []
    exprs = [x_expr]
    if y_operand is not None:
        y_table, y_expr, y_params = _axis(y_operand, "vy")
        y_where, join_params = _condition(y_operand, "vy", y_expr, y_params)
        y_present, present_join_params = _condition(y_operand, "vy", y_expr, y_params, finite=False)
        joins = f" JOIN {y_table} ON vy.fit_key = vx.fit_key AND {y_where}"
        present_joins = f" JOIN {y_table} ON vy.fit_key = vx.fit_key AND {y_present}"
        exprs = [x_expr, y_expr]
    selection, selection_params = _selection(rows, state, dialect)
    left_out = _left_out(rows, f"{x_table}{present_joins}", present + selection, exprs,
                         [*present_join_params, *present_params, *selection_params])
    empty["left_out"] = left_out
    edges = []
    for index, expr in enumerate(exprs):
        if index == 0:
            found = _range(rows, x_table, where + selection, expr, [*params, *selection_params])
        else:
            found = _range(rows, f"{x_table}{joins}", where + selection, expr,
                           [*join_params, *params, *selection_params])
        if found is None:
            return empty
        axis = blockhist.edges_between(*found, bins)
        if axis is None:
            return empty
        edges.append(axis)
    if not y and not colour and not selection:
        counts = _range_counts(rows, x_table, where, x_expr, params, edges[0])
        return _series(counts, x, y, colour, edges, bins, left_out)
    colour_join, (text_label, number_label), label_params = _label(rows, colour)
    cut = [bin_sql(expr, axis_edges) for expr, axis_edges in zip(exprs, edges, strict=True)]
    bin_exprs = [sql for sql, _ in cut]
    bin_params = [p for _, cut_params in cut for p in cut_params]
    groups = ", ".join(f"b{i}" for i in range(len(exprs)))
    selected = ", ".join(f"{b} AS b{i}" for i, b in enumerate(bin_exprs))
    sql = (f"SELECT {selected}, {text_label} AS lt, {number_label} AS ln, count(*) "  # noqa: S608
           f"FROM {x_table}{joins} {colour_join} WHERE {where}{selection} GROUP BY {groups}, lt, ln")
    found_rows = rows(sql, [*bin_params, *join_params, *label_params, *params, *selection_params])
    return _series(found_rows, x, y, colour, edges, bins, left_out)


def _series(rows: list[tuple[Any, ...]], x: str, y: str, colour: str, edges: list[list[float]],
            bins: int, left_out: int = 0) -> dict[str, Any]:
    """Group the rows' counts by label, the largest labels first, the rest as "other"."""
    two = len(edges) == 2
    totals: dict[str, int] = {}
    for row in rows:
        name = _name(row, colour)
        totals[name] = totals.get(name, 0) + int(row[-1])
    # the largest first, ties by name: the same labels kept (and in the same order) whatever the
    # order the rows came in (SQL groups by bin, blockhist.py by label)
    kept = sorted(totals, key=lambda k: (-totals[k], k))[:MAX_LABELS]
    series: dict[str, Any] = {}
    for row in rows:
        name = _name(row, colour)
        name = name if name in kept else "other"
        if two:
            cells = series.setdefault(name, {})
            key = f"{int(row[0])},{int(row[1])}"
            cells[key] = cells.get(key, 0) + int(row[-1])
        else:
            counts = series.setdefault(name, [0] * bins)
            counts[int(row[0])] += int(row[-1])
    ordered = {name: series[name] for name in [*kept, "other"] if name in series}
    return {"x": x, "y": y, "colour": colour, "edges": edges, "series": ordered, "total": sum(totals.values()),
            "left_out": left_out}


def _name(row: tuple[Any, ...], colour: str) -> str:
    """The series of a counted row ``(bins..., label text, label number, count)``."""
    if not colour:
        return "all"
    label = row[-3] if row[-3] is not None else row[-2]
    return "none" if label is None else str(label)
