"""Counts from the fit-key blocks (lensd.store.blocks, lensd.query.blockcount): the same answer as
the plain SQL count (``statements.select_count``) after any change of the rows, on sqlite and on
PostgreSQL; the writers keep the blocks exactly as a rebuild from the rows makes them; a v3 file
gets them when migrated; a count reads them by primary key; and a crafted block row makes the
count fall back to SQL, never give a wrong answer or crash."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from _reference import create, load, predicates, records
from backends import BACKENDS, PgDb, open_db, without_nul
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_factory import record

import lensd
from lensd.domain.records import validate_record
from lensd.query import blockcount, compiler, statements
from lensd.query.dialect import POSTGRESQL, SQLITE
from lensd.query.state import QueryFields, QueryState
from lensd.store import blocks, pgstore, readplan, schema
from lensd.store.pgwriter import PgBatchWriter
from lensd.store.writeops import AdminOp, Delete, Op, Tag, Upsert, op_from_request
from lensd.store.writer import BatchWriter, Writer

agg = QueryFields()
mass = agg.model.galaxies.lens.mass
B = blocks.BLOCK
KEYS = [1, 2, 3, B - 1, B, B + 1, 2 * B + 5, 5 * B]  # fits in four blocks, at their edges
SEEDS = {
    "mass == Isothermal": mass == "Isothermal",
    "einstein_radius > 1.0": mass.einstein_radius > 1.0,
    "Isothermal & einstein_radius > 1.0": (mass == "Isothermal") & (mass.einstein_radius > 1.0),
    "einstein_radius > 1.0 | unique_tag == lens_3": (mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3"),
    "unique_tag == example_dataset_0": agg.unique_tag == "example_dataset_0",
    "unique_tag == lens_3": agg.unique_tag == "lens_3",
}
CHECKED = [*SEEDS.values(), ~(mass.einstein_radius > 1.0), mass.einstein_radius.in_([0.5, 2, "x"]),
           agg.info["survey"] == "SLACS", agg.info["owner"] == "ann", agg.info["index"] <= 40,
           (mass == "PowerLaw") | ~(agg.unique_tag.in_(["lens_1", "lens_2"])), agg.model.galaxies.lens == "Galaxy"]


def sql_count(db: Any, state: QueryState) -> int:
    return int(db.execute(*statements.select_count(state, compiler.Access(dialect=db.dialect))).fetchone()[0])


def block_count(db: Any, state: QueryState) -> int | None:
    served = blockcount.plan(state)
    if served is None:
        return None
    return served.reduce(db.execute(*served.sql(db.dialect)).fetchall())


def stored(db: Any) -> dict[tuple[str, int], bytes]:
    """The block rows that hold anything (an emptied row is kept as an empty blob)."""
    return {(name, int(block)): bytes(data) for name, block, data in
            db.execute("SELECT name, block, data FROM count_blocks").fetchall() if data}


def rebuilt(db: Any) -> dict[tuple[str, int], bytes]:
    blocks.rebuild(db)
    return stored(db)


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pg = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    with open_db(request.param, tmp_path_factory.mktemp("blocks_db"), pg) as connection:
        yield connection


def _placed(fits: list[dict[str, Any]], shift: int) -> list[dict[str, Any]]:
    return [dict(fit, fit_key=KEYS[(i + shift) % len(KEYS)]) for i, fit in enumerate(fits)]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=records(), new=records(), shift=st.integers(0, 4), top=st.booleans(),
       queries=st.lists(predicates, min_size=1, max_size=6))
def test_block_counts_follow_every_change_of_the_rows(db: Any, old: list[dict[str, Any]], new: list[dict[str, Any]],
                                                     shift: int, top: bool, queries: list[Any]) -> None:
    """Fits added, changed and removed across blocks (the writer's read-before, read-after upkeep),
    then every servable random predicate counts as the plain SQL does."""
    if db.dialect.name == "postgresql":
        old, new = without_nul(old), without_nul(new)
        queries = [QueryState.from_wire(without_nul(QueryState(predicate=p).to_wire())).predicate for p in queries]
    old, new = _placed(old, 0), _placed(new, shift)
    load(db, old)
    blocks.rebuild(db)
    touched = [f["fit_key"] for f in old + new]
    before = blocks.entries(db, touched)
    load(db, new, rebuild=False)  # the blocks as the old rows left them: the upkeep brings them up
    blocks.maintain(db, before, blocks.entries(db, touched), lock=db.dialect.name == "postgresql")
    for predicate in [None, *queries]:
        state = QueryState(predicate=predicate, top_level_only=top)
        found = block_count(db, state)
        assert found is None or found == sql_count(db, state), state
    kept = stored(db)
    assert rebuilt(db) == kept


def test_what_the_blocks_serve() -> None:
    for predicate in [*SEEDS.values(), *CHECKED]:
        assert blockcount.plan(QueryState(predicate=predicate)) is not None, predicate
    for state in (QueryState(predicate=mass.einstein_radius.contains("x")), QueryState(predicate=mass.is_none()),
                  QueryState(predicate=agg.name == "x"), QueryState(predicate=agg.max_log_likelihood > 1),
                  QueryState(predicate=agg.info["survey"] < "S"), QueryState(completed_only=True),
                  QueryState().sliced(None, 3), QueryState(predicate=(mass > 1) & agg.unique_tag.contains("x"))):
        assert blockcount.plan(state) is None, state


# --- the writers ------------------------------------------------------------------------------
def _upsert(i: int, **fields: Any) -> Upsert:
    return Upsert(validate_record(record(i, 2, **fields)))


def script() -> list[list[Op | AdminOp]]:
    """Two blocks of fits, children of a grid search, then changes of every kind to fits in both."""
    first: list[Op | AdminOp] = [_upsert(i, parent_id="fit-0" if i % 97 == 5 else None) for i in range(B + 40)]
    return [
        *(first[start:start + 700] for start in range(0, len(first), 700)),
        [_upsert(3, unique_tag="lens_3", model=record(1, 2)["model"]), _upsert(B + 7, parent_id="fit-1"),
         op_from_request("progress", {"id": "fit-8", "seq": 2, "progress": 0.5,
                                      "instance": {"galaxies": {"lens": {"mass": {"einstein_radius": 7.5}}}}}),
         op_from_request("progress", {"id": f"fit-{B + 2}", "seq": 2, "progress": 0.5}),
         Tag("fit-9", {"owner": "ann", "survey": None}), Delete(("fit-10", f"fit-{B + 3}", "no-such-fit"))],
        [_upsert(B + 45), Delete((f"fit-{B + 44}",)), Tag(f"fit-{B + 1}", {"owner": "ann"})],
    ]


async def _run(writer: Writer) -> None:
    try:
        for batch in script():
            outcomes = await writer.apply(batch)
            assert all(isinstance(o, str) for o in outcomes), outcomes
    finally:
        await writer.close()


def _check(db: Any) -> None:
    for predicate in CHECKED:
        for top in (True, False):
            state = QueryState(predicate=predicate, top_level_only=top)
            assert block_count(db, state) == sql_count(db, state), state
    kept = stored(db)
    assert {block for _, block in kept} == {0, 1}
    assert rebuilt(db) == kept


def test_the_sqlite_writer_keeps_the_blocks_exact(tmp_path: Path) -> None:
    path = tmp_path / "lensd.sqlite"
    anyio.run(_run_sqlite, path)
    conn = sqlite3.connect(path, isolation_level=None, factory=_Sqlite)
    try:
        _check(conn)
    finally:
        conn.close()


async def _run_sqlite(path: Path) -> None:
    await _run(await BatchWriter.open(path, "normal"))


class _Sqlite(sqlite3.Connection):
    dialect = SQLITE


class _Pg(pgstore.QmarkCursor):
    dialect = POSTGRESQL


def test_the_postgresql_writer_keeps_the_blocks_exact(pg_url: str) -> None:
    async def main() -> None:
        await _run(await PgBatchWriter.open(pg_url))
    anyio.run(main)
    with pgstore.connect(pg_url, autocommit=True) as conn:
        _check(_Pg(conn.cursor()))


# --- reading ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blocks") / "lensd.sqlite"
    anyio.run(_run_sqlite, path)
    return path


@pytest.mark.parametrize("name", SEEDS)
def test_seed_counts_are_primary_key_searches_of_the_blocks(written: Path, name: str) -> None:
    state = QueryState(predicate=SEEDS[name])
    read = readplan.run(readplan.count(state, SQLITE), _scalar(written))
    assert read.shape == readplan.BLOCKS
    conn = sqlite3.connect(written)
    try:
        plan = statements.explain(conn, read.sql, read.params)
        assert plan and all(line == "SEARCH count_blocks USING PRIMARY KEY (name=?)" for line in plan), plan
    finally:
        conn.close()
    everything = lensd.Aggregator.from_database(written)
    try:
        selected = everything.query(SEEDS[name])
        assert len(selected) == sql_count(_sqlite(written), selected._state)
    finally:
        everything.close()


def _scalar(path: Path) -> Any:
    conn = sqlite3.connect(path)
    return lambda sql, params: conn.execute(sql, params).fetchone()[0]


def _sqlite(path: Path) -> Any:
    return sqlite3.connect(path, isolation_level=None, factory=_Sqlite)


@pytest.mark.parametrize("tamper", [
    "UPDATE count_blocks SET data = X'00' WHERE name = '[\"f\"]' AND block = 1",
    "UPDATE count_blocks SET data = 'text' WHERE name LIKE '[\"n\",0,\"galaxies.lens.mass.einstein_radius\"]'",
    "UPDATE count_blocks SET data = zeroblob(70000) WHERE name LIKE '[\"c\",%'",
    "UPDATE count_blocks SET data = X'FFFF' WHERE name LIKE '[\"u\",%'",
    "UPDATE count_blocks SET block = 'one' WHERE name = '[\"f\"]' AND block = 1",
    "INSERT INTO count_blocks VALUES ('[\"f\"]', 4611686018427387904, zeroblob(512))",
    "DROP TABLE count_blocks; CREATE VIEW count_blocks AS SELECT name, 0 AS block, 1 AS data FROM fits",
])
def test_a_crafted_block_row_falls_back_to_the_sql_count(written: Path, tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "crafted.sqlite"
    source, target = sqlite3.connect(written), sqlite3.connect(path)
    source.backup(target)
    source.close()
    target.executescript(tamper)
    target.close()
    conn, everything = _sqlite(path), lensd.Aggregator.from_database(path)
    try:
        for predicate in SEEDS.values():
            selected = everything.query(predicate)
            assert len(selected) == sql_count(conn, selected._state)
    finally:
        everything.close()
        conn.close()


# --- migration --------------------------------------------------------------------------------
def _v3(path: Path, fits: Sequence[dict[str, Any]]) -> sqlite3.Connection:
    conn = create(str(path))
    conn.execute("DROP TABLE count_blocks")
    conn.execute("PRAGMA user_version=3")
    load(conn, fits, rebuild=False)  # v3 has no count_blocks
    return conn


def test_a_v3_file_gets_its_blocks_when_migrated(tmp_path: Path) -> None:
    fits = [dict(f, fit_key=k) for f, k in zip(_fits(len(KEYS)), KEYS, strict=True)]
    conn = _v3(tmp_path / "v3.sqlite", fits)
    assert blockcount.HAS_BLOCKS["sqlite"] and conn.execute(blockcount.HAS_BLOCKS["sqlite"]).fetchone()[0] == 0
    schema.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()
    db = _sqlite(tmp_path / "v3.sqlite")
    try:
        _check_migrated(db)
    finally:
        db.close()


def _check_migrated(db: Any) -> None:
    kept = stored(db)
    assert kept and {block for _, block in kept} == {0, 1, 2, 5}
    assert rebuilt(db) == kept
    for predicate in CHECKED:
        for top in (True, False):
            state = QueryState(predicate=predicate, top_level_only=top)
            assert block_count(db, state) == sql_count(db, state)


def test_a_v3_postgresql_database_gets_its_blocks_when_migrated(pg_url: str) -> None:
    v3 = [*schema._statements(schema.DDL_V1["postgresql"]),
          *(s for step in schema.MIGRATIONS[:2] for s in schema._statements(schema.step_sql(step, "postgresql")))]
    db: Any = PgDb(pg_url)
    try:
        for statement in v3:
            db.execute(statement)
        db.execute("INSERT INTO lensd_meta VALUES ('application', 'lensd'), ('schema_version', '3')")
        load(db, [dict(f, fit_key=k) for f, k in zip(_fits(len(KEYS)), KEYS, strict=True)], rebuild=False)
        pgstore.prepare_database(pg_url)
        assert db.execute("SELECT value FROM lensd_meta WHERE key = 'schema_version'").fetchone()[0] \
            == str(schema.SCHEMA_VERSION)
        _check_migrated(db)
    finally:
        db.close()


def _fits(n: int) -> list[dict[str, Any]]:
    return [{"fit_key": i + 1, "id": f"fit{i}", "name": None, "path_prefix": None, "unique_tag": f"lens_{i % 4}",
             "status": "completed", "parent_id": "fit0" if i % 3 == 2 else None, "max_log_likelihood": None,
             "log_evidence": None, "is_grid_search": False,
             "values": {"galaxies.lens.mass.einstein_radius": 0.5 + i / 4}, "medians": {},
             "info": {"survey": "SLACS" if i % 2 else "BELLS"}, "job": {},
             "classes": {"galaxies.lens.mass": ("a.Isothermal", "a.PowerLaw")[i % 2]}} for i in range(n)]
