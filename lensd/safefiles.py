"""Files and folders on paths other users may reach: explicit modes, no symlinks, bounded reads.

lensd writes its database, lock, log, socket folder and spool under paths that may sit in a shared
folder, and reads spool files and PyAutoFit folders that other people (or their jobs) wrote. So:

- every folder and file lensd creates gets its mode set explicitly (``fchmod``/``chmod`` after
  creation), whatever the umask: 0700/0600, or 0750/0640 with ``--shared-group``;
- a file it reads is opened ``O_NOFOLLOW | O_NONBLOCK``, must be a regular file on the opened
  descriptor (``S_ISREG``: not a FIFO, device or socket), and is read up to a byte cap; the
  refusal is one line naming the reason;
- a name read from a folder is logged escaped and shortened (``log_name``), so a file name with a
  newline cannot forge log lines.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

PRIVATE_FILE: Final = 0o600
PRIVATE_DIR: Final = 0o700
GROUP_FILE: Final = 0o640
GROUP_DIR: Final = 0o750
_LOG_NAME: Final = 120


class UnsafeFile(OSError):
    """A file lensd will not read or write: its one-line reason is ``str(exc)``."""


def file_mode(shared_group: bool = False) -> int:
    return GROUP_FILE if shared_group else PRIVATE_FILE


def dir_mode(shared_group: bool = False) -> int:
    return GROUP_DIR if shared_group else PRIVATE_DIR


def make_dirs(path: Path, mode: int = PRIVATE_DIR) -> None:
    """Create the missing folders of ``path``, each with exactly ``mode``; existing ones are left."""
    missing: list[Path] = []
    here = path
    while not os.path.lexists(here) and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue
        os.chmod(folder, mode)  # mkdir's mode went through the umask


def open_owned(path: Path, mode: int = PRIVATE_FILE, flags: int = os.O_RDWR, narrow: bool = True) -> int:
    """Open (creating it ``mode``) a file lensd owns; never through a symlink; returns the fd.

    A file of ours that is more open than ``mode`` is narrowed to it (a file left by an older
    release under a loose umask), unless ``narrow`` is False: the caller narrows it (``narrow_to``)
    once it knows the content is its own, since narrowing would make a file others could have
    written look trustworthy.
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link: lensd does not write through one") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{path} is not a regular file")
        if narrow:
            narrow_to(fd, mode, info)
    except BaseException:
        os.close(fd)
        raise
    return fd


def narrow_to(fd: int, mode: int, info: os.stat_result | None = None) -> None:
    """Set an open file of ours to exactly ``mode`` (another user's file is left as it is)."""
    info = info or os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(name: str | Path, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open a file to read: no symlink as its last component, no blocking open, regular only."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{log_name(str(name))} is a symbolic link: not followed") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFile(f"{log_name(str(name))} is {_kind(info.st_mode)}, not a regular file")
    return fd, info


def read_fd(fd: int, limit: int, what: str) -> bytes:
    """Everything in ``fd`` up to ``limit`` bytes; over it (the size may have lied) is refused."""
    info = os.fstat(fd)
    if info.st_size > limit:
        raise UnsafeFile(f"{what} is {info.st_size} bytes, over the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise UnsafeFile(f"{what} grew past the limit of {limit} bytes while being read")


def read_regular(path: str | Path, limit: int, dir_fd: int | None = None) -> bytes:
    """``open_regular`` then ``read_fd``: a bounded read of a regular file, never a symlink."""
    fd, _ = open_regular(path, dir_fd)
    try:
        return read_fd(fd, limit, log_name(str(path)))
    finally:
        os.close(fd)


def open_within(base: Path, parts: Sequence[str]) -> tuple[int, os.stat_result]:
    """Open ``base/parts...`` without following a symlink at any step below ``base``."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            if part in ("", ".", "..") or "/" in part:
                raise UnsafeFile(f"{log_name(part)}: not a plain name")
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFile(f"{log_name(part)}/ is a symbolic link or not a folder: "
                                     "not followed") from None
                raise
            os.close(fd)
            fd = inner
        return open_regular(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def log_name(name: str, limit: int = _LOG_NAME) -> str:
    """A name as it is safe to log: repr-escaped (no newline gets through), at most ``limit``."""
    text = repr(name)[1:-1]
    return text if len(text) <= limit else f"{text[:limit]}...({len(name)} characters)"


def others_can_write(path: Path) -> bool:
    """Whether users other than the owner (and its group) may create files in ``path``."""
    try:
        return bool(os.stat(path).st_mode & stat.S_IWOTH)
    except OSError:
        return False
