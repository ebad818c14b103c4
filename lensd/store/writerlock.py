"""The ``<db>.lock`` file: who writes a database.

Whoever writes holds an exclusive ``flock`` on it for as long as it writes: the daemon for its
whole life, ``lensd ingest`` while it ingests. The file also says the holder's pid and, for a
daemon, its socket, so ``lensd ingest`` can hand its records to the daemon instead of becoming a
second writer.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lensd.errors import AlreadyRunning
from lensd.store.sqlite_errors import check_db_folder, os_error


@dataclass(frozen=True)
class Holder:
    pid: str
    socket: str | None


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def read_holder(db: Path) -> Holder | None:
    try:
        lines = lock_path(db).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if not lines:
        return None
    return Holder(lines[0].strip(), lines[1].strip() if len(lines) > 1 and lines[1].strip() else None)


def acquire(db: Path, socket: Path | None = None) -> IO[str]:
    """Take the writer's lock or raise AlreadyRunning naming the holder; keep the handle open.

    The database's folder must exist (a typo in --db creates nothing) and be writable.
    """
    check_db_folder(db)
    try:
        handle = open(lock_path(db), "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose
    except OSError as exc:
        raise os_error(exc, f"cannot write {lock_path(db)}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        holder = read_holder(db)
        who = f"pid {holder.pid}" if holder else "another process"
        where = f", serving {holder.socket}" if holder and holder.socket else ""
        raise AlreadyRunning(f"{db} is being written by {who}{where}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n{socket.resolve() if socket else ''}\n")
    handle.flush()
    return handle


def release(handle: IO[str], db: Path) -> None:
    """Let go of the lock; remove the lock file when the database was never created, so a start
    that failed leaves nothing beside a database that does not exist."""
    try:
        if not db.exists():
            lock_path(db).unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        handle.close()
