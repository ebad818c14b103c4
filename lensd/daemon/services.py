"""What the daemon's parts may use of the daemon: narrow protocols, and the stop flag.

The connection handlers, the folder watchers and the spool reader are started by the server but
must not import it (that was an import cycle): each types against the few things it uses here, and
``Daemon`` provides them. A service needs the settings, the committer, the database path and the
status dict it publishes its counters into; a connection also needs the reads, the status reply
and the stop request.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from lensd.daemon.committer import GroupCommitter
from lensd.daemon.flow import Shared
from lensd.daemon.reads import ReadService
from lensd.settings import Database, Settings


class ServiceHost(Protocol):
    """What a background service (watcher, spool reader) uses of the daemon."""

    settings: Settings
    committer: GroupCommitter
    database_path: Database  # a sqlite file's resolved path, or a PostgreSQL URL
    extra_status: dict[str, Any]  # published in ``status`` replies


class ConnectionHost(Protocol):
    """What a client connection uses of the daemon."""

    settings: Settings
    committer: GroupCommitter
    reads: ReadService
    flow: Shared

    async def status(self, own: int | None = None) -> dict[str, Any]: ...

    def request_stop(self) -> None: ...


class StopFlag:
    """watchfiles polls ``is_set()`` from its thread; the daemon stops by cancelling our task group,
    so the watch thread ends within one step instead of after its timeout."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope

    def is_set(self) -> bool:
        return self._scope.cancel_called
