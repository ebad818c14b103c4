"""Speaking to a daemon byte by byte, as a buggy or hostile client would, and sizing stress runs.

Raw sockets here bypass ``lensd.client.connection`` on purpose: the reliability tests send what no lensd
client would (half frames, lies, floods) and drop connections at chosen moments.

``scaled(normal, stress)`` is the count a test uses: the normal one in ``make test``, the large one
under ``make stress`` (``LENSD_STRESS=1``). ``@stressed`` marks a test ``stress`` only under that
variable, so ``make test`` (``-m "not stress"``) runs it small and ``make stress`` (``-m stress``)
runs it large: one test body, two sizes.
"""

from __future__ import annotations

import os
import socket as socketlib
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import msgpack
import pytest

from lensd.wire import codec

STRESS = os.environ.get("LENSD_STRESS") == "1"
T = TypeVar("T")


def scaled(normal: int, stress: int) -> int:
    return stress if STRESS else normal


def stressed(test: T) -> T:
    """Mark ``test`` as a stress test only when LENSD_STRESS=1 (it reads its counts from ``scaled``)."""
    return cast(T, pytest.mark.stress(test)) if STRESS else test


def raw_connection(path: Path, timeout: float = 10.0) -> socketlib.socket:
    sock = socketlib.socket(socketlib.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def frame(message: object) -> bytes:
    """A frame as lensd encodes it (numpy arrays as extension 1), with no checks of its content."""
    body = codec.pack(message)
    return struct.pack(">I", len(body)) + body


def framed(body: bytes) -> bytes:
    """A length header and ``body``, whatever the body holds."""
    return struct.pack(">I", len(body)) + body


def read_frame(sock: socketlib.socket) -> dict[str, Any] | None:
    """The next frame, or None when the daemon closed the connection (EOF or reset)."""
    try:
        header = _read_exactly(sock, 4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        body = _read_exactly(sock, length)
    except ConnectionResetError:
        return None
    if body is None:
        return None
    message = msgpack.unpackb(body)
    assert isinstance(message, dict)
    return message


def _read_exactly(sock: socketlib.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def hello(sock: socketlib.socket) -> None:
    sock.sendall(frame({"op": "hello", "v": 1, "rid": 0}))
    reply = read_frame(sock)
    assert reply is not None and reply["ok"] is True


def request(sock: socketlib.socket, op: str, rid: int, **fields: Any) -> dict[str, Any]:
    """Send one request and return its reply (the first frame for ``rid``)."""
    sock.sendall(frame({"op": op, "rid": rid, **fields}))
    while True:
        reply = read_frame(sock)
        assert reply is not None, f"the daemon closed the connection instead of answering {op}"
        if reply.get("rid") == rid:
            return reply


def daemon_status(path: Path) -> dict[str, Any]:
    """The daemon's ``status`` map, over a connection of its own (a witness that holds no slot after)."""
    sock = raw_connection(path, timeout=60)
    try:
        hello(sock)
        found: dict[str, Any] = request(sock, "status", 1)["status"]
        return found
    finally:
        sock.close()


def replies_until_closed(sock: socketlib.socket) -> dict[int, list[dict[str, Any]]]:
    """Every frame the daemon sends until it closes the connection, by rid (then the socket is closed)."""
    seen: dict[int, list[dict[str, Any]]] = {}
    while (reply := read_frame(sock)) is not None:
        seen.setdefault(reply["rid"], []).append(reply)
    sock.close()
    return seen


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # the pace of a bounded wait-for-condition loop


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` of ``db`` ("ok" when sound)."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
