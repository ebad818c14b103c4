"""Whole statements over the fits a query state selects: rows, counts, payloads, facts.

The WHERE clause, the access plan and the ORDER BY and LIMIT/OFFSET terms come from
``compiler.py`` (a parent state's subquery needs them too); this module wraps them in the SELECTs
the readers run (the keyed window a JOIN cannot widen). The same rules hold: SQL text only from
this module's constants and whitelisted names, values as ``?``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from lensd.errors import QueryError
from lensd.query.compiler import (
    JSON_COLUMNS,
    Access,
    Fragment,
    compile_where,
    join_fragments,
    limit_offset,
    marks,
    order_by,
    sliced,
)
from lensd.query.dialect import SQLITE, Dialect
from lensd.query.state import QueryState
from lensd.store import schema


def _dialect(access: Access | None) -> Dialect:
    return SQLITE if access is None else access.dialect


def select_fits(state: QueryState, columns: str = "f.*", access: Access | None = None) -> Fragment:
    """The state's fits in order. ``columns`` is SQL written by lensd code, never user text."""
    dialect = _dialect(access)
    return join_fragments([(f"SELECT {columns} FROM fits AS f", []), compile_where(state, access),  # noqa: S608
                  order_by(state, dialect), limit_offset(state, dialect)])


def select_count(state: QueryState, access: Access | None = None) -> Fragment:
    """How many fits the state selects (slicing included), without loading any."""
    if not sliced(state):
        return join_fragments([("SELECT count(*) FROM fits AS f", []), compile_where(state, access)])
    dialect = _dialect(access)
    inner = join_fragments([("SELECT f.fit_key FROM fits AS f", []), compile_where(state, access),
                            limit_offset(state, dialect)])
    return f"SELECT count(*) FROM ({inner[0]}){dialect.subquery_alias}", inner[1]  # noqa: S608


def _window(state: QueryState, access: Access | None) -> Fragment:
    """A WHERE clause on ``f`` for the selected fits; a keyed subquery when sliced, so that a
    later JOIN cannot change which fits the LIMIT picks."""
    if not sliced(state):
        return compile_where(state, access)
    inner = select_fits(state, "f.fit_key", access)
    return f"WHERE f.fit_key IN ({inner[0]})", inner[1]


def select_payloads(state: QueryState, name: str, access: Access | None = None) -> Fragment:
    """Rows ``(id, model, data)`` of payload ``name`` for the selected fits, in order; fits
    lacking the payload give no row."""
    dialect = _dialect(access)
    join = (f"SELECT f.id, f.model, {dialect.bounded_blob.format('p.data')} FROM fits AS f "  # noqa: S608
            "JOIN payloads AS p ON p.fit_key = f.fit_key AND p.name = ?", [schema.MAX_PAYLOAD, name])
    return join_fragments([join, _window(state, access), order_by(state, dialect)])


def select_samples(state: QueryState, name: str, info_name: str, access: Access | None = None) -> Fragment:
    """Rows ``(id, model, data, info)``: payload ``name`` and, where the fit has it, payload
    ``info_name`` (PyAutoFit's samples_info, which says how to read the samples) or NULL."""
    dialect = _dialect(access)
    data, info = dialect.bounded_blob.format("p.data"), dialect.bounded_blob.format("i.data")
    join = (f"SELECT f.id, f.model, {data}, {info} FROM fits AS f JOIN payloads AS p "  # noqa: S608
            "ON p.fit_key = f.fit_key AND p.name = ? "
            "LEFT JOIN payloads AS i ON i.fit_key = f.fit_key AND i.name = ?",
            [schema.MAX_PAYLOAD, schema.MAX_PAYLOAD, name, info_name])
    return join_fragments([join, _window(state, access), order_by(state, dialect)])


def select_column(state: QueryState, column: str, access: Access | None = None) -> Fragment:
    """Rows ``(id, <json column>)`` for ``values(column)``; the column comes from a whitelist."""
    if column not in JSON_COLUMNS:
        raise QueryError(f"no JSON column {column!r}; one of {', '.join(sorted(JSON_COLUMNS))}")
    return select_fits(state, JSON_COLUMNS[column], access)


def _facts_of(state: QueryState, kinds: Iterable[int], select: str, order: str,
              access: Access | None) -> Fragment:
    """``select`` over the facts of the selected fits of ``kinds``; both strings are this module's."""
    wanted = sorted(set(kinds))
    if not wanted or not set(wanted) <= {schema.KIND_VALUE, schema.KIND_MEDIAN, schema.KIND_INFO,
                                         schema.KIND_JOB}:
        raise QueryError(f"unknown fact kinds {wanted}")
    keys = select_fits(state, "f.fit_key", access) if sliced(state) else join_fragments(
        [("SELECT f.fit_key FROM fits AS f", []), compile_where(state, access)])
    return join_fragments([
        (f"{select} FROM facts AS x", []),
        (f"WHERE x.kind {marks(wanted)} AND x.fit_key IN ({keys[0]})", [*wanted, *keys[1]]),
        (f"ORDER BY {order}", []),
    ])


def select_facts(state: QueryState, kinds: Iterable[int] = (schema.KIND_VALUE,),
                 access: Access | None = None) -> Fragment:
    """Rows ``(fit_key, kind, key, num, txt, json)`` of the selected fits' facts, for tabular
    export; ordered by fit_key, kind, key (join them to ``select_fits`` rows by fit_key)."""
    return _facts_of(state, kinds, "SELECT x.fit_key, x.kind, x.key, x.num, x.txt, x.json",
                     "x.fit_key, x.kind, x.key", access)


def select_fact_keys(state: QueryState, kinds: Iterable[int], access: Access | None = None) -> Fragment:
    """Rows ``(kind, key)``: the distinct fact keys the selected fits have, by kind then key.

    The columns of a tabular export, known before its rows are read, so the rows can stream;
    a covering scan of the (kind, key, ...) index answers it without reading the fits' JSON.
    """
    return _facts_of(state, kinds, "SELECT DISTINCT x.kind, x.key", "x.kind, x.key", access)


def explain(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    """The ``detail`` lines of EXPLAIN QUERY PLAN, to check that a query searches indexes."""
    return [str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, list(params))]
