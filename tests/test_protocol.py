"""Wire protocol v1: golden bytes, round trips, and hypothesis over splits and garbage."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lensd import errors
from lensd.errors import ProtocolError
from lensd.wire import codec, protocol
from lensd.wire.protocol import HEADER, FrameDecoder, encode_frame

HELLO_FRAME = bytes.fromhex("00000012" "83" "a26f70" "a568656c6c6f" "a176" "01" "a3726964" "00")
ERROR_FRAME = bytes.fromhex(
    "00000036" "83" "a3726964" "07" "a26f6b" "c2" "a56572726f72" "82"
    "a4636f6465" "a870726f746f636f6c" "a76d657373616765" "ae756e6b6e6f776e206f70202778"
    "27")


def decode_all(data: bytes) -> list[dict[str, Any]]:
    decoder = FrameDecoder()
    messages = decoder.feed(data)
    assert decoder.buffered == 0
    return messages


def same(a: Any, b: Any) -> bool:
    """Equality that compares arrays by bytes, shape and dtype up to byte order."""
    if isinstance(a, np.ndarray):  # bitwise, so NaN payloads and -0.0 count too
        little = a.dtype.newbyteorder("<")
        return (isinstance(b, np.ndarray) and a.shape == b.shape and b.dtype.newbyteorder("<") == little
                and np.ascontiguousarray(a, little).tobytes() == np.ascontiguousarray(b, little).tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


# -- golden bytes: the wire format other clients are written against --------------------------

def test_hello_frame_golden_bytes() -> None:
    assert encode_frame(protocol.hello()) == HELLO_FRAME
    assert decode_all(HELLO_FRAME) == [{"op": "hello", "v": 1, "rid": 0}]


def test_error_reply_golden_bytes() -> None:
    reply = protocol.error(7, errors.ProtocolError("unknown op 'x'"))
    assert reply == {"rid": 7, "ok": False, "error": {"code": "protocol", "message": "unknown op 'x'"}}
    assert encode_frame(reply) == ERROR_FRAME


# -- numpy arrays ------------------------------------------------------------------------------

ARRAYS = [
    np.arange(5, dtype="<f8"), np.arange(6, dtype=">f8").reshape(2, 3), np.zeros(0, dtype="f4"),
    np.zeros((0, 4)), np.arange(12, dtype=">i4").reshape(3, 4), np.array([True, False]),
    np.arange(4, dtype="u1"), np.array([0.5, -2], dtype="f2"),
    np.array(3.5), np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(10)[::3],
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_arrays_round_trip(array: np.ndarray) -> None:
    message = {"op": "progress", "rid": 1, "samples": {"parameters": array, "nested": [array]}}
    (back,) = decode_all(encode_frame(message))
    assert same(message, back)
    assert back["samples"]["parameters"].dtype.byteorder in "<|="


def test_object_arrays_refused_on_encode() -> None:
    with pytest.raises(errors.ProtocolError, match="dtype object"):
        encode_frame({"a": np.array([1, "x"], dtype=object)})


# -- framing -----------------------------------------------------------------------------------

def test_oversized_length_refused_after_only_the_header() -> None:
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(HEADER.pack(101)[:3]) == []
    assert decoder.buffered == 3
    with pytest.raises(errors.FrameTooLarge, match="101 bytes exceeds the limit of 100"):
        decoder.feed(HEADER.pack(101)[3:])
    with pytest.raises(errors.FrameTooLarge):
        FrameDecoder().feed(HEADER.pack(protocol.DEFAULT_MAX_FRAME + 1))


def test_frame_at_the_limit_passes_and_encode_refuses_above() -> None:
    frame = encode_frame({"blob": b"x" * 50})
    limit = len(frame) - HEADER.size
    assert FrameDecoder(max_frame=limit).feed(frame) == [{"blob": b"x" * 50}]
    with pytest.raises(errors.FrameTooLarge):
        encode_frame({"blob": b"x" * 50}, max_frame=limit - 1)


@pytest.mark.parametrize("body", [msgpack.packb([1, 2]), msgpack.packb("hello"), msgpack.packb({1: 2}),
                                  b"", b"\xc1", msgpack.packb({"a": 1}) + b"\x00"])
def test_frame_that_is_not_a_map_of_strings_is_refused(body: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(errors.ProtocolError):
        decoder.feed(HEADER.pack(len(body)) + body)
    with pytest.raises(errors.ProtocolError, match="unusable"):  # the stream is out of step now
        decoder.feed(HELLO_FRAME)


def test_non_mapping_refused_on_encode() -> None:
    with pytest.raises(errors.ProtocolError, match="not list"):
        encode_frame([1, 2])  # type: ignore[arg-type]


# -- hypothesis: any split of any messages decodes the same -----------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
arrays = hnp.arrays(st.sampled_from(["<f8", ">f8", "<i4", ">i8", "u1", "?", "<f2"]),
                    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
values = st.recursive(scalars | arrays, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
messages = st.lists(st.dictionaries(st.text(max_size=8), values, max_size=5), max_size=6)


def feed_pieces(data: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    decoder = FrameDecoder()
    out: list[dict[str, Any]] = []
    bounds = [0, *sorted(cuts), len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        out += decoder.feed(data[a:b])
    assert decoder.buffered == 0
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_any_split_decodes_to_the_same_messages(msgs: list[dict[str, Any]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert same(msgs, feed_pieces(stream, cuts))


def test_every_single_boundary_and_byte_by_byte() -> None:
    msgs = [protocol.hello(), protocol.request("query", 1, query={"a": [1.5, None]}, page_size=2),
            {"x": np.arange(3, dtype=">i2")}, protocol.done(1, count=3)]
    stream = b"".join(encode_frame(m) for m in msgs)
    for cut in range(len(stream) + 1):
        assert same(msgs, feed_pieces(stream, [cut]))
    assert same(msgs, feed_pieces(stream, list(range(len(stream)))))


# -- hypothesis: garbage only ever raises ProtocolError ---------------------------------------

ext_bodies = st.one_of(
    st.binary(max_size=30),
    st.builds(lambda d, s, r: msgpack.packb([d, s, r]),
              st.sampled_from(["<f8", ">i4", "O", "U3", "V8", "M8[s]", "|b1", "bogus", "f8,i4"])
              | st.text(max_size=6),
              st.lists(st.integers(-3, 2**64 - 1), max_size=4) | st.integers(-(2**63), 2**64 - 1),
              st.binary(max_size=24)),
)
bodies = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda code, ext: msgpack.packb({"a": msgpack.ExtType(code, ext)}),
              st.sampled_from([1, 1, 1, 2, 127]), ext_bodies),
)
garbage = st.one_of(st.binary(max_size=60),
                    st.builds(lambda b, tail: HEADER.pack(len(b)) + b + tail, bodies, st.binary(max_size=8)))


@settings(max_examples=1000, deadline=None)
@given(garbage, st.integers(1, 200))
def test_garbage_only_raises_protocol_error(data: bytes, max_frame: int) -> None:
    decoder = FrameDecoder(max_frame=max_frame)
    try:
        for message in decoder.feed(data):
            assert isinstance(message, dict)
    except errors.ProtocolError:
        pass


# -- handshake and request envelope ----------------------------------------------------------

def test_hello_accepted_and_reply() -> None:
    assert protocol.check_hello(protocol.hello(5)) == 5
    assert protocol.check_hello({"op": "hello", "v": 1}) == 0
    assert protocol.hello_reply(5, "0.1.0") == {"rid": 5, "ok": True, "v": 1, "server": "lensd 0.1.0"}


@pytest.mark.parametrize(("message", "match"), [
    ({"op": "hello", "v": 2}, r"unsupported protocol version 2; this daemon speaks 1"),
    ({"op": "hello", "v": True}, r"unsupported protocol version True"),
    ({"op": "hello"}, r"unsupported protocol version None"),
    ({"op": "query", "rid": 1}, r"expected hello as the first frame, got op 'query'"),
    ({"v": 1}, r"expected hello"),
    ({"op": "hello", "v": 1, "rid": "1"}, r"rid must be an integer, not str"),
])
def test_bad_hello(message: dict[str, Any], match: str) -> None:
    with pytest.raises(errors.ProtocolError, match=match):
        protocol.check_hello(message)


def test_parse_request() -> None:
    assert protocol.parse_request(protocol.request("count", 3, query={})) == ("count", 3, {"query": {}})
    assert protocol.parse_request({"op": "next", "rid": -1}) == ("next", -1, {})


@pytest.mark.parametrize(("message", "match"), [
    ({"op": "x", "rid": 1}, r"unknown op 'x'"),
    ({"op": 3, "rid": 1}, r"needs an op string, got 3"),
    ({"rid": 1}, r"needs an op string, got None"),
    ({"op": "count"}, r"request 'count' has no rid"),
    ({"op": "count", "rid": True}, r"rid must be an integer, not bool"),
    ({"op": "count", "rid": 1.0}, r"rid must be an integer, not float"),
    ({"op": "count", "rid": None}, r"rid must be an integer, not NoneType"),
])
def test_bad_requests(message: dict[str, Any], match: str) -> None:
    with pytest.raises(errors.ProtocolError, match=match):
        protocol.parse_request(message)
    assert protocol.reply_rid(message) == (1 if type(message.get("rid")) is int else None)


@pytest.mark.parametrize("check", [protocol.check_hello, protocol.parse_request])
@pytest.mark.parametrize("value", ["A" * (1 << 20), "x\ninjected log line", ["op"] * 100_000])
def test_a_peers_value_is_quoted_escaped_and_short(check: Any, value: object) -> None:
    fields = [{"op": value, "v": 1, "rid": 0}, {"op": "hello", "v": value, "rid": 0}]
    for message in fields if check is protocol.check_hello else fields[:1]:
        with pytest.raises(errors.ProtocolError) as raised:
            check(message)
        text = str(raised.value)
        assert len(text) < 200 and "\n" not in text, text[:300]


def test_request_refuses_unknown_op() -> None:
    with pytest.raises(errors.ProtocolError, match="unknown op 'qeury'"):
        protocol.request("qeury", 1)


# -- replies ---------------------------------------------------------------------------------

def test_reply_builders() -> None:
    assert protocol.ok(1, id="abc") == {"rid": 1, "ok": True, "id": "abc"}
    assert protocol.page(2, [1, 2]) == {"rid": 2, "page": [1, 2]}
    assert protocol.done(2, count=4) == {"rid": 2, "ok": True, "done": True, "count": 4}
    assert protocol.error(3, "storage", "disk full")["error"] == {"code": "storage", "message": "disk full"}
    assert protocol.error(None, errors.FrameTooLarge())["error"] == {"code": "too_large",
                                                                     "message": "FrameTooLarge"}
    with pytest.raises(ValueError, match="reserved"):
        protocol.done(1, ok=False)


def test_raise_for_reply_raises_the_daemons_error() -> None:
    page = protocol.page(1, [])
    assert protocol.raise_for_reply(page) is page
    with pytest.raises(errors.InvalidRecord, match="bad status"):
        protocol.raise_for_reply(protocol.error(1, errors.InvalidRecord("bad status")))
    with pytest.raises(errors.DaemonError, match="new"):
        protocol.raise_for_reply(protocol.error(1, "from_the_future", "new"))
    with pytest.raises(errors.ProtocolError, match="malformed error reply"):
        protocol.raise_for_reply({"rid": 1, "ok": False, "error": "nope"})


def test_complex_arrays_are_refused_both_ways() -> None:
    """A complex array would lose its imaginary part where samples and facts are stored: refused."""
    with pytest.raises(ProtocolError, match="complex arrays are refused"):
        encode_frame({"op": "progress", "rid": 1, "samples": np.array([1 + 2j])})
    raw = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(["<c16", [1], b"\0" * 16]))})
    with pytest.raises(ProtocolError, match="not a plain real numeric dtype"):
        codec.unpack(raw)


def test_a_dtype_string_is_checked_before_numpy_parses_it() -> None:
    """A 3 MB dtype string froze the loop for 7.6 s inside np.dtype(); its form is checked first."""
    hostile = "(" * 3_000_000
    raw = msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb([hostile, [1], b"\0" * 8]))})
    with pytest.raises(ProtocolError, match="not a plain real numeric dtype") as refused:
        codec.unpack(raw)
    assert len(str(refused.value)) < 200


def test_a_body_of_millions_of_tiny_values_is_refused_before_it_is_built() -> None:
    """msgpack makes ~60 bytes of Python objects per byte of a tiny value: counted first."""
    body = msgpack.packb({"op": "heartbeat", "ids": [0] * (2 * codec.MAX_ITEMS)})
    with pytest.raises(ProtocolError, match="more than"):
        codec.unpack(body)
    deep = b"\x91" * (codec.MAX_DEPTH + 5) + b"\xc0" + b"\x00" * codec.SCAN_ABOVE
    with pytest.raises(ProtocolError, match="nested deeper"):
        codec.check_shape(deep)
    fine = msgpack.packb({"ids": ["x" * 40] * 100_000, "blob": b"\0" * (2 * codec.SCAN_ABOVE)})
    assert len(codec.unpack(fine)["ids"]) == 100_000
