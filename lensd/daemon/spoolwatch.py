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

import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lensd.daemon.services import ServiceHost, StopFlag
from lensd.errors import DatabaseLocked, LensdError, StorageFull
from lensd.mounts import is_network_file_system
from lensd.store.writeops import Op, op_from_request
from lensd.wire import spoolfile

log = logging.getLogger("lensd.wire.spoolfile")
CHUNK = 256  # files committed together: one transaction, then one round of deletes
MAX_ATTEMPTS = 5
REJECTED = "rejected"


def decode(paths: list[Path]) -> list[tuple[Path, Op | None, str | None]]:
    """(file, its op, None) or (file, None, why it is refused); vanished files are left out."""
    found: list[tuple[Path, Op | None, str | None]] = []
    for path in paths:
        try:
            op, fields = spoolfile.read(path)
            found.append((path, op_from_request(op, fields), None))
        except LensdError as exc:
            if path.exists():  # else another reader took it, or its writer withdrew it
                found.append((path, None, str(exc)))
        except Exception as exc:  # anything a hostile file can provoke is a reason, not a crash
            found.append((path, None, f"unexpected {type(exc).__name__}: {exc}"))
    return found


def reject(path: Path, reason: str) -> None:
    """Move a spool file to ``rejected/``, the note first (a crash in between re-rejects it)."""
    folder = path.parent / REJECTED
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    (folder / f"{path.name}.why.txt").write_text(f"{stamp}\n{path.name} was not ingested: {reason}\n")
    os.replace(path, folder / path.name)


def delete(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class SpoolReader:
    """Drains one spool folder into the database, file by file, deleting only what is committed."""

    def __init__(self, daemon: ServiceHost, folder: Path, stopped: StopFlag) -> None:
        self.daemon = daemon
        self.folder = folder
        self.stopped = stopped
        self.interval = daemon.settings.poll_interval
        self._attempts: dict[str, int] = {}
        self._suspects: dict[str, tuple[int, int]] = {}  # undecodable file -> its (size, mtime)
        self.stats: dict[str, Any] = {"spool_backlog": 0, "spool_ingested": 0, "spool_rejected": 0,
                                      "spool_mode": None}
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
                todo = [path for path in waiting if path not in held]
                if not todo:
                    return
                for start in range(0, len(todo), CHUNK):
                    held |= await self._ingest(todo[start:start + CHUNK])
            except Exception:  # the spool must never take the daemon down
                log.exception("spool: a pass over %s failed; the next pass retries", self.folder)
                return

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
                log.warning("spool: %s not stored (%s); kept for the next pass", path.name, outcome)
                kept.add(path)
        await anyio.to_thread.run_sync(delete, done)  # only now: their ops are committed
        rejected = 0
        for path, why in refused:
            log.warning("spool: rejected %s: %s", path.name, why)
            try:
                await anyio.to_thread.run_sync(reject, path, why)
                rejected += 1
            except OSError as exc:
                log.error("spool: cannot move %s to %s/: %s", path.name, REJECTED, exc)
                kept.add(path)
        self.stats["spool_ingested"] += len(done)
        self.stats["spool_rejected"] += rejected
        if done:
            log.info("spool: ingested %d files from %s", len(done), self.folder)
        self._publish(max(0, self.stats["spool_backlog"] - len(done) - rejected))
        return kept
