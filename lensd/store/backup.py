"""A consistent copy of a live database, made without stopping its writer (``--backup-every``).

sqlite's online backup API copies the database page by page. In WAL mode a read transaction never
blocks the writer, so the copy holds one read transaction on the source from the first step to the
last: the daemon keeps committing meanwhile, and what it commits is simply not in this copy (the
next one has it). Holding that snapshot matters: a stepwise backup that lets the read transaction
end between steps starts over whenever another connection commits, and against a busy writer it
never finishes (a 100 MB copy, 1,000 pages a step, did not finish in 120 s beside one commit every
10 ms; with the snapshot held it took 0.3 s). Between steps (``STEP_PAGES``, 16 MiB) the copy
checks ``stop``, so a stopping daemon never waits for a long backup.

The copy is written to ``<name>.partial`` (created ``O_EXCL | O_NOFOLLOW``, mode 0600 or 0640 with
``--shared-group``), switched to a rollback journal (one file, readable on a shared file system
without ``-wal``/``-shm``), flushed, and renamed over ``<folder>/<database name>``: that name is
always the newest whole backup. The one it replaces stays as ``<stem>-<UTC time><suffix>`` (a hard
link, made before the rename), or ``<stem>-<UTC time>-2<suffix>``, ``-3``, ... when that second's
name is taken (``--backup-every`` under a minute; a file system with whole-second times), and only
the newest ``keep`` are kept, ordered by time and then that number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lensd import safefiles
from lensd.errors import LensdError
from lensd.store.sqlite_errors import readonly_uri, storage_error

STAMP = "%Y%m%dT%H%M%SZ"
STEP_PAGES = 4096  # pages copied between two looks at ``stop`` (16 MiB of 4 KiB pages)


@dataclass(frozen=True)
class BackupDone:
    """What one backup made: where, its size, when its snapshot was taken and how long it took."""

    path: Path
    bytes: int
    started: float
    seconds: float


def default_folder(db: Path, spool: Path | None) -> Path:
    """Where backups go without ``--backup-to``: beside the spool (which sits on the shared file
    system, the one that outlives the daemon's node), else beside the database."""
    if spool is not None:
        return spool.parent / f"{spool.name}-backups"
    return db.parent / f"{db.stem}-backups"


def check_folder(db: Path, folder: Path) -> None:
    """Refuse a backup folder that would overwrite the database itself."""
    if (folder / db.name).resolve() == db.resolve():
        raise LensdError(f"--backup-to {folder} would write the backup over the database {db}: "
                         "choose another folder")


class BackupStopped(LensdError):
    """The daemon stopped while a backup was being made (its ``.partial`` is removed)."""


def back_up(db: Path, folder: Path, keep: int = 2, shared_group: bool = False,
            stop: threading.Event | None = None) -> BackupDone:
    """Copy the live database ``db`` into ``folder`` (see the module docstring); LensdError if not."""
    safefiles.make_dirs(folder, safefiles.dir_mode(shared_group))
    if safefiles.others_can_write(folder):
        raise LensdError(f"the backup folder {folder} may be written by every user, who could swap "
                         "the backup: chmod o-w it")
    target = folder / db.name
    partial = folder / f"{db.name}.partial"
    for leftover in (partial, Path(f"{partial}-journal"), Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)  # a copy cut short by a crash or a stop
    mode = safefiles.file_mode(shared_group)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    os.fchmod(fd, mode)
    os.close(fd)
    started = time.time()
    try:
        _copy(db, partial, stop or threading.Event())
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        _keep_previous(target)
        os.replace(partial, target)
        _sync_folder(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _prune(folder, db, keep)
    return BackupDone(target, size, started, time.time() - started)


def _copy(db: Path, partial: Path, stop: threading.Event) -> None:
    def check(status: int, remaining: int, total: int) -> None:
        if stop.is_set():
            raise BackupStopped("the daemon stopped during the backup")

    try:
        source = sqlite3.connect(readonly_uri(db), uri=True, isolation_level=None)  # never a second writer
    except sqlite3.Error as exc:
        raise storage_error(exc, f"cannot open {db} to back it up") from None
    try:
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.execute("BEGIN")  # one snapshot for every step: see the module docstring
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()
            source.backup(target, pages=STEP_PAGES, progress=check, sleep=0)
            source.execute("COMMIT")
            target.execute("PRAGMA journal_mode=DELETE")  # one plain file, no -wal/-shm needed beside it
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise storage_error(exc, f"backup of {db} to {partial} failed") from None
    finally:
        source.close()


def _keep_previous(target: Path) -> None:
    """Keep the backup about to be replaced under its time's name (a hard link: no copy).

    Two backups can share a second (their names are whole UTC seconds), so a taken name is not
    the end: unless it is this very file (kept by a backup cut short after this step), the next
    free ``-2``, ``-3``, ... is used; skipping it lost the backup the new one replaced.
    """
    try:
        kept = os.stat(target, follow_symlinks=False)
    except FileNotFoundError:
        return
    stamp = time.strftime(STAMP, time.gmtime(kept.st_mtime))
    number = 1
    while True:
        stamped = target.with_name(f"{target.stem}-{stamp}{f'-{number}' if number > 1 else ''}{target.suffix}")
        try:
            os.link(target, stamped, follow_symlinks=False)
            return
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                there = os.stat(stamped, follow_symlinks=False)
                if (there.st_dev, there.st_ino) == (kept.st_dev, kept.st_ino):
                    return
            number += 1
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise  # a file system without hard links keeps only the newest backup
            return


def _prune(folder: Path, db: Path, keep: int) -> None:
    """Remove the oldest time-named backups of ``db`` past ``keep`` in all (the newest counts)."""
    prefix, suffix = f"{db.stem}-", db.suffix
    older = sorted((key, p) for p in folder.iterdir()
                   if p.name.startswith(prefix) and p.name.endswith(suffix)
                   and (key := _stamped(p.name, prefix, suffix)) is not None)
    for _, path in older[:max(0, len(older) - (keep - 1))]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_STAMPED = re.compile(r"(\d{8}T\d{6}Z)(?:-([1-9][0-9]*))?")


def _stamped(name: str, prefix: str, suffix: str) -> tuple[str, int] | None:
    """``(UTC time, number)`` of a kept backup's name, which orders them (``-10`` after ``-9``)."""
    middle = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
    match = _STAMPED.fullmatch(middle)
    if match is None:
        return None
    try:
        time.strptime(match[1], STAMP)
    except ValueError:
        return None
    return match[1], int(match[2] or 1)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)
