"""msgpack with numpy arrays, the one encoding for the wire and for stored payloads.

Arrays travel as msgpack extension type 1 holding ``[dtype, shape, raw little-endian bytes]``
(SPEC §6). Only plain numeric dtypes are accepted on the way in: an object dtype would need
pickle, and nothing lensd reads is ever unpickled.

numpy is imported when an array is first packed or unpacked, not with this module: a frame without
arrays (status, progress, a query page) never needs it, and ``lensd status`` starts ~70 ms sooner.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

import msgpack

from lensd.errors import ProtocolError

if TYPE_CHECKING:
    import numpy as np

NDARRAY_EXT = 1
# Complex is refused: stored samples and facts are real, and a cast would drop the imaginary part.
_NUMERIC_KINDS = frozenset("biuf")
_DTYPE_FORM = re.compile(r"[<>|=]?[biuf][1248]")  # checked before numpy parses the string
SCAN_ABOVE: Final = 1 << 20  # bodies larger than this are walked (not built) first: ``check_shape``
MAX_ITEMS: Final = 1_000_000  # values in one message; a 16 MiB frame of tiny ones would cost ~1 GB
MAX_DEPTH: Final = 64
_MAX_DIMS = 8
_LITTLE = sys.byteorder == "little"
_DTYPES: dict[str, np.dtype[Any]] = {}  # dtype strings seen in payloads, checked once each


def _default(obj: Any) -> Any:
    numpy = sys.modules.get("numpy")  # an object can only be numpy's once numpy is imported
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return msgpack.ExtType(NDARRAY_EXT, _pack_array(obj))
    if numpy is not None and isinstance(obj, numpy.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    to_wire = getattr(obj, "to_wire", None)
    if callable(to_wire):
        return to_wire()
    raise TypeError(f"cannot encode {type(obj).__name__} for lensd")


def _pack_array(array: np.ndarray) -> bytes:
    """``msgpack([dtype, shape, raw])`` without packing the raw bytes twice: the head is packed
    as a 2-list and its marker bumped to a 3-list, then the bin header and the bytes follow."""
    dtype = array.dtype
    if dtype.kind == "c":
        raise TypeError(f"complex arrays are refused (dtype {dtype}): lensd stores real numbers, and "
                        "the imaginary part would be lost; send .real and .imag as two arrays")
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"only numeric arrays travel, not dtype {dtype}")
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not _LITTLE):
        array = array.astype(dtype.newbyteorder("<"))
        dtype = array.dtype
    return _ext_body(dtype.str, list(array.shape), array.tobytes())  # C order, contiguous or not


# The head of every array body is packed by this one Packer: ``msgpack.packb`` makes a Packer a call,
# and inside ``pack``'s own (an array is packed from its ``default``) that new Packer's buffer is a
# fresh allocation each time: ~10 µs an array against 0.3 µs (a 1,000 × 4 record's frame 72 -> 34 µs).
# A head holds a str and ints only, so packing it runs no Python code and no other thread can cut in.
_HEAD = msgpack.Packer(use_bin_type=True)


def _ext_body(dtype: str, shape: list[int], raw: bytes) -> bytes:
    head: bytes = _HEAD.pack([dtype, shape])
    size = len(raw)
    if size < 0x100:
        bin_head = b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        bin_head = b"\xc5" + size.to_bytes(2, "big")
    else:
        bin_head = b"\xc6" + size.to_bytes(4, "big")
    return b"".join((b"\x93", head[1:], bin_head, raw))  # 0x92 (2-list) -> 0x93 (3-list)


class Float64s:
    """A float64 array built without numpy (the stdlib ``array``): it travels and is stored as an
    ndarray of dtype ``<f8`` would be, and decodes as one. ``lensd submit`` parses samples.csv into
    these, so a one-shot command does not import numpy (docs/performance.md)."""

    __slots__ = ("shape", "values")

    def __init__(self, values: array[float], shape: Sequence[int]) -> None:
        if len(values) != math.prod(shape):
            raise ValueError(f"{len(values)} values do not fill the shape {tuple(shape)}")
        self.values = values
        self.shape = list(shape)

    def to_wire(self) -> msgpack.ExtType:
        values = self.values
        if not _LITTLE:
            values = array("d", values)
            values.byteswap()
        return msgpack.ExtType(NDARRAY_EXT, _ext_body("<f8", self.shape, values.tobytes()))


def _ext_hook(code: int, data: bytes) -> Any:
    import numpy as np

    if code != NDARRAY_EXT:
        raise ProtocolError(f"unknown msgpack extension type {code}")
    try:
        dtype_str, shape, raw = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ProtocolError(f"malformed array extension: {type(exc).__name__}") from None
    dtype = _DTYPES.get(dtype_str) if isinstance(dtype_str, str) else None
    if dtype is None:
        if not isinstance(dtype_str, str) or not _DTYPE_FORM.fullmatch(dtype_str):
            shown = repr(dtype_str)[:40]
            raise ProtocolError(f"array dtype {shown} is not a plain real numeric dtype such as '<f8'")
        dtype = np.dtype(dtype_str)
    if dtype.kind not in _NUMERIC_KINDS:
        raise ProtocolError(f"array dtype {dtype} is not numeric")
    if isinstance(dtype_str, str) and len(_DTYPES) < 64:
        _DTYPES[dtype_str] = dtype
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ProtocolError("array shape must be a list of non-negative integers")
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize * math.prod(shape):
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
    """Decode msgpack produced by ``pack``; anything malformed becomes a ProtocolError.

    A body over ``SCAN_ABOVE`` bytes is first walked without building anything (``check_shape``):
    msgpack turns one byte into a ~60-byte Python object, so the count of values, not the size
    of the bytes, is what bounds the memory a message costs.
    """
    if len(data) > SCAN_ABOVE:
        check_shape(data)
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=True,
                               use_list=True)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on bad input
        raise ProtocolError(f"malformed msgpack: {_fault(exc)}") from None


_FAULTS: Final = {  # msgpack's exceptions whose text is empty or names msgpack's own call
    "FormatError": "a byte that starts no msgpack value (0xc1, or a reserved type)",
    "StackError": "nested deeper than msgpack can decode",
    "ExtraData": "bytes after the end of the message",
}


def _fault(exc: Exception) -> str:
    """What was wrong with the bytes, in words: msgpack's FormatError has no text at all."""
    kind = type(exc).__name__
    return _FAULTS.get(kind) or (f"{kind}: {exc}" if str(exc) else kind)


class Received(dict[str, Any]):
    """A map decoded from received bytes, with those bytes (``packed``): a value that is stored as
    msgpack can be stored as it arrived, without being packed again (``Samples.from_wire``), and
    what is worked out from a value can be remembered by its bytes (``modeltree.shape``). Never
    changed after decoding: equal bytes are an equal value."""

    __slots__ = ("packed",)

    def __init__(self, value: dict[str, Any], packed: bytes) -> None:
        super().__init__(value)
        self.packed = packed


def span(body: bytes, path: Sequence[str]) -> tuple[int, int] | None:
    """Where the value at ``path`` (map keys, outermost first) lies in the msgpack map ``body``.

    None when a map on the way is missing or malformed, or holds the key twice: a decoder keeps
    one of the two, and the bytes must be those of the value it kept. One pass, nothing built but
    the keys.
    """
    return spans(body, path[:-1], (path[-1],)).get(path[-1])


def spans(body: bytes, path: Sequence[str], names: Collection[str]) -> dict[str, tuple[int, int]]:
    """``span`` of each of ``names`` in the map at ``path``, in one pass: a name missing or there
    twice is left out; all are, when a map on the way is missing, malformed, or holds its key twice."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
    unpacker.feed(body)
    try:
        return _seek(unpacker, path, names) or {}
    except Exception:  # malformed, or a key twice: the full decode says what it says
        return {}


def _seek(unpacker: msgpack.Unpacker, path: Sequence[str],
          names: Collection[str]) -> dict[str, tuple[int, int]] | None:
    """Read one map from ``unpacker`` whole; the spans of ``names`` in the map at ``path`` inside it."""
    if not path:
        found: dict[str, tuple[int, int]] = {}
        twice = set()
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            start = unpacker.tell()
            unpacker.skip()
            if key in names:
                if key in found:
                    twice.add(key)
                found[key] = (start, unpacker.tell())
        for key in twice:
            del found[key]
        return found
    inner: dict[str, tuple[int, int]] | None = None
    seen = False
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() != path[0]:
            unpacker.skip()
            continue
        if seen:
            raise ValueError(f"the key {path[0]!r} is there twice")
        seen = True
        inner = _seek(unpacker, path[1:], names)
    return inner

# Bytes after the type byte that say a length (str/bin/ext) or hold a fixed-size scalar.
_FIXED = {0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8,
          0xd4: 2, 0xd5: 3, 0xd6: 5, 0xd7: 9, 0xd8: 17}
_SIZED = {0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0), 0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0),
          0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1)}  # (length bytes, type byte of an ext)
_CONTAINERS = {0xdc: (2, 1), 0xdd: (4, 1), 0xde: (2, 2), 0xdf: (4, 2)}  # (count bytes, slots/entry)


def check_shape(data: bytes, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH) -> None:
    """Refuse msgpack holding more than ``max_items`` values or nested deeper than ``max_depth``.

    Only headers are read; strings, binaries and extensions are skipped by their length, so this
    costs one step per value and allocates nothing.
    """
    view = memoryview(data)
    pos, end, items = 0, len(data), 0
    open_levels = [1]  # values still to read at each open container
    try:
        while open_levels:
            if open_levels[-1] == 0:
                open_levels.pop()
                continue
            open_levels[-1] -= 1
            items += 1
            if items > max_items:
                raise ProtocolError(f"message holds more than {max_items} values")
            byte = view[pos]
            pos += 1
            count = 0
            if byte <= 0x7F or byte >= 0xE0 or byte in (0xC0, 0xC2, 0xC3):
                continue
            if byte <= 0x8F:
                count = (byte & 0x0F) * 2
            elif byte <= 0x9F:
                count = byte & 0x0F
            elif byte <= 0xBF:
                pos += byte & 0x1F
            elif byte in _FIXED:
                pos += _FIXED[byte]
            elif byte in _SIZED:
                width, extra = _SIZED[byte]
                pos += width + extra + int.from_bytes(view[pos:pos + width], "big")
            elif byte in _CONTAINERS:
                width, slots = _CONTAINERS[byte]
                count = int.from_bytes(view[pos:pos + width], "big") * slots
                pos += width
            else:
                raise ProtocolError(f"malformed msgpack: byte 0x{byte:02x}")
            if pos > end:
                raise ProtocolError("malformed msgpack: truncated")
            if count:
                if len(open_levels) > max_depth:
                    raise ProtocolError(f"message is nested deeper than {max_depth} levels")
                open_levels.append(count)
    except IndexError:
        raise ProtocolError("malformed msgpack: truncated") from None
