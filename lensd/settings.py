"""Where things are: CLI option > environment > default, decided in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LOST_AFTER = 600.0


def default_db() -> Path:
    return Path(os.environ.get("LENSD_DB") or "lensd.sqlite")


def default_socket() -> Path:
    """``$LENSD_SOCKET``, else ``$XDG_RUNTIME_DIR/lensd.sock``, else ``~/.lensd/lensd.sock``."""
    explicit = os.environ.get("LENSD_SOCKET")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "lensd.sock"
    return Path.home() / ".lensd" / "lensd.sock"


def resolve_db(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_db()


def resolve_socket(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_socket()


@dataclass(frozen=True)
class Settings:
    """Everything a daemon run is configured by."""

    db: Path
    socket: Path
    watch: tuple[Path, ...] = ()
    spool: Path | None = None
    poll: bool = False
    poll_interval: float = 2.0
    lost_after: float = DEFAULT_LOST_AFTER
    durability: str = "full"
    batch_max: int = 512
    batch_ms: float = 2.0
    max_frame: int = 64 * 1024 * 1024
    max_connections: int = 512
    handshake_timeout: float = 10.0
    max_db_mb: int | None = None  # a quota: writes that would grow the database past it fail
    foreground: bool = False
    drain_timeout: float = 30.0
