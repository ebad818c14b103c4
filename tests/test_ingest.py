"""``lensd ingest``: idempotent, updates changed fits, reports broken folders, never two writers."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DIR_OUTPUT, integrity_ok, lensd_cli

import lensd
from lensd.domain.records import validate_record
from lensd.errors import StorageError
from lensd.store.writeops import Upsert
from lensd.store.writer import BatchWriter

SINGLE = DIR_OUTPUT / "howtofit" / "single"


def fit_folders(tree: Path) -> list[Path]:
    return sorted(p.parent for p in tree.rglob("metadata"))


def test_ingest_twice_stores_nothing_twice_and_updates_changed(tmp_path: Path) -> None:
    tree = tmp_path / "out"
    shutil.copytree(SINGLE, tree)
    db = tmp_path / "l.sqlite"
    first = lensd_cli("ingest", str(tree), "--db", str(db))
    assert first.returncode == 0 and "ingested 4, unchanged 0, failed 0" in first.stdout
    second = lensd_cli("ingest", str(tree), "--db", str(db))
    assert "ingested 0, unchanged 4, failed 0" in second.stdout
    info = fit_folders(tree)[0] / "files" / "info.json"
    info.write_text(json.dumps({"telescope": "Z", "changed": True}))
    third = lensd_cli("ingest", str(tree), "--db", str(db))
    assert "ingested 1, unchanged 3" in third.stdout
    agg = lensd.Aggregator.from_database(db)
    assert len(agg) == 4
    assert [f.info for f in agg.query(agg.info["telescope"] == "Z").fits()] == [{"telescope": "Z", "changed": True}]


def test_broken_folders_are_reported_and_skipped(tmp_path: Path) -> None:
    tree = tmp_path / "out"
    shutil.copytree(SINGLE, tree)
    folders = fit_folders(tree)
    (folders[0] / "files" / "model.json").write_text("{not json")
    csv = folders[1] / "files" / "samples.csv"
    csv.write_text(csv.read_text()[:-40])  # truncated mid-line
    result = lensd_cli("ingest", str(tree), "--db", str(tmp_path / "l.sqlite"))
    assert result.returncode == 1
    assert "ingested 2, unchanged 0, failed 2" in result.stdout
    assert "model.json" in result.stdout and "samples.csv" in result.stdout
    assert "Traceback" not in result.stderr
    assert len(lensd.Aggregator.from_database(tmp_path / "l.sqlite")) == 2


def test_ingest_goes_through_the_daemon_that_owns_the_database(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = lensd_cli("ingest", str(SINGLE), "--db", str(daemon.db))
    assert result.returncode == 0, result.stderr
    assert f"daemon at {daemon.socket.resolve()}" in result.stdout
    assert len(lensd.Aggregator.from_database(daemon.db)) == 4
    assert daemon.stop() == 0 and integrity_ok(daemon.db)


def test_a_bad_record_fails_alone(tmp_path: Path) -> None:
    """A record sqlite refuses (here: a trigger) fails; the rest of its batch commits."""
    db = tmp_path / "t.sqlite"

    async def run() -> list[object]:
        writer = await BatchWriter.open(db)
        conn = sqlite3.connect(db)
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON fits WHEN NEW.id = 'bad' "
                     "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END")
        conn.commit()
        conn.close()
        ops = [Upsert(validate_record({"id": name, "status": "completed"})) for name in ("a", "bad", "c")]
        outcomes = await writer.apply(ops)
        await writer.close()
        return list(outcomes)

    outcomes = anyio.run(run)
    assert outcomes[0] == "applied" and outcomes[2] == "applied"
    assert isinstance(outcomes[1], StorageError) and "refused by a trigger" in str(outcomes[1])
    assert {f.id for f in lensd.Aggregator.from_database(db).fits()} == {"a", "c"}


def test_hostile_strings_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    hostile = ["x' OR '1'='1", "a;--", "DROP TABLE fits;", "💥ünïcode", "", "%_", "nul\x00inside", "\\"]

    async def run() -> None:
        writer = await BatchWriter.open(db)
        await writer.apply([Upsert(validate_record({
            "id": f"h{i}", "status": "completed", "unique_tag": tag, "info": {tag: tag, "k": tag}}))
            for i, tag in enumerate(hostile)])
        await writer.close()

    anyio.run(run)
    agg = lensd.Aggregator.from_database(db)
    for i, tag in enumerate(hostile):
        assert [f.id for f in agg.query(agg.unique_tag == tag).fits()] == [f"h{i}"], tag
        assert [f.id for f in agg.query(agg.info[tag] == tag).fits()] == [f"h{i}"], tag
        assert [f.id for f in agg.query(agg.info["k"] == tag).fits()] == [f"h{i}"], tag
    assert len(agg) == len(hostile) and integrity_ok(db)


def test_the_database_file_is_private_to_nothing_but_umask(tmp_path: Path) -> None:
    db = tmp_path / "p.sqlite"
    assert lensd_cli("ingest", str(SINGLE), "--db", str(db)).returncode == 0
    assert os.path.exists(db) and integrity_ok(db)


TIMES = frozenset({"created_at", "updated_at", "last_event_at"})  # when a write ran, not what it stored


def stored_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order, its write times left out: what two ingests of the
    same folders must agree on byte for byte (JSON text, packed payloads, facts, blocks)."""
    conn = sqlite3.connect(db)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {}
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            shown = ", ".join("NULL" if column in TIMES else column for column in columns)
            rows[table] = conn.execute(f"SELECT {shown} FROM {table} ORDER BY {', '.join(columns)}").fetchall()
        return rows
    finally:
        conn.close()


def test_reader_processes_store_what_reading_here_stores(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The worker processes that read large trees store the same rows, byte for byte, as reading in
    this process; a broken folder among good ones is reported with one line naming its file and
    the others are stored, either way."""
    from lensd.demo.synthetic import write_fits
    from lensd.ingest import readers as reading
    from lensd.ingest import run as ingesting

    tree = tmp_path / "out"
    shutil.copytree(DIR_OUTPUT, tree)  # grids, analyses, every kind of fit PyAutoFit writes
    write_fits(tree / "synthetic", 12, n_samples=20)
    synthetic = fit_folders(tree / "synthetic")
    (synthetic[0] / "files" / "model.json").write_text("{ not json")
    csv = synthetic[1] / "files" / "samples.csv"
    csv.write_text(csv.read_text()[:-40])  # cut mid-line
    (synthetic[2] / "files" / "info.json").write_text('{"too_big": 123456789012345678901234567890}')
    (synthetic[3] / "files" / "samples_summary.json").write_bytes(b'{"arguments": "\xff"}')
    broken = {str(folder.resolve()): name for folder, name in zip(
        synthetic, ["model.json", "samples.csv", "info", "samples_summary.json"], strict=False)}
    jobs = [(folder, tree) for folder in fit_folders(tree)]

    def load(folder: Path, root: Path, cache: dict[Path, Path | None]) -> tuple[str, Any]:
        return ingesting._load(folder, root, {}, cache)

    assert reading.start_readers(jobs * 10**3, load, 1) is None  # one reader: read here
    assert reading.start_readers(jobs[:10], load, 2) is None  # too few folders to fork for
    monkeypatch.setattr(reading, "PARALLEL_FROM", 1)
    probe = reading.start_readers(jobs, load, 2)
    assert probe is not None  # the readers=2 run below really uses worker processes
    probe.close()
    answers = []
    for readers in (1, 2):
        db = tmp_path / f"r{readers}.sqlite"
        report = ingesting.ingest([tree], db, readers=readers)
        assert {f.path for f in report.failed} == set(broken)
        for failure in report.failed:
            assert broken[failure.path] in failure.reason and "\n" not in failure.reason
        assert len(report.ingested) == len(lensd.Aggregator.from_database(db, top_level_only=False)) > len(broken)
        answers.append((report.ingested, [(f.path, f.reason) for f in report.failed], stored_rows(db)))
    assert answers[0] == answers[1]


def test_a_reader_process_that_dies_leaves_its_folders_reported_not_a_hang(tmp_path: Path) -> None:
    """A reader killed mid-scan (here: it exits on its third folder) fails the folders it had left,
    each with one line; the other reader's answers still come, in order; close() reaps both."""
    from lensd.ingest import readers as reading

    jobs = [(tmp_path / f"fit{i}", tmp_path) for i in range(reading.PARALLEL_FROM)]

    def load(folder: Path, root: Path, cache: dict[Path, Path | None]) -> tuple[str, Any]:
        if folder == jobs[4][0]:  # the first reader's third job
            os._exit(3)
        return "unchanged", str(folder)

    workers = reading.start_readers(jobs, load, 2)
    assert workers is not None
    pids = list(workers._pids)
    try:
        results = list(workers.results())
    finally:
        workers.close()
    assert [kind for kind, _ in results[:4]] == ["unchanged"] * 4
    failed = [(i, value) for i, (kind, value) in enumerate(results) if kind == "failed"]
    assert [i for i, _ in failed] == list(range(4, len(jobs), 2))  # the dead reader's share
    assert all("reader process ended before reading it" in f.reason and "\n" not in f.reason for _, f in failed)
    assert [value for kind, value in results if kind == "unchanged"] == (
        [str(folder) for i, (folder, _) in enumerate(jobs) if i < 4 or i % 2])
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
