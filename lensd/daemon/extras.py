"""Optional services of the daemon, started when their options are given (watch, spool)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

if TYPE_CHECKING:
    from lensd.daemon.server import Daemon


async def start(daemon: Daemon, group: TaskGroup) -> None:
    """Start the folder watchers and the spool reader that the settings ask for."""
    del daemon, group
