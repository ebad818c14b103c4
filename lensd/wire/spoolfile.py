"""Spool files: a write op saved to a shared folder when the daemon cannot be reached.

One file per op, ``<time>-<host>-<pid>-<random>.lensd``, holding the msgpack map
``{"op": ..., "fields": {...}, "v": 1}``. It is written under a dot-name, fsynced, then renamed,
so a reader never sees half a file; the daemon deletes it only after the op is committed.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Any, Final

from lensd import safefiles
from lensd.errors import InvalidRecord, LensdError, ProtocolError
from lensd.wire import codec
from lensd.wire.protocol import WRITE_OPS

SUFFIX: Final = ".lensd"
SPOOL_VERSION: Final = 1
MAX_SPOOL_FILE: Final = 64 * 1024 * 1024  # as large as a frame: what a client could have sent


def write(directory: str | os.PathLike[str], op: str, fields: dict[str, Any]) -> Path:
    """Save one write op atomically; returns the final path.

    The file records when it was written (``"t"``): the daemon never lets a whole record older
    than the fit's last change replace it, so a replayed file cannot move a fit backwards. It is
    created 0600 (0640 in a group-writable team spool) whatever the umask, never through a symlink.
    """
    if op not in WRITE_OPS:
        raise InvalidRecord(f"{op!r} cannot be spooled")
    folder = Path(directory)
    safefiles.make_dirs(folder, safefiles.PRIVATE_DIR)
    name = f"{time.time():.6f}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
    final = folder / name
    temporary = folder / f".{name}.tmp"
    data = codec.pack({"v": SPOOL_VERSION, "op": op, "fields": fields, "t": time.time()})
    team = os.stat(folder).st_mode & stat.S_IWGRP
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o640 if team else 0o600)
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
    op, fields, _ = load(path)
    return op, fields


def load(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any], float | None]:
    """``read``, plus when the file says it was written (None for a file that does not say)."""
    try:  # a regular file only, never through a symlink, never more than the cap
        data = safefiles.read_regular(Path(path), MAX_SPOOL_FILE)
    except OSError as exc:
        reason = str(exc) if isinstance(exc, safefiles.UnsafeFile) else (exc.strerror or str(exc))
        raise ProtocolError(f"cannot read spool file: {reason}") from None
    try:
        message = codec.unpack(data)
    except LensdError as exc:
        raise ProtocolError(f"not a lensd spool file: {exc}") from None
    if not isinstance(message, dict) or message.get("v") != SPOOL_VERSION:
        raise ProtocolError("not a lensd spool file of version 1")
    op, fields, written = message.get("op"), message.get("fields"), message.get("t")
    if not isinstance(op, str) or op not in WRITE_OPS or not isinstance(fields, dict):
        raise ProtocolError(f"spool file holds no write op (op={op!r})")
    if not isinstance(written, (int, float)) or isinstance(written, bool) or not math.isfinite(written):
        written = None
    return str(op), fields, None if written is None else float(written)


def pending(directory: str | os.PathLike[str]) -> list[Path]:
    """Finished spool files, oldest first (names start with their time)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
