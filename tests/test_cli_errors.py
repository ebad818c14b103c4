"""Errors a new user meets in the first hour, each one line on stderr with its documented exit code
(docs/cli.md): real ``lensd`` processes, a real daemon, real sqlite errors.

A read-only folder is one the test process cannot write: a ``chmod 555`` folder, or ``/sys`` when
the tests run as root (root writes through a mode; sysfs refuses every new file, even to root).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DIR_OUTPUT, lensd_cli
from records_factory import record

import lensd
from lensd.errors import DatabaseLocked, StorageError, StorageFull
from lensd.store import sqlite_errors


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and said one line naming ``words``; no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("lensd: ") and not line.startswith("lensd: lensd:"), line
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.fixture
def read_only_folder(short_tmp: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        yield Path("/sys")
        return
    folder = short_tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def test_start_and_ingest_in_a_read_only_folder_say_so(read_only_folder: Path, short_tmp: Path) -> None:
    db = str(read_only_folder / "lensd-test.sqlite")
    for foreground in ((), ("--foreground",)):
        started = lensd_cli("start", *foreground, "--db", db, "--socket", str(short_tmp / "s"))
        one_line(started, 1, "read-only", "--db")
    ingested = lensd_cli("ingest", str(DIR_OUTPUT), "--db", db, "--quiet")
    one_line(ingested, 1, "read-only", "--db")
    assert not (short_tmp / "s").exists()


def test_a_socket_path_over_the_limit_names_the_limit_and_a_fix(short_tmp: Path) -> None:
    socket = short_tmp / ("x" * 120)
    started = lensd_cli("start", "--db", str(short_tmp / "l.sqlite"), "--socket", str(socket))
    one_line(started, 1, "107-byte limit", "shorter --socket")
    assert sorted(p.name for p in short_tmp.iterdir()) == []  # nothing created: no .lock, no .log
    status = lensd_cli("status", "--socket", str(socket))
    one_line(status, 3, "107-byte limit")


def test_submit_of_an_invalid_record_is_refused_before_any_daemon_is_asked(short_tmp: Path) -> None:
    nowhere = str(short_tmp / "nothing")
    cases = {"status.json": '{"id": "x", "status": "bogus"}', "list.json": '[{"id": "a", "status": "running"}, 7]',
             "broken.json": '{"id": ', "unknown.json": '{"id": "x", "status": "running", "colour": 1}'}
    for name, text in cases.items():
        (short_tmp / name).write_text(text)
        one_line(lensd_cli("submit", str(short_tmp / name), "--socket", nowhere), 1, name)


def test_stop_with_nothing_running_exits_3(short_tmp: Path) -> None:
    one_line(lensd_cli("stop", "--socket", str(short_tmp / "s")), 3, f"no daemon at {short_tmp / 's'}")


def test_a_db_in_a_missing_folder_is_refused_and_nothing_is_created(short_tmp: Path) -> None:
    missing = short_tmp / "typo" / "lensd.sqlite"
    one_line(lensd_cli("start", "--db", str(missing), "--socket", str(short_tmp / "s")), 1, "no folder", "mkdir -p")
    one_line(lensd_cli("start", "--foreground", "--db", str(missing), "--socket", str(short_tmp / "s")), 1,
             "no folder")
    one_line(lensd_cli("ingest", str(DIR_OUTPUT), "--db", str(missing), "--quiet"), 1, "no folder")
    assert not missing.parent.exists()


def test_a_start_that_fails_leaves_nothing_beside_a_database_never_created(daemon, short_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """The second daemon is refused (the socket is served); its fresh database leaves no trace."""
    second = short_tmp / "second"
    second.mkdir()
    for foreground in ((), ("--foreground",)):
        refused = lensd_cli("start", *foreground, "--db", str(second / "b.sqlite"), "--socket", str(daemon.socket))
        one_line(refused, 1, "already serves")
        assert sorted(p.name for p in second.iterdir()) == []


def test_a_database_at_its_quota_answers_with_the_full_code(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--max-db-mb", "1")
    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(5_000):
            try:
                client.submit(record(i))
            except StorageError as exc:
                error = exc
                break
        else:
            raise AssertionError("the database never filled up")
    assert isinstance(error, StorageFull) and error.code == "full", repr(error)
    assert "quota of 1 MiB" in str(error)


def test_full_and_locked_are_told_apart_by_sqlite_error_code(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x BLOB)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(db, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    holder.execute("ROLLBACK")
    assert isinstance(sqlite_errors.storage_error(locked.value), DatabaseLocked)

    holder.execute(f"PRAGMA max_page_count={holder.execute('PRAGMA page_count').fetchone()[0] + 1}")
    with pytest.raises(sqlite3.Error) as full:
        holder.execute("INSERT INTO t VALUES (?)", [b"x" * 100_000])
    assert isinstance(sqlite_errors.storage_error(full.value), StorageFull)

    # the words in a message decide nothing: only the code does
    worded = sqlite3.OperationalError("database or disk is full; database is locked")
    worded.sqlite_errorcode = sqlite3.SQLITE_IOERR
    mapped = sqlite_errors.storage_error(worded)
    assert type(mapped) is StorageError and mapped.code == "storage"
    holder.close()
    other.close()
