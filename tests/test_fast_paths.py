"""The fast paths of reading a folder answer exactly as the slow ones they stand in for: orjson for a
fit's JSON files (``pyautofit._json``, else ``json.loads``) and validated trees kept as they are
when already plain (``records._plain_json``, else copied by ``_json_value``). Same values, same
types (an int stays an int), same one-line errors."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensd.domain import records
from lensd.errors import IngestError, InvalidRecord
from lensd.ingest import csvnumbers, pyautofit

pytest.importorskip("orjson", reason="orjson (lensd[fast], part of .[test]) is not installed: pip install -e '.[test]'")

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | st.text()
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


class _Bytes:
    """A ``Source`` holding one file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, name: str) -> bytes | None:
        return self.data

    def mtime(self, name: str) -> float | None:
        return None

    def listing(self) -> list[str]:
        return []


@contextmanager
def _json_only() -> Iterator[None]:
    """``pyautofit._json`` as it reads without orjson."""
    saved = csvnumbers._orjson
    csvnumbers._orjson = None
    try:
        yield
    finally:
        csvnumbers._orjson = saved


def _answer(data: bytes) -> tuple[str, Any]:
    try:
        return "value", pyautofit._json(_Bytes(data), "files/x.json")
    except IngestError as exc:
        return "error", str(exc)


def _same(fast: tuple[str, Any], slow: tuple[str, Any]) -> None:
    assert fast[0] == slow[0]
    assert repr(fast[1]) == repr(slow[1])  # repr: 1 and 1.0, -0.0 and 0.0, nan, key order all count
    assert _types(fast[1]) == _types(slow[1])


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES, st.sampled_from([None, 2, 4]))
def test_json_files_read_as_json_reads_them(value: Any, indent: int | None) -> None:
    data = json.dumps(value, indent=indent).encode()
    fast = _answer(data)
    with _json_only():
        slow = _answer(data)
    _same(fast, slow)


AWKWARD_JSON = [
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',  # json reads these, orjson refuses them
    b"\xef\xbb\xbf{\"bom\": 1}",  # a UTF-8 byte order mark
    b'"\\ud800"', b'{"pair": "\\ud83d\\ude00"}',  # a lone surrogate escape, and a pair
    b"[9223372036854775807, -9223372036854775808, 18446744073709551615]",
    b"[123456789012345678901234567890, -9223372036854775809]",  # past 64 bits: orjson would give floats
    b"[0.0026595034472919167, 1234567890123456789.5, 1e400, -1e400, 1e-400, 5e-324]",
    b'{"a": 1, "a": 2}', b"-0", b"[-0.0, 0.1e1, 1E5]", b"{not json", b"[1, 2", b"", b" ",
    b'{"x": "\xff"}', b'"\x00"', "{\"\u00e9\": \"\u2603\"}".encode(), "\"\\u00e9\"".encode("utf-16"),
    b"[" * 990 + b"]" * 990, b"[" * 1100 + b"]" * 1100, b"{\"a\":" * 300 + b"1" + b"}" * 300,
]


@pytest.mark.parametrize("data", AWKWARD_JSON, ids=range(len(AWKWARD_JSON)))
def test_awkward_json_files_read_as_json_reads_them(data: bytes) -> None:
    fast = _answer(data)
    with _json_only():
        slow = _answer(data)
    _same(fast, slow)


class _Mapping(dict[str, Any]):
    """A dict subclass (as ``codec.Received`` is): copied into a plain dict."""


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=3) | st.floats()
    | st.builds(np.float64, st.floats()) | st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    lambda inner: (st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                   | st.dictionaries(st.text(max_size=3), inner, max_size=3).map(_Mapping)),
    max_leaves=12)


def _copied(value: Any) -> tuple[str, Any]:
    """``_json_value`` with the plain check off: every tree copied, as before it existed."""
    saved = records._plain_json
    records._plain_json = lambda value, depth=0: False
    try:
        return "value", records._json_value(value, "info")
    except InvalidRecord as exc:
        return "error", str(exc)
    finally:
        records._plain_json = saved


def _checked(value: Any) -> tuple[str, Any]:
    try:
        return "value", records._json_value(value, "info")
    except InvalidRecord as exc:
        return "error", str(exc)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return type(a) is type(b) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return type(a) is type(b)
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_plain_trees_are_kept_and_others_copied_as_before(value: Any) -> None:
    kept, copied = _checked(value), _copied(value)
    assert kept[0] == copied[0]
    if kept[0] == "error":
        assert kept[1] == copied[1]
        return
    assert _equal(kept[1], copied[1])
    if records._plain_json(value):
        assert kept[1] is value  # kept, not copied
    elif isinstance(value, (dict, list, tuple)):
        assert kept[1] is not value


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("value", [
    _nested(records.MAX_DEPTH), _nested(records.MAX_DEPTH + 1), _nested(records.MAX_DEPTH, {}),
    _nested(records.MAX_DEPTH + 1, {}), _nested(records.MAX_DEPTH + 1, []), [[[]]] * 3,
    {"big": 2**63}, {"small": -(2**63) - 1}, {"edge": [2**63 - 1, -(2**63)]},
    {"s": "x" * (records.MAX_STRING + 1)}, {"x" * (records.MAX_STRING + 1): 1}, {1: "int key"},
    {"t": (1, 2)}, {"n": np.float32(1.5)}, {"o": object()},
], ids=lambda value: type(value).__name__)
def test_limits_answer_as_before(value: Any) -> None:
    kept, copied = _checked(value), _copied(value)
    assert kept[0] == copied[0] and (kept[1] == copied[1] if kept[0] == "error" else _equal(kept[1], copied[1]))
