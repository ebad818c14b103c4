"""``--backup-every``: the daemon copies its database to ``--backup-to`` on a timer.

The daemon's database sits on the local disk of its node (sqlite needs one); if that node is lost
for good, so is everything acknowledged since the last copy that lives elsewhere. This service
bounds that loss to the interval: every ``--backup-every`` minutes (15 by default; ``0`` or
``off``: never) it makes a consistent copy with sqlite's online backup API
(``lensd.store.backup``) in a worker thread, while the writer keeps committing. A failed backup is
one warning line and the next interval tries again; ``lensd status`` shows the last backup's time,
size and duration, and the last failure.

The first backup is due one interval after the newest one already in the folder (or after start):
a daemon restarted more often than the interval still makes them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from lensd.daemon.services import ServiceHost
from lensd.errors import LensdError
from lensd.store.backup import BackupDone, back_up, check_folder, default_folder

log = logging.getLogger("lensd.daemon")


class Backups:
    """The timer and the status of the backups of the daemon's sqlite database ``database``."""

    def __init__(self, host: ServiceHost, database: Path) -> None:
        self.host = host
        self.database = database
        self.folder = host.settings.backup_to or default_folder(database, host.settings.spool)
        self.interval = host.settings.backup_every * 60
        check_folder(database, self.folder)
        self.status: dict[str, Any] = {"every_minutes": host.settings.backup_every, "to": str(self.folder),
                                       "last_at": None, "last_seconds": None, "last_bytes": None,
                                       "error": None, "count": 0}
        host.extra_status["backup"] = self.status

    def _first_due(self) -> float:
        try:
            newest = (self.folder / self.database.name).stat().st_mtime
        except OSError:
            newest = time.time()
        return max(time.time(), newest + self.interval)

    async def run(self) -> None:
        due = self._first_due()
        while True:
            await anyio.sleep(max(0.0, due - time.time()))  # a period, not synchronisation
            await self.back_up_now()
            due = time.time() + self.interval

    async def back_up_now(self) -> BackupDone | None:
        """One backup (in a worker thread); None when it failed (logged, and kept in the status)."""
        settings = self.host.settings
        stop = threading.Event()
        try:
            # on a stop the daemon goes on at once; the copy ends at its next step and removes its .partial
            done = await anyio.to_thread.run_sync(back_up, self.database, self.folder,
                                                  settings.backup_keep, settings.shared_group, stop,
                                                  abandon_on_cancel=True)
        except (LensdError, OSError) as exc:
            reason = str(exc) if isinstance(exc, LensdError) else f"{exc.strerror or exc} ({exc.filename})"
            log.warning("backup to %s failed: %s; the next one is in %g minutes", self.folder, reason,
                        settings.backup_every)
            self.status["error"] = reason
            return None
        finally:
            stop.set()
        self.status.update(last_at=done.started, last_seconds=done.seconds, last_bytes=done.bytes,
                           error=None, count=self.status["count"] + 1)
        log.info("backed up the database to %s (%.1f MiB in %.1f s)", done.path, done.bytes / 2**20, done.seconds)
        # the copy's read snapshot held the WAL back while it ran
        await self.host.committer.writer.shrink_wal()
        return done
