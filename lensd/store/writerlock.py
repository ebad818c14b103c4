"""Who writes a database: the ``<db>.lock`` file, and the database file itself.

Whoever writes holds an exclusive ``flock`` for as long as it writes: the daemon for its whole
life, ``lensd ingest`` while it ingests. A database is known by its real file, not by the name it
was given: the lock file sits next to the resolved path (a symlink alias finds the same lock), and
the writer also holds an exclusive ``flock`` on the database file itself, which every hard link of
it shares (a hard-linked alias is refused too). On a network file system that second lock is not
taken: there ``flock`` is emulated with byte-range locks that would collide with sqlite's own.

The lock file also says the holder's pid and, for a daemon, its socket, so ``lensd ingest`` can
hand its records to the daemon instead of becoming a second writer. It is created 0600 whatever
the umask, and its socket line is believed only from a file of ours that nobody else can write.

A *shared* lock held by someone else (a reader, or another user who could open the file while it
was still readable) is not a writer: it never blocks ``lensd start``. Such a lock on the lock file
is shed by putting a fresh lock file in its place; on the database file it is logged and ignored.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lensd import safefiles
from lensd.errors import AlreadyRunning, StorageError
from lensd.mounts import is_network_file_system
from lensd.store.sqlite_errors import check_db_folder, os_error

log = logging.getLogger("lensd.writerlock")
PROC_LOCKS = Path("/proc/locks")


@dataclass(frozen=True)
class Holder:
    pid: str
    socket: str | None


def real_database(db: Path) -> Path:
    """The database's real file: every symlink resolved."""
    return Path(os.path.realpath(db))


def lock_path(db: Path) -> Path:
    real = real_database(db)
    return real.with_name(real.name + ".lock")


def read_holder(db: Path) -> Holder | None:
    """The writer named in the lock file, if the file is ours and only we can write it."""
    try:
        fd, info = safefiles.open_regular(lock_path(db))
    except OSError:
        return None
    try:
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("ignoring %s: it is not ours alone (uid %d, mode %o)", lock_path(db), info.st_uid,
                        stat.S_IMODE(info.st_mode))
            return None
        lines = safefiles.read_fd(fd, 1 << 16, "the lock file").decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    finally:
        os.close(fd)
    if not lines:
        return None
    return Holder(lines[0].strip(), lines[1].strip() if len(lines) > 1 and lines[1].strip() else None)


def flock_holders(path: Path) -> list[tuple[str, str]]:
    """``(WRITE|READ, pid)`` of every granted ``flock`` on ``path``'s file, from /proc/locks."""
    try:
        info = os.stat(path)
        table = PROC_LOCKS.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    found = []
    for line in table:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted:  # "->" marks a waiter
            found.append((parts[3], parts[4]))
    return found


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _refuse(db: Path, pid: str | None) -> AlreadyRunning:
    holder = read_holder(db)
    who = f"pid {holder.pid}" if holder else (f"pid {pid}" if pid else "another process")
    where = f", serving {holder.socket}" if holder and holder.socket else ""
    return AlreadyRunning(f"{db} is being written by {who}{where}")


def _lock_file(db: Path, mode: int) -> int:
    """The exclusive lock on ``<real db>.lock``; a shared lock of someone else's is shed."""
    path = lock_path(db)
    # not narrowed before it is ours: a lock file others could write (an older release under umask
    # 000) may name a fake daemon's socket, and narrowing it would make ``read_holder`` believe it
    fd = safefiles.open_owned(path, mode, narrow=False)
    if _try_lock(fd):
        safefiles.narrow_to(fd, mode)
        return fd
    holders = flock_holders(path)
    if not holders or any(kind == "WRITE" for kind, _ in holders):
        os.close(fd)
        writer = next((pid for kind, pid in holders if kind == "WRITE"), None)
        raise _refuse(db, writer)
    os.close(fd)
    log.warning("%s is held with a shared lock by pid %s, which is not a writer: replacing the lock "
                "file", path, ", ".join(pid for _, pid in holders))
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    fd = safefiles.open_owned(fresh, mode)
    if not _try_lock(fd):
        os.close(fd)
        raise _refuse(db, None)
    os.replace(fresh, path)
    return fd


def _lock_database(db: Path, mode: int) -> int | None:
    """The exclusive lock on the database file itself (shared by its hard links)."""
    real = real_database(db)
    fd = safefiles.open_owned(real, mode)  # created with its mode here, so sqlite's WAL/SHM copy it
    for companion in (Path(f"{real}-wal"), Path(f"{real}-shm")):
        try:
            os.close(safefiles.open_owned(companion, mode, os.O_RDONLY | os.O_EXCL))
            os.unlink(companion)  # it did not exist: sqlite makes its own
        except FileExistsError:
            os.close(safefiles.open_owned(companion, mode, os.O_RDONLY))  # narrowed to ``mode``
        except OSError:
            pass
    if is_network_file_system(real.parent):
        os.close(fd)
        return None
    if _try_lock(fd):
        return fd
    holders = flock_holders(real)
    writer = next((pid for kind, pid in holders if kind == "WRITE"), None)
    os.close(fd)
    if writer is not None or not holders:
        raise AlreadyRunning(f"{db} is the same file as a database being written by pid {writer or '?'}"
                             f" (through another name: a symlink or hard link); refusing a second writer")
    log.warning("%s is held with a shared lock by pid %s, which is not a writer: going on", real,
                ", ".join(pid for _, pid in holders))
    return None


class Lock:
    """The writer's locks on one database; ``release`` (or ``close``) lets them go."""

    def __init__(self, handle: IO[str], database_fd: int | None, created: bool) -> None:
        self.handle = handle
        self._database_fd = database_fd
        self.created = created  # the database file did not exist before this lock

    def close(self) -> None:
        if self._database_fd is not None:
            os.close(self._database_fd)
            self._database_fd = None
        self.handle.close()


SIDECARS = ("-wal", "-shm", "-journal")  # the files sqlite keeps beside a database, and deletes


def refuse_sidecar(db: Path) -> None:
    """Raise StorageError when ``db`` is an existing database's ``-wal``, ``-shm`` or ``-journal``:
    sqlite would discard (or replay) whatever lensd wrote there."""
    for suffix in SIDECARS:
        if db.name.endswith(suffix) and len(db.name) > len(suffix):
            owner = db.with_name(db.name[:-len(suffix)])
            if owner.is_file():
                raise StorageError(f"{db} is the {suffix[1:]} file of the database {owner}, which sqlite "
                                   "deletes or replays: choose another --db or --to")


def acquire(db: Path, socket: Path | None = None, shared_group: bool = False) -> Lock:
    """Take the writer's locks or raise AlreadyRunning naming the holder; keep the result open.

    The database's folder must exist (a typo in --db creates nothing) and be writable.
    """
    check_db_folder(db)
    refuse_sidecar(db)
    created = not real_database(db).exists()
    new_lock = not lock_path(db).exists()
    try:
        fd = _lock_file(db, safefiles.PRIVATE_FILE)
    except (AlreadyRunning, safefiles.UnsafeFile):
        raise
    except OSError as exc:
        raise os_error(exc, f"cannot write {lock_path(db)}") from None
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        database_fd = _lock_database(db, safefiles.file_mode(shared_group))
    except BaseException as exc:
        if new_lock and not isinstance(exc, AlreadyRunning):
            lock_path(db).unlink(missing_ok=True)  # still held: no other writer took it
        handle.close()
        if created:
            _remove_empty(db)
        if isinstance(exc, OSError):  # a folder, an unreadable file: one line, not a traceback
            raise os_error(exc, f"cannot open {db} as a database") from None
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n{socket.resolve() if socket else ''}\n")
    handle.flush()
    return Lock(handle, database_fd, created)


def _remove_empty(db: Path) -> None:
    """Remove the empty database file this start created, and the lock file beside it."""
    try:
        real = real_database(db)
        if real.exists() and real.stat().st_size == 0:
            real.unlink()
        if not real.exists():
            lock_path(db).unlink(missing_ok=True)
    except OSError:
        pass


def release(lock: Lock, db: Path) -> None:
    """Let go of the locks; when this start created the database and nothing was ever written to
    it, remove it and the lock file, so a start that failed leaves nothing behind."""
    try:
        if lock.created:
            _remove_empty(db)
    finally:
        lock.close()
