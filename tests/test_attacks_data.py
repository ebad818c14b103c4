"""Attacks that lost data the daemon had acknowledged (issue 19, part 1), each against a real daemon.

- a second writer on the same database under another name (symlink, hard link);
- a stale cached key making a new fit replace another fit's row;
- a spool file the daemon cannot delete, applied again on every pass (and after a restart).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DIR_OUTPUT, DaemonProcess, integrity_ok, lensd_cli
from records_factory import record
from test_watch import status, stored, until
from users import ATTACKER, RUNNER, can_switch, open_up, system_user

import lensd
from lensd.domain.records import validate_record
from lensd.errors import AlreadyRunning
from lensd.store import writerlock
from lensd.store.writeops import Upsert
from lensd.store.writer import BatchWriter

SINGLE = DIR_OUTPUT / "howtofit" / "single"


def _refused(make_daemon: Any, db: Path, socket: Path) -> str:
    second = make_daemon(db=db, socket=socket, start=False)
    with pytest.raises(RuntimeError) as refused:
        second.start()
    return str(refused.value)


def test_a_second_daemon_through_a_symlink_or_hard_link_is_refused(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    with lensd.connect_sync(socket=daemon.socket) as client:
        client.submit(record(1, n_samples=5))
    symlink, hard = short_tmp / "alias.sqlite", short_tmp / "hard.sqlite"
    symlink.symlink_to(daemon.db)
    os.link(daemon.db, hard)
    assert "is being written by" in _refused(make_daemon, symlink, short_tmp / "s2")
    assert "same file as a database being written" in _refused(make_daemon, hard, short_tmp / "s3")
    with pytest.raises(AlreadyRunning):  # in-process, as lensd ingest takes it
        writerlock.acquire(hard)
    assert daemon.stop() == 0 and integrity_ok(daemon.db)


def test_ingest_through_a_symlinked_database_goes_to_the_daemon(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    alias = short_tmp / "alias.sqlite"
    alias.symlink_to(daemon.db)
    result = lensd_cli("ingest", str(SINGLE), "--db", str(alias))
    assert result.returncode == 0, result.stderr
    assert f"daemon at {daemon.socket.resolve()}" in result.stdout
    ingested = set(stored(daemon.db))
    assert len(ingested) == 4
    with lensd.connect_sync(socket=daemon.socket) as client:  # the daemon's next writes
        for i in range(20):
            client.submit(record(i, n_samples=5))
    assert set(stored(daemon.db)) == ingested | {f"fit-{i}" for i in range(20)}
    assert daemon.stop() == 0 and integrity_ok(daemon.db)


def test_a_stale_cached_key_never_replaces_another_fits_row(short_tmp: Path) -> None:
    """Two writers on one file (what an unrefused alias made): each new fit gets a key of its own."""
    db = short_tmp / "two.sqlite"

    async def run() -> None:
        first = await BatchWriter.open(db)
        second = await BatchWriter.open(db)  # both remember key 1 as the next free one
        assert await first.apply([Upsert(validate_record(record(1, n_samples=5)))]) == ["applied"]
        assert await second.apply([Upsert(validate_record(record(2, n_samples=5)))]) == ["applied"]
        assert await first.apply([Upsert(validate_record(record(3, n_samples=5)))]) == ["applied"]
        await first.close()
        await second.close()

    anyio.run(run)
    assert set(stored(db)) == {"fit-1", "fit-2", "fit-3"}
    assert integrity_ok(db)


class RunnerDaemon(DaemonProcess):
    """A daemon run as another (non-root) user, so that file permissions bind it."""

    prefix: list[str] = []

    def interpreter(self) -> list[str]:
        return self.prefix


def _passes(daemon: DaemonProcess, extra: int) -> None:
    target = status(daemon)["spool_passes"] + extra
    until(lambda: status(daemon)["spool_passes"] >= target, daemon.db.parent, what=f"{extra} spool passes")


@pytest.mark.skipif(not can_switch(), reason="needs root to create the daemon's and the job's users")
def test_a_spool_file_the_daemon_cannot_delete_is_applied_once(short_tmp: Path) -> None:
    runner, job = system_user(RUNNER), system_user(ATTACKER)
    home = short_tmp / "home"
    home.mkdir(mode=0o700)
    os.chown(home, runner.uid, runner.gid)
    spool = short_tmp / "spool"  # a team spool: sticky, everyone may drop files, only owners delete
    spool.mkdir()
    os.chmod(spool, 0o1777)
    open_up(short_tmp)
    old = record(7, n_samples=5, status="running")
    code = ("import sys, os; from lensd.wire import spoolfile; import records_factory as r; "
            "p = spoolfile.write(sys.argv[1], 'submit', {'record': r.record(7, n_samples=5, status='running')}); "
            "os.chmod(p, 0o644)")
    made = job.python(code, str(spool))
    assert made.returncode == 0, made.stderr
    assert old["status"] == "running"

    def start() -> RunnerDaemon:
        daemon = RunnerDaemon(home / "lensd.sqlite", home / "s",
                              ["--spool", str(spool), "--allow-open-spool", "--poll", "--poll-interval", "0.05"])
        daemon.prefix = runner.command(*runner.interpreter())
        daemon.start()
        return daemon

    daemon = start()
    try:
        until(lambda: stored(daemon.db).get("fit-7", ("",))[0] == "running", home, what="the spooled fit")
        until(lambda: any("cannot be deleted" in line for line in daemon.stderr_lines), home,
              what="the log saying why the file stays")
        line = next(line for line in daemon.stderr_lines if "cannot be deleted" in line)
        assert "sticky" in line and f"uid {job.uid}" in line
        with lensd.connect_sync(socket=daemon.socket) as client:
            assert client.submit(record(7, n_samples=5, status="completed")) == "applied"
        _passes(daemon, 20)
        assert stored(daemon.db)["fit-7"][0] == "completed"
        assert daemon.stop() == 0
        daemon = start()  # a new process remembers nothing: the file's time stops the replay
        _passes(daemon, 5)
        assert stored(daemon.db)["fit-7"][0] == "completed"
        assert len(os.listdir(spool)) == 1
        assert daemon.stop() == 0 and integrity_ok(daemon.db)
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
        shutil.rmtree(spool, ignore_errors=True)
