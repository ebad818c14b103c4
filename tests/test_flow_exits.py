"""What a connection's unfinished frame holds once the connection is read no more, whatever keeps
it open: a real daemon, raw frames (``wire``), the daemon's ``status`` as the witness."""

from __future__ import annotations

import select
import socket as socketlib
import struct
from pathlib import Path
from typing import Any

from records_factory import record
from wire import frame, hello, raw_connection, request, wait_for

from lensd.query.state import QueryState

WHOLE = 4 + 64 * 2**20  # a 64 MiB frame and its header


def _status(socket: Path) -> dict[str, Any]:
    sock = raw_connection(socket, timeout=60)
    try:
        hello(sock)
        status: dict[str, Any] = request(sock, "status", 1)["status"]
        return status
    finally:
        sock.close()


def _big_fit(socket: Path) -> None:
    """A fit of ~1.2 MB: a stream's page of it cannot all go into a socket's buffer."""
    fields = record(0, n_samples=5)
    fields["info"] = {f"k{k}": "n" * 50_000 for k in range(24)}
    sock = raw_connection(socket, timeout=60)
    try:
        hello(sock)
        assert request(sock, "submit", 1, record=fields)["outcome"] == "applied"
    finally:
        sock.close()


def test_a_half_closed_connection_gives_back_its_unfinished_frames_room_while_its_replies_wait(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A peer half-closed in the middle of a frame: the frame can never come whole, but its 64 MiB
    of room came back only once the connection had sent every reply and closed, so a reader that
    never read its stream's page held half the daemon's budget for unfinished frames for ever."""
    daemon = make_daemon("--frame-timeout", "90")  # no cut-off for silence while the test runs
    _big_fit(daemon.socket)
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sock.sendall(frame({"op": "query", "rid": 1, "query": QueryState().to_wire()}))
    assert select.select([sock], [], [], 60)[0], "the stream's page did not begin to come"
    # the page is far larger than the socket's buffer: its stream waits for this peer to read
    sock.sendall(struct.pack(">I", WHOLE - 4) + b"\x81")  # a header and a map's first byte
    wait_for(lambda: _status(daemon.socket)["reserved_frame_bytes"] == WHOLE, timeout=60, interval=0.1,
             what="the frame's room to be reserved")
    sock.shutdown(socketlib.SHUT_WR)  # the frame can never be finished now
    wait_for(lambda: _status(daemon.socket)["reserved_frame_bytes"] == 0, timeout=60, interval=0.1,
             what="the half-closed connection's room to be given back")
    sock.close()  # the stream's send fails: the connection ends
    wait_for(lambda: _status(daemon.socket)["connections"] == 1, timeout=60, interval=0.1,
             what="the connection to close")  # 1: the status request's own
    status = _status(daemon.socket)
    assert (status["reserved_frame_bytes"], status["held_back"]) == (0, 0)
    assert daemon.stop() == 0
