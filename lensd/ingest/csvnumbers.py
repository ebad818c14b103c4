"""The numbers of a samples.csv, parsed exactly and fast (orjson), or None to fall back on numpy.

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

import re
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # numpy is imported by a parse, not with this module: ``lensd submit`` never needs it
    import numpy as np

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
    try:
        if rows is not None:  # a flat array: the layout check above already fixed the rows
            values = orjson.loads(b"[" + body[:-1].replace(b"\n", b",") + b"]")
            table = np.array(values, dtype=np.float64)
            if table.shape != (rows * columns,):
                return None
            table = table.reshape(rows, columns)
        else:  # rows of varying width: one JSON array a row, numpy refuses ragged ones
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
