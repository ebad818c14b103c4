"""samples.csv and the other CSV files of a fit as numbers: checked, then parsed exactly.

``read_samples`` gives numpy arrays, ``plain_samples`` stdlib ones (``lensd submit``: no numpy).
``parse`` is the fast path of ``read_samples``: it returns None when it does not apply.

Parsing samples.csv with ``np.loadtxt`` was most of a folder's cost at ingest (~1.5 ms of CPU for
1,000 samples of 8 columns: docs/performance.md, "Folder ingest, third pass"). The rows of a
PyAutoFit samples.csv are numbers (``repr`` of a float, right-aligned with spaces) separated by
commas, one row a line, so the body with its newlines turned into commas is a JSON array of
numbers: orjson (the optional ``lensd[fast]`` extra) reads it about four times as fast, with a
correctly rounded float parser (bit-identical to ``float()``: tests/test_csvnumbers.py checks it
against ``float`` over random doubles printed as PyAutoFit prints them).

Only text that can hold nothing but numbers takes this path: no quote, letter (``nan``, ``inf``,
``true``...), bracket or comment, every row the same number of values. Anything else (and any file
orjson refuses: a blank line, ``1.``, an overflow) returns None, and the caller parses with
``np.loadtxt`` as before, whose result and errors are unchanged.
"""

from __future__ import annotations

import io
import re
from array import array
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from lensd.errors import IngestError
from lensd.wire.codec import Float64s

if TYPE_CHECKING:  # numpy is imported by a parse, not with this module: ``lensd submit`` never needs it
    import numpy as np

_SAMPLE_COLUMNS: Final = ("log_likelihood", "log_prior", "weight")
FAST_MAX: Final = 8 * 2**20  # bytes: orjson builds a Python float per value first (~32 B each)
_NOT_NUMBERS: Final = (b'"', b"t", b"f", b"n", b"[", b"{", b"#")  # strings, literals, nesting, comments
# "-0" written as an integer: JSON reads it as the int 0, which loses the sign float("-0") keeps
_MINUS_ZERO_INT: Final = re.compile(rb"-0+(?![0-9.eE])")
_COMMA, _NEWLINE = ord(","), ord("\n")
_orjson: ModuleType | None | bool = False  # False: not looked for yet


def _json() -> ModuleType | None:
    global _orjson
    if _orjson is False:
        try:
            import orjson
        except ImportError:
            _orjson = None
        else:
            _orjson = orjson
    return _orjson if isinstance(_orjson, ModuleType) else None


def available() -> bool:
    """Whether the fast parser is installed (``pip install 'lensd[fast]'``)."""
    return _json() is not None


def parse(body: bytes, columns: int) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """The rows of ``body`` (lines of ``columns`` comma-separated numbers, each line ended by a
    newline) as an (n, columns) float64 array; None when the fast path does not apply."""
    import numpy as np

    orjson = _json()
    if (orjson is None or columns < 1 or not body or len(body) > FAST_MAX or not body.endswith(b"\n")
            or any(mark in body for mark in _NOT_NUMBERS)):
        return None
    rows = _fixed_width_rows(body, columns)
    table = None
    try:
        if rows is not None:  # equal lines: one flat array, the rows fixed by the layout check
            values = orjson.loads(b"[" + body[:-1].replace(b"\n", b",") + b"]")
            if len(values) == rows * columns:  # else a line held a newline or a comma more
                table = np.fromiter(values, np.float64, len(values)).reshape(rows, columns)
        if table is None:  # lines of varying width: one JSON array a line, numpy refuses ragged ones
            table = np.array(orjson.loads(b"[[" + body[:-1].replace(b"\n", b"],[") + b"]]"), dtype=np.float64)
            if table.ndim != 2 or table.shape[1] != columns:
                return None
    except (ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
        return None
    if not table.all() and _MINUS_ZERO_INT.search(body):
        return None
    return table


def _fixed_width_rows(body: bytes, columns: int) -> int | None:
    """The row count when every line is as long as the first and has its commas where the first
    has them (PyAutoFit pads every value to its column's width); else None."""
    import numpy as np

    width = body.find(b"\n") + 1
    if width < 2 or len(body) % width:
        return None
    grid = np.frombuffer(body, dtype=np.uint8).reshape(len(body) // width, width)
    commas = np.flatnonzero(grid[0] == _COMMA)
    if len(commas) != columns - 1 or not (grid[:, -1] == _NEWLINE).all() or not (grid[:, commas] == _COMMA).all():
        return None
    return int(grid.shape[0])


MAX_COLUMNS = 10_000  # a model has tens to hundreds of parameters; a 10^7-column line is an attack
MAX_CELLS = 16 * 2**20  # 128 MiB of float64: 300,000 samples of 50 parameters fit in a quarter of it


def check_width(name: str, data: bytes) -> None:
    """Refuse a CSV wider or larger than any fit's before numpy parses it (what it would allocate)."""
    head = data[:1 << 20]
    newline = head.find(b"\n")
    if (newline < 0 and len(data) > len(head)) or head[:newline].count(b",") >= MAX_COLUMNS:
        raise IngestError(f"{name}: its first line has more than {MAX_COLUMNS} columns (or over 1 MiB)")
    # a cell takes at least its separator's byte: only a file larger than the cap can hold more
    if len(data) > MAX_CELLS and data.count(b",") + data.count(b"\n") > MAX_CELLS:
        raise IngestError(f"{name}: more than {MAX_CELLS} cells")


def _samples_header(data: bytes) -> tuple[list[str], bytes]:
    """samples.csv's columns and the bytes of its rows, checked; a file cut off mid-write is
    refused rather than read short."""
    check_width("files/samples.csv", data)
    head, _, body = data.partition(b"\n")
    columns = [c.strip() for c in head.decode("utf-8", "replace").split(",")]
    missing = [c for c in _SAMPLE_COLUMNS if c not in columns]
    if missing:
        raise IngestError(f"files/samples.csv: header lacks {', '.join(missing)}")
    if body.strip() and not body.endswith(b"\n"):
        raise IngestError("files/samples.csv: truncated (the last line has no end)")
    return columns, body


def _free(columns: list[str]) -> list[int]:
    return [i for i, c in enumerate(columns) if c not in (*_SAMPLE_COLUMNS, "log_posterior")]


def read_samples(data: bytes) -> dict[str, Any]:
    """samples.csv as numpy arrays: ``parse`` (orjson) when it applies, else ``np.loadtxt``
    (the same numbers; its errors are the ones reported)."""
    import numpy as np

    columns, body = _samples_header(data)
    table = parse(body, len(columns))
    if table is None:
        try:
            table = (np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2) if body.strip()
                     else np.empty((0, len(columns))))
        except ValueError as exc:
            raise IngestError(f"files/samples.csv: {exc}") from None
    if table.shape[1] != len(columns):
        raise IngestError(f"files/samples.csv: {table.shape[1]} values a row, {len(columns)} in the header")
    free = _free(columns)
    return {"paths": [columns[i] for i in free], "parameters": np.ascontiguousarray(table[:, free]),
            **{c: np.ascontiguousarray(table[:, columns.index(c)]) for c in _SAMPLE_COLUMNS}}


def plain_samples(data: bytes) -> dict[str, Any]:
    """samples.csv as ``Float64s``, the same numbers (``float`` rounds as ``np.loadtxt`` does)."""
    columns, body = _samples_header(data)
    rows = plain_rows("files/samples.csv", body)
    if rows and len(rows[0]) != len(columns):
        raise IngestError(f"files/samples.csv: {len(rows[0])} values a row, {len(columns)} in the header")
    free = _free(columns)
    parameters = array("d", [row[i] for row in rows for i in free])
    return {"paths": [columns[i] for i in free], "parameters": Float64s(parameters, (len(rows), len(free))),
            **{c: Float64s(array("d", [row[j] for row in rows]), (len(rows),))
               for c in _SAMPLE_COLUMNS for j in [columns.index(c)]}}


def plain_rows(name: str, body: bytes) -> list[list[float]]:
    """Comma-separated numbers, a list a row, every row as wide (blank lines and # comments skipped,
    as ``np.loadtxt`` does)."""
    lines = body.split(b"\n")
    if b"#" in body:
        lines = [line.partition(b"#")[0] for line in lines]
    try:
        rows = [[float(cell) for cell in line.split(b",")] for line in lines if line.strip()]
    except ValueError as exc:
        raise IngestError(f"{name}: {exc}") from None
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise IngestError(f"{name}: rows of {min(widths)} and {max(widths)} values")
    return rows
