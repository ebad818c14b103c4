"""Starting and stopping a daemon from the command line.

``lensd start`` without ``--foreground`` re-runs itself in the foreground in a new session, with
its log in ``<db>.log``, and returns once the child prints its ready line (or reports why it
could not start). ``lensd stop`` asks the daemon to stop, then waits on the database's writer lock,
which the daemon releases only after its last commit.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio

from lensd import safefiles
from lensd.client.address import TargetLike
from lensd.errors import DaemonUnavailable, LensdError
from lensd.settings import Database, Settings, database, is_url, shown, socket_path_problem, start_arguments
from lensd.store import writerlock
from lensd.store.sqlite_errors import check_db_folder, os_error

START_TIMEOUT = 60.0
STOP_TIMEOUT = 120.0
EXIT_GRACE = 10.0  # how long a child that failed to start may take to exit


def start_daemon(settings: Settings, log_level: str = "info") -> None:
    if settings.listen:  # refuse a secret others can read here, in one line, before forking
        from lensd.client.secret import ensure_secret, resolve_secret_file

        ensure_secret(resolve_secret_file(settings.secret_file))
    if settings.foreground:
        from lensd.daemon.logs import configure_logging
        from lensd.daemon.server import run_daemon

        configure_logging(log_level)
        run_daemon(settings)
        return
    argv = [sys.executable, "-m", "lensd", "start", *start_arguments(settings), "--foreground",
            "--log-level", log_level]
    log_path = daemon_log(settings)
    check_start(settings)
    fresh = not _exists(settings.db) and not log_path.exists()
    try:
        log_file = os.fdopen(safefiles.open_owned(log_path, safefiles.file_mode(settings.shared_group),
                                                  os.O_WRONLY | os.O_APPEND), "ab")
    except OSError as exc:
        raise os_error(exc, f"cannot write the log {log_path}") from None
    with log_file:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    assert child.stdout is not None
    line = _first_line(child, START_TIMEOUT)
    web = _first_line(child, START_TIMEOUT) if settings.web is not None and line.startswith("lensd ready") else ""
    child.stdout.close()
    if not line.startswith("lensd ready"):
        try:
            code: int | None = child.wait(EXIT_GRACE)  # its stdout ended: it is exiting
        except subprocess.TimeoutExpired:
            code = None
        tail = _tail(log_path)
        if fresh and code is not None and not _exists(settings.db):
            log_path.unlink(missing_ok=True)  # nothing was created: leave nothing beside it
        raise LensdError(f"the daemon did not start (exit {code}): {tail}")
    print(f"lensd started: pid {child.pid}, socket {settings.socket}, database {shown(settings.db)}, "
          f"log {log_path}")
    if web.startswith("lensd web:"):
        print(web.strip())  # the dashboard's URL and token, shown once


def daemon_log(settings: Settings) -> Path:
    """Where a background daemon logs: beside its sqlite file, or beside its socket for PostgreSQL."""
    beside = settings.db if isinstance(settings.db, Path) else settings.socket
    return beside.with_name(beside.name + ".log")


def _exists(db: Database) -> bool:
    return isinstance(db, str) or db.exists()  # a PostgreSQL database is the server's to keep


def check_start(settings: Settings) -> None:
    """What a start would fail on, said in one line before anything is created: the database's
    folder must exist, the socket path must fit a Unix socket address."""
    if isinstance(settings.db, Path):
        check_db_folder(settings.db)
    problem = socket_path_problem(settings.socket)
    if problem is not None:
        raise LensdError(problem)


def _first_line(child: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's first stdout line, or '' if it exits or stays silent past ``timeout``."""
    box: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        box.append(child.stdout.readline().decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    interesting = [line for line in lines if "lensd:" in line or "Error" in line or "error" in line]
    return (interesting or lines or ["(empty log)"])[-1].removeprefix("lensd: ")  # no "lensd: lensd:"


def _wait_for_lock(db: Path, timeout: float) -> bool:
    """Block until the writer's lock on ``db`` is free (the daemon has exited)."""
    try:
        handle = open(writerlock.lock_path(db), encoding="utf-8")  # noqa: SIM115
    except OSError:
        return True
    done = threading.Event()

    def wait() -> None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            done.set()
        except OSError:
            done.set()

    threading.Thread(target=wait, daemon=True).start()
    released = done.wait(timeout)
    handle.close()
    return released


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is gone within ``timeout`` (polled: no other signal reaches a
    process that is not our child). A pid that is no lensd process here is a daemon on another
    node (reached over TCP), which this machine cannot watch: it is not waited for."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    if b"lensd" not in command:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return True  # another user's process now holds the pid: ours is gone
        time.sleep(0.05)  # polling a real state (the process table) with a deadline
    return False


def stop_daemon(target: TargetLike) -> None:
    from lensd.client.connection import Client

    async def ask() -> tuple[str, int]:
        client = await Client.open(target)
        try:
            status = await client.request("status")
            where, pid = str(status["status"]["database"]), int(status["status"]["pid"])
            await client.request("stop")
            return where, pid
        finally:
            await client.aclose()

    try:
        where, pid = anyio.run(ask, backend="asyncio")
    except DaemonUnavailable:
        raise
    # A PostgreSQL daemon holds no lock file (several may write one database): wait for its process.
    exited = (_wait_for_exit(pid, STOP_TIMEOUT) if is_url(database(where))
              else _wait_for_lock(Path(where), STOP_TIMEOUT))
    if not exited:
        logging.getLogger("lensd").warning("the daemon has not exited after %ss", STOP_TIMEOUT)
        raise LensdError(f"asked the daemon to stop, but it still holds {where} after {STOP_TIMEOUT}s")
