"""The compiler: golden SQL, SQL == the pure-Python reference on random fits, index use, no injection.

Every test that runs SQL runs it on both engines (``conn`` is a sqlite file, then a PostgreSQL
database), with the SQL the compiler writes for each.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _reference import create, fake_class, load, predicates, records, select
from backends import BACKENDS, open_db, without_nul
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lensd.errors import QueryError
from lensd.query import compiler, statements
from lensd.query.nodes import Column, InfoKey, JobKey, MedianPath, ModelPath
from lensd.query.state import QueryFields, QueryState
from lensd.store import schema

agg = QueryFields()
lens = agg.model.galaxies.lens
Isothermal = fake_class("autolens.Isothermal")

FACT = "f.fit_key IN (SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND {})"
NODE = "f.fit_key IN (SELECT fit_key FROM nodes WHERE path = ? AND {})"
FACT_ROWS = "SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND {}"
NODE_ROWS = "SELECT fit_key FROM nodes WHERE path = ? AND {}"
MODEL_NONE = ("(f.fit_key NOT IN (SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND json IS NOT ?)"
              " AND f.fit_key NOT IN (SELECT fit_key FROM nodes WHERE path = ?)"
              " AND f.fit_key NOT IN (SELECT fit_key FROM facts WHERE kind = ? AND key > ? AND key < ?))")


def searched(*subqueries: str) -> str:
    """Leaves joined by | are one search: sqlite reads the fits they name, not every fit."""
    return f"f.fit_key IN ({' UNION ALL '.join(subqueries)})"

ER = "galaxies.lens.mass.einstein_radius"


def where(predicate: Any) -> tuple[str, list[Any]]:
    return compiler.compile_where(QueryState(predicate=predicate, top_level_only=False))


@pytest.fixture(scope="module", params=BACKENDS)
def conn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pg = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    with open_db(request.param, tmp_path_factory.mktemp("compiler"), pg) as connection:
        yield connection


def on(conn: Any, found: Any = ()) -> compiler.Access:
    """An Access in the connection's dialect probing ``found``."""
    return compiler.Access(found, conn.dialect)


# --- golden (sql, params) ---------------------------------------------------------------------

SEEDS: list[tuple[Any, str, list[Any]]] = [
    (lens.mass == Isothermal, NODE.format("class_path = ?"), ["galaxies.lens.mass", "autolens.Isothermal"]),
    (lens.mass.einstein_radius > 1.0, FACT.format("num > ?"), [0, ER, 1.0]),
    ((lens.mass == Isothermal) & (lens.mass.einstein_radius > 1.0),
     f"({NODE.format('class_path = ?')} AND {FACT.format('num > ?')})",
     ["galaxies.lens.mass", "autolens.Isothermal", 0, ER, 1.0]),
    ((lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3"),
     f"({FACT.format('num > ?')} OR (f.unique_tag IS NOT NULL AND f.unique_tag = ?))", [0, ER, 1.0, "lens_3"]),
    (agg.unique_tag == "example_dataset_0", "(f.unique_tag IS NOT NULL AND f.unique_tag = ?)",
     ["example_dataset_0"]),
    (agg.search.unique_tag == "example_dataset_0", "(f.unique_tag IS NOT NULL AND f.unique_tag = ?)",
     ["example_dataset_0"]),
    (lens.mass == "Isothermal",
     searched(NODE_ROWS.format("class_name = ?"), FACT_ROWS.format("txt = ?")),
     ["galaxies.lens.mass", "Isothermal", 0, "galaxies.lens.mass", "Isothermal"]),
    (lens.mass == "autolens.Isothermal",
     searched(NODE_ROWS.format("class_path = ?"), FACT_ROWS.format("txt = ?")),
     ["galaxies.lens.mass", "autolens.Isothermal", 0, "galaxies.lens.mass", "autolens.Isothermal"]),
]

OPERATORS: list[tuple[Any, str, list[Any]]] = [
    (agg.model.x != 2, f"NOT ({FACT.format('num = ?')})", [0, "x", 2.0]),
    (agg.model.x < 2, FACT.format("num < ?"), [0, "x", 2.0]),
    (agg.model.x <= True, FACT.format("num <= ?"), [0, "x", 1.0]),
    (agg.model.x >= "b", FACT.format("txt >= ?"), [0, "x", "b"]),
    (agg.median.x > -1, FACT.format("num > ?"), [1, "x", -1.0]),
    (agg.info["survey"] == "SLACS", FACT.format("txt = ?"), [2, "survey", "SLACS"]),
    (agg.job["SLURM_ARRAY_JOB_ID"] == 7, FACT.format("num = ?"), [3, "SLURM_ARRAY_JOB_ID", 7.0]),
    (agg.info["survey"].contains("SL%_"), FACT.format("instr(txt, ?) > 0"), [2, "survey", "SL%_"]),
    (agg.info["n"].in_([1, "a", 2.5]),
     searched(FACT_ROWS.format("num IN (?, ?)"), FACT_ROWS.format("txt = ?")), [2, "n", 1.0, 2.5, 2, "n", "a"]),
    (agg.model.x.in_(["Isothermal", 3]),
     searched(NODE_ROWS.format("class_name = ?"), FACT_ROWS.format("num = ?"), FACT_ROWS.format("txt = ?")),
     ["x", "Isothermal", 0, "x", 3.0, 0, "x", "Isothermal"]),
    (agg.model.x.in_([]), "0", []),
    (agg.model.x.is_none(), MODEL_NONE, [0, "x", "null", "x", 0, "x.", "x/"]),
    (agg.model.x == None, MODEL_NONE, [0, "x", "null", "x", 0, "x.", "x/"]),  # noqa: E711
    (agg.median.x == None,  # noqa: E711
     "f.fit_key NOT IN (SELECT fit_key FROM facts WHERE kind = ? AND key = ? AND json IS NOT ?)", [1, "x", "null"]),
    (agg.unique_tag.is_none(), "f.unique_tag IS NULL", []),
    (agg.unique_tag != None, "NOT (f.unique_tag IS NULL)", []),  # noqa: E711
    (agg.name.contains("a'b"), "(f.name IS NOT NULL AND instr(f.name, ?) > 0)", ["a'b"]),
    (agg.status.in_(["lost", "failed"]), "(f.status IS NOT NULL AND f.status IN (?, ?))", ["lost", "failed"]),
    (agg.max_log_likelihood > 3, "(f.max_log_likelihood IS NOT NULL AND f.max_log_likelihood > ?)", [3.0]),
    (agg.is_complete == True, "(f.status = ?) = ?", ["completed", 1.0]),  # noqa: E712
    (agg.is_grid_search == False, "(f.is_grid_search IS NOT NULL AND f.is_grid_search = ?)", [0.0]),  # noqa: E712
    (agg.is_complete.is_none(), "0", []),
    (~((agg.id == "a") | (agg.parent_id == "b")),
     "NOT (((f.id IS NOT NULL AND f.id = ?) OR (f.parent_id IS NOT NULL AND f.parent_id = ?)))", ["a", "b"]),
]


@pytest.mark.parametrize(("predicate", "sql", "params"), SEEDS + OPERATORS, ids=lambda v: repr(v)[:60])
def test_golden(predicate: Any, sql: str, params: list[Any]) -> None:
    assert where(predicate) == (f"WHERE {sql}", params)


def test_base_filters_and_select_shapes() -> None:
    state = QueryState(completed_only=True, grid_only=True)
    assert compiler.compile_where(state) == (
        "WHERE f.parent_id IS NULL AND f.status = ? AND f.is_grid_search = 1", ["completed"])
    assert compiler.compile_where(QueryState(top_level_only=False)) == ("", [])
    child = QueryState().children_of("x' OR '1'='1")
    assert compiler.compile_where(child) == ("WHERE f.parent_id = ?", ["x' OR '1'='1"])
    assert statements.select_fits(QueryState()) == (
        "SELECT f.* FROM fits AS f WHERE f.parent_id IS NULL ORDER BY f.fit_key", [])
    ordered = QueryState().ordered(agg.model.x, reverse=True).ordered(agg.max_log_likelihood).sliced(5, 15)
    value = "(SELECT coalesce(num, txt) FROM facts WHERE fit_key = f.fit_key AND kind = ? AND key = ?)"
    assert statements.select_fits(ordered, "f.id") == (
        f"SELECT f.id FROM fits AS f WHERE f.parent_id IS NULL ORDER BY {value} IS NULL, {value} DESC, "
        "f.max_log_likelihood IS NULL, f.max_log_likelihood, f.fit_key LIMIT ? OFFSET ?",
        [0, "x", 0, "x", 10, 5])
    assert statements.select_count(QueryState()) == (
        "SELECT count(*) FROM fits AS f WHERE f.parent_id IS NULL", [])
    assert statements.select_count(QueryState().sliced(3)) == (
        "SELECT count(*) FROM (SELECT f.fit_key FROM fits AS f WHERE f.parent_id IS NULL LIMIT ? OFFSET ?)",
        [-1, 3])
    assert statements.select_payloads(QueryState(), "samples") == (  # a payload too big is its length
        "SELECT f.id, f.model, CASE WHEN length(p.data) > ? THEN length(p.data) ELSE p.data END "
        "FROM fits AS f JOIN payloads AS p ON p.fit_key = f.fit_key "
        "AND p.name = ? WHERE f.parent_id IS NULL ORDER BY f.fit_key", [256 * 2**20, "samples"])
    assert statements.select_column(QueryState(), "info") == (
        "SELECT f.id, f.info FROM fits AS f WHERE f.parent_id IS NULL ORDER BY f.fit_key", [])
    with pytest.raises(QueryError):
        statements.select_column(QueryState(), "info; DROP TABLE fits")
    with pytest.raises(QueryError):
        statements.select_facts(QueryState(), [7])


# --- SQL means what the reference means -----------------------------------------------------

@st.composite
def states(draw: st.DrawFn) -> QueryState:
    rarely = st.sampled_from([False, False, False, True])  # base filters drop most fits
    state = QueryState(
        predicate=draw(st.none() | predicates), completed_only=draw(rarely),
        top_level_only=draw(st.booleans()), grid_only=draw(rarely),
    )
    if draw(rarely):
        state = state.children_of(draw(st.sampled_from(["p", "x' OR '1'='1"])))
    order_operands = st.sampled_from([
        ModelPath("galaxies.lens.mass.einstein_radius"), ModelPath("galaxies.lens.mass"),
        MedianPath("galaxies.lens.mass.einstein_radius"), InfoKey("survey"), JobKey("n"),
        Column("unique_tag"), Column("max_log_likelihood"), Column("is_complete"), Column("id"),
    ])
    for operand, reverse in draw(st.lists(st.tuples(order_operands, st.booleans()), max_size=2)):
        state = state.ordered(operand, reverse)
    if draw(st.booleans()):
        state = state.sliced(draw(st.none() | st.integers(0, 4)), draw(st.none() | st.integers(0, 8)))
    return state


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fits=records(), queries=st.lists(states(), min_size=1, max_size=10))
def test_sql_matches_reference(conn: Any, fits: list[dict[str, Any]], queries: list[QueryState]) -> None:
    if conn.dialect.name == "postgresql":
        fits = without_nul(fits)
        queries = [QueryState.from_wire(without_nul(state.to_wire())) for state in queries]
    load(conn, fits)
    for state in queries:
        found = compiler.leaves(state, conn.dialect)
        for access in (on(conn), on(conn, found), on(conn, found[::2])):  # searched, probed, mixed
            sql, params = statements.select_fits(state, "f.id", access)
            got = [row[0] for row in conn.execute(sql, params)]
            assert got == select(fits, state), (state, sql, params)
            count_sql, count_params = statements.select_count(state, access)
            assert conn.execute(count_sql, count_params).fetchone()[0] == len(got)


def test_leaves_are_probed_when_they_match_many_fits(conn: Any) -> None:
    state = QueryState(predicate=(lens.mass == "Isothermal") & (lens.mass.einstein_radius > 1.0))
    found = compiler.leaves(state)
    assert [(leaf.table, leaf.condition) for leaf in found] == [
        ("nodes", "path = ? AND class_name = ?"), ("facts", "kind = ? AND key = ? AND txt = ?"),
        ("facts", "kind = ? AND key = ? AND num > ?")]
    probe = "EXISTS (SELECT 1 FROM {} WHERE fit_key = f.fit_key AND {})"
    assert compiler.compile_where(state, compiler.access_from(found, [5000, 0, 5000], 1000)) == (
        f"WHERE f.parent_id IS NULL AND (({probe.format('nodes', 'path = ? AND class_name = ?')} OR "
        f"f.fit_key IN ({FACT_ROWS.format('txt = ?')})) AND "
        f"{probe.format('facts', 'kind = ? AND key = ? AND num > ?')})",
        ["galaxies.lens.mass", "Isothermal", 0, "galaxies.lens.mass", "Isothermal", 0, ER, 1.0])
    assert found[2].count(7) == (f"SELECT count(*) FROM ({FACT_ROWS.format('num > ?')} LIMIT ?)", [0, ER, 1.0, 7])
    assert compiler.probe_threshold(0) == compiler.PROBE_MIN
    assert compiler.probe_threshold(10**6) == 16_000  # sqrt(256 * 10^6)
    load(conn, [_fit(i, values={ER: i / 10}, classes={"galaxies.lens.mass": "a.Isothermal"}) for i in range(30)])
    counts = [conn.execute(*leaf.count(12, conn.dialect)).fetchone()[0] for leaf in found]
    assert counts == [12, 0, 12]  # capped: nobody needs to know there are 30 and 19


# --- hostile strings are data ----------------------------------------------------------------

HOSTILE = ["x' OR '1'='1", "'; DROP TABLE fits;--", "%", "_", "a%b", "a_b", "lens_3", "LENS_3", "é", "e\u0301",
           "😀", "a\x00b", '"', "\\", "", "Isothermal", "autolens.Isothermal", "?", "NULL"]


def _fit(i: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "fit_key": i + 1, "id": f"fit{i}", "name": None, "path_prefix": None, "unique_tag": None,
        "status": "completed", "parent_id": None, "max_log_likelihood": None, "log_evidence": None,
        "is_grid_search": False, "values": {}, "medians": {}, "info": {}, "job": {}, "classes": {},
    }
    return {**record, **fields}


def _ids(conn: Any, state: QueryState) -> list[str]:
    sql, params = statements.select_fits(state, "f.id", on(conn))
    return [row[0] for row in conn.execute(sql, params)]


def test_hostile_strings_match_only_themselves(conn: Any) -> None:
    hostile = HOSTILE if conn.dialect.name == "sqlite" else [s for s in HOSTILE if "\x00" not in s]
    fits = [_fit(i, unique_tag=s, values={"x": s}, info={s: s}, classes={"m": f"pkg.{s}"})
            for i, s in enumerate(hostile)]
    load(conn, fits)
    for i, text in enumerate(hostile):
        for predicate in (agg.unique_tag == text, agg.model.x == text, agg.info[text] == text,
                          agg.info[text].in_([text]), agg.model.m == f"pkg.{text}"):
            assert _ids(conn, QueryState(predicate=predicate)) == [f"fit{i}"], predicate
        for predicate in (agg.unique_tag.contains(text), agg.model.x.contains(text), agg.unique_tag < text):
            state = QueryState(predicate=predicate)
            assert _ids(conn, state) == select(fits, state), predicate  # wildcards and case are data
    assert conn.execute("SELECT count(*) FROM fits").fetchone()[0] == len(hostile)


def test_contains_is_case_sensitive_and_literal(conn: Any) -> None:
    load(conn, [_fit(0, unique_tag="abc", info={"k": "abc"}), _fit(1, unique_tag="a_c", info={"k": "A%C"})])
    state = QueryState()
    assert _ids(conn, state.where(agg.unique_tag.contains("_"))) == ["fit1"]
    assert _ids(conn, state.where(agg.unique_tag.contains("B"))) == []
    assert _ids(conn, state.where(agg.info["k"].contains("%"))) == ["fit1"]
    assert _ids(conn, state.where(agg.info["k"].contains(""))) == ["fit0", "fit1"]


def test_missing_none_and_nan(conn: Any) -> None:
    load(conn, [_fit(0, values={"x": 1.0}), _fit(1, values={"x": None}), _fit(2, values={"x": math.nan}),
                _fit(3), _fit(4, values={"x": [1, 2]}), _fit(5, values={"x": True})])
    x = agg.model.x
    assert _ids(conn, QueryState(predicate=x == 1)) == ["fit0", "fit5"]
    assert _ids(conn, QueryState(predicate=x != 1)) == ["fit1", "fit2", "fit3", "fit4"]
    assert _ids(conn, QueryState(predicate=x.is_none())) == ["fit1", "fit3"]
    assert _ids(conn, QueryState(predicate=~x.is_none())) == ["fit0", "fit2", "fit4", "fit5"]
    assert _ids(conn, QueryState(predicate=x < 100)) == ["fit0", "fit5"]
    assert _ids(conn, QueryState(predicate=~(x < 100))) == ["fit1", "fit2", "fit3", "fit4"]
    assert _ids(conn, QueryState().ordered(x)) == ["fit0", "fit5", "fit1", "fit2", "fit3", "fit4"]
    assert _ids(conn, QueryState().ordered(x, reverse=True)) == ["fit0", "fit5", "fit1", "fit2", "fit3", "fit4"]


def test_a_double_negation_built_by_hand_is_its_item(conn: Any) -> None:
    """``Not(Not(p))`` built by hand (a client's own tree) was a tree of its own: not equal to ``p``,
    compiled to ``NOT (NOT (...))`` and counted without the indexes' fast path. It is ``p``, as
    ``~~p`` is, so it compiles, selects and counts as ``p`` does; three are one."""
    from lensd.query import counting
    from lensd.query.nodes import Not

    fits = [_fit(i, values={"x": float(i)} if i % 3 else {}, unique_tag=f"t{i % 2}") for i in range(9)]
    load(conn, fits)
    x = agg.model.x
    for p in (x > 2, (x > 2) & (agg.unique_tag == "t1"), (x < 2) | x.is_none(), ~(x == 4)):
        state = QueryState(predicate=p)
        for twice in (Not(Not(p)), ~~p, Not(~p), ~Not(p)):
            assert twice == p and hash(twice) == hash(p) and repr(twice) == repr(p), twice
            assert where(twice) == where(p)
            chosen = QueryState(predicate=twice)
            assert _ids(conn, chosen) == _ids(conn, state) == select(fits, state)
            count = counting.select_count(chosen, on(conn))
            assert count == counting.select_count(state, on(conn))
            assert conn.execute(*count).fetchone()[0] == len(select(fits, state))
        assert Not(Not(Not(p))) == ~p and where(Not(Not(Not(p)))) == where(~p)


def test_windows_are_chosen_before_payloads_and_facts(conn: Any) -> None:
    fits = [_fit(i, max_log_likelihood=float(i), values={"x": i}) for i in range(6)]  # odd fit_keys have samples
    load(conn, fits)
    state = QueryState().ordered(agg.max_log_likelihood, reverse=True).sliced(1, 4)  # fit4, fit3, fit2
    assert _ids(conn, state) == ["fit4", "fit3", "fit2"]
    sql, params = statements.select_payloads(state, "samples", on(conn))
    assert [(r[0], bytes(r[2])) for r in conn.execute(sql, params)] == [("fit4", b"samples of fit4"),
                                                                  ("fit2", b"samples of fit2")]
    sql, params = statements.select_count(state, on(conn))
    assert conn.execute(sql, params).fetchone()[0] == 3
    sql, params = statements.select_facts(state, [schema.KIND_VALUE], on(conn))
    assert [(r[0], r[2], r[3]) for r in conn.execute(sql, params)] == [(3, "x", 2.0), (4, "x", 3.0), (5, "x", 4.0)]
    sql, params = statements.select_facts(QueryState(predicate=agg.model.x > 3), access=on(conn))
    assert [r[0] for r in conn.execute(sql, params)] == [5, 6]


def test_limits_raise_query_errors() -> None:
    deep: Any = agg.model.x > 0
    for i in range(80):
        deep = (deep & (agg.model.y > i)) if i % 2 else (deep | (agg.model.y > i))
    with pytest.raises(QueryError, match="nested"):
        compiler.compile_where(QueryState(predicate=deep))
    with pytest.raises(QueryError, match="too large"):
        compiler.compile_where(QueryState(predicate=agg.model.x.in_(range(40_000))))


# --- index use ---------------------------------------------------------------------------

INDEXED = [
    (agg.unique_tag == "tag_17", "fits_unique_tag"),
    (lens.mass == Isothermal, "nodes_class_path"),
    (lens.mass == "Isothermal", "nodes_class_name"),
    (lens.mass.einstein_radius > 1.9, "facts_num"),
    (agg.info["survey"] == "SLACS", "facts_txt"),
    (agg.info["survey"].contains("SL"), "facts_txt"),
    (agg.job["SLURM_ARRAY_JOB_ID"] == 3, "facts_num"),
    ((lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3"), "facts_num"),
]


def _plan_fits() -> list[dict[str, Any]]:
    """2,000 fits for the index tests: few match a tag or a high value, a third each class."""
    classes = ["autolens.Isothermal", "autolens.PowerLaw", "autolens.NFW"]
    return [
        _fit(i, id=f"{i:032x}", unique_tag=f"tag_{i}", parent_id=None if i % 10 else "p", max_log_likelihood=i / 7,
             values={ER: (i % 97) / 40, "galaxies.lens.redshift": 0.5}, info={"survey": ["SLACS", "BELLS"][i % 2]},
             job={"SLURM_ARRAY_JOB_ID": i // 100}, classes={"galaxies.lens.mass": classes[i % 3]})
        for i in range(2000)
    ]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = create(str(Path(tmp_path_factory.mktemp("plans")) / "lensd.sqlite"))
    load(connection, _plan_fits())
    connection.execute("ANALYZE")
    yield connection
    connection.close()


@pytest.mark.parametrize(("predicate", "index"), INDEXED, ids=repr)
@pytest.mark.parametrize("top_level_only", [True, False])
def test_queries_search_indexes(populated: sqlite3.Connection, predicate: Any, index: str,
                                top_level_only: bool) -> None:
    sql, params = statements.select_fits(QueryState(predicate=predicate, top_level_only=top_level_only))
    plan = statements.explain(populated, sql, params)
    assert any(line.startswith("SEARCH") and index in line for line in plan), plan
    assert not any(line.startswith(("SCAN f", "SCAN fits", "SCAN facts", "SCAN nodes")) for line in plan), plan


@pytest.fixture(scope="module")
def populated_pg(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_db("postgresql", tmp_path_factory.mktemp("plans_pg"), pg_server) as db:
        load(db, _plan_fits())
        db.execute("VACUUM ANALYZE")  # what autovacuum does to a table this size: statistics, visibility map
        yield db


@pytest.mark.parametrize(("predicate", "index"), INDEXED, ids=repr)
def test_queries_search_indexes_on_postgresql(populated_pg: Any, predicate: Any, index: str) -> None:
    """PostgreSQL's planner is cost-based: each leaf is answered from its index, and it may read
    the small fits table whole to join the leaf's matches when it reckons that cheaper."""
    sql, params = statements.select_fits(QueryState(predicate=predicate), "f.id", on(populated_pg))
    plan = [row[0] for row in populated_pg.execute("EXPLAIN " + sql, params)]
    assert any(f"using {index}" in line for line in plan) or (  # strpos: any (kind, key, ...) index
        "contains" in repr(predicate) and any("using facts_" in line for line in plan)), plan
    assert not any("Seq Scan on facts" in line or "Seq Scan on nodes" in line for line in plan), plan


@pytest.mark.parametrize("predicate", [lens.mass == "Isothermal", lens.mass.einstein_radius > 1.0,
                                       (lens.mass == "Isothermal") | (agg.info["survey"] == "SLACS")], ids=repr)
def test_a_probed_leaf_is_one_seek_per_fit_on_postgresql(populated_pg: Any, predicate: Any) -> None:
    """A leaf matching many fits is probed fit by fit so the first page stops early, as on sqlite;
    without the dialect's fence PostgreSQL hashes every match of the leaf before the first row."""
    seen = on(populated_pg)
    statements.select_fits(QueryState(predicate=predicate), "f.id", seen)
    sql, params = statements.select_fits(QueryState(predicate=predicate), "f.id", on(populated_pg, seen.leaves))
    plan = [row[0] for row in populated_pg.execute("EXPLAIN " + sql, params)]
    assert "EXISTS" in sql and any("SubPlan" in line for line in plan), plan
    assert not any("hashed SubPlan" in line or "Hash" in line.split("(")[0] for line in plan), plan
    assert any("Index Cond: ((fit_key = f.fit_key)" in line for line in plan), plan
