"""Attacks by another local user (issue 19, part 2), each against a real daemon.

- ``rejected/`` or a ``<name>.why.txt`` planted as a symlink, and a file name with a newline;
- a watched fit whose file is a symlink to the daemon user's private file;
- files and folders created under ``umask 000``, and ``--shared-group`` under ``umask 002``; a
  lock file others could write naming a fake daemon; a spool every user may write to;
- a shared ``flock`` by another user on the lock file; ``--socket`` naming a regular file.

The other user is a real system user (``users.py``) where the suite runs as root, as in CI.
"""

from __future__ import annotations

import os
import shutil
import socket as socketlib
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DIR_OUTPUT, integrity_ok, lensd_cli
from records_factory import record
from test_watch import stored, until
from users import ATTACKER, can_switch, open_up, system_user

import lensd
from lensd.wire import spoolfile

LBFGS = DIR_OUTPUT / "howtofit" / "single"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_rejected_handling_never_writes_through_a_symlink_or_forges_lines(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    victim = short_tmp / "victim"
    victim.mkdir()
    precious = victim / "precious.txt"
    precious.write_text("keep me\n")
    linked = short_tmp / "linked"  # its rejected/ is a symlink to the victim's folder
    (linked).mkdir()
    (linked / "rejected").symlink_to(victim)
    (linked / "1-a.lensd").write_bytes(b"not msgpack")
    planted = short_tmp / "planted"  # a real rejected/ with a note planted as a symlink
    (planted / "rejected").mkdir(parents=True)
    (planted / "rejected" / "1-b.lensd.why.txt").symlink_to(precious)
    (planted / "1-b.lensd").write_bytes(b"not msgpack")
    (planted / "2-c\nFORGED lensd ERROR injected.lensd").write_bytes(b"not msgpack either")
    daemon = make_daemon("--spool", str(linked), "--poll", "--poll-interval", "0.05")
    until(lambda: any("symbolic link" in line for line in daemon.stderr_lines), short_tmp,
          what="the symlinked rejected/ refused")
    assert sorted(os.listdir(victim)) == ["precious.txt"] and precious.read_text() == "keep me\n"
    assert daemon.stop() == 0

    daemon = make_daemon("--spool", str(planted), "--poll", "--poll-interval", "0.05")
    until(lambda: not spoolfile.pending(planted), planted, what="both bad files rejected")
    assert precious.read_text() == "keep me\n"
    notes = sorted(p for p in (planted / "rejected").iterdir() if p.name.endswith(".why.txt") and not p.is_symlink())
    assert len(notes) == 2
    for note in notes:
        assert len(note.read_text().splitlines()) == 2, note.read_text()
        assert _mode(note) == 0o600
    assert all("\n" not in name for name in os.listdir(planted / "rejected"))
    assert daemon.stop() == 0
    assert not any(line.startswith("FORGED") for line in "".join(daemon.stderr_lines).splitlines())


def test_a_watched_fit_never_follows_a_symlink_out_of_its_folder(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    secret = short_tmp / "private.csv"
    secret.write_text("TOPSECRET_COLUMN,x\n1,2\n")
    root = short_tmp / "out"
    shutil.copytree(LBFGS, root)
    fits = [p.parent for p in root.rglob("metadata")]
    (fits[0] / "files" / "notes.csv").symlink_to(secret)
    (fits[1] / "files" / "samples.csv").unlink()
    (fits[1] / "files" / "samples.csv").symlink_to(secret)
    daemon = make_daemon("--watch", str(root))
    until(lambda: len(stored(daemon.db)) >= len(fits) - 1, short_tmp, what="the watched fits")
    assert daemon.stop() == 0
    for path in (daemon.db, Path(f"{daemon.db}-wal")):
        if path.exists():
            assert b"TOPSECRET" not in path.read_bytes()
    assert any("symbolic link" in line and "samples.csv" in line for line in daemon.stderr_lines)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_everything_is_created_private_under_umask_000(short_tmp: Path, umask_000: None) -> None:
    db = short_tmp / "data" / "lensd.sqlite"
    db.parent.mkdir()  # lensd start creates no database folder (a typo in --db creates nothing)
    socket = short_tmp / "run" / "sub" / "s"
    spool = short_tmp / "spool" / "new"
    started = lensd_cli("start", "--db", str(db), "--socket", str(socket), "--spool", str(spool))
    assert started.returncode == 0, started.stderr
    try:
        with lensd.connect_sync(socket=socket) as client:
            client.submit(record(1, n_samples=5))
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock"), Path(f"{db}.log")]
        assert {str(p.name): _mode(p) for p in files} == {str(p.name): 0o600 for p in files}
        folders = [socket.parent, socket.parent.parent, spool, spool.parent]
        assert {str(p): _mode(p) for p in folders} == {str(p): 0o700 for p in folders}
        assert _mode(socket) == 0o600
        if can_switch():  # and another user, let through the folders, still cannot read or write
            attacker = system_user(ATTACKER)
            for folder in (db.parent, socket.parent, spool):
                open_up(folder)
            assert not any(attacker.can(p, "r") or attacker.can(p, "w") for p in files)
            assert not attacker.can(socket, "w")
    finally:
        assert lensd_cli("stop", "--socket", str(socket)).returncode == 0
    assert integrity_ok(db)


def test_shared_group_under_umask_002_lets_the_group_read_not_write(short_tmp: Path) -> None:
    """``--shared-group`` under umask 002 (the group may write what it creates): the group gets the
    database to read (0640) and a team spool (0770), never the lock, the socket or a backup to write."""
    db = short_tmp / "data" / "lensd.sqlite"
    db.parent.mkdir()
    socket, spool, backups = short_tmp / "run" / "s", short_tmp / "spool", short_tmp / "backups"
    old = os.umask(0o002)
    try:
        started = lensd_cli("start", "--db", str(db), "--socket", str(socket), "--spool", str(spool),
                            "--shared-group", "--backup-every", "0.01", "--backup-to", str(backups))
        assert started.returncode == 0, started.stderr
        try:
            with lensd.connect_sync(socket=socket) as client:
                client.submit(record(1, n_samples=5))
            until(lambda: (backups / db.name).exists(), short_tmp, what="a backup")
            modes = {p.name: _mode(p) for p in (db, Path(f"{db}-wal"), Path(f"{db}.lock"), Path(f"{db}.log"),
                                                socket.parent, socket, spool, backups, backups / db.name)}
            assert modes == {"lensd.sqlite": 0o640, "lensd.sqlite-wal": 0o640, "lensd.sqlite.lock": 0o600,
                             "lensd.sqlite.log": 0o640, "run": 0o700, "s": 0o600, "spool": 0o770,
                             "backups": 0o750}, modes
            assert _mode(backups / db.name) == 0o640
        finally:
            assert lensd_cli("stop", "--socket", str(socket)).returncode == 0
    finally:
        os.umask(old)


def test_a_lock_file_others_could_write_is_not_believed_by_ingest(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Its socket line rewritten to a fake daemon's socket (the attack when umask 000 left it 0666):
    ``lensd ingest`` refuses in one line and sends the fake nothing."""
    daemon = make_daemon()
    lock = Path(f"{daemon.db}.lock")
    assert _mode(lock) == 0o600
    fake_path = short_tmp / "fake"
    fake = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    fake.bind(str(fake_path))
    fake.listen()
    fake.setblocking(False)
    os.chmod(lock, 0o666)  # as an older release left it under umask 000
    forged = f"{daemon.pid}\n{fake_path}\n"
    if can_switch():  # written by another user, as in the attack
        open_up(short_tmp)
        os.chmod(fake_path, 0o777)
        wrote = system_user(ATTACKER).run("sh", "-c", f"printf '{forged}' > {lock}")
        assert wrote.returncode == 0, wrote.stderr
    else:
        lock.write_text(forged)
    done = lensd_cli("ingest", str(LBFGS), "--db", str(daemon.db))
    with pytest.raises(BlockingIOError):
        fake.accept()  # nobody came to the fake daemon
    fake.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    *warnings, error = done.stderr.strip().splitlines()
    assert error.startswith("lensd: ") and "being written by" in error, done.stderr
    assert warnings and all("it is not ours alone (uid 0, mode 666)" in line for line in warnings), warnings
    assert daemon.stop() == 0


def test_a_spool_every_user_may_write_to_is_refused_unless_allowed(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    spool = short_tmp / "open"
    spool.mkdir()
    os.chmod(spool, 0o777)
    refused = lensd_cli("start", "--foreground", "--db", str(short_tmp / "x.sqlite"), "--socket",
                        str(short_tmp / "x"), "--spool", str(spool))
    assert refused.returncode == 1
    assert "may be written by every user" in refused.stderr and "--allow-open-spool" in refused.stderr
    daemon = make_daemon("--spool", str(spool), "--allow-open-spool")
    assert daemon.stop() == 0
    assert any("every user" in line for line in daemon.stderr_lines)


HOLD = """
import fcntl, sys
handle = open(sys.argv[1])
fcntl.flock(handle, fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_shared_lock_by_another_user_does_not_block_start(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    lock = short_tmp / "lensd.sqlite.lock"
    lock.write_text("")
    os.chmod(lock, 0o666)  # as an older release left it under a loose umask
    if can_switch():
        attacker = system_user(ATTACKER)
        open_up(short_tmp)
        command = attacker.command(*attacker.interpreter(), "-c", HOLD, str(lock))
    else:  # no second user: the same lock, held by another process of ours
        command = [sys.executable, "-c", HOLD, str(lock)]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        daemon = make_daemon()
        assert _mode(lock) == 0o600
        second = make_daemon(socket=short_tmp / "s2", start=False)
        with pytest.raises(RuntimeError, match="being written by"):
            second.start()  # the exclusive lock still refuses a second writer
        assert daemon.stop() == 0
    finally:
        holder.kill()
        holder.wait(30)


def test_socket_naming_a_regular_file_is_refused_and_the_file_kept(short_tmp: Path) -> None:
    notes = short_tmp / "notes.txt"
    notes.write_text("my notes\n")
    result = lensd_cli("start", "--foreground", "--db", str(short_tmp / "n.sqlite"), "--socket", str(notes))
    assert result.returncode == 1
    assert "not a socket" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert notes.read_text() == "my notes\n"
