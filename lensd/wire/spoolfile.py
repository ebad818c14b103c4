"""Spool files: a write op saved to a shared folder when the daemon cannot be reached.

One file per op, ``<time>-<host>-<pid>-<random>.lensd``, holding the msgpack map
``{"op": ..., "fields": {...}, "v": 1}``. It is written under a dot-name, fsynced, then renamed,
so a reader never sees half a file; the daemon deletes it only after the op is committed.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Final

from lensd.errors import InvalidRecord, LensdError, ProtocolError
from lensd.wire import codec
from lensd.wire.protocol import WRITE_OPS

SUFFIX: Final = ".lensd"
SPOOL_VERSION: Final = 1
MAX_SPOOL_FILE: Final = 256 * 1024 * 1024


def write(directory: str | os.PathLike[str], op: str, fields: dict[str, Any]) -> Path:
    """Save one write op atomically; returns the final path."""
    if op not in WRITE_OPS:
        raise InvalidRecord(f"{op!r} cannot be spooled")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
    final = folder / name
    temporary = folder / f".{name}.tmp"
    data = codec.pack({"v": SPOOL_VERSION, "op": op, "fields": fields})
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, final)
    try:  # make the rename itself durable
        directory_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except OSError:
        pass
    return final


def read(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """Load one spool file; ProtocolError says why a file is unusable."""
    target = Path(path)
    try:
        size = target.stat().st_size
        if size > MAX_SPOOL_FILE:
            raise ProtocolError(f"spool file is {size} bytes, over the {MAX_SPOOL_FILE} limit")
        data = target.read_bytes()
    except OSError as exc:
        raise ProtocolError(f"cannot read spool file: {exc}") from None
    try:
        message = codec.unpack(data)
    except LensdError as exc:
        raise ProtocolError(f"not a lensd spool file: {exc}") from None
    if not isinstance(message, dict) or message.get("v") != SPOOL_VERSION:
        raise ProtocolError("not a lensd spool file of version 1")
    op, fields = message.get("op"), message.get("fields")
    if not isinstance(op, str) or op not in WRITE_OPS or not isinstance(fields, dict):
        raise ProtocolError(f"spool file holds no write op (op={op!r})")
    return str(op), fields


def pending(directory: str | os.PathLike[str]) -> list[Path]:
    """Finished spool files, oldest first (names start with their time)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
