"""What an acknowledgement promises at ``--durability full``: records, starts, completions and
failures are fsynced at commit; a batch of progress events and heartbeats only (superseded by the
next one of their fit) is committed without the fsync, and still survives a kill -9 of the daemon
(docs/decisions.md, docs/reliability.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
from conftest import integrity_ok
from records_factory import record

import lensd
from lensd.store.writeops import Patch, Touch, Upsert, op_from_request, superseded
from lensd.store.writer import BatchWriter

FULL, NORMAL = 2, 1  # PRAGMA synchronous


def test_only_progress_and_heartbeats_are_superseded() -> None:
    start = op_from_request("start", {"record": {**record(1), "status": "running"}, "seq": 1})
    progress = op_from_request("progress", {"id": "fit-1", "seq": 2, "progress": 0.5})
    beat = op_from_request("heartbeat", {"ids": ["fit-1"]})
    fail = op_from_request("fail", {"id": "fit-1", "seq": 3, "error": "boom"})
    complete = op_from_request("complete", {"record": record(1), "seq": 4})
    assert isinstance(start, Upsert) and isinstance(progress, Patch) and isinstance(beat, Touch)
    assert [superseded(op) for op in (start, progress, beat, fail, complete)] == [False, True, True, False, False]


def test_a_batch_of_superseded_events_commits_without_the_fsync(tmp_path: Path) -> None:
    """The writer's connection is at synchronous FULL for every batch that holds anything else."""
    db = tmp_path / "lensd.sqlite"

    async def run() -> list[int]:
        writer = await BatchWriter.open(db, "full")
        seen = []

        async def apply(*requests: tuple[str, dict[str, object]]) -> None:
            ops = [op_from_request(op, fields) for op, fields in requests]
            assert all(o == "applied" for o in await writer.apply(ops))
            seen.append(writer._conn.execute("PRAGMA synchronous").fetchone()[0])

        await apply(("start", {"record": {**record(1), "status": "running"}, "seq": 1}))
        await apply(("progress", {"id": "fit-1", "seq": 2, "progress": 0.5}), ("heartbeat", {"ids": ["fit-1"]}))
        await apply(("progress", {"id": "fit-1", "seq": 3, "progress": 0.6}),
                    ("submit", {"record": record(2)}))  # mixed: the record needs the fsync
        await apply(("heartbeat", {"ids": ["fit-1"]}))
        await apply(("fail", {"id": "fit-1", "seq": 4, "error": "boom"}))
        await writer.close()
        return seen

    assert anyio.run(run) == [FULL, NORMAL, FULL, NORMAL, FULL]


def test_a_normal_daemon_never_fsyncs_at_commit(tmp_path: Path) -> None:
    async def run() -> list[int]:
        writer = await BatchWriter.open(tmp_path / "lensd.sqlite", "normal")
        seen = []
        for op, fields in (("start", {"record": {**record(1), "status": "running"}, "seq": 1}),
                           ("progress", {"id": "fit-1", "seq": 2, "progress": 0.5})):
            assert await writer.apply([op_from_request(op, fields)]) == ["applied"]
            seen.append(writer._conn.execute("PRAGMA synchronous").fetchone()[0])
        await writer.close()
        return seen

    assert anyio.run(run) == [NORMAL, NORMAL]


def test_acknowledged_progress_survives_kill_9_of_the_daemon(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(db=short_tmp / "p.sqlite", socket=short_tmp / "p")
    with lensd.connect_sync(socket=daemon.socket) as client:
        fit = client.start(id="progressing", name="live", unique_tag="t")
        for i in range(1, 51):
            assert fit.progress(progress=i / 100, max_log_likelihood=float(-1000 + i)) == "applied"
        daemon.kill()  # SIGKILL: the last commits were not fsynced, the OS still has them
    conn = sqlite3.connect(daemon.db)
    try:
        status, best, progress = conn.execute(
            "SELECT status, max_log_likelihood, progress FROM fits WHERE id = 'progressing'").fetchone()
    finally:
        conn.close()
    assert (status, best, progress) == ("running", -950.0, 0.5)
    assert integrity_ok(daemon.db)
