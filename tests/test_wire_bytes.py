"""The bytes a client packs are SPEC §6's, however the packing is done: every frame is compared
with one built by a plain reference encoder (msgpack itself, arrays as extension type 1 holding
``msgpack([dtype, shape, raw little-endian C-order bytes])``), so a faster packer cannot change
what travels or what is stored."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lensd.demo.synthetic import record
from lensd.domain.samples import Samples
from lensd.wire import codec, protocol


def _reference_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        little = obj.astype(obj.dtype.newbyteorder("<")) if obj.dtype.byteorder == ">" else obj
        head = [little.dtype.str, list(little.shape), np.ascontiguousarray(little).tobytes()]
        return msgpack.ExtType(1, msgpack.packb(head, use_bin_type=True))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, codec.Float64s):
        return msgpack.ExtType(1, msgpack.packb(["<f8", obj.shape, obj.values.tobytes()], use_bin_type=True))
    raise TypeError(type(obj).__name__)


def reference_frame(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, default=_reference_default, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


dtypes = st.sampled_from(["<f8", ">f8", "<f4", "<f2", "<i8", ">i4", "<i2", "|i1", "<u8", "|u1", "|b1"])
arrays = dtypes.flatmap(lambda d: hnp.arrays(d, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
leaves = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=5) | arrays
trees = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_any_message_packs_to_the_reference_bytes(value: Any) -> None:
    message = {"op": "submit", "rid": 3, "record": value}
    assert protocol.encode_frame(message) == reference_frame(message)


@given(st.integers(1, 40), st.integers(1, 6), st.booleans())
def test_a_records_frame_is_the_reference_bytes(n: int, width: int, fortran: bool) -> None:
    """A job's submit, with its samples as arrays, as Samples, and as views (strided, Fortran)."""
    made = record(n, n, 0)
    samples = made["samples"]
    parameters = np.random.default_rng(n).normal(size=(n, width))
    samples["parameters"] = np.asfortranarray(parameters) if fortran else parameters
    samples["paths"] = [f"p{i}" for i in range(width)]
    samples["weight"] = np.arange(2 * n, dtype=float)[::2]  # a strided view
    message = protocol.request("submit", 7, record=made)
    assert protocol.encode_frame(message) == reference_frame(message)
    as_samples = {**made, "samples": Samples.from_wire(samples, None).to_wire()}
    message = protocol.request("submit", 8, record=as_samples)
    assert protocol.encode_frame(message) == reference_frame(message)


def test_float64s_pack_as_a_float64_array() -> None:
    from array import array

    values = array("d", [0.5, -1.0, float("nan"), 3.0, 4.0, 5.0])
    message = {"op": "submit", "rid": 1, "record": {"samples": {"parameters": codec.Float64s(values, [3, 2])}}}
    as_array = {"op": "submit", "rid": 1, "record": {"samples": {"parameters": np.array(values).reshape(3, 2)}}}
    assert protocol.encode_frame(message) == reference_frame(message) == protocol.encode_frame(as_array)
