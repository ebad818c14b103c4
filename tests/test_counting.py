"""Counting from the indexes (lensd.query.counting): the same answer as the fits the compiler
selects, and plans that read index ranges and probes, never fits rows, for the seed queries
(docs/performance.md). Whether the compiler selects the right fits is test_compiler's question."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from _reference import create, load, predicates, records, select
from backends import BACKENDS, open_db, without_nul
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lensd.query import compiler, counting, statements
from lensd.query.state import QueryFields, QueryState

agg = QueryFields()
mass = agg.model.galaxies.lens.mass
ER = "galaxies.lens.mass.einstein_radius"
SEEDS = {
    "mass == Isothermal": mass == "Isothermal",
    "einstein_radius > 1.0": mass.einstein_radius > 1.0,
    "Isothermal & einstein_radius > 1.0": (mass == "Isothermal") & (mass.einstein_radius > 1.0),
    "einstein_radius > 1.0 | unique_tag == lens_3": (mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3"),
    "unique_tag == lens_3": agg.unique_tag == "lens_3",
}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    connection = create(str(tmp_path_factory.mktemp("counting") / "lensd.sqlite"))
    yield connection
    connection.close()


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sqlite file, then a PostgreSQL database (tests/backends.py)."""
    pg = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    with open_db(request.param, tmp_path_factory.mktemp("counting_db"), pg) as connection:
        yield connection


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fits=records(), predicates=st.lists(predicates, min_size=1, max_size=8), top=st.booleans())
def test_counts_match_the_selected_fits(db: Any, fits: list[dict[str, Any]],
                                        predicates: list[Any], top: bool) -> None:
    if db.dialect.name == "postgresql":
        fits, predicates = without_nul(fits), [QueryState.from_wire(without_nul(QueryState(predicate=p).to_wire()))
                                               .predicate for p in predicates]
    load(db, fits)
    for predicate in predicates:
        state = QueryState(predicate=predicate, top_level_only=top)
        searched = compiler.Access(dialect=db.dialect)
        selected = len(db.execute(*statements.select_fits(state, "f.id", searched)).fetchall())
        found = compiler.leaves(state, db.dialect)
        for access in (searched, compiler.Access(found, db.dialect), compiler.Access(found[::2], db.dialect)):
            sql, params = counting.select_count(state, access)  # the estimates vary
            assert db.execute(sql, params).fetchone()[0] == selected, (state, sql)


def _seed_fits(n: int) -> list[dict[str, Any]]:
    """Like the bench's: half Isothermal, radii around 1, ten tags, a few children of a grid."""
    return [{"fit_key": i + 1, "id": f"fit{i}", "name": None, "path_prefix": None, "unique_tag": f"lens_{i % 10}",
             "status": "completed", "parent_id": "fit0" if i % 50 == 49 else None, "max_log_likelihood": None,
             "log_evidence": None, "is_grid_search": False, "values": {ER: 0.5 + (i % 7) / 6}, "medians": {},
             "info": {}, "job": {},
             "classes": {"galaxies.lens.mass": ("a.Isothermal", "a.PowerLaw")[i % 2]}} for i in range(n)]


@pytest.mark.parametrize("name", SEEDS)
def test_seed_counts_read_indexes_not_fits_rows(conn: sqlite3.Connection, name: str) -> None:
    fits = _seed_fits(400)
    load(conn, fits)
    conn.execute("ANALYZE")
    state = QueryState(predicate=SEEDS[name])
    found = compiler.leaves(state)
    # Estimates as the reader makes them, with a threshold that makes the big leaves probed.
    counts = [conn.execute(*leaf.count(100)).fetchone()[0] for leaf in found]
    sql, params = counting.select_count(state, compiler.access_from(found, counts, 100))
    assert conn.execute(sql, params).fetchone()[0] == len(select(fits, state))
    plan = statements.explain(conn, sql, params)
    children = plan.index("SEARCH c USING COVERING INDEX fits_parent_id (parent_id>?)")
    counted, child_count = plan[:children], plan[children + 1:]
    assert not any(line.startswith("SCAN") and line != "SCAN CONSTANT ROW" for line in plan), plan
    searches = [line for line in counted if line.startswith("SEARCH")]
    assert searches and all("USING COVERING INDEX" in line for line in searches), plan
    # The child count reads the children's rows: one seek each, and there are few of them.
    assert child_count[0] in ("SEARCH f USING INTEGER PRIMARY KEY (rowid=?)",
                              "SEARCH f USING COVERING INDEX fits_unique_tag (unique_tag=? AND rowid=?)"), plan


def test_what_it_cannot_serve_from_indexes_is_counted_as_before(conn: sqlite3.Connection) -> None:
    for state in (QueryState(), QueryState(predicate=~(mass.einstein_radius > 1.0)),
                  QueryState(predicate=mass.einstein_radius > 1.0, completed_only=True),
                  QueryState(predicate=mass.einstein_radius > 1.0).sliced(None, 3)):
        assert counting.select_count(state) == statements.select_count(state)
