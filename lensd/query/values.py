"""What a query may compare with: the checks every node runs on the values it is given.

Fit columns by type, the comparisons, and the normalising checks (text sqlite can bind, scalars
without NaN) live here, below both the operands and the predicates, so that neither depends on the
other for them.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Iterable
from typing import Final, Literal, NoReturn, TypeAlias

from lensd.errors import QueryError

Scalar: TypeAlias = bool | int | float | str
ClassField: TypeAlias = Literal["class_path", "class_name"]

TEXT_COLUMNS: Final = frozenset({"id", "name", "path_prefix", "unique_tag", "status", "parent_id"})
NUMBER_COLUMNS: Final = frozenset({"max_log_likelihood", "log_evidence"})
BOOL_COLUMNS: Final = frozenset({"is_complete", "is_grid_search"})
COMPARISONS: Final = ("==", "<", "<=", ">", ">=")
MAX_DEPTH: Final = 64  # the deepest query tree, in any form (wire, text, SQL)
MAX_NODES: Final = 10_000  # the most nodes a query sent over the wire may have
INT64: Final = range(-(2**63), 2**63)  # the whole numbers a query keeps as int (msgpack, sqlite)
METHODS: Final = frozenset({"contains", "in_", "is_none", "path"})  # names attribute access cannot reach
NAME: Final = r"[^\W\d]\w*"  # a bare name in the text grammar: text.py's tokenizer reads exactly these
LITERAL_NAMES: Final = frozenset({"true", "false", "none", "null", "True", "False", "None", "inf", "nan"})
_BOOL_MESSAGE: Final = (
    "a query cannot be used as a bool: use & | ~ (with parentheses) instead of and/or/not, "
    "and (a < x) & (x < b) instead of a < x < b"
)


def no_bool(self: object) -> NoReturn:
    raise QueryError(_BOOL_MESSAGE)


def _unwrapped(value: object) -> object:
    """A 0-d numpy array as its one element (``np.array(1.0)``, ``np.asarray`` of a number,
    ``arr[..., 0]`` of a 1-d array: a value, not a collection); anything else as it is, so an array
    of any other shape is refused by the checks as before. numpy is never imported here."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray) and value.ndim == 0:
        return value.item()
    return value


def check_text(value: object, what: str) -> str:
    """A string sqlite can bind (no lone surrogates); anything else is a QueryError.

    A str subclass (numpy's ``np.str_``) or a 0-d str array comes back as a plain str, whose repr
    the text grammar reads.
    """
    value = _unwrapped(value)
    if not isinstance(value, str):
        raise QueryError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{what}: not valid unicode (a lone surrogate?): {value!r}") from None
    return str(value)


def check_scalar(value: object, what: str = "a query value") -> Scalar:
    """A value fits can be compared with, normalised to bool, int, float or str (numpy too).

    numpy's scalars are what a notebook has at hand (``samples.max_log_likelihood()``, an element
    of an array, ``np.bool_`` from a comparison): each becomes the plain Python value, so the wire
    to the daemon carries a msgpack bool or number and ``repr`` stays text the grammar reads.
    ``np.bool_`` is not a ``numbers.Real``, so it is recognised by type; a 0-d array
    (``np.array(1.0)``) is its element, any other array is refused; numpy is never imported here (a
    value cannot be numpy's unless numpy is loaded already).
    NaN is refused: it equals nothing and orders with nothing, so a query holding it is a mistake.
    A whole number outside 64 bits becomes a float: the compiler compares every number as REAL
    anyway, and msgpack (the wire to the daemon) cannot carry it, so file and socket agree.
    """
    value = _unwrapped(value)
    if isinstance(value, str):
        return check_text(value, what)
    if isinstance(value, bool):
        return value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.bool_):
        return bool(value)
    if isinstance(value, numbers.Real):
        result: int | float = int(value) if isinstance(value, numbers.Integral) else float(value)
        try:
            if isinstance(result, int) and result not in INT64:
                result = float(result)
            if math.isnan(float(result)):
                raise QueryError(f"{what}: NaN equals nothing; use .is_none() or a range instead")
        except OverflowError:
            raise QueryError(f"{what}: {value} is too large to compare") from None
        return result
    raise QueryError(f"{what}: cannot compare with {type(value).__name__} {value!r}")


def check_list(values: object, what: str) -> list[object]:
    """The values ``x.in_(values)`` is given, as a list: any iterable but a string, bytes or a 0-d
    array. A 0-d array is one value, as a comparison takes it, so ``x.in_(np.array(1.0))`` is
    refused as ``x.in_(1.0)`` is (numpy's own error, iteration over a 0-d array, is not a LensdError)."""
    if _unwrapped(values) is not values:
        raise QueryError(f"{what} takes a list of values, not a 0-d array (one value): use == or .in_([value])")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise QueryError(f"{what} takes a list of values, not {type(values).__name__}")
    return list(values)


def is_name(text: str) -> bool:
    """Can ``text`` be written bare in the text grammar? (``str.isidentifier`` is not the same test:
    it takes ``a·b`` and ``℘``, which the tokenizer does not, so a repr built on it did not parse.)"""
    return re.fullmatch(NAME, text) is not None


def path_repr(root: str, path: str) -> str:
    """``root.a.b`` when every segment can be written as an attribute, else ``root['a.b']``."""
    parts = path.split(".")
    if path and not all(is_name(p) and not p.startswith("_") and p not in METHODS for p in parts):
        return f"{root}[{path!r}]"
    return root + "".join(f".{p}" for p in parts if path)


def class_repr(by: ClassField, name: str) -> str:
    """A class test's target as text: the bare (dotted) name where the grammar reads it back as that
    test, else ``<class_path 'my-pkg.Iso'>``: class paths come from data and need not be names."""
    parts = name.split(".")
    bare = all(map(is_name, parts)) and parts[0] not in LITERAL_NAMES and (len(parts) > 1) == (by == "class_path")
    return name if bare else f"<{by} {name!r}>"
