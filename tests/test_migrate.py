"""``lensd migrate``: sqlite → PostgreSQL → sqlite is exact, a kill -9 resumes, refusals are one line.

The source is a real sqlite file made by lensd's own writers: 10^4 synthetic fits written with
the writer's rows (bench/_dbcache.build), the PyAutoFit fixtures through ``lensd ingest``'s path,
and jobs' events through the ``BatchWriter`` (progress history, a tag, a deleted fit's key gap,
awkward strings and numbers). Tables are compared row by row, every column, with types.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from conftest import lensd_cli
from pg_server import PgServer
from records_factory import record

from lensd.ingest import run as ingesting
from lensd.store import copyends, schema
from lensd.store.writeops import admin_from_request, op_from_request
from lensd.store.writer import BatchWriter

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SYNTHETIC = 10_000
KEYS = {"fits": "fit_key", "facts": "fit_key, kind, key", "nodes": "fit_key, path", "payloads": "fit_key, name",
        "progress_history": "point"}
assert set(KEYS) == set(copyends.TABLES)


def _events(db: Path) -> None:
    """What jobs and users do to a database beyond whole records: progress, tags, deletes."""
    odd = {"note": "ünïcödé 'quoted' \"double\" ; DROP TABLE fits; --", "big": 2**62, "tiny": 5e-324,
           "zero": -0.0, "huge": 1.7976931348623157e308, "nested": {"a": [1, None, "x"]}}
    first = {**record(1, n_samples=10), "id": "hist-1", "status": "running", "info": odd}
    requests: list[tuple[str, dict[str, Any]]] = [
                ("start", {"record": first}),
                *[("progress", {"id": "hist-1", "max_log_likelihood": -100.0 + i / 3, "n_samples": i,
                                "progress": i / 7}) for i in range(1, 8)],
                ("start", {"record": {**record(2, n_samples=10), "id": "hist-2", "status": "running"}}),
                ("progress", {"id": "hist-2", "max_log_likelihood": -1e-300})]

    async def run() -> None:
        writer = await BatchWriter.open(db, "normal")
        try:
            for op, fields in requests:
                assert (await writer.apply([op_from_request(op, fields)]))[0] == "applied"
            admin: list[tuple[str, dict[str, Any]]] = [
                ("tag", {"id": "hist-2", "info": {"reviewed": True, "by": "ü"}}), ("delete", {"ids": ["stream-0-17"]})]
            for op, fields in admin:
                assert (await writer.apply([admin_from_request(op, fields)]))[0] == "applied"
        finally:
            await writer.close()
    anyio.run(run)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sqlite file every test here copies (made once: building it is most of the time)."""
    sys.path.insert(0, str(ROOT))  # bench/ sits beside tests/ in the checkout
    try:
        from bench._dbcache import build
    finally:
        sys.path.remove(str(ROOT))
    db = tmp_path_factory.mktemp("migrate") / "source.sqlite"
    build(db, SYNTHETIC, 4)
    report = ingesting.ingest([FIXTURES / "autofit", FIXTURES / "autolens" / "output"], db)
    assert len(report.ingested) > 10, report
    _events(db)
    return db


def _typed(value: Any) -> Any:
    """A value with its type, floats by repr (so NaN equals NaN and -0.0 differs from 0.0)."""
    return ("float", repr(value)) if isinstance(value, float) else (type(value).__name__, value)


def _sqlite_rows(db: Path, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        yield from conn.execute(f"SELECT {columns} FROM {table} ORDER BY {KEYS[table]}")
    finally:
        conn.close()


def _pg_rows(url: str, table: str, columns: str) -> Iterator[tuple[Any, ...]]:
    with psycopg.connect(url) as conn, conn.cursor(name="compare") as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} ORDER BY {KEYS[table]}")
        yield from cursor


def _columns(db: Path, table: str) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return ", ".join(row[1] for row in conn.execute(f"PRAGMA table_xinfo({table})"))
    finally:
        conn.close()


def assert_same(source: Path, other: Path | str) -> None:
    """Every table of ``other`` (a sqlite file or a URL) equals ``source``'s, row by row, typed."""
    for table in KEYS:
        columns = _columns(source, table)
        theirs = _pg_rows(other, table, columns) if isinstance(other, str) else _sqlite_rows(other, table, columns)
        n = 0
        for n, (mine, copied) in enumerate(zip_longest(_sqlite_rows(source, table, columns), theirs), 1):
            assert mine is not None and copied is not None, f"{table}: row {n} only in one of them"
            assert [_typed(v) for v in mine] == [_typed(v) for v in copied], f"{table} row {n}"
        assert n > 0, f"{table} is empty: the source should exercise it"


def _blocks(db: Path | str) -> dict[tuple[str, int], bytes]:
    """The count blocks that hold anything: the target builds them from the copied rows, and they
    must be what the source's writer kept (an emptied row stays behind as an empty blob there)."""
    rows = _fetch(db, "SELECT name, block, data FROM count_blocks")
    return {(name, int(block)): bytes(data) for name, block, data in rows if data}


def _fetch(db: Path | str, sql: str) -> list[Any]:
    """The rows of ``sql`` in a sqlite file (read-only) or a PostgreSQL URL."""
    if isinstance(db, str):
        with psycopg.connect(db) as pg:
            return pg.execute(sql).fetchall()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return lensd_cli("migrate", "--quiet", *args, timeout=300)


def test_sqlite_to_postgresql_and_back_is_exact(source: Path, pg_url: str, tmp_path: Path) -> None:
    there = _migrate("--from", str(source), "--to", pg_url)
    assert there.returncode == 0, there.stderr
    assert f"migrated {SYNTHETIC - 1 + 2 + _ingested(source)} fits" in there.stdout
    assert_same(source, pg_url)
    assert _blocks(pg_url) == _blocks(source) != {}
    with psycopg.connect(pg_url) as conn:  # a writer on PostgreSQL takes keys past the copied ones
        assert conn.execute("SELECT nextval(pg_get_serial_sequence('fits', 'fit_key')) > max(fit_key) "
                            "FROM fits").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM lensd_meta WHERE key LIKE 'migrate.%'").fetchone() == (0,)
    back = tmp_path / "back.sqlite"
    again = _migrate("--from", pg_url, "--to", str(back))
    assert again.returncode == 0, again.stderr
    assert_same(source, back)
    assert _blocks(back) == _blocks(source)
    # and sqlite to sqlite, in small chunks (many transactions, the same result)
    copy = tmp_path / "copy.sqlite"
    assert _migrate("--from", str(source), "--to", str(copy), "--chunk", "997").returncode == 0
    assert_same(source, copy)


def _ingested(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM fits WHERE id NOT LIKE 'stream-%' AND id NOT LIKE "
                                "'hist-%'").fetchone()[0])
    finally:
        conn.close()


def _done_key(target: str | Path) -> int | None:
    """The target's resume mark (the last committed chunk's end), None before the first commit."""
    try:
        rows = _fetch(target, "SELECT value FROM lensd_meta WHERE key = 'migrate.done'")
    except (psycopg.errors.UndefinedTable, sqlite3.OperationalError):
        return None  # the schema is not made yet
    return int(rows[0][0]) if rows else None


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_a_killed_migrate_resumes_and_ends_identical(engine: str, source: Path, pg_url: str, tmp_path: Path) -> None:
    target: str | Path = pg_url if engine == "postgresql" else tmp_path / "target.sqlite"
    command = [sys.executable, "-m", "lensd", "migrate", "--quiet", "--from", str(source), "--to", str(target),
               "--chunk", "100"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while (done := _done_key(target)) is None or done < 2000:  # a real state: 20 chunks committed
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no chunk committed in 120 s"
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    stopped_at = _done_key(target)
    assert stopped_at is not None and stopped_at < SYNTHETIC, "the kill came after the copy had ended"
    again = _migrate("--from", str(source), "--to", str(target), "--chunk", "100")
    assert again.returncode == 0, again.stderr
    assert "copied before (resumed)" in again.stdout
    assert _done_key(target) is None
    assert_same(source, target)


def test_a_folder_as_the_target_or_db_is_one_line_and_leaves_no_lock_file(source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "afolder"
    folder.mkdir()
    refused = _migrate("--from", str(source), "--to", str(folder))
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "Is a directory" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("afolder")) == ["afolder"]
    started = lensd_cli("start", "--foreground", "--db", str(folder), "--socket", str(tmp_path / "s"),
                        "--backup-every", "0", timeout=120)
    assert started.returncode == 1 and "Traceback" not in started.stderr and "Is a directory" in started.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("afolder")) == ["afolder"]


def test_a_databases_wal_shm_or_journal_as_the_target_or_db_is_refused(source: Path, tmp_path: Path) -> None:
    """sqlite deletes or replays a database's sidecars: a copy written there would be lost."""
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = source.with_name(source.name + suffix)
        before = sidecar.read_bytes() if sidecar.exists() else None
        refused = _migrate("--from", str(source), "--to", str(sidecar))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, (suffix, refused.stderr)
        assert f"{suffix[1:]} file of the database" in refused.stderr
        assert (sidecar.read_bytes() if sidecar.exists() else None) == before
    started = lensd_cli("start", "--foreground", "--db", f"{source}-journal", "--socket", str(tmp_path / "s"),
                        "--backup-every", "0", timeout=120)
    assert started.returncode == 1 and "journal file of the database" in started.stderr


def test_a_target_holding_other_data_is_refused_in_one_line(source: Path, pg_url: str, tmp_path: Path) -> None:
    small = tmp_path / "small.sqlite"
    async def one() -> None:
        writer = await BatchWriter.open(small, "normal")
        await writer.apply([op_from_request("submit", {"record": record(3, n_samples=5)})])
        await writer.close()
    anyio.run(one)
    for target in (str(small), pg_url):
        if target == pg_url:
            assert _migrate("--from", str(small), "--to", pg_url).returncode == 0
        refused = _migrate("--from", str(source), "--to", target)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert "already holds fits" in refused.stderr and "empty database" in refused.stderr
    # an unfinished migrate of another source: resuming it from this one would mix two databases
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    for statement in schema.create_statements():
        conn.execute(statement)
    conn.execute("INSERT INTO lensd_meta VALUES ('migrate.source', '1|1|0.0|0'), ('migrate.done', '1')")
    conn.commit()
    conn.close()
    refused = _migrate("--from", str(source), "--to", str(other))
    assert refused.returncode == 1 and "unfinished migrate of another source" in refused.stderr
    same = _migrate("--from", str(source), "--to", str(source))
    assert same.returncode == 1 and "the same file" in same.stderr


def test_bad_sources_and_passwords_are_one_line_errors(source: Path, pg_server: PgServer, tmp_path: Path) -> None:
    missing = _migrate("--from", str(tmp_path / "nothing.sqlite"), "--to", str(tmp_path / "t.sqlite"))
    assert missing.returncode == 1 and missing.stderr.startswith("lensd: no database at")
    assert missing.stderr.count("\n") == 1
    url = f"postgresql://lensd:s3cret-pw@127.0.0.1:{pg_server.port}/postgres"
    for args in (("--from", url, "--to", str(tmp_path / "t.sqlite")), ("--from", str(source), "--to", url)):
        failed = _migrate(*args)
        assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
        assert "s3cret-pw" not in failed.stderr + failed.stdout
        assert "Traceback" not in failed.stderr and "***" in failed.stderr
