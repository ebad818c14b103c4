"""Aggregator.from_database("postgresql://..."): the sync reader on PostgreSQL, through the same
plans as on sqlite; server-side cursors; passwords never in messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from _reference import load
from backends import open_db
from pg_server import PgServer

import lensd
from lensd.errors import StorageError
from lensd.store import blocks, pgstore


def _fit(i: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "fit_key": i + 1, "id": f"fit{i}", "name": None, "path_prefix": None, "unique_tag": f"lens_{i % 3}",
        "status": "completed", "parent_id": None, "max_log_likelihood": float(i), "log_evidence": None,
        "is_grid_search": False, "values": {"galaxies.lens.mass.einstein_radius": i / 10}, "medians": {},
        "info": {}, "job": {}, "classes": {"galaxies.lens.mass": "autolens.Isothermal"},
    }
    return {**record, **fields}


def test_the_aggregator_reads_postgresql(pg_server: PgServer, tmp_path: Path) -> None:
    with open_db("postgresql", tmp_path, pg_server) as db:
        load(db, [_fit(i) for i in range(600)])  # more than a page: the cursor fetches several
        agg = lensd.Aggregator.from_database(db.url)
        try:
            lens = agg.model.galaxies.lens
            assert len(agg) == 600
            assert len(agg.query(lens.mass.einstein_radius > 50.0)) == 99
            assert len(agg.query((lens.mass == "Isothermal") & (agg.unique_tag == "lens_1"))) == 200
            top = agg.order_by(agg.max_log_likelihood, reverse=True)[:3]
            assert [fit.id for fit in top.fits()] == ["fit599", "fit598", "fit597"]
            assert [fit.id for fit in agg[-2:].fits()] == ["fit598", "fit599"]
            ids = [fit.id for fit in agg.fits()]
            assert ids == [f"fit{i}" for i in range(600)]
            assert list(agg[:2].values("info")) == [{}, {}]
            assert agg[:1].fits().__next__().model is None
        finally:
            agg.close()


def test_interleaved_reads_share_one_snapshot_and_then_see_new_commits(pg_server: PgServer, tmp_path: Path) -> None:
    with open_db("postgresql", tmp_path, pg_server) as db:
        load(db, [_fit(i) for i in range(300)])
        agg = lensd.Aggregator.from_database(db.url)
        try:
            fits = agg.fits()
            first = next(fits)
            db.execute("BEGIN")  # committed while the read is open, with its count blocks (as a writer does)
            db.execute("DELETE FROM fits WHERE id = ?", ["fit299"])
            blocks.rebuild(db)
            db.execute("COMMIT")
            rest = [fit.id for fit in fits]
            assert first.id == "fit0" and rest[-1] == "fit299"  # the open read keeps its snapshot
            assert len(agg) == 299  # the next read sees the commit
            rows = agg.to_rows(["id"])
            next(rows)
            assert agg._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            rows.close()
            assert agg._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            agg.close()


def test_passwords_never_appear_in_messages(pg_server: PgServer, pg_url: str) -> None:
    assert pgstore.redact("postgresql://ann:s3cret@db.example:5432/lensd") == "postgresql://ann:***@db.example:5432/lensd"
    assert "s3cret" not in pgstore.redact("postgresql://ann@db/lensd?password=s3cret&sslmode=require")
    url = f"postgresql://lensd:s3cret-word@127.0.0.1:{pg_server.port}/nowhere"
    with pytest.raises(StorageError) as caught:
        lensd.Aggregator.from_database(url)
    assert "s3cret-word" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(StorageError, match="empty database"):
        lensd.Aggregator.from_database(pg_url)


def test_every_lensd_session_runs_without_jit(pg_url: str) -> None:
    """The sync reader, the writer's connection and the daemon's async reads all start their
    sessions with ``pgstore.SESSION_SQL`` (JIT compiled each wide cursor for longer than it ran)."""
    import anyio

    from lensd.daemon.pgreads import PgReads, _connect

    pgstore.prepare_database(pg_url)
    source = pgstore.PgSource.open(pg_url)
    writer = pgstore.connect(pg_url, autocommit=True)
    try:
        assert source.conn.execute("SHOW jit").fetchone() == ("off",)
        assert writer.execute("SHOW jit").fetchone() == ("off",)
    finally:
        source.close()
        writer.close()

    async def daemon_sessions() -> list[Any]:
        reads = await PgReads.open(pg_url)
        stream_conn = await _connect(pg_url, read_only=True)
        try:
            shown = [row for conn in (reads._conn, stream_conn)
                     for row in await (await conn.execute("SHOW jit")).fetchall()]
            assert stream_conn.read_only is True
            return shown
        finally:
            await stream_conn.close()
            await reads.aclose()

    assert anyio.run(daemon_sessions) == [("off",), ("off",)]


def test_children_select_their_parents_in_the_query(pg_server: PgServer, tmp_path: Path) -> None:
    """agg.children() on PostgreSQL: the parents' selection is a subquery (their order and slices
    kept), so it holds no list of ids however many parents there are."""
    grids = [_fit(i, is_grid_search=True) for i in range(300)]
    cells = [_fit(300 + i, parent_id=f"fit{i * 10}", status="completed" if i % 2 else "running")
             for i in range(30)]
    with open_db("postgresql", tmp_path, pg_server) as db:
        load(db, grids + cells)
        agg = lensd.Aggregator.from_database(db.url)
        try:
            assert [f.id for f in agg.children().fits()] == [f"fit{300 + i}" for i in range(30)]
            assert len(agg.grid_searches().children()) == 30
            top = agg.order_by(agg.max_log_likelihood, reverse=True)[5:101]  # fit294 .. fit199
            assert [f.id for f in top.children().fits()] == [f"fit{300 + i}" for i in range(20, 30)]
            assert [f.id for f in agg[-35:].children().fits()] == ["fit327", "fit328", "fit329"]
            assert len(agg.children().query(agg.is_complete)) == 15 and len(agg.children().children()) == 0
        finally:
            agg.close()
        done = lensd.Aggregator.from_database(db.url, completed_only=True)  # the children's scope too
        try:
            assert [f.id for f in done.children().fits()] == [f"fit{300 + i}" for i in range(1, 30, 2)]
        finally:
            done.close()
