"""The rows the writer stores do not depend on how it works them out: the count-block upkeep takes
the new fits' state from the plan's rows (``plannedblocks.planned_entries``) instead of reading it back, and the
stored database is byte for byte the one the read-back upkeep makes, for the same ops at the same
clock; odd numbers (-0.0, which sqlite gives back as 0.0, infinities, the largest integers, SLURM
id strings) keep the blocks equal to a rebuild on both engines."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records_factory import record

from lensd.domain.records import validate_record
from lensd.errors import InvalidRecord
from lensd.store import adminops, blocks, pgstore, plannedblocks, schema
from lensd.store import writer as writer_module
from lensd.store.batchplan import plan_batch
from lensd.store.pgwriter import PgBatchWriter
from lensd.store.writeops import AdminOp, Delete, Op, Tag, Touch, Upsert, op_from_request
from lensd.store.writer import BatchWriter, Writer

B = blocks.BLOCK
ODD = [-0.0, 0.0, math.inf, -math.inf, 2.0**53 + 2, -(2.0**62), 5e-324, 1.7976931348623157e308, math.nan]
numbers = st.sampled_from(ODD) | st.floats() | st.integers(-(2**63), 2**63 - 1)
values = numbers | st.text(max_size=3) | st.none() | st.booleans() | st.lists(st.integers(-3, 3), max_size=2)
slurm = st.sampled_from(["7", "0012", "123456789012345", "1234567890123456", "-3", "x", "١٢"])


def _record(i: int, info: dict[str, Any], job: dict[str, Any], instance: dict[str, Any], tag: str | None,
            parent: str | None) -> Upsert | None:
    try:
        return Upsert(validate_record(record(i, 2, info=info, job=job, instance=instance, unique_tag=tag,
                                             parent_id=parent)))
    except InvalidRecord:
        return None


@st.composite
def batches(draw: st.DrawFn) -> list[Upsert]:
    ops = []
    for i in range(draw(st.integers(1, 6))):
        op = _record(i, draw(st.dictionaries(st.sampled_from(["a", "survey", "n"]), values, max_size=3)),
                     draw(st.dictionaries(st.sampled_from(["SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "host"]),
                                          slurm | values, max_size=2)),
                     draw(st.dictionaries(st.sampled_from(["galaxies.lens.mass.einstein_radius", "x.y"]),
                                          values, max_size=2)),
                     draw(st.none() | st.text(max_size=2)), draw(st.none() | st.just("fit-0")))
        if op is not None:
            ops.append(op)
    return ops


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=batches(), first=st.sampled_from([1, B - 2, 5 * B + 7]))
def test_the_new_fits_state_from_the_plan_is_what_sqlite_gives_back(ops: list[Upsert], first: int) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        schema.migrate(conn)
        plan, _, next_key = plan_batch(ops, {}, first, 1e9)
        for sql, rows in plan.statements:
            conn.executemany(sql, rows)
        new = range(first, next_key)
        planned = plannedblocks.planned_entries(plan.statements, new, signed_zero=False)
        read = blocks.entries(conn, new)
        assert planned == read
        assert {k: {n: blocks._bits(v) for n, v in e.items()} for k, e in planned.items()} == \
            {k: {n: blocks._bits(v) for n, v in e.items()} for k, e in read.items()}
    finally:
        conn.close()


# --- whole databases: the same ops, the same clock, the same bytes ------------------------------
def _odd(i: int, tag: str | None = None) -> Upsert:
    odd = ODD[i % len(ODD)]
    op = _record(i, {"n": odd, "survey": ("SLACS", "BELLS", None)[i % 3], "index": i},
                 {"SLURM_ARRAY_TASK_ID": str(i)}, {"galaxies.lens.mass.einstein_radius": odd, "x.y": -0.0},
                 tag or f"lens_{i % 5}", "fit-0" if i % 7 == 3 else None)
    assert op is not None
    return op


def script() -> list[list[Op | AdminOp]]:
    """New fits across a block's end, then every kind of change to stored and new fits."""
    return [
        [_odd(i) for i in range(12)],
        [_odd(i) for i in range(12, 14)],
        [_odd(3, "lens_9"), _odd(14), op_from_request("progress", {
            "id": "fit-15", "seq": 1, "progress": 0.25, "instance": {"galaxies": {"lens": {"mass": {
                "einstein_radius": -0.0}}}}}),
         op_from_request("progress", {"id": "fit-4", "seq": 1, "instance": {"x": {"y": 2.5}}}),
         op_from_request("fail", {"id": "fit-16", "error": "boom"}), Touch(("fit-1", "fit-17"))],
        [_odd(18), _odd(19), Tag("fit-18", {"owner": "ann"}), Delete(("fit-19", "fit-2"))],
        [_odd(20), op_from_request("progress", {"id": "fit-20", "seq": 3, "progress": 0.5})],
    ]


class _Clock:
    """The writer's ``time`` module with a clock that moves only per call: two runs store the same times."""

    def __init__(self) -> None:
        self.now = 1.7e9

    def time(self) -> float:
        self.now += 1.0
        return self.now


def _dump(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    clock = SimpleNamespace(time=_Clock().time)
    monkeypatch.setattr(writer_module, "time", clock)
    monkeypatch.setattr(adminops, "time", clock)  # a tag's time
    conn = sqlite3.connect(path, isolation_level=None)
    schema.migrate(conn)
    conn.execute("INSERT INTO fits (fit_key, id, status) VALUES (?, 'placeholder', 'completed')", [B - 5])
    conn.close()
    writer = anyio.run(BatchWriter.open, path, "normal")
    try:
        for batch in script():
            outcomes = writer._apply(batch, None)
            assert all(isinstance(o, str) for o in outcomes), outcomes
    finally:
        writer._close()
    conn = sqlite3.connect(path)
    try:
        assert {int(b) for (b,) in conn.execute("SELECT DISTINCT block FROM count_blocks")} == {0, 1}
        return list(conn.iterdump())
    finally:
        conn.close()


def test_the_database_is_the_one_the_read_back_upkeep_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = _dump(tmp_path / "now.sqlite", monkeypatch)
    monkeypatch.setattr(plannedblocks, "planned_entries", lambda *args, **kwargs: {})  # all read back, as before
    before = _dump(tmp_path / "before.sqlite", monkeypatch)
    assert now == before


# --- both engines: the blocks equal a rebuild -----------------------------------------------------
def _stored(db: Any) -> dict[tuple[str, int], bytes]:
    return {(name, int(block)): bytes(data) for name, block, data in
            db.execute("SELECT name, block, data FROM count_blocks").fetchall() if data}


def _check(db: Any) -> None:
    kept = _stored(db)
    assert kept
    blocks.rebuild(db)
    assert _stored(db) == kept


async def _run(writer: Writer) -> None:
    try:
        for batch in script():
            outcomes = await writer.apply(batch)
            assert all(isinstance(o, str) for o in outcomes), outcomes
    finally:
        await writer.close()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "lensd.sqlite"

    async def main() -> None:
        await _run(await BatchWriter.open(path, "normal"))
    anyio.run(main)
    conn = sqlite3.connect(path, isolation_level=None)
    yield conn
    conn.close()


def test_the_sqlite_writer_keeps_the_blocks_of_odd_numbers_exact(sqlite_db: sqlite3.Connection) -> None:
    _check(sqlite_db)


def test_the_postgresql_writer_keeps_the_blocks_of_odd_numbers_exact(pg_url: str) -> None:
    async def main() -> None:
        await _run(await PgBatchWriter.open(pg_url))
    anyio.run(main)
    with pgstore.connect(pg_url, autocommit=True) as conn:
        db = pgstore.QmarkCursor(conn.cursor())
        assert db.execute("SELECT count(*) FROM facts WHERE num = 0 AND txt IS NULL").fetchone()[0] > 0
        _check(db)
