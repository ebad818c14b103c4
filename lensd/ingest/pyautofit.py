"""PyAutoFit output folders -> fit records (SPEC §2), reading JSON, CSV and FITS files.

Pickles and dill files are never opened and no class path found in the data is imported: a
results folder is untrusted input, so opening it must not run code. Finding folders, zips,
signatures and identity live in ``_folders.py``; this module turns a fit's files into a record.

Identity comes from the folders, never from hashing search.json and model.json (PyAutoFit's
scraper does that, and its ids change when either file's format changes between releases):

- a folder named by 32 lowercase hex digits is PyAutoFit's identifier and is the id;
- any other fit (grid cell, sensitivity ``<cell>/[base]``) is ``<id of the nearest enclosing fit
  or grid folder>/<relative path>``, and that enclosing folder gives its ``parent_id``. The walk
  up goes past the scan root, so a cell gets the same id whether its grid or the cell was scanned;
- a non-hex fit with no enclosing fit takes its path relative to the scan root (its folder name
  when there is no root): the only stable name left;
- ``analyses/analysis_<i>`` of a multi-analysis fit is a child record ``<fit id>_<i>``, as in
  PyAutoFit's database; it takes name, tags and status from its fit, the rest from its own files.
  ``discover`` yields it as a path of its own (``<id>.zip/analyses/analysis_<i>`` inside a
  zip-only fit), so every record has one path, one signature and one ``read_fit`` call.

Choices where PyAutoFit leaves room:

- a zip PyAutoFit wrote beside a folder is read only when the folder is gone;
- ``unique_tag`` and ``path_prefix`` fall back along search.json's ``paths`` chain, where
  sensitivity fits keep them (their top-level values are null);
- a grid or sensitivity root's ``max_log_likelihood`` is the best ``samples_summary.json``
  likelihood of the fits nested in it (for a grid search, its best cell), never results.csv's
  ``log_likelihood_increase`` (in a sensitivity map, an increase over the base fit);
- ``source`` is the resolved path (symlinks followed), so one folder reached two ways is one source;
- CSV files in ``files/`` without a header are arrays (as PyAutoFit's ``np.loadtxt``), those
  with one are column name -> values, like ``results.csv``;
- a samples.csv whose last line has no newline is refused as truncated: PyAutoFit ends every
  line, and a file cut inside the last number would otherwise parse as a shorter number.
"""

from __future__ import annotations

import csv
import io
import json
import os
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensd.domain.fitsdata import FITS_MAGIC
from lensd.errors import IngestError
from lensd.ingest.csvnumbers import check_width, plain_rows, plain_samples, read_samples
from lensd.ingest.folders import (
    PICKLE_SUFFIXES,
    Source,
    discover,
    folder_signature,
    identity,
    nested_fits,
    opened,
    signed_listing,
)
from lensd.wire.codec import Float64s

__all__ = ["FolderFailure", "discover", "fit_records", "folder_signature", "read_fit", "scan"]

_OWN_JSON = frozenset({"model", "search", "info", "samples_summary"})  # fields, not ``files`` entries
SKIPPED = "lensd.skipped"  # the files entry listing what was not read, and why


@dataclass(frozen=True)
class FolderFailure:
    """A folder a scan could not read; ``reason`` is one line naming the file and the fault."""

    path: str
    reason: str


def read_fit(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The record of one path ``discover`` yields; raises IngestError with a one-line reason."""
    top = None if root is None else Path(os.path.abspath(root))
    return _read(Path(os.path.abspath(path)), top, {}, False)


def read_in_scan(path: Path, root: Path, cache: dict[Path, Path | None], source: str) -> dict[str, Any]:
    """``read_fit`` for a reader of many folders: ``cache`` (the nearest fit above each folder)
    lives as long as the scan, and ``source`` is the resolved path the caller already has."""
    return _read(Path(os.path.abspath(path)), Path(os.path.abspath(root)), cache, False, source)


def scan(roots: Iterable[str | os.PathLike[str]], plain: bool = False) -> Iterator[dict[str, Any] | FolderFailure]:
    """Records under every root, parents first, with a FolderFailure for each unreadable folder.

    ``plain``: CSV arrays as ``codec.Float64s`` (parsed by ``float``, without importing numpy), for
    records that are only sent on (``lensd submit``); else numpy arrays.
    """
    cache: dict[Path, Path | None] = {}
    for root in roots:
        top = Path(os.path.abspath(root))
        for path in discover(top):
            try:
                yield _read(path, top, cache, plain)
            except IngestError as exc:
                yield FolderFailure(str(path), str(exc))
            except Exception as exc:  # one odd folder must not end an ingest of thousands
                yield FolderFailure(str(path), f"unexpected {type(exc).__name__}: {exc}")


def fit_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A read fit as the record dicts it stands for: itself, then its analysis children (popped)."""
    children = data.pop("children", None) or []
    return [data, *children]


def _read(path: Path, root: Path | None, cache: dict[Path, Path | None], plain: bool,
          source: str | None = None) -> dict[str, Any]:
    signature, listing = signed_listing(path)  # taken first: a write during the read shows up next time
    with opened(path, listing) as (src, owner, where):
        if owner is not None:
            fit_id = identity(where.parent.parent, root, cache)[0]
            record = _fit(src, owner, (f"{fit_id}_{where.name.removeprefix('analysis_')}", fit_id), plain)
        elif src.read(".is_grid_search") is not None:
            record = _grid_root(src, where, identity(where, root, cache), plain)
        elif (metadata := src.read("metadata")) is not None:
            record = _fit(src, None, identity(where, root, cache), plain, metadata)
        else:
            raise IngestError("no metadata file: not a PyAutoFit fit folder")
    return {**record, "source": source or str(path.resolve()), "source_sig": signature}


def _fit(src: Source, owner: Source | None, ids: tuple[str, str | None], plain: bool,
         metadata: bytes | None = None) -> dict[str, Any]:
    """A fit, or an analysis of ``owner`` (which then gives name, tags and status); ``metadata``:
    the fit's metadata file, when the caller has read it already."""
    record = _contents(src, owner is None, plain)
    header = src if owner is None else owner
    search = record["search"] if owner is None else _json(owner, "files/search.json")
    completed_at = header.mtime(".completed")
    tag = _search_argument(search, "unique_tag")
    name = _metadata_name(header.read("metadata") if metadata is None else metadata)
    return {**record, "id": ids[0], "parent_id": ids[1], "name": name,
            "path_prefix": _path_prefix(_search_argument(search, "path_prefix")),
            "unique_tag": tag if isinstance(tag, str) else None, "is_grid_search": False,
            "status": "running" if completed_at is None else "completed", "completed_at": completed_at}


def _grid_root(src: Source, where: Path, ids: tuple[str, str | None], plain: bool) -> dict[str, Any]:
    """A grid or sensitivity root: its own files, plus what its nested fits say about it."""
    record = _contents(src, False, plain)
    results = src.read("results.csv")
    if results is not None:
        record["files"]["results"] = _columns("results.csv", results)
    best, path_prefix, info, first = None, None, None, True
    for child in nested_fits(where) if where.is_dir() else []:
        try:
            with opened(child) as (child_src, _, _):
                if first:  # the cells share the grid's path_prefix and info
                    search = _json(child_src, "files/search.json")
                    path_prefix = _path_prefix(_search_argument(search, "path_prefix"))
                    info, first = _json(child_src, "files/info.json"), False
                found = _summary_max_ll(_json(child_src, "files/samples_summary.json"))
        except IngestError:
            continue  # the child reports its own failure; the root keeps what the others say
        if found is not None and (best is None or found > best):
            best = found
    completed_at = src.mtime(".completed")
    if completed_at is None:  # sensitivity roots never get .completed; result.json comes last
        completed_at = src.mtime("files/result.json")
    tag = (src.read(".is_grid_search") or b"").decode("utf-8", "replace").strip()
    return {**record, "id": ids[0], "parent_id": ids[1], "name": where.parent.name or None,
            "path_prefix": path_prefix, "unique_tag": tag or None, "info": record["info"] or info,
            "is_grid_search": True, "max_log_likelihood": best,
            "status": "running" if completed_at is None else "completed", "completed_at": completed_at}


def _contents(src: Source, need_model: bool, plain: bool) -> dict[str, Any]:
    """The fields read from ``files/``: model, search, info, summary, samples and the rest."""
    model = _json(src, "files/model.json")
    if model is None and need_model:
        raise IngestError("files/model.json: missing")
    summary = _json(src, "files/samples_summary.json")
    csv_data = src.read("files/samples.csv")
    samples = None if csv_data is None else (plain_samples if plain else read_samples)(csv_data)
    files = _files(src, plain)
    best = None if samples is None else _best(samples["log_likelihood"])
    evidence = _dig(summary, "arguments", "log_evidence")
    return {"model": model, "search": _json(src, "files/search.json"), "info": _json(src, "files/info.json"),
            "summary": summary, "samples": samples, "files": files,
            "max_log_likelihood": best if best is not None else _summary_max_ll(summary),
            "log_evidence": _number(evidence)}


def _files(src: Source, plain: bool) -> dict[str, Any]:
    """``files/`` JSON and CSV as values, FITS (``files/`` and ``image/``) as their bytes, under
    PyAutoFit's names (``files/dataset/data.fits`` is "dataset.data", ``image/fit.fits`` "fit");
    pickles are never opened: ``lensd.skipped`` lists them, one "name: reason" line each."""
    files: dict[str, Any] = {}
    skipped: list[str] = []
    images: list[tuple[str, str]] = []
    for name in src.listing():
        top, _, rest = name.partition("/")
        stem, suffix = rest.rsplit(".", 1)
        key = stem.replace("/", ".")
        if f".{suffix}" in PICKLE_SUFFIXES:
            skipped.append(f"{name}: a pickle, never opened (opening one runs code)")
        elif top == "image":
            images.append((key, name))
        elif (suffix == "json" and stem in _OWN_JSON) or (suffix == "csv" and stem == "samples"):
            continue
        elif suffix == "fits":
            files[key] = _fits(src, name)
        else:
            files[key] = _json(src, name) if suffix == "json" else _csv(name, src.read(name) or b"", plain)
    for key, name in images:  # PyAutoFit's fit.value(name) looks in files/ first, then image/
        if key in files:
            skipped.append(f"{name}: PyAutoFit's name {key!r} is files/{key.replace('.', '/')}.fits")
        else:
            files[key] = _fits(src, name)
    if skipped:
        files[SKIPPED] = skipped
    return files


def _fits(src: Source, name: str) -> bytes:
    data = src.read(name) or b""
    if not data.startswith(FITS_MAGIC):
        raise IngestError(f"{name}: not a FITS file (it does not begin with SIMPLE)")
    return data


def _json(src: Source, name: str) -> Any:
    data = src.read(name)
    if data is None:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{name}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    except ValueError as exc:  # not UTF-8
        raise IngestError(f"{name}: not JSON text ({exc})") from None
    except RecursionError:  # json recurses per level: a file nested 10^5 deep is an attack
        raise IngestError(f"{name}: nested too deeply to be a PyAutoFit file") from None


def _best(likelihood: Any) -> float | None:
    """The largest log likelihood that is not NaN, or None."""
    if isinstance(likelihood, Float64s):
        return max((v for v in likelihood.values if v == v), default=None)
    import numpy as np

    kept = likelihood[~np.isnan(likelihood)]
    return float(kept.max()) if kept.size else None


def _csv(name: str, data: bytes, plain: bool) -> Any:
    check_width(name, data)
    first_cell = data.split(b"\n", 1)[0].split(b",", 1)[0].strip().decode("utf-8", "replace")
    if _number(first_cell) is None:
        return _columns(name, data)
    if plain:  # np.loadtxt's shape: its dimensions of length one squeezed out
        rows = plain_rows(name, data)
        shape = [n for n in (len(rows), len(rows[0]) if rows else 0) if n != 1] if rows else [0]
        return Float64s(array("d", [v for row in rows for v in row]), shape)
    import numpy as np

    try:
        return np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float64)
    except ValueError as exc:
        raise IngestError(f"{name}: {exc}") from None


def _columns(name: str, data: bytes) -> dict[str, list[Any]]:
    """Column name -> values: numbers as floats, blank cells as None, other text kept."""
    try:
        rows = [row for row in csv.reader(io.StringIO(data.decode("utf-8"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IngestError(f"{name}: not a readable CSV ({exc})") from None
    header = [h.strip() for h in rows[0]] if rows else []
    table: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise IngestError(f"{name}: row {number} has {len(row)} cells, the header {len(header)}")
        for key, cell in zip(header, row, strict=True):
            text = cell.strip()
            value = _number(text)
            table[key].append(value if value is not None else text or None)
    return table


def _number(value: Any) -> float | None:
    """A float from a JSON number or CSV text, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _metadata_name(metadata: bytes | None) -> str | None:
    for line in (metadata or b"").decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "name":
            return value.strip() or None
    return None


def _search_argument(search: Any, key: str) -> Any:
    """A search.json argument, else the first one set along its ``paths`` chain."""
    node = _dig(search, "arguments")
    while isinstance(node, Mapping):
        if node.get(key) is not None:
            return node[key]
        node = _dig(node, "paths", "arguments") or _dig(node, "parent", "arguments")
    return None


def _path_prefix(value: Any) -> str | None:
    """``{"type": "path", "path": "a/b"}`` or a plain string, as PyAutoFit has written both."""
    if isinstance(value, Mapping):
        value = value.get("path")
    return value if isinstance(value, str) else None


def _summary_max_ll(summary: Any) -> float | None:
    return _number(_dig(summary, "arguments", "max_log_likelihood_sample", "arguments", "log_likelihood"))


def _dig(node: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node
