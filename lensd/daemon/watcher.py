"""Watched PyAutoFit output folders (``--watch DIR``): a catch-up scan, then changes as they come.

Jobs on other nodes write plain PyAutoFit output to a shared file system, where inotify cannot see
other nodes' writes. So each root is either *notified* (watchfiles over inotify, local disks) or
*polled* (``--poll``, and by itself when the root is on NFS, Lustre, GPFS, ...).

Polling is lensd's own light walker (``changes.TreeWalker``), not watchfiles' poller, which stats
every file of the tree on every pass: ~6x the CPU on 10,000 fits (bench/watch_poll.py). A notified
root is walked too, every ``NOTIFY_WALK_EVERY`` seconds, because inotify drops events when its queue
overflows and misses files made in a new directory before its watch exists. Every ``VERIFY_EVERY``
seconds each fit is checked in full: a file rewritten in place moves no directory's mtime.

However a change was noticed, the decision is one rule: a fit is read only when its
``folder_signature`` differs from the one remembered (seeded from the database at start, so a
restart re-reads nothing unchanged), and the signature is remembered once the commit is done: a fit
is stored once per change of its files. Fits without ``.completed`` are re-checked on every pass and
stored as ``running``; ``.completed`` changes the signature, so the finished fit is stored once more.
An unreadable folder is logged with the reason and remembered too: it is retried when it changes,
and so is a fit waiting to hold still or whose commit failed (``_recheck``, examined every pass).
Reading folders is blocking IO and parsing, so it runs in worker threads, a chunk at a time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lensd.daemon.folderscan import Seen, TreeWalker, affected, examine, exists, expand
from lensd.daemon.services import ServiceHost, StopFlag
from lensd.domain.records import Record
from lensd.errors import LensdError
from lensd.ingest.run import stored_signatures
from lensd.mounts import is_network_file_system
from lensd.store.writeops import Upsert

log = logging.getLogger("lensd.watch")
logging.getLogger("watchfiles.main").setLevel(logging.WARNING)  # its "N changes detected" drowns ours
CHUNK = 64  # fits read per worker-thread call: small enough that stopping never waits long
NOTIFY_WALK_EVERY = 60.0  # a notified root is also walked this often: inotify can drop events
VERIFY_EVERY = 600.0


class Watcher:
    """Every ``--watch`` root of one daemon; signatures are shared, so a fit is one fit."""

    def __init__(self, daemon: ServiceHost, scope: anyio.CancelScope) -> None:
        self.daemon = daemon
        self.settings = daemon.settings
        self.stopped = StopFlag(scope)
        self.signatures: dict[str, str] = {}
        self._recheck: dict[Path, set[str]] = {}  # fits waiting to keep still, or failed to read or store
        self._waiting: dict[str, tuple[tuple[str, str | None], float]] = {}
        self.stats: dict[str, Any] = {"watch_passes": 0, "watch_ingested": 0, "watch_failed": 0,
                                      "watch_modes": {}}
        daemon.extra_status.update(self.stats)

    def _publish(self) -> None:
        self.daemon.extra_status.update(self.stats)

    async def run(self) -> None:
        stored = await anyio.to_thread.run_sync(stored_signatures, self.daemon.database_path)
        self.signatures.update(stored)
        async with anyio.create_task_group() as group:
            for root in self.settings.watch:
                group.start_soon(self._watch, root)

    async def _watch(self, given: Path) -> None:
        root = Path(await anyio.to_thread.run_sync(os.path.realpath, given))
        walker = TreeWalker(str(root))
        polled = self.settings.poll or await anyio.to_thread.run_sync(is_network_file_system, root)
        self.stats["watch_modes"][str(given)] = "poll" if polled else "notify"
        await self._pass(walker, root)  # the catch-up scan: every fit is new to the walker
        if not polled:
            try:
                await self._notified(walker, root)
                return
            except Exception as exc:  # e.g. the inotify watch limit on a huge tree
                log.warning("cannot watch %s with inotify (%s): polling it instead", root, exc)
                self.stats["watch_modes"][str(given)] = "poll"
        verify_at = anyio.current_time() + VERIFY_EVERY
        while True:
            await anyio.sleep(self.settings.poll_interval)  # the poll period
            everything = anyio.current_time() >= verify_at
            if everything:
                verify_at = anyio.current_time() + VERIFY_EVERY
            await self._pass(walker, root, everything)

    async def _notified(self, walker: TreeWalker, root: Path) -> None:
        from watchfiles import awatch

        walked = verified = anyio.current_time()
        async for changes in awatch(root, watch_filter=None, stop_event=self.stopped, debounce=400,
                                    rust_timeout=max(50, int(self.settings.poll_interval * 1000)),
                                    yield_on_timeout=True, force_polling=False):
            paths = {path for _, path in changes}
            if paths or self._recheck.get(root):  # a timeout: time to read fits that kept still
                try:
                    dirty = await anyio.to_thread.run_sync(affected, paths, str(root)) if paths else set()
                    await self._ingest(dirty, root)
                except Exception:
                    log.exception("watch: handling changes under %s failed", root)
            now = anyio.current_time()
            if now - walked >= NOTIFY_WALK_EVERY:
                walked = now
                everything = now - verified >= VERIFY_EVERY
                verified = now if everything else verified
                await self._pass(walker, root, everything)

    async def _pass(self, walker: TreeWalker, root: Path, everything: bool = False) -> None:
        try:
            dirty = await anyio.to_thread.run_sync(walker.walk, everything)
            await self._ingest(dirty, root)
        except Exception:  # never let one bad pass end the watcher (or the daemon)
            log.exception("watch: a pass over %s failed; the next pass retries", root)
        self.stats["watch_passes"] += 1
        self._publish()

    async def _ingest(self, dirty: set[str], root: Path) -> None:
        fits = await anyio.to_thread.run_sync(expand, dirty)
        recheck = self._recheck.setdefault(root, set())
        recheck.difference_update([path for path in recheck if not exists(path)])
        fits += sorted(recheck - set(fits))
        for start in range(0, len(fits), CHUNK):
            seen = await anyio.to_thread.run_sync(examine, fits[start:start + CHUNK], root, self.signatures,
                                                  self._waiting, self.settings.poll_interval)
            await self._store(seen, root)

    async def _store(self, seen: list[Seen], root: Path) -> None:
        recheck = self._recheck.setdefault(root, set())
        for item in seen:
            recheck.discard(item.path)
            if item.waiting:
                recheck.add(item.path)
            elif item.reason is not None:
                recheck.add(item.path)
                self.signatures[item.source] = item.signature  # retried only once it changes
                self.stats["watch_failed"] += 1
                log.log(logging.INFO if item.running else logging.WARNING,
                        "watch: skipped %s: %s (retried when it changes)", item.path, item.reason)
        good = [item for item in seen if item.records]
        if not good:
            return
        outcomes = await self.daemon.committer.submit([Upsert(r) for item in good for r in item.records])
        position = 0
        stored: list[Record] = []
        for item in good:
            results = outcomes[position:position + len(item.records)]
            position += len(item.records)
            errors = [outcome for outcome in results if isinstance(outcome, LensdError)]
            if errors:
                log.warning("watch: could not store %s: %s (retried next pass)", item.path, errors[0])
                recheck.add(item.path)
            else:
                self.signatures[item.source] = item.signature
                stored.extend(item.records)
        if stored:
            running = sum(record.status == "running" for record in stored)
            self.stats["watch_ingested"] += len(stored)
            log.info("watch: ingested %d records (%d running) under %s", len(stored), running, root)
        self._publish()
