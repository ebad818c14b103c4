"""Where PyAutoFit fits sit on disk, what names them, and how their bytes are reached.

Split from ``pyautofit.py`` so that module reads as "files -> record" while this one owns the
walk, zips, change signatures and identity by nesting. Nothing here parses a file's content.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import zipfile
import zlib
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Protocol

from lensd import safefiles
from lensd.errors import IngestError

MAX_FILE = 128 * 2**20  # one file (or zip member) of a fit: past this it is an attack, not a fit
MAX_FIT = 256 * 2**20  # every file of one fit together
MAX_ZIP_MEMBER = MAX_FILE  # the name older code and tests use
HEX_ID = re.compile(r"[0-9a-f]{32}")  # a PyAutoFit identifier: a folder so named is the fit's id
_ANALYSIS = re.compile(r"analysis_(\d+)")
_ZIPPED_ANALYSIS = re.compile(r"analyses/analysis_(\d+)/")
NOT_FITS = frozenset({"image", "files", "search_internal", "simulate"})  # a fit's own folders
_SIGNED_TOP = ("metadata", ".completed", ".is_grid_search", "results.csv")
_SIGNED_CHILD = ("metadata", ".completed", "files/samples_summary.json")
READ_SUFFIXES = (".json", ".csv", ".fits")  # what a fit's files/ gives its record (FITS: image/ too)
PICKLE_SUFFIXES = (".pickle", ".pkl", ".dill")  # listed to be noted as skipped, never opened


def _listed(name: str) -> bool:
    """Whether ``files/...`` or ``image/...`` (relative to a fit) belongs in its listing."""
    if name.startswith("image/"):
        return name.endswith(".fits")
    if not name.startswith("files/"):
        return False
    if name.startswith("files/search_internal/") or "/search_internal/" in name:
        return name.endswith(PICKLE_SUFFIXES)  # a search's saved state: pickles, never read
    return name.endswith((*READ_SUFFIXES, *PICKLE_SUFFIXES))


class Source(Protocol):
    """The files of one fit by relative name, wherever they are stored."""

    def read(self, name: str) -> bytes | None: ...
    def mtime(self, name: str) -> float | None: ...
    def listing(self) -> list[str]: ...


class _Folder:
    """A fit's folder. The folders opened on the way to its files are kept open (``close``), so
    each file costs one ``openat``, one ``fstat`` and one ``read``: a fit has seven or so."""

    def __init__(self, base: Path, listing: list[str] | None = None) -> None:
        self.base, self._prefix = base, f"{base}{os.sep}"  # str joins: pathlib costs show in a scan
        self._read = 0  # bytes read so far: one fit may not make the daemon hold more than MAX_FIT
        self._dirs: dict[str, int] = {}  # "" and "files" (...) -> an open descriptor of that folder
        self._listing = listing  # taken with the signature (``signed_listing``), when it was

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _dir(self, parts: list[str]) -> int:
        """The folder ``base/parts...``, each step opened without following a symlink."""
        key = "/".join(parts)
        fd = self._dirs.get(key)
        if fd is None:
            if not parts:
                fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                part = parts[-1]
                if part in ("", ".", "..") or "/" in part:
                    raise safefiles.UnsafeFile(f"{safefiles.log_name(part)}: not a plain name")
                try:
                    fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 dir_fd=self._dir(parts[:-1]))
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise safefiles.UnsafeFile(f"{safefiles.log_name(part)}/ is a symbolic link or not "
                                                   "a folder: not followed") from None
                    raise
            self._dirs[key] = fd
        return fd

    def read(self, name: str) -> bytes | None:
        """A file of the fit: never through a symlink, a regular file only, within the caps."""
        parts = name.split("/")
        try:
            fd, info = safefiles.open_regular(parts[-1], dir_fd=self._dir(parts[:-1]))
            try:
                data = _read_all(fd, info, min(MAX_FILE, MAX_FIT - self._read))
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        except safefiles.UnsafeFile as exc:
            raise IngestError(f"{name}: cannot read ({exc})") from None
        except OSError as exc:
            raise IngestError(f"{name}: cannot read ({exc.strerror or exc})") from None
        self._read += len(data)
        return data

    def mtime(self, name: str) -> float | None:
        try:
            return os.stat(self._prefix + name).st_mtime
        except OSError:
            return None

    def listing(self) -> list[str]:
        if self._listing is not None:
            return self._listing
        try:
            return sorted(name for name, _ in _output_files(self.base))
        except OSError as exc:
            raise IngestError(f"files: cannot list ({exc.strerror or exc})") from None


def _read_all(fd: int, info: os.stat_result, limit: int) -> bytes:
    """``safefiles.read_fd`` with the ``fstat`` the open took: one ``read`` when the size holds (a
    regular file reads short only at its end), more while it grows, refused past ``limit``."""
    if info.st_size > limit:
        raise safefiles.UnsafeFile(f"it is {info.st_size} bytes, over the limit of {limit}")
    chunks = [os.read(fd, min(info.st_size + 1, limit + 1))]
    total = len(chunks[0])
    if total <= info.st_size:
        return chunks[0]
    while chunks[-1]:
        if total > limit:
            raise safefiles.UnsafeFile(f"it grew past the limit of {limit} bytes while being read")
        chunks.append(os.read(fd, min(1 << 20, limit + 1 - total)))
        total += len(chunks[-1])
    return b"".join(chunks)


class _Zipped:
    """Members are read in memory, capped, so a hostile zip can neither fill memory nor escape."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str = "") -> None:
        self.archive, self.prefix = archive, prefix
        self._read = 0

    def read(self, name: str) -> bytes | None:
        try:
            info = self.archive.getinfo(self.prefix + name)
        except KeyError:
            return None
        limit = min(MAX_FILE, MAX_FIT - self._read)
        if info.file_size > limit:
            raise IngestError(f"{name}: {info.file_size} bytes unzipped, over the {limit} limit "
                              f"(a file may hold {MAX_FILE} bytes, a fit {MAX_FIT})")
        try:
            with self.archive.open(info) as f:
                data = f.read(limit + 1)  # the size in the header may lie
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise IngestError(f"{name}: corrupt zip member ({exc})") from None
        if len(data) > limit:
            raise IngestError(f"{name}: inflates past the limit of {limit} bytes")
        self._read += len(data)
        return data

    def mtime(self, name: str) -> float | None:
        try:
            return time.mktime((*self.archive.getinfo(self.prefix + name).date_time, 0, 0, -1))
        except (KeyError, OverflowError, ValueError):
            return None

    def listing(self) -> list[str]:
        names = (name[len(self.prefix):] for name in self.archive.namelist()
                 if name.startswith(self.prefix) and not name.endswith("/"))
        return sorted(name for name in names if _listed(name))


def _output_files(base: Path, rel: str = "") -> Iterator[tuple[str, os.DirEntry[str]]]:
    """The files of ``_listed`` under ``base/files`` and ``base/image``, by relative name."""
    for top in (("files", "image") if not rel else (rel,)):
        try:
            entries = list(os.scandir(base / top))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = f"{top}/{entry.name}"
            if entry.is_symlink():
                continue  # never followed: it could point out of the fit, at anybody's file
            if entry.is_dir(follow_symlinks=False):
                yield from _output_files(base, name)
            elif _listed(name):
                yield name, entry


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise IngestError(f"{path.name}: not a zip file") from None
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    for name in archive.namelist():
        if name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
            archive.close()
            raise IngestError(f"{path.name}: member {name!r} points outside the fit")
    return archive


def _zip_of(path: Path) -> Path | None:
    """The zip a path is, or lies inside of (``<id>.zip/analyses/analysis_0``)."""
    if ".zip" not in str(path):
        return None
    for candidate in (path, *path.parents):
        if candidate.suffix == ".zip" and candidate.is_file():
            return candidate
    return None


@contextmanager
def opened(path: Path, listing: list[str] | None = None) -> Iterator[tuple[Source, Source | None, Path]]:
    """(the fit's files, its owning fit's files if it is an analysis, its folder-like path).

    The folder-like path of a zip-only fit drops ``.zip``, so it is named as its folder was.
    ``listing``: the folder's, from ``signed_listing``, so it is not walked twice.
    """
    archive_path = _zip_of(path)
    if archive_path is not None:
        inner = path.relative_to(archive_path).as_posix()
        with _open_zip(archive_path) as archive:
            if inner == ".":
                yield _Zipped(archive), None, archive_path.with_suffix("")
            else:
                yield _Zipped(archive, inner + "/"), _Zipped(archive), archive_path.with_suffix("") / inner
        return
    if not path.is_dir():
        raise IngestError("no such folder" if not path.exists() else "neither a folder nor a zip")
    owner = path.parent.parent
    folders = [_Folder(path, listing)]
    if path.parent.name == "analyses" and _ANALYSIS.fullmatch(path.name) and (owner / "metadata").is_file():
        folders.append(_Folder(owner))
    try:
        yield folders[0], folders[1] if len(folders) > 1 else None, path
    finally:
        for folder in folders:
            folder.close()


def marks_fit(names: Container[str]) -> bool:
    """The fit-folder rule: a folder holding these names is a fit (``metadata``) or a grid or
    sensitivity root (``.is_grid_search``). Everything that walks for fits asks this."""
    return "metadata" in names or ".is_grid_search" in names


def is_fit_folder(folder: str | os.PathLike[str]) -> bool:
    """``marks_fit`` for a folder on disk, by at most two ``stat`` calls (no listing)."""
    return os.path.isfile(os.path.join(folder, "metadata")) or os.path.isfile(os.path.join(folder, ".is_grid_search"))


def discover(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Fits, grid roots, analyses and zip-only fits under root, parents first, in name order.

    Only directories are listed; a zip is opened (its table of contents only) when its folder is
    gone. An unlistable folder or a missing root is yielded all the same, so that reading it
    reports why instead of the walk hiding it. Symlinked folders are not followed (no cycles).
    """
    top = Path(os.path.abspath(root))
    if not top.is_dir():
        zipped = list(_zip_fits(top)) if top.suffix == ".zip" and top.is_file() else []
        yield from zipped or [top]
        return
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            yield folder
            continue
        files = {e.name for e in entries if e.is_file()}
        dirs = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        skip = NOT_FITS
        if marks_fit(files):
            yield folder
            if "metadata" in files and "analyses" in dirs:
                yield from _analysis_folders(folder / "analyses")
                skip = NOT_FITS | {"analyses"}
        for name in sorted(files):
            if name.endswith(".zip") and name[:-4] not in dirs:
                yield from _zip_fits(folder / name)
        stack.extend(folder / d for d in sorted(dirs, reverse=True) if d not in skip and d[0] != ".")


def _analysis_folders(analyses: Path) -> Iterator[Path]:
    try:
        names = [e.name for e in os.scandir(analyses) if e.is_dir() and _ANALYSIS.fullmatch(e.name)]
    except OSError:
        return
    yield from (analyses / name for name in sorted(names, key=lambda n: int(n[len("analysis_"):])))


def _zip_fits(path: Path) -> Iterator[Path]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        yield path  # an output zip that cannot be opened: reading it will say why
        return
    if marks_fit(names):
        yield path
        found = {int(m.group(1)) for n in names if (m := _ZIPPED_ANALYSIS.match(n))}
        yield from (path / "analyses" / f"analysis_{i}" for i in sorted(found))


def nested_fits(root: Path) -> list[Path]:
    """Fits (folders or zip-only) nested under a grid or sensitivity root, analyses left out."""
    return [p for p in discover(root) if p != root and p.parent.name != "analyses"]


def folder_signature(path: str | os.PathLike[str]) -> str:
    """sha1 over (name, size, mtime_ns) of every file a read uses: equal means nothing to re-read.

    For a zip, the zip itself; for an analysis, also its fit's metadata, .completed and
    search.json; for a grid or sensitivity root, also what its record takes from nested fits.
    """
    return signed_listing(path)[0]


def signed_listing(path: str | os.PathLike[str]) -> tuple[str, list[str] | None]:
    """``folder_signature``, and the folder's ``Source.listing`` taken by the same walk of its
    ``files/`` and ``image/`` (None for a zip, or a folder that could not be listed whole)."""
    top = Path(os.path.abspath(path))
    signed, listing = _signed(top)
    digest = hashlib.sha1(usedforsecurity=False)
    for name, stat in sorted(signed):
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest(), listing


def _signed(top: Path) -> tuple[list[tuple[str, os.stat_result]], list[str] | None]:
    archive = _zip_of(top)
    if archive is not None:
        return list(_stats(archive.parent, [archive.name])), None
    signed = list(_stats(top, _SIGNED_TOP))
    listing = None
    try:
        outputs = [(name, entry.stat()) for name, entry in _output_files(top)]
        listing = sorted(name for name, _ in outputs)
    except OSError:
        outputs = []  # unlistable, or changing under us: the read reports it, the next poll retries
    signed += outputs
    if top.parent.name == "analyses" and (top.parent.parent / "metadata").is_file():
        signed += _stats(top, ("../../metadata", "../../.completed", "../../files/search.json"))
    if any(name == ".is_grid_search" and S_ISREG(info.st_mode) for name, info in signed):
        for child in nested_fits(top):
            sub = child.relative_to(top).as_posix()
            signed += _stats(top, [sub] if child.suffix == ".zip" else [f"{sub}/{n}" for n in _SIGNED_CHILD])
    return signed, listing


def _stats(base: Path, names: Iterable[str]) -> Iterator[tuple[str, os.stat_result]]:
    prefix = f"{base}{os.sep}"  # str joins: pathlib costs show in a scan
    for name in names:
        try:
            yield name, os.stat(prefix + name)
        except OSError:
            continue


def identity(where: Path, root: Path | None, cache: dict[Path, Path | None]) -> tuple[str, str | None]:
    """(id, parent_id) of the fit or grid at ``where``, by the rules in pyautofit's docstring.

    ``cache`` maps folders to their nearest fit or grid, so a scan stats each ancestor once.
    """
    ancestor = _enclosing(where.parent, cache) if where.parent != where else None
    parent_id = None if ancestor is None else identity(ancestor, root, cache)[0]
    if HEX_ID.fullmatch(where.name):
        return where.name, parent_id
    if ancestor is not None:
        return f"{parent_id}/{where.relative_to(ancestor).as_posix()}", parent_id
    if root is not None and root in where.parents:
        return where.relative_to(root).as_posix(), None
    return where.name, None


def _enclosing(folder: Path, cache: dict[Path, Path | None]) -> Path | None:
    """The nearest fit or grid folder at or above ``folder``."""
    if folder not in cache:
        if is_fit_folder(folder):
            cache[folder] = folder
        else:
            cache[folder] = None if folder.parent == folder else _enclosing(folder.parent, cache)
    return cache[folder]
