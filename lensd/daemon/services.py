"""Optional services of the daemon, started when their options are given (watch, spool).

They run in the daemon's background task group, so stopping the daemon cancels them; the
watchfiles threads they use are told to stop through that group's cancel scope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread
from anyio.abc import TaskGroup

from lensd.errors import LensdError

if TYPE_CHECKING:
    from lensd.daemon.server import Daemon


async def start(daemon: Daemon, group: TaskGroup) -> None:
    """Start the folder watchers and the spool reader that the settings ask for (without waiting
    for their catch-up scans: the daemon serves while they read)."""
    settings = daemon.settings
    if settings.watch:
        from lensd.daemon.watcher import Watcher

        group.start_soon(Watcher(daemon, group.cancel_scope).run)
    if settings.spool is not None:
        from lensd.daemon.spoolwatch import SpoolReader
        from lensd.daemon.watcher import StopFlag

        folder = settings.spool
        try:  # before "ready": clients may drop files the moment the daemon says it serves
            await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise LensdError(f"cannot create the spool folder {folder}: {exc.strerror or exc}") from None
        group.start_soon(SpoolReader(daemon, settings.spool, StopFlag(group.cancel_scope)).run)
