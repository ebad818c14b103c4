"""The read side: read-only connections, paged row streaming, and decoding rows into objects.

The same row shapes come from a local sqlite file (``Aggregator``) and from the daemon's pages
(``AsyncAggregator``), so decoding lives here once. Payload blobs are only ever msgpack with
numeric arrays (``lensd.wire.codec``); nothing read from a database is unpickled or imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from lensd.domain import fitsdata, modeltree
from lensd.domain.instance import Instance
from lensd.domain.samples import Samples
from lensd.errors import LensdError, QueryError, StorageError, UnsupportedDatabase
from lensd.query import compiler, statements
from lensd.query.dialect import SQLITE
from lensd.query.state import QueryState
from lensd.store import schema
from lensd.store.batchplan import FILE_PAYLOAD_PREFIX, SAMPLES_PAYLOAD
from lensd.store.sqlite_errors import readonly_uri, storage_error
from lensd.wire import codec

PAGE_SIZE: Final = 256
JSON_VALUES: Final = frozenset({"info", "model", "search", "summary", "job"})
ALIASES: Final = {"samples_summary": "summary"}  # PyAutoFit's names for lensd's fields


def skips_missing(name: str) -> bool:
    """Whether ``values(name)`` leaves out a fit that lacks the value instead of giving None.

    A record field under lensd's own name lines up with the fits (None where a fit lacks it); under
    PyAutoFit's file name (``samples_summary``, samples_summary.json) it is read as PyAutoFit reads
    a file: a fit without one gives nothing, so a tutorial's ``summary["arguments"]`` never meets a
    None (a grid search's parent has no samples summary)."""
    return name in ALIASES
FIT_ROW_COLUMNS: Final = ("fit_key", *schema.FIT_COLUMNS)
# What a reader decodes of a stored value. No lensd writer makes larger ones (a frame is at most
# 64 MiB, a fit's files together 256 MiB), so past these a file was crafted: it is refused before
# the bytes are fetched (payloads, by sqlite's length()) or parsed (JSON), so that memory stays
# bounded whatever the file holds. JSON is also held to the values a message may hold (JSON builds
# ~60 bytes of Python objects per value: 30 MB of "[]," cost 1.5 GB).
MAX_PAYLOAD: Final = schema.MAX_PAYLOAD
MAX_JSON_TEXT: Final = 64 * 2**20
MAX_JSON_VALUES: Final = 2 * codec.MAX_ITEMS
_SCAN_JSON_ABOVE: Final = 1 << 20


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection that never blocks the daemon's writer (WAL readers don't).

    The file may come from anyone: it must be a lensd database of a schema this release reads,
    with real tables where lensd expects them, or it is refused with UnsupportedDatabase.
    """
    target = Path(path)
    if not target.exists():
        raise StorageError(f"no database at {target}")
    if target.is_dir():
        raise StorageError(f"{target} is a directory, not a database file")
    if not target.is_file():  # a FIFO would block sqlite's open for ever, a device read without end
        raise StorageError(f"{target} is not a regular file, so not a database file")
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(readonly_uri(target), uri=True, isolation_level=None, check_same_thread=False)
        for pragma in schema.READER_PRAGMAS:
            conn.execute(pragma)
        version = schema.read_version(conn)
        if version == 0:
            raise StorageError("an empty database, not a lensd database")
        schema.check_tables(conn)
    except LensdError as exc:
        if conn is not None:
            conn.close()
        raise type(exc)(f"{target}: {exc}") from None
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        error = storage_error(exc, f"cannot open {target}")
        if isinstance(error, UnsupportedDatabase):
            raise UnsupportedDatabase(f"{target} is not a sqlite database: {exc}") from None
        raise error from None
    return conn


def stream(conn: sqlite3.Connection, sql: str, params: list[Any],
           page: int = PAGE_SIZE) -> Iterator[tuple[Any, ...]]:
    """Rows of a statement, one at a time, so memory stays flat however large the rows (samples)
    are: sqlite3 steps the statement a row at a time whatever is asked of it, so a batch of
    ``page`` rows (``fetchmany``) saved nothing and held ``page`` rows at once, 640 MB for 32 fits
    of 20 MB samples. ``page`` stays for the sources' one signature (PostgreSQL's round trips
    fetch ``budget.paced`` batches)."""
    try:
        cursor = conn.execute(sql, params)
        try:
            yield from cursor
        finally:
            cursor.close()
    except sqlite3.Error as exc:
        raise storage_error(exc, "query failed") from None


# What decoding malformed stored data can raise; it becomes a StorageError naming what was bad.
_MALFORMED: Final = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError)


def _loads(text: Any, what: str = "a stored JSON column") -> Any:
    if text is None:
        return None
    if not isinstance(text, str):  # lensd stores JSON as text; a blob here (a pickle?) is not read
        raise StorageError(f"{what} is not valid JSON text")
    if len(text) > _SCAN_JSON_ABOVE:
        if len(text) > MAX_JSON_TEXT:
            raise StorageError(f"{what} is {len(text)} characters of JSON, over the {MAX_JSON_TEXT} "
                               "a lensd reader parses")
        if sum(text.count(mark) for mark in ",[{") > MAX_JSON_VALUES:  # each value but one follows one
            raise StorageError(f"{what} holds more than {MAX_JSON_VALUES} JSON values")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise StorageError(f"{what} is not valid JSON") from None


def _json_object(text: Any, what: str) -> dict[str, Any] | None:
    """A stored JSON column that must hold an object (model, search, info, job, summary, instance)."""
    value = _loads(text, what)
    if value is not None and not isinstance(value, dict):
        raise StorageError(f"{what} is not a JSON object")
    return value


def decode_payload(blob: Any) -> Any:
    if isinstance(blob, int) and not isinstance(blob, bool) and blob > MAX_PAYLOAD:  # statements.bounded
        raise StorageError(f"a stored payload is {blob} bytes, over the {MAX_PAYLOAD} a lensd reader decodes")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise StorageError("a stored payload is not a blob")
    if len(blob) > MAX_PAYLOAD:
        raise StorageError(f"a stored payload is larger than {MAX_PAYLOAD} bytes")
    try:
        return codec.unpack(bytes(blob))
    except LensdError as exc:
        raise StorageError(f"a stored payload cannot be decoded: {exc}") from None


SAMPLES_INFO: Final = FILE_PAYLOAD_PREFIX + "samples_info"  # PyAutoFit's samples_info.json


def decode_file(blob: Any) -> Any:
    """A file payload: its JSON value or array, or for a FITS file an astropy HDUList over it."""
    value = decode_payload(blob)
    return fitsdata.hdulist(value) if fitsdata.is_fits(value) else value


def decode_samples(blob: Any, model_json: Any, info_blob: Any = None) -> Samples:
    data = decode_payload(blob)
    model = _json_object(model_json, "a stored model")
    info = None if info_blob is None else decode_payload(info_blob)
    try:
        return Samples.from_wire(data, model, info if isinstance(info, dict) else None)
    except LensdError as exc:
        raise StorageError(f"a stored samples payload is invalid: {exc}") from None
    except _MALFORMED as exc:
        raise StorageError(f"a stored samples payload is invalid: {type(exc).__name__}") from None


def _class_nodes(model_json: Any) -> dict[str, str]:
    try:
        return modeltree.class_nodes(_json_object(model_json, "a stored model") or {})
    except _MALFORMED as exc:
        raise StorageError(f"a stored model cannot be read: {type(exc).__name__}") from None


def instance_from(values_json: Any, model_json: Any) -> Instance | None:
    values = _json_object(values_json, "a stored instance")
    if not values:
        return None
    classes = _class_nodes(model_json)
    try:
        return Instance.from_flat(values, classes)
    except _MALFORMED as exc:
        raise StorageError(f"a stored instance cannot be read: {type(exc).__name__}") from None


def decode_value(name: str, row: Sequence[Any]) -> Any:
    """Turn one row of ``values_plan(state, name)`` into the value the user asked for."""
    name = ALIASES.get(name, name)
    if name == "samples":
        return decode_samples(row[2], row[1], row[3] if len(row) > 3 else None)
    if name == "instance":
        return instance_from(row[2], row[1])
    if name == "info":  # a fit run without info has {}: values("info") lines up with fits()
        return _json_object(row[1], "a stored info") or {}
    if name in JSON_VALUES:
        return _json_object(row[1], f"a stored {name}")
    return decode_file(row[2])


def values_plan(state: QueryState, name: str, access: compiler.Access | None = None) -> tuple[str, list[Any]]:
    """The statement behind ``values(name)``; its rows go through ``decode_value``.

    A record field (``JSON_VALUES``, ``instance``) has a row for every selected fit, decoded to None
    where the fit lacks it; a payload (samples, a file) has rows only for the fits that have it.
    """
    if not isinstance(name, str) or not name:
        raise QueryError("values() takes the name of a field or file")
    name = ALIASES.get(name, name)
    if name == "samples":
        return statements.select_samples(state, SAMPLES_PAYLOAD, SAMPLES_INFO, access)
    if name == "instance":
        return statements.select_fits(state, "f.id, f.model, f.instance", access)
    if name in JSON_VALUES:
        return statements.select_column(state, name, access)
    return statements.select_payloads(state, FILE_PAYLOAD_PREFIX + name, access)


class ProgressPoint(NamedTuple):
    """One point of a fit's convergence history: what one progress event reported, and when."""

    time: float
    max_log_likelihood: float | None
    n_samples: int | None
    progress: float | None


HISTORY_SQL: Final = ("SELECT t, max_log_likelihood, n_samples, progress FROM progress_history "
                      "WHERE fit_key = ? ORDER BY t, point")


def history_loader(conn: sqlite3.Connection) -> Callable[[int], list[ProgressPoint]]:
    """Reads one fit's history; a database older than schema v3 has none (an empty list)."""
    def load(fit_key: int) -> list[ProgressPoint]:
        try:
            return [ProgressPoint(*row) for row in conn.execute(HISTORY_SQL, (fit_key,))]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StorageError(f"reading a progress history failed: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageError(f"reading a progress history failed: {exc}") from None
    return load


class Fit:
    """One fit (SPEC §2); JSON fields are parsed and payloads loaded only when first asked for."""

    def __init__(self, row: Mapping[str, Any],
                 load_payload: Callable[[int, str], Any] | None = None,
                 load_history: Callable[[int], list[ProgressPoint]] | None = None) -> None:
        self._row = dict(row)
        self._load_payload = load_payload
        self._load_history = load_history
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        row = self.__dict__.get("_row")
        if row is None or name not in row:
            raise AttributeError(name)
        if name in ("model", "search", "info", "job", "summary"):
            cache = self.__dict__["_cache"]
            if name not in cache:
                cache[name] = _json_object(row[name], f"the stored {name} of fit {row.get('id')!r}")
            return cache[name]
        if name == "is_grid_search":
            return bool(row[name])
        return row[name]

    @property
    def instance(self) -> Instance | None:
        return instance_from(self._row.get("instance"), self._row.get("model"))

    @property
    def median(self) -> Instance | None:
        from lensd.domain.records import summary_medians

        summary, model = self.summary, self.model or {}
        try:  # a property must not raise AttributeError: __getattr__ would hide it
            medians = summary_medians(summary)
            if not medians:
                return None
            return Instance.from_flat({**modeltree.constants(model), **medians}, modeltree.class_nodes(model))
        except _MALFORMED as exc:
            raise StorageError(f"the stored summary of fit {self.id!r} cannot be read: "
                               f"{type(exc).__name__}") from None

    @property
    def is_complete(self) -> bool:
        return bool(self._row["status"] == "completed")

    def _payload(self, name: str) -> Any:
        if self._load_payload is None:
            raise LensdError("this fit was read over the socket; use agg.values(name) for payloads")
        return self._load_payload(int(self._row["fit_key"]), name)

    @property
    def samples(self) -> Samples | None:
        blob = self._payload(SAMPLES_PAYLOAD)
        return None if blob is None else decode_samples(blob, self._row.get("model"), self._payload(SAMPLES_INFO))

    @property
    def progress_history(self) -> list[ProgressPoint]:
        """The convergence history: a point per progress event (bounded and thinned when long,
        the first and the latest always kept), oldest first."""
        if self._load_history is None:
            raise LensdError("this fit was read over the socket; read the database for its history")
        return self._load_history(int(self._row["fit_key"]))

    def file(self, name: str) -> Any:
        """A file output of PyAutoFit by its dotted name: ``files/<name>.json`` or ``.csv`` as its
        value, a ``.fits`` (``files/`` or ``image/``) as an astropy HDUList (lensd[astro])."""
        blob = self._payload(FILE_PAYLOAD_PREFIX + name)
        return None if blob is None else decode_file(blob)

    def value(self, name: str) -> Any:
        """The same names as ``Aggregator.values``, for one fit."""
        name = ALIASES.get(name, name)
        if name == "samples":
            return self.samples
        if name == "instance":
            return self.instance
        if name in JSON_VALUES:
            return getattr(self, name)
        return self.file(name)

    def to_dict(self) -> dict[str, Any]:
        """The fit's columns with JSON fields parsed (payloads left out)."""
        out = {c: getattr(self, c) for c in schema.FIT_COLUMNS if c not in ("source_sig", "seq")}
        out["instance"] = _loads(self._row.get("instance"))
        return out

    def __repr__(self) -> str:
        return (f"Fit(id={self.id!r}, unique_tag={self.unique_tag!r}, name={self.name!r}, "
                f"status={self.status!r}, max_log_likelihood={self.max_log_likelihood!r})")

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                       for k, v in self.to_dict().items() if k not in ("model", "search", "summary"))
        return f"<table>{rows}</table>"


def payload_loader(conn: sqlite3.Connection) -> Callable[[int, str], Any]:
    def load(fit_key: int, name: str) -> Any:
        try:
            row = conn.execute(f"SELECT {SQLITE.bounded_blob.format('data')} FROM payloads "  # noqa: S608
                               "WHERE fit_key = ? AND name = ?", (MAX_PAYLOAD, fit_key, name)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"reading a payload failed: {exc}") from None
        return None if row is None else row[0]
    return load


def fit_rows_sql(state: QueryState, access: compiler.Access | None = None) -> tuple[str, list[Any]]:
    return statements.select_fits(state, ", ".join(f"f.{c}" for c in FIT_ROW_COLUMNS), access)


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(FIT_ROW_COLUMNS, row, strict=True))
