"""Fit records and events: the one place untrusted input is checked.

Everything that reaches the database (a dict from a socket, a spool file, a PyAutoFit folder)
passes ``validate_record`` (whole records) or ``lensd.store.writeops.op_from_request`` (events,
which checks their fields with the helpers here) first, so the writer and the query side can rely
on types. Errors name the field and say what was expected.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from lensd.domain import fitsdata, modeltree
from lensd.domain.samples import Samples
from lensd.errors import InvalidRecord
from lensd.memo import Memo
from lensd.safefiles import log_name
from lensd.wire import codec

STATUSES: Final = frozenset({"running", "completed", "failed", "lost"})
MAX_DEPTH: Final = 64
MAX_STRING: Final = 65536
SQLITE_MAX_INT: Final = 2**63 - 1  # what an INTEGER column holds; a larger int fails its whole batch

_TEXT_FIELDS: Final = ("id", "name", "path_prefix", "unique_tag", "parent_id", "error", "source",
                       "source_sig")
_TREE_FIELDS: Final = ("search", "model", "summary")
_MAP_FIELDS: Final = ("info", "job")
_FLOAT_FIELDS: Final = ("max_log_likelihood", "log_evidence", "progress", "created_at", "updated_at",
                        "completed_at")
RECORD_KEYS: Final = frozenset({
    *_TEXT_FIELDS, *_TREE_FIELDS, *_MAP_FIELDS, *_FLOAT_FIELDS,
    "status", "samples", "instance", "is_grid_search", "files", "n_samples",
})


@dataclass(frozen=True)
class Record:
    """A validated fit record (SPEC §2) with its derived facts filled in."""

    id: str
    status: str
    name: str | None = None
    path_prefix: str | None = None
    unique_tag: str | None = None
    search: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    samples: Samples | None = None
    instance: dict[str, Any] = field(default_factory=dict)
    median: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    max_log_likelihood: float | None = None
    log_evidence: float | None = None
    parent_id: str | None = None
    is_grid_search: bool = False
    error: str | None = None
    progress: float | None = None
    n_samples: int | None = None
    source: str | None = None
    source_sig: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    completed_at: float | None = None


def _plain_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is already what ``_json_value`` would return (dicts, lists, str, int, float,
    bool, None, exactly those types, within every limit): then it is kept as it is.

    A tree just parsed from JSON or msgpack always is, and checking it costs a third of copying
    it (~0.025 ms of a folder's ingest: docs/performance.md, "Round 2, seventh pass: folder
    ingest"). Anything else (a tuple, a numpy scalar, a Mapping that is not a dict such as
    ``codec.Received``, a level past ``MAX_DEPTH``) is False, and ``_json_value`` converts it or
    says what is wrong, as before.
    """
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_STRING
    if kind is float or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-SQLITE_MAX_INT - 1 <= value <= SQLITE_MAX_INT)
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:  # loops, not all(...): a generator per node costs as much as the check
        for key, item in value.items():
            if type(key) is not str or len(key) > MAX_STRING or not _plain_json(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_plain_json(item, depth + 1) for item in value)
    return False


def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    """Check a value is JSON-shaped (str-keyed maps, lists, scalars); returns it unchanged, or as
    plain dicts and lists (tuples, Mappings) with numpy scalars as Python numbers."""
    if depth == 0 and _plain_json(value):
        return value
    if depth > MAX_DEPTH:
        raise InvalidRecord(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        if not -SQLITE_MAX_INT - 1 <= value <= SQLITE_MAX_INT:
            raise InvalidRecord(f"{where} has an integer outside sqlite's 64-bit range")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InvalidRecord(f"{where} has a string longer than {MAX_STRING} characters")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRecord(f"{where} has a non-string key {log_name(repr(key))}")
            if len(key) > MAX_STRING:
                raise InvalidRecord(f"{where} has a key longer than {MAX_STRING} characters "
                                    f"({log_name(key, 40)})")
            out[key] = _json_value(item, where, depth + 1)
        return out
    if isinstance(value, np.generic):
        return value.item()
    raise InvalidRecord(f"{where} holds a {type(value).__name__}, which is not a JSON value")


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecord(f"{key} must be a string or None, not {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise InvalidRecord(f"{key} is longer than {MAX_STRING} characters")
    return value


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InvalidRecord(f"{key} must be a number or None, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise InvalidRecord(f"{key} is too large for a number") from None


def count(value: Any, key: str) -> int | None:
    """A count (``n_samples``): None, or an integer from 0 to sqlite's largest."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{key} must be an integer")
    if not 0 <= value <= SQLITE_MAX_INT:
        raise InvalidRecord(f"{key} must be an integer from 0 to 2**63-1")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"{key} must be a mapping, not {type(value).__name__}")
    checked: dict[str, Any] = _json_value(value, key)
    return checked


_CHECKED_MODELS: Final[Memo[bytes, None]] = Memo()  # bytes of received models that passed ``_mapping``


def _model(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``_mapping(data, "model")``; a model received as the bytes of one that passed before is the
    same value and passes again unwalked. A received model is kept as it came (``codec.Received``:
    the value ``_mapping`` would build), so that its walks are remembered (``modeltree.shape``)."""
    value = data.get("model")
    if not isinstance(value, codec.Received):
        return _mapping(data, "model")
    _CHECKED_MODELS.get(value.packed, lambda: _checked(data))  # raises for a bad model: not remembered
    return value


def _checked(data: Mapping[str, Any]) -> None:
    _mapping(data, "model")


def _files(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRecord("files must map names to JSON values, arrays or FITS bytes")
    files: dict[str, Any] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidRecord(f"files has a bad name {name!r}")
        if isinstance(item, np.ndarray):
            if item.dtype.kind not in "biuf":
                raise InvalidRecord(f"files.{name} must be a numeric array")
            files[name] = item
        elif isinstance(item, (bytes, bytearray, memoryview)):
            if not fitsdata.is_fits(item):  # the only bytes a record carries are FITS files
                raise InvalidRecord(f"files.{name}: bytes must be a FITS file (beginning with SIMPLE)")
            files[name] = bytes(item)
        else:
            files[name] = _json_value(item, f"files.{name}")
    return files


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → dotted paths, the form instances are stored and queried in."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def _instance(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRecord("instance must map parameter paths to values")
    flat = flatten(_json_value(value, "instance"))
    return flat


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return [[key, _canonical(value[key])] for key in sorted(value)]
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def fit_id(name: str | None, path_prefix: str | None, unique_tag: str | None,
           search: Any, model: Any) -> str:
    """The id of a streamed fit that brought none: sha256 of the canonical msgpack of its identity."""
    packed = codec.pack(_canonical([name, path_prefix, unique_tag, search, model]))
    return hashlib.sha256(packed).hexdigest()


def summary_medians(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """Median PDF values from a PyAutoFit ``samples_summary.json`` (or a plain ``median_pdf`` map)."""
    if not isinstance(summary, Mapping):
        return {}
    plain = summary.get("median_pdf")
    if isinstance(plain, Mapping):
        return flatten(plain)
    sample = (summary.get("arguments") or {}).get("median_pdf_sample")
    if not isinstance(sample, Mapping):
        return {}
    kwargs = ((sample.get("arguments") or {}).get("kwargs") or {}).get("arguments")
    return dict(kwargs) if isinstance(kwargs, Mapping) else {}


SUMMARY_SIGMAS: Final = (1, 3)  # the intervals PyAutoFit's samples_summary.json keeps


def summary_from_samples(samples: Samples) -> dict[str, Any] | None:
    """What ``samples_summary.json`` would say, for a fit that sent samples and no summary: the
    median PDF values and the 1σ and 3σ (lower, upper) values, computed from the samples as
    PyAutoFit computes them (weighted quantiles, lensd.domain.pdf). ``derived_from`` says so."""
    if not len(samples):
        return None
    median, at_sigma = samples.summary_values([float(sigma) for sigma in SUMMARY_SIGMAS])
    summary: dict[str, Any] = {"median_pdf": median, "derived_from": "samples"}
    for sigma in SUMMARY_SIGMAS:
        bounds = at_sigma[float(sigma)]
        summary[f"values_at_sigma_{sigma}"] = {path: [lo, hi] for path, (lo, hi) in bounds.items()}
    return summary


def _summary_log_evidence(summary: Mapping[str, Any] | None) -> float | None:
    if not isinstance(summary, Mapping):
        return None
    value = (summary.get("arguments") or {}).get("log_evidence", summary.get("log_evidence"))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def validate_record(data: Any) -> Record:
    """Check an untrusted record dict (SPEC §2) and derive its instance, medians and max log L."""
    if not isinstance(data, Mapping):
        raise InvalidRecord(f"a record must be a mapping, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in RECORD_KEYS)
    if unknown:
        shown = ", ".join(repr(log_name(key, 60)) for key in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InvalidRecord(f"unknown record keys [{shown}]{more}; allowed: {sorted(RECORD_KEYS)}")
    status = data.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidRecord(f"status must be one of {sorted(STATUSES)}, not {status!r}")
    text = {key: _text(data, key) for key in _TEXT_FIELDS}
    trees = {key: _model(data) if key == "model" else _mapping(data, key) for key in (*_TREE_FIELDS, *_MAP_FIELDS)}
    numbers = {key: _number(data, key) for key in _FLOAT_FIELDS}
    model = trees["model"]
    samples = None if data.get("samples") is None else Samples.from_wire(data["samples"], model)
    instance = _instance(data.get("instance"))
    if instance is None:
        instance = (samples.max_log_likelihood_values() if samples is not None and len(samples)
                    else modeltree.constants(model or {}))
    n_samples = count(data.get("n_samples"), "n_samples")
    is_grid = data.get("is_grid_search", False)
    if not isinstance(is_grid, bool):
        raise InvalidRecord("is_grid_search must be true or false")
    record_id = text.pop("id") or fit_id(text["name"], text["path_prefix"], text["unique_tag"],
                                          trees["search"], model)
    max_ll = numbers.pop("max_log_likelihood")
    if max_ll is None and samples is not None:
        best = samples.max_log_likelihood_sample
        max_ll = None if best is None else best.log_likelihood
    log_evidence = numbers.pop("log_evidence")
    if log_evidence is None:
        log_evidence = _summary_log_evidence(trees["summary"])
    if trees["summary"] is None and samples is not None and status == "completed":
        trees["summary"] = summary_from_samples(samples)  # a streamed fit: its medians from its samples
    medians = summary_medians(trees["summary"])
    if medians:  # the constants too, as Fit.median shows them (samples_summary.json has free ones only)
        medians = {**modeltree.constants(model or {}), **medians}
    return Record(
        id=record_id, status=status, **text, **trees, **numbers,  # type: ignore[arg-type]
        samples=samples, instance=instance, median=medians,
        files=_files(data.get("files")), max_log_likelihood=max_ll, log_evidence=log_evidence,
        is_grid_search=is_grid,
        n_samples=n_samples if n_samples is not None else (len(samples) if samples is not None else None),
    )


def with_status(record: Record, status: str, **changes: Any) -> Record:
    """A copy with a new status (and any other fields), for events that finish a fit."""
    return replace(record, status=status, **changes)


def record_to_wire(record: Record) -> dict[str, Any]:
    """A validated record back in wire form (SPEC §2 keys), for a socket or a spool file."""
    out: dict[str, Any] = {
        "id": record.id, "status": record.status, "name": record.name, "path_prefix": record.path_prefix,
        "unique_tag": record.unique_tag, "search": record.search, "model": record.model,
        "info": record.info, "job": record.job, "summary": record.summary, "files": record.files,
        "instance": record.instance, "max_log_likelihood": record.max_log_likelihood,
        "log_evidence": record.log_evidence, "parent_id": record.parent_id,
        "is_grid_search": record.is_grid_search, "error": record.error, "progress": record.progress,
        "n_samples": record.n_samples, "source": record.source, "source_sig": record.source_sig,
        "completed_at": record.completed_at,
    }
    if record.samples is not None:
        out["samples"] = record.samples.to_wire()
    return out
