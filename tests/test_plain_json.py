"""Validated trees are kept as they are when already plain JSON (``records._plain_json``), else
copied by ``_json_value`` as before: same values, same types (an int stays an int, a tuple becomes
a list), the same one-line errors at every limit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensd.domain import records
from lensd.errors import InvalidRecord


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
