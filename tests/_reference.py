"""The query language's meaning in plain Python, and random fits and queries to check SQL against.

``evaluate`` and ``select`` restate SPEC §4 and docs/query.md without SQL: the hypothesis tests
insert random fits into a real sqlite file (``load``, through ``schema.encode_fact``, the
storage contract) and require the compiled SQL to pick exactly the fits ``select`` picks, in
the same order. It deliberately does not import the compiler.
"""

from __future__ import annotations

import math
import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

from hypothesis import strategies as st

from lensd.query.nodes import (
    And,
    ClassIs,
    Column,
    Compare,
    Contains,
    In,
    InfoKey,
    IsNone,
    JobKey,
    MedianPath,
    ModelPath,
    Not,
    Operand,
    Or,
    Predicate,
)
from lensd.query.state import QueryState
from lensd.store import blocks, schema

MISSING: Any = object()
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def lookup(record: dict[str, Any], operand: Operand) -> Any:
    """The stored value, MISSING when the fit has none (no fact, NULL column)."""
    if isinstance(operand, Column):
        if operand.name == "is_complete":
            return record["status"] == "completed"
        value = record[operand.name]
        return MISSING if value is None else value
    tables: dict[type[Operand], str] = {ModelPath: "values", MedianPath: "medians", InfoKey: "info", JobKey: "job"}
    table = tables[type(operand)]
    key = operand.path if isinstance(operand, (ModelPath, MedianPath)) else operand.key  # type: ignore[attr-defined]
    return record[table].get(key, MISSING)


def _class_is(record: dict[str, Any], path: str, by: str, name: str) -> bool:
    class_path = record["classes"].get(path)
    if class_path is None:
        return False
    return bool((class_path if by == "class_path" else class_path.rsplit(".", 1)[-1]) == name)


def _equals(record: dict[str, Any], operand: Operand, stored: Any, value: Any) -> bool:
    if isinstance(value, str):
        if isinstance(operand, ModelPath):  # a string on a model node: its class, or its value
            by = "class_path" if "." in value else "class_name"
            if _class_is(record, operand.path, by, value):
                return True
        return isinstance(stored, str) and stored == value
    number = _number(stored)
    return number is not None and number == float(value)


def _is_a_node(record: dict[str, Any], path: str) -> bool:
    """A model path that names a class or has values beneath it is a value, never None."""
    return path in record["classes"] or any(key.startswith(f"{path}.") and key != f"{path}."
                                            for key in record["values"])


def evaluate(node: Predicate, record: dict[str, Any]) -> bool:
    if isinstance(node, And):
        return all(evaluate(item, record) for item in node.items)
    if isinstance(node, Or):
        return any(evaluate(item, record) for item in node.items)
    if isinstance(node, Not):
        return not evaluate(node.item, record)
    if isinstance(node, ClassIs):
        return _class_is(record, node.path, node.by, node.name)
    stored = lookup(record, node.operand)  # type: ignore[attr-defined]
    if isinstance(node, IsNone):
        if isinstance(node.operand, ModelPath) and node.operand.path and _is_a_node(record, node.operand.path):
            return False
        return stored is MISSING or stored is None
    if isinstance(node, Contains):
        return isinstance(stored, str) and node.value in stored
    if isinstance(node, In):
        return any(_equals(record, node.operand, stored, v) for v in node.values)
    assert isinstance(node, Compare)
    if node.op == "==":
        return _equals(record, node.operand, stored, node.value)
    if isinstance(node.value, str):
        return isinstance(stored, str) and _OPS[node.op](stored, node.value)
    number = _number(stored)
    return number is not None and _OPS[node.op](number, float(node.value))


def _sort_key(value: Any) -> tuple[int, Any] | None:
    number = _number(value)
    if number is not None:
        return (0, number)
    return (1, value) if isinstance(value, str) else None


def select(records: Sequence[dict[str, Any]], state: QueryState) -> list[str]:
    """Ids of the fits ``state`` selects, in its order: what the SQL must return."""
    chosen = [
        r for r in sorted(records, key=lambda r: r["fit_key"])
        if (not state.top_level_only or r["parent_id"] is None)
        and (state.parent_id is None or r["parent_id"] == state.parent_id)
        and (not state.completed_only or r["status"] == "completed")
        and (not state.grid_only or r["is_grid_search"])
        and (state.predicate is None or evaluate(state.predicate, r))
    ]
    for key in reversed(state.order):  # stable sorts, least significant key first
        keyed = [(_sort_key(lookup(r, key.operand)), r) for r in chosen]
        present = sorted((kr for kr in keyed if kr[0] is not None), key=lambda kr: cast(tuple[int, Any], kr[0]),
                         reverse=key.reverse)
        chosen = [r for _, r in present] + [r for k, r in keyed if k is None]
    stop = None if state.limit is None else state.offset + state.limit
    return [r["id"] for r in chosen[state.offset:stop]]


# --- a real database of records -----------------------------------------------------------

def create(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # a scratch file: speed over durability
    for statement in schema.create_statements():
        conn.execute(statement)
    return conn


def load(conn: sqlite3.Connection, records: Sequence[dict[str, Any]], rebuild: bool = True) -> None:
    """Replace the database's content with ``records``, stored as the daemon stores them;
    ``rebuild=False`` leaves the count blocks as they were (a test of their upkeep, or a v3 file)."""
    conn.execute("BEGIN")
    for table in ("fits", "facts", "nodes", "payloads"):
        conn.execute(f"DELETE FROM {table}")
    conn.executemany(
        "INSERT INTO fits (fit_key, id, name, path_prefix, unique_tag, status, max_log_likelihood, "
        "log_evidence, parent_id, is_grid_search) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r["fit_key"], r["id"], r["name"], r["path_prefix"], r["unique_tag"], r["status"],
          r["max_log_likelihood"], r["log_evidence"], r["parent_id"], int(r["is_grid_search"]))
         for r in records])
    conn.executemany(
        "INSERT INTO facts (fit_key, kind, key, num, txt, json) VALUES (?, ?, ?, ?, ?, ?)",
        [(r["fit_key"], kind, key, *schema.encode_fact(value))
         for r in records
         for kind, table in ((schema.KIND_VALUE, "values"), (schema.KIND_MEDIAN, "medians"),
                             (schema.KIND_INFO, "info"), (schema.KIND_JOB, "job"))
         for key, value in r[table].items()])
    conn.executemany(
        "INSERT INTO nodes (fit_key, path, class_path, class_name) VALUES (?, ?, ?, ?)",
        [(r["fit_key"], path, cp, cp.rsplit(".", 1)[-1]) for r in records for path, cp in r["classes"].items()])
    conn.executemany(
        "INSERT INTO payloads (fit_key, name, data) VALUES (?, ?, ?)",
        [(r["fit_key"], "samples", f"samples of {r['id']}".encode()) for r in records if r["fit_key"] % 2])
    if rebuild:
        blocks.rebuild(conn)  # the count blocks the writers keep (len() reads them)
    conn.execute("COMMIT")


# --- strategies ---------------------------------------------------------------------------

HOSTILE = [
    "", "x' OR '1'='1", "'; DROP TABLE fits;--", "%", "_", "a%b", "a_b", "lens_3", "LENS_3", "lens",
    "é", "e\u0301", "😀", "a\x00b", '"', "\\", "null", "NaN", "1", "1.0", "Isothermal",
    "autolens.Isothermal", "Iso", "SLACS",
]
NUMBERS: list[Any] = [0, 1, -1, 2, 1.0, 0.5, -0.0, 2.5, 1e300, -1e-300, math.inf, -math.inf, True, False, 2**70]
VALUE_PATHS = ["galaxies.lens.mass.einstein_radius", "galaxies.lens.mass.centre.centre_0",
               "galaxies.source.bulge.intensity", "galaxies.lens.mass"]
NODE_PATHS = ["galaxies.lens.mass", "galaxies.lens", "galaxies.source.bulge", ""]
CLASS_PATHS = ["autolens.Isothermal", "autogalaxy.profiles.mass.Isothermal", "autolens.PowerLaw",
               "a.b.Sersic", "Isothermal", "m.Outer.Isothermal"]
DOTTED = [c for c in CLASS_PATHS if "." in c]
KEYS = ["survey", "SLURM_ARRAY_JOB_ID", "x' OR '1'='1", "n"]
TEXT_COLUMNS = ["id", "name", "path_prefix", "unique_tag", "status", "parent_id"]
NUMBER_COLUMNS = ["max_log_likelihood", "log_evidence", "is_complete", "is_grid_search"]

texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=5)
strings = st.sampled_from(HOSTILE) | texts
numbers = st.sampled_from(NUMBERS) | st.floats(allow_nan=False) | st.integers(-3, 3)
stored_values = (numbers | strings | strings | st.none() | st.just(math.nan) | st.lists(st.integers(), max_size=2)
                 | st.dictionaries(st.sampled_from(KEYS), st.integers(), max_size=1))


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(2, 6))
    out = []
    for i in range(count):
        out.append({
            "fit_key": i + 1, "id": draw(st.sampled_from(HOSTILE)) + f"#{i}",
            "name": draw(st.none() | strings), "path_prefix": draw(st.none() | strings),
            "unique_tag": draw(st.none() | strings),
            "status": draw(st.sampled_from(["running", "completed", "failed", "lost"])),
            "parent_id": draw(st.none() | st.sampled_from(["p", "x' OR '1'='1"])),
            "max_log_likelihood": draw(st.none() | numbers.map(float)),
            "log_evidence": draw(st.none() | st.floats(allow_nan=False)),
            "is_grid_search": draw(st.booleans()),
            "values": draw(st.dictionaries(st.sampled_from(VALUE_PATHS), stored_values, min_size=2, max_size=4)),
            "medians": draw(st.dictionaries(st.sampled_from(VALUE_PATHS), stored_values, max_size=2)),
            "info": draw(st.dictionaries(st.sampled_from(KEYS), stored_values, min_size=1, max_size=3)),
            "job": draw(st.dictionaries(st.sampled_from(KEYS), stored_values, max_size=1)),
            "classes": draw(st.dictionaries(st.sampled_from(NODE_PATHS), st.sampled_from(CLASS_PATHS), max_size=2)),
        })
    return out


def fake_class(class_path: str) -> type:
    """A class whose ``module.qualname`` is ``class_path``, as an analysis script would import."""
    module, _, name = class_path.rpartition(".")
    return type(name, (), {"__module__": module})


operands: st.SearchStrategy[Operand] = st.one_of(
    st.sampled_from(VALUE_PATHS + ["galaxies.lens", ""]).map(ModelPath),
    st.sampled_from(VALUE_PATHS).map(MedianPath),
    st.sampled_from(KEYS).map(InfoKey),
    st.sampled_from(KEYS).map(JobKey),
    st.sampled_from(TEXT_COLUMNS + NUMBER_COLUMNS).map(Column),
)


@st.composite
def leaves(draw: st.DrawFn) -> Predicate:
    operand = draw(operands)
    is_text = isinstance(operand, Column) and operand.name in TEXT_COLUMNS
    is_number = isinstance(operand, Column) and not is_text
    values = strings if is_text else numbers if is_number else numbers | strings
    kinds = ["==", "!=", "<", "<=", ">", ">=", "in_", "is_none", "none=="]
    kinds += [] if is_number else ["contains"]
    kinds += ["class", "class!="] if isinstance(operand, ModelPath) else []
    kind = draw(st.sampled_from(kinds))
    if kind == "is_none":
        return operand.is_none()
    if kind == "none==":
        return operand == None if draw(st.booleans()) else operand != None  # noqa: E711
    if kind == "contains":
        return operand.contains(draw(st.sampled_from(["%", "_", "a_b", "LENS", "ens_", ""]) | strings))
    if kind == "in_":
        classes = st.sampled_from(DOTTED).map(fake_class)
        extra = (st.none() | classes) if isinstance(operand, ModelPath) else st.none()
        return operand.in_(draw(st.lists(values | extra, max_size=3)))
    if kind.startswith("class"):
        cls = fake_class(draw(st.sampled_from(DOTTED)))
        return operand == cls if kind == "class" else operand != cls
    value = draw(st.sampled_from(CLASS_PATHS + ["Isothermal", "Sersic"]) | values
                 if isinstance(operand, ModelPath) else values)
    ops: dict[str, Callable[[Any, Any], Predicate]] = {
        "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge,
    }
    return ops[kind](operand, value)


predicates: st.SearchStrategy[Predicate] = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.tuples(children, children).map(lambda ab: ab[0] & ab[1]),
        st.tuples(children, children).map(lambda ab: ab[0] | ab[1]),
        children.map(lambda p: ~p),
    ),
    max_leaves=8,
)
