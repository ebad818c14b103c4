"""PostgreSQL's writer against a real server: the same stored rows as sqlite's for the same ops,
race-free when several writers share one database, the server's clock, NaN and NUL as decided.

Every test writes through ``PgBatchWriter`` into a fresh database of the session's cluster
(tests/pg_server.py); the sqlite side of a comparison is a real file written by ``BatchWriter``.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from records_factory import record

from lensd.domain.records import validate_record
from lensd.errors import InvalidRecord, LensdError
from lensd.store.pgwriter import MODES, PgBatchWriter
from lensd.store.schema import FIT_COLUMNS
from lensd.store.writeops import AdminOp, Delete, MarkLost, Op, Tag, Touch, Upsert, op_from_request
from lensd.store.writer import BatchWriter, Writer

TIMES = {"created_at", "updated_at", "completed_at", "last_event_at"}


def upsert(i: int, **fields: Any) -> Upsert:
    return Upsert(validate_record(record(i, 20, **fields)))


def script() -> list[list[Op | AdminOp]]:
    """Batches that exercise every op: whole records, events with seqs (one resent), a NaN,
    heartbeats of known and unknown fits, the lost sweep, a tag and a delete."""
    return [
        [upsert(i) for i in range(6)],
        [op_from_request("start", {"record": record(10, 20, status="running"), "seq": 1}),
         op_from_request("progress", {"id": "fit-10", "seq": 2, "progress": 0.25, "max_log_likelihood": -9.0}),
         op_from_request("progress", {"id": "fit-10", "seq": 2, "progress": 0.9}),  # a resend: duplicate
         upsert(7, max_log_likelihood=float("nan"), log_evidence=float("nan"))],
        [op_from_request("progress", {"id": "fit-11", "seq": 5, "progress": 0.5}),  # unknown fit: made
         op_from_request("fail", {"id": "fit-3", "seq": 1, "error": "out of memory"}),
         Touch(("fit-10", "no-such-fit")), Tag("fit-1", {"owner": "ann", "index": None}), Delete(("fit-2",))],
        [upsert(4, info={"changed": True}), MarkLost(3600.0)],
    ]


def dump(execute: Any) -> dict[str, dict[str, Any]]:
    """Everything stored per fit id (but keys and times), to compare two databases."""
    fits = {}
    for row in execute(f"SELECT fit_key, {', '.join(FIT_COLUMNS)} FROM fits").fetchall():
        key, values = row[0], dict(zip(FIT_COLUMNS, row[1:], strict=True))
        facts = sorted(tuple(r) for r in execute(
            "SELECT kind, key, num, txt, json FROM facts WHERE fit_key = ?", [key]).fetchall())
        nodes = sorted(tuple(r) for r in execute(
            "SELECT path, class_path, class_name FROM nodes WHERE fit_key = ?", [key]).fetchall())
        payloads = {name: bytes(data) for name, data in execute(
            "SELECT name, data FROM payloads WHERE fit_key = ?", [key]).fetchall()}
        history = execute("SELECT max_log_likelihood, n_samples, progress FROM progress_history "
                          "WHERE fit_key = ? ORDER BY point", [key]).fetchall()
        fits[values["id"]] = {**{c: v for c, v in values.items() if c not in TIMES}, "facts": facts,
                              "nodes": nodes, "payloads": payloads, "history": [tuple(h) for h in history],
                              "times_set": {c for c in TIMES if values[c] is not None}}
    return fits


def pg_execute(url: str) -> tuple[psycopg.Connection[Any], Any]:
    conn = psycopg.connect(url, autocommit=True)
    return conn, lambda sql, params=(): conn.execute(sql.replace("?", "%s"), list(params))


async def run(writer: Writer, batches: Sequence[Sequence[Op | AdminOp]]) -> list[list[str | LensdError]]:
    try:
        return [await writer.apply(list(batch)) for batch in batches]
    finally:
        await writer.close()


@pytest.mark.parametrize("mode", MODES)
def test_the_same_ops_store_the_same_rows_as_on_sqlite(pg_url: str, tmp_path: Path, mode: str) -> None:
    db = tmp_path / "same.sqlite"
    on_sqlite = anyio.run(lambda: run_sqlite(db))
    on_pg = anyio.run(lambda: run_pg(pg_url, mode))
    assert on_pg == on_sqlite
    assert on_sqlite[1][2] == "duplicate"
    conn = sqlite3.connect(db)
    try:
        expected = dump(lambda sql, params=(): conn.execute(sql, params))
    finally:
        conn.close()
    pg, execute = pg_execute(pg_url)
    try:
        stored = dump(execute)
    finally:
        pg.close()
    assert stored.keys() == expected.keys() and "fit-2" not in stored
    for fit_id, rows in expected.items():
        assert stored[fit_id] == rows, fit_id
    assert stored["fit-7"]["max_log_likelihood"] is None and stored["fit-7"]["log_evidence"] is None  # NaN


async def run_sqlite(db: Path) -> list[list[str | LensdError]]:
    return await run(await BatchWriter.open(db), script())


async def run_pg(url: str, mode: str) -> list[list[str | LensdError]]:
    return await run(await PgBatchWriter.open(url, mode=mode), script())


def test_one_batchs_new_fits_are_in_arrival_order_on_both_engines(pg_url: str, tmp_path: Path) -> None:
    """One batch of ids out of id order (fit-12 sorts before fit-2), a stored fit among them and a
    fit first made by an event: its new fits take keys in the order they arrived on both engines,
    so the default order of fits, ``agg[-1]`` and ``lensd export`` are the same."""
    import json

    from conftest import lensd_cli

    import lensd

    batches: list[list[Op | AdminOp]] = [
        [upsert(3)],
        [upsert(5), upsert(2), op_from_request("progress", {"id": "fit-9", "seq": 1, "progress": 0.5}),
         upsert(3), upsert(0), upsert(12)],
    ]
    db = tmp_path / "arrival.sqlite"

    async def write(writer: Awaitable[Writer]) -> list[list[str | LensdError]]:
        return await run(await writer, batches)

    on_sqlite = anyio.run(write, BatchWriter.open(db))
    on_pg = anyio.run(write, PgBatchWriter.open(pg_url))
    assert on_pg == on_sqlite == [["applied"], ["applied"] * 6]
    arrived = ["fit-3", "fit-5", "fit-2", "fit-9", "fit-0", "fit-12"]
    for where in (str(db), pg_url):
        agg = lensd.Aggregator.from_database(where, top_level_only=False)
        try:
            assert [fit.id for fit in agg.fits()] == arrived, where
            assert agg[-1].id == "fit-12", where
        finally:
            agg.close()
        exported = lensd_cli("export", "--format", "json", "--db", where)
        assert exported.returncode == 0, exported.stderr
        assert [fit["id"] for fit in json.loads(exported.stdout)] == arrived, where


def test_a_nul_character_refuses_its_op_in_one_line_and_the_rest_is_stored(pg_url: str) -> None:
    async def main() -> list[str | LensdError]:
        writer = await PgBatchWriter.open(pg_url)
        try:
            return await writer.apply([upsert(1), upsert(2, name="bad\x00name"), upsert(3)])
        finally:
            await writer.close()

    first, refused, third = anyio.run(main)
    assert first == third == "applied"
    assert isinstance(refused, InvalidRecord) and "NUL" in str(refused) and "\n" not in str(refused)
    conn, execute = pg_execute(pg_url)
    try:
        assert sorted(r[0] for r in execute("SELECT id FROM fits").fetchall()) == ["fit-1", "fit-3"]
    finally:
        conn.close()


def test_times_and_the_lost_sweep_follow_the_servers_clock(pg_url: str) -> None:
    """A fit's times are the server's now(), and the sweep compares them with now() too, so any
    daemon running it gives one answer; running it again changes nothing."""
    conn, execute = pg_execute(pg_url)

    async def main() -> None:
        writer = await PgBatchWriter.open(pg_url)
        try:
            started = [op_from_request("start", {"record": record(i, 5, status="running")}) for i in range(3)]
            assert await writer.apply(started) == ["applied"] * 3
            server_now = float(execute("SELECT extract(epoch FROM now())").fetchone()[0])
            times = execute("SELECT last_event_at FROM fits").fetchall()
            assert all(abs(t - server_now) < 60 for (t,) in times)
            execute("UPDATE fits SET last_event_at = last_event_at - 1000 WHERE id = 'fit-0'")
            execute("UPDATE fits SET last_event_at = last_event_at - 100 WHERE id = 'fit-1'")
            for _ in range(2):  # idempotent
                assert await writer.apply([MarkLost(500.0)]) == ["applied"]
                statuses = dict(execute("SELECT id, status FROM fits").fetchall())
                assert statuses == {"fit-0": "lost", "fit-1": "running", "fit-2": "running"}
            assert await writer.apply([Touch(("fit-0",))]) == ["applied"]  # an event revives it
            assert execute("SELECT status FROM fits WHERE id = 'fit-0'").fetchone()[0] == "running"
        finally:
            await writer.close()

    try:
        anyio.run(main)
    finally:
        conn.close()


def test_two_writers_on_one_database_store_each_fit_once_and_keep_seqs(pg_url: str) -> None:
    """Two writers (two daemons' connections) write the same fits at once, in opposite orders,
    whole records and seq'd events: each fit is one row, its facts are not doubled, and each
    event counter is applied once whichever writer got it first."""
    ids = range(40)
    outcomes: dict[str, list[list[str | LensdError]]] = {}

    def writer_thread(name: str, order: Sequence[int]) -> None:
        async def main() -> list[list[str | LensdError]]:
            writer = await PgBatchWriter.open(pg_url)
            batches: list[list[Op | AdminOp]] = []
            for start in range(0, len(order), 8):
                chunk = order[start:start + 8]
                batches.append([upsert(i) for i in chunk])
                batches.append([op_from_request("progress", {"id": f"fit-{i}", "seq": 7, "progress": 0.5})
                                for i in chunk])
            return await run(writer, batches)

        outcomes[name] = anyio.run(main)

    threads = [threading.Thread(target=writer_thread, args=("up", list(ids))),
               threading.Thread(target=writer_thread, args=("down", list(reversed(ids))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    flat = [o for name in outcomes for batch in outcomes[name] for o in batch]
    assert len(flat) == 4 * len(ids) and not [o for o in flat if isinstance(o, LensdError)]
    assert flat.count("applied") + flat.count("duplicate") == len(flat)
    conn, execute = pg_execute(pg_url)
    try:
        assert execute("SELECT count(*), count(DISTINCT id) FROM fits").fetchone() == (len(ids), len(ids))
        assert execute("SELECT count(*) FROM (SELECT fit_key, kind, key FROM facts "
                       "GROUP BY fit_key, kind, key HAVING count(*) > 1) AS doubled").fetchone()[0] == 0
        assert execute("SELECT count(DISTINCT fit_key) FROM payloads").fetchone()[0] == len(ids)
    finally:
        conn.close()


def test_a_deadlock_with_another_transaction_is_retried(pg_url: str) -> None:
    """Another session holds fit-1 and then asks for fit-0, which the writer's batch holds while it
    waits for fit-1: PostgreSQL aborts the writer's transaction (the other's deadlock_timeout is
    longer), the writer runs the batch again, and it is stored."""
    async def setup() -> None:
        writer = await PgBatchWriter.open(pg_url)
        await run(writer, [[upsert(0), upsert(1)]])

    anyio.run(setup)
    other = psycopg.connect(pg_url)
    other.execute("SET deadlock_timeout = '60s'")
    other.execute("SELECT 1 FROM fits WHERE id = 'fit-1' FOR UPDATE")
    result: list[Any] = []
    writer_box: list[PgBatchWriter] = []

    def write() -> None:
        async def main() -> None:
            writer = await PgBatchWriter.open(pg_url)
            writer_box.append(writer)
            result.extend(await run(writer, [[op_from_request("progress", {"id": f"fit-{i}", "seq": 3})
                                               for i in (0, 1)]]))

        anyio.run(main)

    thread = threading.Thread(target=write)
    thread.start()
    watcher, execute = pg_execute(pg_url)
    try:
        deadline = 60.0
        import time

        until = time.monotonic() + deadline
        while time.monotonic() < until:  # the writer is waiting for fit-1's row lock (a real state)
            waiting = execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND datname = current_database()").fetchone()[0]
            if waiting:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the writer never waited for the row lock")
        other.execute("SELECT 1 FROM fits WHERE id = 'fit-0' FOR UPDATE")  # the writer holds it: deadlock
        other.commit()
        thread.join(120)
        assert result == [["applied", "applied"]]
        assert writer_box[0].retries >= 1
        assert sorted(execute("SELECT seq FROM fits").fetchall()) == [(3,), (3,)]
    finally:
        other.close()
        watcher.close()


def test_admin_ops_keep_their_meaning(pg_url: str) -> None:
    async def main() -> list[list[str | LensdError]]:
        return await run(await PgBatchWriter.open(pg_url), [
            [upsert(1), upsert(2)],
            [Tag("fit-1", {"owner": "ann"}), Tag("fit-1", {"owner": "ann"}), Delete(("fit-2",)), Delete(("fit-2",)),
             Tag("nobody", {"a": 1})],
        ])

    outcomes = anyio.run(main)
    assert outcomes[1][:4] == ["applied", "duplicate", "applied", "duplicate"]
    assert isinstance(outcomes[1][4], InvalidRecord)
    conn, execute = pg_execute(pg_url)
    try:
        assert execute("SELECT id, info FROM fits").fetchall() == [
            ("fit-1", '{"index": 1, "owner": "ann", "survey": "BELLS"}')]
        assert execute("SELECT count(*) FROM facts WHERE fit_key NOT IN (SELECT fit_key FROM fits)").fetchone()[0] == 0
        assert not math.isnan(execute("SELECT updated_at FROM fits").fetchone()[0])
    finally:
        conn.close()
