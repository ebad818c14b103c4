"""sqlite3 and OSError exceptions as lensd errors: the one place that decides what they mean.

sqlite tells "full" from "locked" from "not a database" by its error code
(``sqlite3.Error.sqlite_errorcode``; the low byte is the primary code), never by message text,
which differs between sqlite versions and locales. The file system tells "read-only" and "no
space" by ``errno``. Every module that catches ``sqlite3.Error`` or an ``OSError`` about the
database's files hands it here, so a user sees the same one-line message wherever it happened.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

from lensd.errors import DatabaseLocked, StorageError, StorageFull, UnsupportedDatabase

_FULL: Final = frozenset({sqlite3.SQLITE_FULL})
_LOCKED: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_NOT_A_DATABASE: Final = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})
_READ_ONLY: Final = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def primary_code(exc: BaseException) -> int | None:
    """sqlite's primary result code of ``exc`` (SQLITE_FULL, SQLITE_BUSY, ...), None if it has none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_full(exc: BaseException) -> bool:
    return primary_code(exc) in _FULL or (isinstance(exc, OSError) and exc.errno in _NO_SPACE)


def is_locked(exc: BaseException) -> bool:
    return primary_code(exc) in _LOCKED


def storage_error(exc: BaseException, what: str = "") -> StorageError:
    """A sqlite3 or OSError exception as the lensd error a user can act on; ``what`` names the
    file or the operation (``"cannot open x.sqlite"``) and starts the message when given."""
    prefix = f"{what}: " if what else ""
    text = str(exc) or type(exc).__name__
    code = primary_code(exc)
    if is_full(exc):
        return StorageFull(f"{prefix}database or disk is full ({text}); free space, then resend")
    if code in _LOCKED:
        return DatabaseLocked(f"{prefix}database is locked by another process ({text})")
    if code in _NOT_A_DATABASE:
        return UnsupportedDatabase(f"{prefix}not a sqlite database ({text})")
    if isinstance(exc, OSError):
        return os_error(exc, what)
    if code in _READ_ONLY:
        return StorageError(f"{prefix}cannot write ({text}): is its folder read-only or not yours?")
    return StorageError(f"{prefix}sqlite error: {text}")


def os_error(exc: OSError, what: str = "") -> StorageError:
    """An OSError about the database's files (the database, its .lock, .log, -wal) as one line."""
    prefix = f"{what}: " if what else ""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        return StorageFull(f"{prefix}no space left ({reason}); free space, then retry")
    if exc.errno in _NOT_WRITABLE:
        return StorageError(f"{prefix}{reason}: the folder is read-only or not yours; "
                            "choose a --db in a folder you can write")
    if exc.errno == errno.ENOENT:
        return StorageError(f"{prefix}{reason}")
    return StorageError(f"{prefix}{reason}")


def check_db_folder(db: Path) -> None:
    """Refuse a database whose folder does not exist: a typo in ``--db`` must not create folders
    and an empty database somewhere unexpected."""
    folder = db.parent if str(db.parent) else Path(".")
    if not folder.exists():
        raise StorageError(f"no folder {folder} for the database {db.name}: create it first "
                           f"(mkdir -p {folder}) or fix the --db path")
    if not folder.is_dir():
        raise StorageError(f"{folder} is not a folder, so it cannot hold the database {db.name}")


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """The ``file:`` URI that opens ``path`` read-only. The path is percent-quoted: a ``#`` or ``?``
    in it would otherwise end the path and open a different file."""
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"
