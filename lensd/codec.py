"""msgpack with numpy arrays, the one encoding for the wire and for stored payloads.

Arrays travel as msgpack extension type 1 holding ``[dtype, shape, raw little-endian bytes]``
(SPEC §6). Only plain numeric dtypes are accepted on the way in: an object dtype would need
pickle, and nothing lensd reads is ever unpickled.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from lensd.errors import ProtocolError

NDARRAY_EXT = 1
_NUMERIC_KINDS = frozenset("biufc")
_MAX_DIMS = 8


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return msgpack.ExtType(NDARRAY_EXT, _pack_array(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    to_wire = getattr(obj, "to_wire", None)
    if callable(to_wire):
        return to_wire()
    raise TypeError(f"cannot encode {type(obj).__name__} for lensd")


def _pack_array(array: np.ndarray) -> bytes:
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"only numeric arrays travel, not dtype {array.dtype}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    raw = np.ascontiguousarray(little).tobytes()
    packed: bytes = msgpack.packb([little.dtype.str, list(array.shape), raw], use_bin_type=True)
    return packed


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY_EXT:
        raise ProtocolError(f"unknown msgpack extension type {code}")
    try:
        dtype_str, shape, raw = msgpack.unpackb(data, raw=False)
        dtype = np.dtype(str(dtype_str))
    except Exception as exc:
        raise ProtocolError(f"malformed array extension: {exc}") from None
    if dtype.kind not in _NUMERIC_KINDS:
        raise ProtocolError(f"array dtype {dtype} is not numeric")
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ProtocolError("array shape must be a list of non-negative integers")
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise ProtocolError("array byte length does not match its dtype and shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()  # writable, like any user array


def pack(obj: Any) -> bytes:
    """Encode a value (dicts, lists, numbers, strings, bytes, numpy arrays) as msgpack."""
    try:
        packed: bytes = msgpack.packb(obj, default=_default, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from None
    return packed


def unpack(data: bytes) -> Any:
    """Decode msgpack produced by ``pack``; anything malformed becomes a ProtocolError."""
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=True,
                               use_list=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise ProtocolError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
