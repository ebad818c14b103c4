"""The lensd wire protocol, version 1, as pure functions over bytes (sans-IO).

No sockets here: the daemon's connection handler and the client only move bytes in and out, so
every rule below is tested without a network and both sides share one implementation.

Framing. A frame is a 4-byte big-endian body length, then one msgpack map (``lensd.wire.codec``: numpy
arrays as extension type 1). A length above the limit (default 64 MiB) is refused as soon as the
4 header bytes arrive, before any body is buffered. A framing error (too large, not msgpack, not a
map) leaves the byte stream out of step, so the daemon sends ``error(None, exc)`` and closes.

Handshake. The client's first frame is ``hello(rid)``; the daemon answers ``hello_reply`` or, for a
missing hello or another version, an error reply, and closes.

Requests and replies. Every later client frame is ``request(op, rid, ...)``. The client picks a fresh
int ``rid`` per request (a counter) and may pipeline: replies can come out of order, so the client
matches them by ``rid``. A reply is ``ok(rid, ...)`` or ``error(rid, ...)``; a request that is
well framed but wrong (unknown op, bad rid) gets an error reply and the connection stays open. An
error about a frame whose rid cannot be read carries ``"rid": None``.

Write ops (WRITE_OPS) get exactly one reply, ``ok`` only once the write is committed.

Paged reads (READ_OPS), credit based so a slow reader never makes the daemon buffer:
  1. client sends ``request("query", rid, ...)``: one credit for this rid;
  2. daemon sends one frame per credit: ``page(rid, items)`` while items remain, then the final
     ``done(rid, ...)``, which needs no credit when it follows the last page; an ``error(rid, ...)``
     also ends the stream. One-value results (``count``, ``status``) have no pages: the first
     frame is ``done`` carrying them;
  3. after each page the client sends ``request("next", rid)``: one more credit (it may send it
     before consuming the page, to overlap). ``next`` has no reply of its own.
  Cancel: the client sends ``request("cancel", rid)`` and reads frames for that rid, dropping
  pages, until ``done`` or ``error``; the daemon answers it with ``done(rid, cancelled=True)``.
  ``next``/``cancel`` for a rid with no open stream are ignored: they can cross a final ``done``.
  So every request ends with exactly one ``ok``, ``done`` or ``error`` frame for its rid.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from lensd.errors import FrameTooLarge, LensdError, ProtocolError, from_wire
from lensd.safefiles import log_name
from lensd.wire.codec import Received, pack, spans, unpack

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HEADER = struct.Struct(">I")
_LARGEST_LENGTH = 2**32 - 1  # what the 4-byte header can say
_SHOWN: Final = 60  # characters of a peer's value an error message quotes

WRITE_OPS = frozenset({"submit", "start", "progress", "complete", "fail", "heartbeat"})
RECORD_OPS = frozenset({"submit", "start", "complete"})  # write ops that carry a whole record
_RECORD_PARTS = (("record",), ("samples", "model"))
_KEPT_AT = {"submit": _RECORD_PARTS, "start": _RECORD_PARTS, "complete": _RECORD_PARTS,  # where a write
            "progress": ((), ("samples",))}  # op carries samples or a model: kept with their bytes
READ_OPS = frozenset({"query", "values", "count", "status", "jobs"})
CONTROL_OPS = frozenset({"hello", "auth", "next", "cancel", "stop"})
ADMIN_OPS = frozenset({"delete", "tag"})  # lensd delete / lensd tag: writes a person asks for, never spooled
ALL_OPS = WRITE_OPS | READ_OPS | CONTROL_OPS | ADMIN_OPS


def _check_limit(max_frame: int) -> int:
    if not 0 < max_frame <= _LARGEST_LENGTH:
        raise ValueError(f"max_frame must be between 1 and {_LARGEST_LENGTH} bytes, not {max_frame}")
    return max_frame


def _too_large(size: int, max_frame: int) -> FrameTooLarge:
    return FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_frame} bytes")


def encode_frame(message: Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame for ``message``; refused here so an oversized reply never reaches the peer."""
    if not isinstance(message, Mapping):
        raise ProtocolError(f"a frame holds a map, not {type(message).__name__}")
    body = pack(dict(message))
    if len(body) > _check_limit(max_frame):
        raise _too_large(len(body), max_frame)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """One frame's body as its message; ProtocolError if it is not a map of string keys."""
    message = unpack(body)
    if not isinstance(message, dict):
        raise ProtocolError(f"a frame must hold a msgpack map, not {type(message).__name__}")
    if not all(isinstance(key, str) for key in message):
        raise ProtocolError("message keys must be strings")
    op = message.get("op")
    kept = _KEPT_AT.get(op) if isinstance(op, str) else None
    if kept is not None:
        _keep_bytes(message, *kept, body)
    return message


def _keep_bytes(message: dict[str, Any], path: tuple[str, ...], names: tuple[str, ...], body: bytes) -> None:
    """Samples and a model in a write op become ``Received`` maps holding their bytes: samples
    already in the stored form are stored as they arrived (``Samples.from_wire``), not packed again,
    and a model sent before is not checked and walked again (``modeltree.shape``)."""
    holder: Any = message
    for key in path:
        holder = holder.get(key)
        if not isinstance(holder, dict):
            return
    wanted = tuple(name for name in names if type(holder.get(name)) is dict)
    if wanted:
        for name, (start, end) in spans(body, path, wanted).items():
            holder[name] = Received(holder[name], body[start:end])


class FrameDecoder:
    """Turns the bytes of one connection, in chunks of any size, into messages.

    After an error the stream cannot be resynchronised, so the decoder refuses all later input
    and drops messages completed earlier in the same chunk; nothing unacknowledged is lost by that,
    since a client counts a write as done only when its reply arrives.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = _check_limit(max_frame)
        self._buffer = bytearray()
        self._failed = False
        self._deferred: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    @property
    def pending(self) -> int:
        """The whole size, header included, of the frame begun and not finished, once its header
        has arrived (0 between frames, and while the header is incomplete)."""
        if len(self._buffer) < HEADER.size:
            return 0
        return HEADER.size + int(HEADER.unpack_from(self._buffer)[0])

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return the messages they complete, in order."""
        bodies = self.split(data)
        try:
            messages = [decode_body(body) for body in bodies]
        except ProtocolError:
            self.failed()
            raise
        self.check()
        return messages

    def split(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the bodies of the frames they complete, not yet decoded.

        The daemon decodes a large body in a worker thread (``decode_body``), off its event loop.
        A body that fails to decode leaves the stream unusable: call ``failed()`` then. A framing
        error after complete bodies is raised by ``check()``, once those bodies were decoded, so
        errors come out in the order of the bytes.
        """
        self.check()
        if self._failed:
            raise ProtocolError("connection stream is unusable after an earlier framing error")
        self._buffer += data
        bodies: list[bytes] = []
        start = 0  # consume by offset and compact once: a chunk of many frames stays linear
        try:
            while len(self._buffer) - start >= HEADER.size:
                (length,) = HEADER.unpack_from(self._buffer, start)
                if length > self._max_frame:
                    raise _too_large(length, self._max_frame)
                end = start + HEADER.size + length
                if len(self._buffer) < end:
                    break
                bodies.append(bytes(self._buffer[start + HEADER.size:end]))
                start = end
        except ProtocolError as exc:
            self.failed()
            if not bodies:
                raise
            self._deferred = exc
        del self._buffer[:start]
        return bodies

    def check(self) -> None:
        """Raise a framing error found after the bodies ``split`` returned."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            raise deferred

    def failed(self) -> None:
        """Refuse all later input (a body of this stream could not be decoded)."""
        self._failed = True
        self._buffer.clear()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python


def _rid_error(value: object) -> ProtocolError:
    return ProtocolError(f"rid must be an integer, not {type(value).__name__}")


def reply_rid(message: Mapping[str, Any]) -> int | None:
    """The rid to echo when refusing ``message``: its own if usable, else None."""
    rid = message.get("rid")
    return rid if _is_int(rid) else None


def shown(value: object) -> str:
    """A value a peer sent, as an error message (and so a log line) may quote it: repr'd, escaped
    and shortened, so neither a 20 MiB op string nor a newline gets through whole."""
    return log_name(repr(value), _SHOWN)


def hello(rid: int = 0) -> dict[str, Any]:
    """The client's first frame."""
    return {"op": "hello", "v": PROTOCOL_VERSION, "rid": rid}


def check_hello(message: Mapping[str, Any]) -> int:
    """Validate a client's first frame and return its rid (0 when it sent none)."""
    op = message.get("op")
    if op != "hello":
        raise ProtocolError(f"expected hello as the first frame, got op {shown(op)}")
    version = message.get("v")
    if version != PROTOCOL_VERSION or not _is_int(version):  # True == 1 in Python
        raise ProtocolError(
            f"unsupported protocol version {shown(version)}; this daemon speaks {PROTOCOL_VERSION}")
    rid = message.get("rid", 0)
    if not _is_int(rid):
        raise _rid_error(rid)
    return int(rid)


def hello_reply(rid: int, server_version: str) -> dict[str, Any]:
    """The daemon's answer to a good hello, naming its version for logs and bug reports."""
    return {"rid": rid, "ok": True, "v": PROTOCOL_VERSION, "server": f"lensd {server_version}"}


def _reply(base: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    clash = base.keys() & fields.keys()
    if clash:  # a payload field must never overwrite the envelope
        raise ValueError(f"reply fields {sorted(clash)} are reserved")
    return {**base, **fields}


def ok(rid: int, **fields: Any) -> dict[str, Any]:
    """Success reply to a write, or to a control op that has one."""
    return _reply({"rid": rid, "ok": True}, fields)


def error(rid: int | None, exc_or_code: LensdError | str, message: str | None = None) -> dict[str, Any]:
    """Error reply; from a LensdError its ``code``, so the client re-raises the same class."""
    if isinstance(exc_or_code, LensdError):
        code = exc_or_code.code
        text = message or str(exc_or_code) or type(exc_or_code).__name__
    else:
        code, text = exc_or_code, message or exc_or_code
    return {"rid": rid, "ok": False, "error": {"code": code, "message": text}}


def page(rid: int, items: list[Any]) -> dict[str, Any]:
    """One page of a read stream; it has no ``ok`` key because it does not end the request."""
    return {"rid": rid, "page": items}


def done(rid: int, **fields: Any) -> dict[str, Any]:
    """The final frame of a read stream, carrying any one-value result (``count=n``)."""
    return _reply({"rid": rid, "ok": True, "done": True}, fields)


def request(op: str, rid: int, **fields: Any) -> dict[str, Any]:
    """A client request; an unknown op fails here rather than as a round trip."""
    if op not in ALL_OPS:
        raise ProtocolError(f"unknown op {op!r}")
    return {"op": op, "rid": rid, **fields}


def parse_request(message: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """Check the envelope of a request; the fields are the op handler's to validate."""
    op = message.get("op")
    if not isinstance(op, str):
        raise ProtocolError(f"a request needs an op string, got {shown(op)}")
    if op not in ALL_OPS:
        raise ProtocolError(f"unknown op {shown(op)}")
    if "rid" not in message:
        raise ProtocolError(f"request {op!r} has no rid")
    rid = message["rid"]
    if not _is_int(rid):
        raise _rid_error(rid)
    return op, int(rid), {key: value for key, value in message.items() if key not in ("op", "rid")}


def raise_for_reply(message: dict[str, Any]) -> dict[str, Any]:
    """Client side: raise the daemon's error as the matching local LensdError, else return it."""
    if message.get("ok") is not False:
        return message
    err = message.get("error")
    if not (isinstance(err, dict) and isinstance(err.get("code"), str)
            and isinstance(err.get("message"), str)):
        raise ProtocolError(f"malformed error reply: {err!r}")
    raise from_wire(err["code"], err["message"])
