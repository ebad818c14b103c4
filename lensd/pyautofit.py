"""PyAutoFit output folders -> fit records (SPEC §2), reading only JSON and CSV files.

Pickles and dill files are never opened and no class path found in the data is imported: a
results folder is untrusted input, so opening it must not run code.

Identity comes from the folders, never from hashing search.json and model.json (PyAutoFit's
scraper does that, and its ids change when either file's format changes between releases):

- a folder named by 32 lowercase hex digits is PyAutoFit's identifier and is the id;
- any other fit (grid cell, sensitivity ``<cell>/[base]``) is ``<id of the nearest enclosing fit
  or grid folder>/<relative path>``; the enclosing folder is also its ``parent_id``. The walk up
  goes past the scan root, so a cell gets the same id whether its grid or the cell was scanned;
- a non-hex fit with no enclosing fit takes its path relative to the scan root (its folder name
  when there is no root), the only stable name left;
- ``analyses/analysis_<i>`` of a multi-analysis fit is a child record ``<fit id>_<i>``, as
  PyAutoFit's database names them; it inherits name, tags and status from its fit.

A zip PyAutoFit wrote beside a folder is read only when the folder is gone. A grid or sensitivity
root's ``max_log_likelihood`` is the best ``samples_summary.json`` likelihood of the fits nested
in it (for a grid search, the best cell), not a column of ``results.csv``: there it is the
increase over the base fit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from lensd.errors import IngestError

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_ANALYSIS = re.compile(r"analysis_(\d+)")
_NOT_FITS = frozenset({"image", "files", "search_internal", "simulate"})
_OWN_JSON = frozenset({"model", "search", "info", "samples_summary"})  # record fields, not ``files`` entries
_SIGNED_TOP = ("metadata", ".completed", ".is_grid_search", "results.csv")
_SAMPLE_COLUMNS = ("log_likelihood", "log_prior", "weight")
MAX_ZIP_MEMBER = 512 * 2**20  # a member inflating past this is a zip bomb, not a fit


@dataclass(frozen=True)
class FolderFailure:
    """A folder scan could not read; ``reason`` is one line naming the file and the fault."""

    path: str
    reason: str


class _Source(Protocol):
    def read(self, name: str) -> bytes | None: ...
    def mtime(self, name: str) -> float | None: ...
    def listing(self) -> list[str]: ...


class _Folder:
    """A fit's files on disk."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def read(self, name: str) -> bytes | None:
        try:
            with open(self.base / name, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IngestError(f"{name}: cannot read ({exc.strerror or exc})") from None

    def mtime(self, name: str) -> float | None:
        try:
            return os.stat(self.base / name).st_mtime
        except OSError:
            return None

    def listing(self) -> list[str]:
        try:
            return sorted(name for name, _ in _walk_files(self.base, "files"))
        except OSError as exc:
            raise IngestError(f"files: cannot list ({exc.strerror or exc})") from None


class _Zipped:
    """A fit's files inside PyAutoFit's zip, read in memory with a cap on every member."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str = "") -> None:
        self.archive, self.prefix = archive, prefix

    def read(self, name: str) -> bytes | None:
        try:
            info = self.archive.getinfo(self.prefix + name)
        except KeyError:
            return None
        if info.file_size > MAX_ZIP_MEMBER:
            raise IngestError(f"{name}: {info.file_size} bytes unzipped, over the {MAX_ZIP_MEMBER} limit")
        try:
            with self.archive.open(info) as f:
                data = f.read(MAX_ZIP_MEMBER + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise IngestError(f"{name}: corrupt zip member ({exc})") from None
        if len(data) > MAX_ZIP_MEMBER:
            raise IngestError(f"{name}: inflates past the {MAX_ZIP_MEMBER} byte limit")
        return data

    def mtime(self, name: str) -> float | None:
        try:
            return time.mktime((*self.archive.getinfo(self.prefix + name).date_time, 0, 0, -1))
        except (KeyError, OverflowError, ValueError):
            return None

    def listing(self) -> list[str]:
        start = self.prefix + "files/"
        return sorted(name[len(self.prefix):] for name in self.archive.namelist()
                      if name.startswith(start) and not name.endswith("/")
                      and not name.startswith(start + "search_internal/"))


def _walk_files(base: Path, rel: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """JSON and CSV files under ``base/rel`` by relative name; search_internal holds pickles."""
    try:
        entries = list(os.scandir(base / rel))
    except FileNotFoundError:
        return
    for entry in entries:
        name = f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "search_internal":
                yield from _walk_files(base, name)
        elif entry.name.endswith((".json", ".csv")):
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
    """The zip a path is (or is inside of), for zip-only fits and their analyses."""
    for candidate in (path, *path.parents):
        if candidate.suffix == ".zip" and candidate.is_file():
            return candidate
    return None


@contextmanager
def _opened(path: Path) -> Iterator[tuple[_Source, _Source | None, Path]]:
    """(files of the fit, files of the fit owning it when it is an analysis, folder-like path)."""
    archive_path = _zip_of(path)
    if archive_path is not None:
        inner = path.relative_to(archive_path).as_posix()
        with _open_zip(archive_path) as archive:
            own = _Zipped(archive, f"{inner}/" if inner != "." else "")
            yield own, (_Zipped(archive) if inner != "." else None), archive_path.with_suffix("") / inner
        return
    if not path.is_dir():
        raise IngestError("no such folder" if not path.exists() else "neither a folder nor a zip")
    owner = path.parent.parent
    is_analysis = (path.parent.name == "analyses" and _ANALYSIS.fullmatch(path.name) is not None
                   and (owner / "metadata").is_file())
    yield _Folder(path), (_Folder(owner) if is_analysis else None), path


def discover(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Fits, grid roots, analyses and zip-only fits under root, parents first, in name order.

    Only directories are listed (zips are opened only when their folder is gone, to see their
    table of contents); an unlistable folder or a missing root is yielded so that reading it
    reports why instead of the walk hiding it.
    """
    top = Path(os.path.abspath(root))
    if not top.is_dir():
        yield top
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
        skip = _NOT_FITS
        if "metadata" in files or ".is_grid_search" in files:
            yield folder
            if "metadata" in files and "analyses" in dirs:
                yield from _analysis_folders(folder / "analyses")
                skip = _NOT_FITS | {"analyses"}
        for name in sorted(files):
            if name.endswith(".zip") and name[:-4] not in dirs:
                yield from _zip_fits(folder / name)
        stack.extend(folder / d for d in sorted(dirs, reverse=True) if d not in skip and d[0] != ".")


def _analysis_folders(analyses: Path) -> Iterator[Path]:
    try:
        names = [e.name for e in os.scandir(analyses) if e.is_dir() and _ANALYSIS.fullmatch(e.name)]
    except OSError:
        return
    yield from (analyses / name for name in sorted(names, key=lambda n: int(n[9:])))


def _zip_fits(path: Path) -> Iterator[Path]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        yield path  # named like an output zip but unreadable: reading it will say why
        return
    if "metadata" in names or ".is_grid_search" in names:
        yield path
        found = {m.group(1) for n in names if (m := re.match(r"analyses/analysis_(\d+)/", n))}
        yield from (path / "analyses" / f"analysis_{i}" for i in sorted(found, key=int))


def folder_signature(path: str | os.PathLike[str]) -> str:
    """sha1 over (name, size, mtime_ns) of every file a read uses: equal means nothing to re-read."""
    top = Path(os.path.abspath(path))
    digest = hashlib.sha1(usedforsecurity=False)
    for name, stat in sorted(_signed(top)):
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _signed(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    archive = _zip_of(top)
    if archive is not None:
        yield from _stats(archive.parent, [archive.name])
        return
    yield from _stats(top, _SIGNED_TOP)
    for name, entry in _walk_files(top, "files"):
        yield name, entry.stat()
    if top.parent.name == "analyses" and (top.parent.parent / "metadata").is_file():
        yield from _stats(top, ("../../metadata", "../../.completed", "../../files/search.json"))
    if (top / ".is_grid_search").is_file():  # the root's record summarises its nested fits
        for child in _nested_fits(top):
            sub = child.relative_to(top).as_posix()
            own = ("metadata", ".completed", "files/samples_summary.json")
            yield from _stats(top, [sub] if child.suffix == ".zip" else [f"{sub}/{n}" for n in own])


def _stats(base: Path, names: Iterable[str]) -> Iterator[tuple[str, os.stat_result]]:
    for name in names:
        try:
            yield name, os.stat(base / name)
        except OSError:
            continue


def _nested_fits(root: Path) -> list[Path]:
    """Fits (folders or zips) nested under a grid or sensitivity root, analyses left out."""
    return [p for p in discover(root) if p != root and p.parent.name != "analyses"]


def read_fit(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The record of one discovered path; raises IngestError with a one-line reason if broken."""
    return _read(Path(os.path.abspath(path)), None if root is None else Path(os.path.abspath(root)), {})


def scan(roots: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any] | FolderFailure]:
    """Records under every root, with a FolderFailure in place of each folder that cannot be read."""
    cache: dict[Path, bool] = {}
    for root in roots:
        top = Path(os.path.abspath(root))
        for path in discover(top):
            try:
                yield _read(path, top, cache)
            except IngestError as exc:
                yield FolderFailure(str(path), str(exc))
            except Exception as exc:  # one odd folder must not end an ingest of thousands
                yield FolderFailure(str(path), f"unexpected {type(exc).__name__}: {exc}")


def _read(path: Path, root: Path | None, cache: dict[Path, bool]) -> dict[str, Any]:
    signature = folder_signature(path)  # before reading: a write during the read shows next time
    with _opened(path) as (src, owner, where):
        if owner is not None:
            record = _analysis(src, owner, where, root, cache)
        elif src.read(".is_grid_search") is not None:
            record = _grid_root(src, where, root, cache)
        elif src.read("metadata") is not None:
            record = _fit(src, src, _identity(where, root, cache))
        else:
            raise IngestError("no metadata file: not a PyAutoFit fit folder")
    return {**record, "source": str(path), "source_sig": signature}


def _fit(src: _Source, header: _Source, identity: tuple[str, str | None]) -> dict[str, Any]:
    record = _contents(src, need_model=header is src)
    search = _json(header, "files/search.json") if header is not src else record["search"]
    completed_at = header.mtime(".completed")
    return {**record, "id": identity[0], "parent_id": identity[1], "name": _metadata_name(header),
            "path_prefix": _path_prefix(_search_argument(search, "path_prefix")),
            "unique_tag": _search_argument(search, "unique_tag"), "is_grid_search": False,
            "status": "running" if completed_at is None else "completed", "completed_at": completed_at}


def _analysis(src: _Source, owner: _Source, where: Path, root: Path | None,
              cache: dict[Path, bool]) -> dict[str, Any]:
    fit_id = _identity(where.parent.parent, root, cache)[0]
    return _fit(src, owner, (f"{fit_id}_{where.name[len('analysis_'):]}", fit_id))


def _grid_root(src: _Source, where: Path, root: Path | None, cache: dict[Path, bool]) -> dict[str, Any]:
    record = _contents(src, need_model=False)
    tag = (src.read(".is_grid_search") or b"").decode("utf-8", "replace").strip()
    results = src.read("results.csv")
    if results is not None:
        record["files"]["results"] = _columns("results.csv", results)
    best, path_prefix, info = None, None, None
    for index, child in enumerate(_nested_fits(where) if isinstance(src, _Folder) else []):
        try:
            with _opened(child) as (child_src, _, _):
                if index == 0:
                    path_prefix = _path_prefix(_search_argument(
                        _json(child_src, "files/search.json"), "path_prefix"))
                    info = _json(child_src, "files/info.json")
                found = _summary_max_ll(_json(child_src, "files/samples_summary.json"))
        except IngestError:
            continue  # the child reports its own failure; the root keeps what the others say
        if found is not None and (best is None or found > best):
            best = found
    completed_at = src.mtime(".completed")
    if completed_at is None:  # sensitivity roots never get .completed; result.json comes last
        completed_at = src.mtime("files/result.json")
    fid, parent_id = _identity(where, root, cache)
    return {**record, "id": fid, "parent_id": parent_id, "name": where.parent.name or None,
            "path_prefix": path_prefix, "unique_tag": tag or None, "info": record["info"] or info,
            "is_grid_search": True, "max_log_likelihood": best,
            "status": "running" if completed_at is None else "completed", "completed_at": completed_at}


def _contents(src: _Source, need_model: bool) -> dict[str, Any]:
    """The fields read from ``files/``: model, search, info, summary, samples and the rest."""
    model = _json(src, "files/model.json")
    if model is None and need_model:
        raise IngestError("files/model.json: missing")
    summary = _json(src, "files/samples_summary.json")
    csv_data = src.read("files/samples.csv")
    samples = None if csv_data is None else _samples(csv_data)
    files: dict[str, Any] = {}
    for name in src.listing():
        stem, suffix = name[len("files/"):].rsplit(".", 1)
        if (suffix == "json" and stem in _OWN_JSON) or (suffix == "csv" and stem == "samples"):
            continue
        key = stem.replace("/", ".")
        files[key] = _json(src, name) if suffix == "json" else _csv(name, src.read(name) or b"")
    best = None
    if samples is not None and samples["log_likelihood"].size:
        finite = samples["log_likelihood"][~np.isnan(samples["log_likelihood"])]
        best = float(finite.max()) if finite.size else None
    evidence = _dig(summary, "arguments", "log_evidence")
    return {"model": model, "search": _json(src, "files/search.json"), "info": _json(src, "files/info.json"),
            "summary": summary, "samples": samples, "files": files,
            "max_log_likelihood": best if best is not None else _summary_max_ll(summary),
            "log_evidence": float(evidence) if isinstance(evidence, (int, float)) else None}


def _json(src: _Source, name: str) -> Any:
    data = src.read(name)
    if data is None:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{name}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    except ValueError as exc:  # not UTF-8
        raise IngestError(f"{name}: not JSON text ({exc})") from None


def _samples(data: bytes) -> dict[str, Any]:
    """samples.csv as arrays; a file cut off mid-write is refused rather than read short."""
    head, _, body = data.partition(b"\n")
    columns = [c.strip() for c in head.decode("utf-8", "replace").split(",")]
    missing = [c for c in _SAMPLE_COLUMNS if c not in columns]
    if missing:
        raise IngestError(f"files/samples.csv: header lacks {', '.join(missing)}")
    if body.strip() and not body.endswith(b"\n"):
        raise IngestError("files/samples.csv: truncated (last line is incomplete)")
    try:
        table = (np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2) if body.strip()
                 else np.empty((0, len(columns))))
    except ValueError as exc:
        raise IngestError(f"files/samples.csv: {exc}") from None
    if table.shape[1] != len(columns):
        raise IngestError(f"files/samples.csv: {table.shape[1]} values per row, {len(columns)} in header")
    free = [i for i, c in enumerate(columns) if c not in (*_SAMPLE_COLUMNS, "log_posterior")]
    return {"paths": [columns[i] for i in free], "parameters": np.ascontiguousarray(table[:, free]),
            **{c: np.ascontiguousarray(table[:, columns.index(c)]) for c in _SAMPLE_COLUMNS}}


def _csv(name: str, data: bytes) -> Any:
    """A headerless CSV is an array (as PyAutoFit's np.loadtxt reads it); one with a header, columns."""
    first = data.split(b",", 1)[0].split(b"\n", 1)[0].strip()
    if not data.strip() or not _is_number(first.decode("utf-8", "replace")):
        return _columns(name, data)
    try:
        return np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float64)
    except ValueError as exc:
        raise IngestError(f"{name}: {exc}") from None


def _columns(name: str, data: bytes) -> dict[str, list[Any]]:
    """Column name -> values; numbers as floats, blank cells as None, other text kept."""
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IngestError(f"{name}: not a readable CSV ({exc})") from None
    header = [h.strip() for h in rows[0]] if rows else []
    table: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise IngestError(f"{name}: line {number} has {len(row)} cells, the header {len(header)}")
        for key, cell in zip(header, row, strict=True):
            text = cell.strip()
            table[key].append(None if not text else float(text) if _is_number(text) else text)
    return table


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _identity(where: Path, root: Path | None, cache: dict[Path, bool]) -> tuple[str, str | None]:
    """(id, parent_id) from folder names and nesting (see the module docstring)."""
    ancestor = next((p for p in where.parents if _is_fit_or_grid(p, cache)), None)
    parent_id = None if ancestor is None else _identity(ancestor, root, cache)[0]
    if _HEX_ID.fullmatch(where.name):
        return where.name, parent_id
    if ancestor is not None:
        return f"{parent_id}/{where.relative_to(ancestor).as_posix()}", parent_id
    if root is not None and root in where.parents:
        return where.relative_to(root).as_posix(), None
    return where.name, None


def _is_fit_or_grid(folder: Path, cache: dict[Path, bool]) -> bool:
    if folder not in cache:
        cache[folder] = (folder / "metadata").is_file() or (folder / ".is_grid_search").is_file()
    return cache[folder]


def _metadata_name(src: _Source) -> str | None:
    for line in (src.read("metadata") or b"").decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "name":
            return value.strip() or None
    return None


def _search_argument(search: Any, key: str) -> Any:
    """A search.json argument, else the first one set along its ``paths`` chain (sensitivity fits)."""
    node = _dig(search, "arguments")
    while isinstance(node, Mapping):
        if node.get(key) is not None:
            return node[key]
        node = _dig(node, "paths", "arguments") or _dig(node, "parent", "arguments")
    return None


def _path_prefix(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("path")
    return value if isinstance(value, str) else None


def _summary_max_ll(summary: Any) -> float | None:
    value = _dig(summary, "arguments", "max_log_likelihood_sample", "arguments", "log_likelihood")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dig(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node
