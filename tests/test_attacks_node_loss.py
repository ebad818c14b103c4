"""The loss of the daemon's node (issue 19, part 5): only what was backed up elsewhere survives.

``--backup-every`` makes the daemon copy its database with sqlite's online backup while it serves;
these tests read the copies a real daemon made while writers kept writing, as someone restoring
after the node died would.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import integrity_ok, lensd_cli
from records_factory import record
from test_watch import stored, until

import lensd
from lensd.cli import render
from lensd.errors import LensdError
from lensd.store import backup


def _backup_status(daemon: Any) -> dict[str, Any]:
    return dict(render.daemon_status(daemon.socket)["backup"])


def test_backups_made_while_writers_write_hold_every_fit_acknowledged_before_them(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    folder = short_tmp / "shared" / "backups"
    daemon = make_daemon("--backup-every", "0.01", "--backup-to", str(folder), "--backup-keep", "2")
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def write(first: int) -> None:
        try:
            with lensd.connect_sync(socket=daemon.socket) as client:
                i = first
                while not stop.is_set():
                    assert client.submit(record(i, n_samples=50)) == "applied"
                    acknowledged.append(f"fit-{i}")
                    i += 2
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(start,)) for start in (0, 1)]
    for thread in writers:
        thread.start()
    try:
        until(lambda: len(acknowledged) >= 200 or failures, short_tmp, what="200 acknowledged writes")
        before = set(acknowledged)
        asked = time.time()
        until(lambda: (_backup_status(daemon)["last_at"] or 0) > asked and _backup_status(daemon)["count"] >= 3,
              short_tmp, timeout=60, what="three backups, one taken after the 200 writes")
        during = len(acknowledged)
    finally:
        stop.set()
        for thread in writers:
            thread.join(60)
    assert failures == []  # no write failed or waited out while backups were made
    assert len(acknowledged) > during > len(before)  # and writing went on through them
    shown = lensd_cli("status", "--socket", str(daemon.socket))
    assert f"backup     every 0.01 min to {folder}; last 20" in shown.stdout, shown.stdout
    newest = folder / daemon.db.name
    assert stat.S_IMODE(newest.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert newest.read_bytes()[18] == 1  # a rollback-journal file: whole without a -wal beside it
    assert integrity_ok(newest)
    ids = set(stored(newest))  # the copy a restore would start from
    assert before <= ids, f"{len(before - ids)} acknowledged fits missing from the backup"
    assert len(lensd.Aggregator.from_database(newest)) == len(ids)
    assert daemon.stop() == 0
    older = [p for p in folder.iterdir() if p.name.startswith("lensd-") and p.suffix == ".sqlite"]
    assert len(older) == 1  # --backup-keep 2: the newest and one before it


def test_backup_options_and_their_refusals(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    off = make_daemon("--backup-every", "off")
    assert _backup_status(off) == {"every_minutes": 0}
    assert "backup     off" in lensd_cli("status", "--socket", str(off.socket)).stdout
    assert off.stop() == 0
    bad = lensd_cli("start", "--backup-every", "soon", "--db", str(short_tmp / "x.sqlite"))
    assert bad.returncode == 2 and "not a number of minutes" in bad.stderr
    onto = make_daemon("--backup-to", str(short_tmp), db=short_tmp / "lensd.sqlite", socket=short_tmp / "s2",
                       start=False)
    with pytest.raises(RuntimeError, match="over the database"):
        onto.start()
    assert backup.default_folder(Path("/l/lensd.sqlite"), Path("/shared/spool")) == Path("/shared/spool-backups")
    assert backup.default_folder(Path("/l/lensd.sqlite"), None) == Path("/l/lensd-backups")


def test_a_backup_folder_others_may_write_to_is_refused_and_nothing_is_written(short_tmp: Path) -> None:
    db = short_tmp / "lensd.sqlite"
    lensd_cli("ingest", "--db", str(db), str(short_tmp))  # makes an empty lensd database
    open_folder = short_tmp / "open"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    with pytest.raises(LensdError, match="every user"):
        backup.back_up(db, open_folder)
    assert list(open_folder.iterdir()) == []


def _backed_up(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as copy:
        return int(copy.execute("SELECT max(n) FROM t").fetchone()[0])


def test_backups_made_within_one_second_are_each_kept_under_their_own_name(short_tmp: Path) -> None:
    """The older backups are named by their UTC second: with ``--backup-every`` under a minute, or a
    file system whose times are whole seconds, the next backup's name was taken, and the backup it
    replaced was dropped without a word. Here every backup is pinned to one second (the second
    could turn between two backups made back to back), as the daemon's timer makes them."""
    db, folder = short_tmp / "lensd.sqlite", short_tmp / "backups"
    newest = folder / db.name
    with sqlite3.connect(db) as live:
        live.execute("PRAGMA journal_mode=WAL")
        live.execute("CREATE TABLE t(n INTEGER)")
    second = time.time_ns() // 10**9 * 10**9

    def backup_number(n: int, keep: int) -> None:
        with sqlite3.connect(db) as live:
            live.execute("INSERT INTO t VALUES (?)", (n,))
        backup.back_up(db, folder, keep=keep)
        os.utime(newest, ns=(second, second))  # this backup was made in the same second as the others

    for n in range(1, 5):
        backup_number(n, keep=4)
    def older() -> dict[str, int]:
        return {p.name: _backed_up(p) for p in folder.iterdir() if p != newest}

    stamp = time.strftime(backup.STAMP, time.gmtime(second // 10**9))
    assert older() == {f"lensd-{stamp}.sqlite": 1, f"lensd-{stamp}-2.sqlite": 2, f"lensd-{stamp}-3.sqlite": 3}
    assert _backed_up(newest) == 4
    backup._keep_previous(newest)  # as the next backup starts; then it is cut short, and one more runs:
    backup._keep_previous(newest)  # the newest is kept once, not again under -5
    assert older()[f"lensd-{stamp}-4.sqlite"] == 4 and len(older()) == 4
    backup_number(5, keep=3)  # --backup-keep 3: the newest and the two before it, by time then number
    assert older() == {f"lensd-{stamp}-3.sqlite": 3, f"lensd-{stamp}-4.sqlite": 4} and _backed_up(newest) == 5
