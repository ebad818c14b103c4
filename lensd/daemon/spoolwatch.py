"""The spool folder (``--spool DIR``): write ops that clients saved when the socket was out of reach.

Clients on other nodes (or with the daemon down) write each op as one file, atomically
(``lensd.wire.spoolfile.write``). The daemon reads the finished files oldest first, commits their ops
through the one writer, and deletes each file only after its commit came back ``applied`` or
``duplicate``. A crash at any point therefore loses nothing (an undeleted file is read again at the
next start) and duplicates nothing: an ``Upsert`` replaces the fit by id, and events carry the
fit's ``seq``, so an op applied before its file was deleted comes back ``duplicate``.

A file that cannot be decoded or validated is moved to ``DIR/rejected/`` next to a
``<name>.why.txt`` note, so one bad file never blocks the others and a person can see why. It is
moved only once it failed twice with the same size and mtime: a file copied in without the
write-then-rename (``cp`` by hand) may simply not be finished yet. A file
whose commit fails (disk full, database locked) stays and is tried again on the next pass; after
``MAX_ATTEMPTS`` failures of another kind it is rejected with the database's reason.

The spool usually sits on a shared file system, where inotify misses other nodes' writes: there it
is polled (one directory listing per ``--poll-interval``). On a local disk watchfiles wakes the
reader at once, and the listing still runs every interval as a safety net.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lensd import safefiles
from lensd.daemon.services import ServiceHost, StopFlag
from lensd.errors import DatabaseLocked, LensdError, StorageFull
from lensd.mounts import is_network_file_system
from lensd.store.writeops import Op, Upsert, op_from_request
from lensd.wire import spoolfile

log = logging.getLogger("lensd.wire.spoolfile")
CHUNK = 256  # files committed together: one transaction, then one round of deletes
MAX_ATTEMPTS = 5
REJECTED = "rejected"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def decode(paths: list[Path]) -> list[tuple[Path, Op | None, str | None]]:
    """(file, its op, None) or (file, None, why it is refused); vanished files are left out."""
    found: list[tuple[Path, Op | None, str | None]] = []
    for path in paths:
        try:
            op, fields, written = spoolfile.load(path)
            write = op_from_request(op, fields)
            if isinstance(write, Upsert) and written is not None:
                # A whole record without a seq gets its file's time (in microseconds, as a job's
                # first seq): a replay of the file is then a duplicate, never a step back.
                seq = write.seq if write.seq is not None else int(written * 1_000_000)
                write = dataclasses.replace(write, seq=seq, written_at=written)
            found.append((path, write, None))
        except LensdError as exc:
            if path.exists():  # else another reader took it, or its writer withdrew it
                found.append((path, None, str(exc)))
        except Exception as exc:  # anything a hostile file can provoke is a reason, not a crash
            found.append((path, None, f"unexpected {type(exc).__name__}: {exc}"))
    return found


def _plain(name: str) -> str:
    """A file name safe to create in ``rejected/``: only letters, digits and ``.-_``."""
    return _UNSAFE.sub("_", name)[:200] or "_"


def reject(path: Path, reason: str) -> None:
    """Move a spool file to ``rejected/``, the note first (a crash in between re-rejects it).

    Everything happens relative to handles on the spool folder and on ``rejected/``, never through
    a symlink: a ``rejected`` that is a symlink is an error, the note is created ``O_EXCL`` under
    a plain name, and the reason is written escaped, one line.
    """
    spool = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(REJECTED, 0o700, dir_fd=spool)
        except FileExistsError:
            pass
        try:
            folder = os.open(REJECTED, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=spool)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise safefiles.UnsafeFile(f"{path.parent / REJECTED} is a symbolic link or not a folder: "
                                           "refusing to write through it") from None
            raise
        try:
            name = _plain(path.name)
            note, suffix = None, 0
            while note is None:
                candidate = f"{name}.why.txt" if not suffix else f"{name}.{suffix}.why.txt"
                try:
                    note = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                   | os.O_CLOEXEC, 0o600, dir_fd=folder)
                except FileExistsError:
                    suffix += 1
                    if suffix > 1000:
                        raise
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            with os.fdopen(note, "w", encoding="utf-8") as handle:
                handle.write(f"{stamp}\n{safefiles.log_name(path.name)} was not ingested: "
                             f"{safefiles.log_name(reason, 2000)}\n")
            os.rename(path.name, name if not suffix else f"{name}.{suffix}", src_dir_fd=spool,
                      dst_dir_fd=folder)
        finally:
            os.close(folder)
    finally:
        os.close(spool)


def delete(paths: list[Path]) -> dict[Path, str]:
    """Delete committed files; returns those that could not be deleted, with why."""
    failed: dict[Path, str] = {}
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed[path] = _why_undeletable(path, exc)
    return failed


def _why_undeletable(path: Path, exc: OSError) -> str:
    try:
        folder, info = os.stat(path.parent), os.lstat(path)
    except OSError:
        return exc.strerror or str(exc)
    if folder.st_mode & stat.S_ISVTX and info.st_uid != os.geteuid():
        return (f"the spool folder is sticky (mode {stat.S_IMODE(folder.st_mode):o}) and the file "
                f"belongs to uid {info.st_uid}, not to the daemon's uid {os.geteuid()}")
    return f"{exc.strerror or exc} (folder mode {stat.S_IMODE(folder.st_mode):o}, uid {folder.st_uid})"


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


class SpoolReader:
    """Drains one spool folder into the database, file by file, deleting only what is committed."""

    def __init__(self, daemon: ServiceHost, folder: Path, stopped: StopFlag) -> None:
        self.daemon = daemon
        self.folder = folder
        self.stopped = stopped
        self.interval = daemon.settings.poll_interval
        self._attempts: dict[str, int] = {}
        self._suspects: dict[str, tuple[int, int]] = {}  # undecodable file -> its (size, mtime)
        # Files committed that could not be deleted, by identity: never applied again while they
        # stay as they are (a replay after a restart is stopped by the record's time instead).
        self._applied: dict[Path, tuple[int, int, int, int] | None] = {}
        self.stats: dict[str, Any] = {"spool_backlog": 0, "spool_ingested": 0, "spool_rejected": 0,
                                      "spool_mode": None, "spool_passes": 0}
        daemon.extra_status.update(self.stats)

    def _publish(self, backlog: int | None = None) -> None:
        if backlog is not None:
            self.stats["spool_backlog"] = backlog
        self.daemon.extra_status.update(self.stats)

    async def run(self) -> None:
        polled = self.daemon.settings.poll or await anyio.to_thread.run_sync(is_network_file_system,
                                                                             self.folder)
        self.stats["spool_mode"] = "poll" if polled else "notify"
        await self.drain()
        if not polled:
            try:
                await self._notified()
                return
            except Exception as exc:
                log.warning("cannot watch %s with inotify (%s): polling it instead", self.folder, exc)
                self.stats["spool_mode"] = "poll"
        while True:
            await anyio.sleep(self.interval)  # the poll period
            await self.drain()

    async def _notified(self) -> None:
        from watchfiles import awatch

        async for _ in awatch(self.folder, watch_filter=None, recursive=False, stop_event=self.stopped,
                              debounce=200, step=20, rust_timeout=max(50, int(self.interval * 1000)),
                              yield_on_timeout=True, force_polling=False):
            await self.drain()  # on a change, and on every timeout as a safety net

    async def drain(self) -> None:
        """Ingest every finished file; a file whose commit failed waits for the next drain."""
        held: set[Path] = set()
        while True:
            try:
                waiting = await anyio.to_thread.run_sync(spoolfile.pending, self.folder)
                self._publish(len(waiting))
                todo = [path for path in waiting if path not in held and not self._already(path)]
                if not todo:
                    self.stats["spool_passes"] += 1
                    self._publish()
                    return
                for start in range(0, len(todo), CHUNK):
                    held |= await self._ingest(todo[start:start + CHUNK])
            except Exception:  # the spool must never take the daemon down
                log.exception("spool: a pass over %s failed; the next pass retries", self.folder)
                return

    def _already(self, path: Path) -> bool:
        """Whether ``path`` is a committed file that could not be deleted, unchanged since."""
        if path not in self._applied:
            return False
        if _identity(path) == self._applied[path]:
            return True
        del self._applied[path]  # replaced by a new file of the same name: read it
        return False

    def _still(self, path: Path) -> bool:
        """Whether an undecodable file was already seen undecodable with this size and mtime."""
        try:
            stat = path.stat()
        except OSError:
            return False
        now = (stat.st_size, stat.st_mtime_ns)
        if self._suspects.get(path.name) == now:
            del self._suspects[path.name]
            return True
        self._suspects[path.name] = now
        return False

    async def _ingest(self, paths: list[Path]) -> set[Path]:
        """Commit one chunk; returns the files kept for a later pass."""
        decoded = await anyio.to_thread.run_sync(decode, paths)
        kept: set[Path] = set()
        refused = []
        for path, _, why in decoded:
            if why is not None:
                if await anyio.to_thread.run_sync(self._still, path):
                    refused.append((path, why))
                else:
                    kept.add(path)  # it may still be being written by a careless copy: look again
        ready = [(path, op) for path, op, _ in decoded if op is not None]
        outcomes = await self.daemon.committer.submit([op for _, op in ready]) if ready else []
        done = []
        for (path, _), outcome in zip(ready, outcomes, strict=True):
            if not isinstance(outcome, LensdError):
                done.append(path)
                self._attempts.pop(path.name, None)
                continue
            tries = self._attempts[path.name] = self._attempts.get(path.name, 0) + 1
            transient = isinstance(outcome, (StorageFull, DatabaseLocked))  # by sqlite's code, not its text
            if tries >= MAX_ATTEMPTS and not transient:
                refused.append((path, f"the database refused it {tries} times: {outcome}"))
            else:
                log.warning("spool: %s not stored (%s); kept for the next pass", safefiles.log_name(path.name),
                            outcome)
                kept.add(path)
        undeleted = await anyio.to_thread.run_sync(delete, done)  # only now: their ops are committed
        for path, why in undeleted.items():
            log.warning("spool: %s was stored but cannot be deleted (%s); it will not be applied "
                        "again", safefiles.log_name(path.name), why)
            self._applied[path] = _identity(path)
        if len(self._applied) > 100_000:  # a bound: the record's time still stops a replay
            self._applied.clear()
        rejected = 0
        for path, why in refused:
            log.warning("spool: rejected %s: %s", safefiles.log_name(path.name), safefiles.log_name(why, 500))
            try:
                await anyio.to_thread.run_sync(reject, path, why)
                rejected += 1
            except OSError as exc:
                log.error("spool: cannot move %s to %s/: %s", safefiles.log_name(path.name), REJECTED, exc)
                kept.add(path)
        self.stats["spool_ingested"] += len(done)
        self.stats["spool_rejected"] += rejected
        if done:
            log.info("spool: ingested %d files from %s", len(done), self.folder)
        self._publish(max(0, self.stats["spool_backlog"] - len(done) - rejected))
        return kept
