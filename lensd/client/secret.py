"""The shared secret behind TCP authentication: one file, private to its user, like an SSH key.

The daemon makes it on first start (32 random bytes, mode 0600, in a folder of mode 0700) and
refuses to start when the file or its folder can be read or written by others: a secret anyone
can read authenticates anyone. Clients read the same file, which a cluster's shared home folder
carries to every node. The bytes are never logged and never sent (``lensd.wire.auth``).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Final

from lensd.errors import AuthenticationFailed, LensdError
from lensd.wire.auth import SECRET_MIN_BYTES

SECRET_BYTES: Final = 32
MAX_SECRET_BYTES: Final = 4096


def default_secret_file() -> Path:
    """``$LENSD_SECRET_FILE``, else ``~/.lensd/secret``."""
    explicit = os.environ.get("LENSD_SECRET_FILE")
    return Path(explicit) if explicit else Path.home() / ".lensd" / "secret"


def resolve_secret_file(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else default_secret_file()


def _open_to_others(mode: int) -> bool:
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def _refuse(path: Path, what: str, mode: int, fix: str) -> LensdError:
    return LensdError(f"the secret {what} {path} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                      f"fix it with: {fix}")


def check_private(path: Path) -> None:
    """Refuse a secret file or folder that others may read or write (one line naming the fix)."""
    folder = path.parent
    folder_mode = folder.stat().st_mode
    if _open_to_others(folder_mode):
        raise _refuse(folder, "folder", folder_mode, f"chmod 700 {folder}")
    file_mode = path.lstat().st_mode
    if not stat.S_ISREG(file_mode):
        raise LensdError(f"the secret file {path} is not a regular file; remove it and start again")
    if _open_to_others(file_mode):
        raise _refuse(path, "file", file_mode, f"chmod 600 {path}")


def ensure_secret(path: Path) -> bytes:
    """The daemon's secret: made on first start, checked private on every start."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        os.chmod(folder, 0o700)  # whatever the umask
    if not path.exists() and not path.is_symlink():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            fd = -1  # another daemon made it just now: read theirs
        if fd >= 0:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, secrets.token_bytes(SECRET_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
    check_private(path)
    return read_secret(path)


def read_secret(path: Path) -> bytes:
    """The secret's bytes; AuthenticationFailed in one line when a client cannot have it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AuthenticationFailed(
            f"TCP to the daemon needs its secret, and {path} does not exist: copy the daemon's "
            f"~/.lensd/secret there (mode 0600) or give --secret-file") from None
    except OSError as exc:
        raise AuthenticationFailed(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise AuthenticationFailed(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    if not SECRET_MIN_BYTES <= len(data) <= MAX_SECRET_BYTES:
        raise AuthenticationFailed(f"the secret file {path} holds {len(data)} bytes; a secret is "
                                   f"{SECRET_MIN_BYTES} to {MAX_SECRET_BYTES} bytes (remove it: the "
                                   "daemon makes a new one)")
    return data
