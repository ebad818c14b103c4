"""The spool: records written while no daemon answers, ingested by a real daemon, crash-safe.

And ``lensd submit PATH`` (SLURM epilogues), with a daemon and, through ``--spool``, without one.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import watchfiles
from conftest import DIR_OUTPUT, integrity_ok, lensd_cli
from records_factory import record
from test_watch import status, stored, until

import lensd
from lensd.wire import spoolfile


def pending(folder: Path) -> list[Path]:
    return spoolfile.pending(folder)


def test_records_spooled_while_no_daemon_runs_are_ingested_at_start(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    folder = short_tmp / "spool"
    with lensd.connect_sync(socket=short_tmp / "nobody", spool=folder) as client:
        outcomes = [client.submit(record(i, n_samples=20)) for i in range(20)]
    assert outcomes == ["spooled"] * 20
    assert len(pending(folder)) == 20

    daemon = make_daemon("--spool", str(folder))
    until(lambda: len(stored(daemon.db)) == 20 and not pending(folder), daemon.db.parent,
          what="the 20 spooled records")
    assert set(stored(daemon.db)) == {f"fit-{i}" for i in range(20)}
    assert status(daemon)["spool_backlog"] == 0
    assert not (folder / "rejected").exists()


def test_corrupt_files_are_rejected_with_a_note_and_the_daemon_keeps_going(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    folder = short_tmp / "spool"
    daemon = make_daemon("--spool", str(folder), "--poll", "--poll-interval", "0.1")
    (folder / "0-garbage.lensd").write_bytes(b"\x00not msgpack at all")
    spoolfile.write(folder, "submit", {"record": {"id": "bad", "status": "finished-ish"}})
    spoolfile.write(folder, "submit", {"record": record(1, n_samples=10)})

    rejected = folder / "rejected"
    until(lambda: "fit-1" in stored(daemon.db) and not pending(folder), daemon.db.parent,
          what="the good file ingested, the bad ones moved")
    notes = {p.name: p.read_text() for p in rejected.glob("*.why.txt")}
    assert len(notes) == 2 and len(list(rejected.glob("*.lensd"))) == 2
    assert "not a lensd spool file" in notes["0-garbage.lensd.why.txt"]
    assert any("status" in text for name, text in notes.items() if not name.startswith("0-"))
    assert status(daemon)["spool_rejected"] == 2

    spoolfile.write(folder, "submit", {"record": record(2, n_samples=10)})  # still at work
    until(lambda: "fit-2" in stored(daemon.db), daemon.db.parent, what="a file dropped afterwards")
    assert "bad" not in stored(daemon.db)


def _fill(folder: Path, fits: int, with_events: int) -> None:
    """``with_events`` fits as start/progress/complete events, then whole records, as clients spool."""
    for i in range(with_events):
        spoolfile.write(folder, "start", {"record": record(10_000 + i, n_samples=5, status="running"), "seq": 1})
    for i in range(fits):
        spoolfile.write(folder, "submit", {"record": record(i, n_samples=40)})
    for i in range(with_events):
        spoolfile.write(folder, "progress", {"id": f"fit-{10_000 + i}", "seq": 2, "n_samples": 5})
        spoolfile.write(folder, "complete", {"record": record(10_000 + i, n_samples=30), "seq": 3})


def _first_deletion(folder: Path, daemon: Any) -> None:
    """Block until the daemon deletes its first spool file (inotify on the folder), then kill -9."""
    stop = threading.Event()
    for changes in watchfiles.watch(folder, watch_filter=None, recursive=False, debounce=1, step=1,
                                    rust_timeout=30_000, yield_on_timeout=True, stop_event=stop):
        if not changes:
            raise AssertionError("the daemon deleted no spool file within 30 s")
        if any(change == watchfiles.Change.deleted for change, _ in changes):
            daemon.kill()
            return


def test_kill_during_spool_ingest_loses_and_duplicates_nothing(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    folder = short_tmp / "spool"
    _fill(folder, 1850, 50)
    files = pending(folder)
    assert len(files) == 2000
    saved = short_tmp / "saved"
    shutil.copytree(folder, saved)

    daemon = make_daemon("--spool", str(folder), start=False)
    daemon.start()
    _first_deletion(folder, daemon)
    left = len(pending(folder))
    assert 0 < left < 2000, f"the kill should land mid-ingest ({left} files left)"
    print(f"killed with {left} of 2000 spool files left")
    assert integrity_ok(daemon.db)

    again = make_daemon("--spool", str(folder))
    until(lambda: not pending(folder) and len(stored(again.db)) == 1900, again.db.parent,
          what="every spooled op after the restart")

    def check() -> None:
        conn = sqlite3.connect(f"file:{again.db}?mode=ro", uri=True)
        try:
            total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM fits").fetchone()
            # whole records spooled without a seq carry their file's time (microseconds) as one
            events = conn.execute("SELECT status, seq, count(*) FROM fits WHERE seq < 1000000 "
                                  "GROUP BY status, seq").fetchall()
        finally:
            conn.close()
        assert (total, distinct) == (1900, 1900)
        assert events == [("completed", 3, 50)]

    check()
    # the crash window at its widest: every file committed, none deleted, then read again
    for path in saved.iterdir():  # as clients write: a dot-name first, then a rename
        shutil.copy2(path, folder / f".{path.name}.tmp")
        (folder / f".{path.name}.tmp").rename(folder / path.name)
    until(lambda: not pending(folder), again.db.parent, what="the re-dropped files")
    check()
    assert again.stop() == 0
    assert integrity_ok(again.db)
    assert not (folder / "rejected").exists()


def test_lensd_submit_a_finished_folder_to_a_daemon_or_to_the_spool(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    fit = next(DIR_OUTPUT.rglob("d84750cd075cd129a33ac035b98cf1c4"))
    daemon = make_daemon()
    done = lensd_cli("submit", str(fit), "--socket", str(daemon.socket))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["applied", fit.name]
    assert stored(daemon.db)[fit.name][0] == "completed"

    folder = short_tmp / "spool"
    away = lensd_cli("submit", str(fit), "--socket", str(short_tmp / "nobody"), "--spool", str(folder))
    assert away.returncode == 0, away.stderr
    assert away.stdout.split() == ["spooled", fit.name] and len(pending(folder)) == 1
    refused = lensd_cli("submit", str(fit), "--socket", str(short_tmp / "nobody"))
    assert refused.returncode == 3 and refused.stderr.startswith("lensd: ")

    other = make_daemon("--spool", str(folder), db=short_tmp / "other.sqlite", socket=short_tmp / "o")
    until(lambda: fit.name in stored(other.db) and not pending(folder), other.db.parent,
          what="the spooled folder")
    assert stored(other.db)[fit.name][0] == "completed"
