"""Replies to writes come from the committer through each connection's outbox, not a task per
request: every request still gets exactly one reply under its own rid, in whatever order and
however many share one ``send``, and a refused request in a burst answers only itself.

Raw sockets, so a burst is one ``sendall`` of many pipelined frames (what no lensd client sends,
but the protocol allows), against a real daemon and its sqlite file.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

from records_factory import record
from test_watch import stored
from wire import frame, hello, raw_connection, read_frame, replies_until_closed

from lensd.query.state import QueryState

BURST = 40
BAD = (3, 17, 31)  # refused at validation: a status no record may have


def _burst_requests() -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = []
    for i in range(BURST):
        fit = record(i, 50, status="bogus" if i in BAD else "completed")
        requests.append({"op": "submit", "rid": 100 + i, "record": fit})
    return requests


def _replies(sock: Any, rids: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Every frame until each of ``rids`` has had a reply; rid -> the frames that carried it."""
    seen: dict[int, list[dict[str, Any]]] = {}
    while not rids <= seen.keys():
        reply = read_frame(sock)
        assert reply is not None, f"the daemon closed the connection; answered {sorted(seen)}"
        seen.setdefault(reply["rid"], []).append(reply)
    return seen


def test_a_burst_of_writes_gets_one_reply_per_request_and_a_refusal_answers_only_itself(daemon) -> None:  # type: ignore[no-untyped-def]
    sock = raw_connection(daemon.socket, timeout=60)
    hello(sock)
    requests = _burst_requests()
    sock.sendall(b"".join(frame(message) for message in requests))
    seen = _replies(sock, {message["rid"] for message in requests})
    for i in range(BURST):
        replies = seen[100 + i]
        assert len(replies) == 1, replies
        if i in BAD:
            assert replies[0]["ok"] is False and replies[0]["error"]["code"] == "invalid", replies
            assert "status" in replies[0]["error"]["message"]
        else:
            assert replies[0] == {"rid": 100 + i, "ok": True, "outcome": "applied"}
    # the connection is still usable, and every accepted write was stored (it was acknowledged)
    sock.sendall(frame({"op": "status", "rid": 7}))
    assert _replies(sock, {7})[7][0]["ok"] is True
    sock.close()
    fits = stored(daemon.db)
    assert set(fits) == {f"fit-{i}" for i in range(BURST) if i not in BAD}


def test_replies_to_writes_and_reads_pipelined_together_each_reach_their_rid(daemon) -> None:  # type: ignore[no-untyped-def]
    sock = raw_connection(daemon.socket, timeout=60)
    hello(sock)
    messages: list[dict[str, Any]] = []
    for i in range(12):
        messages.append({"op": "submit", "rid": 2 * i + 1, "record": record(i, 20)})
        messages.append({"op": "status", "rid": 2 * i + 2})
    messages.append({"op": "submit", "rid": 99, "record": record(0, 20)})  # the same fit again
    sock.sendall(b"".join(frame(message) for message in messages))
    seen = _replies(sock, {message["rid"] for message in messages})
    assert set(seen) == {message["rid"] for message in messages}
    assert all(len(replies) == 1 for replies in seen.values())
    for i in range(12):
        assert seen[2 * i + 1][0]["outcome"] == "applied"
        assert seen[2 * i + 2][0]["done"] is True and "status" in seen[2 * i + 2][0]
    assert seen[99][0]["ok"] is True  # replaced in place (applied) or skipped: answered either way
    sock.close()
    assert daemon.stop() == 0
    assert len(stored(daemon.db)) == 12


def test_after_a_half_close_every_request_is_answered_and_streams_send_the_pages_asked_for(daemon) -> None:  # type: ignore[no-untyped-def]
    """A client that sends its requests, then shuts its side (SHUT_WR), still gets a reply to each:
    its writes and count are answered, and each stream sends the pages it has credit for, then
    ``done`` if that was all, else an error that says why it ends. Its streams used to be ended
    ``done, cancelled`` though it cancelled none, which reads as "no more fits"."""
    sock = raw_connection(daemon.socket, timeout=60)
    hello(sock)
    sock.sendall(b"".join(frame({"op": "submit", "rid": 10 + i, "record": record(i, 20)}) for i in range(3)))
    _replies(sock, {10, 11, 12})
    completed = dataclasses.replace(QueryState(), completed_only=True).to_wire()  # not the writes below
    sock.sendall(frame({"op": "submit", "rid": 20, "record": record(20, 20, status="failed")})
                 + frame({"op": "count", "rid": 1, "query": completed})
                 + frame({"op": "query", "rid": 2, "query": completed})  # one page holds all three
                 + frame({"op": "query", "rid": 3, "query": completed, "page_size": 1})  # needs a next
                 + frame({"op": "submit", "rid": 21, "record": record(21, 20, status="failed")}))
    sock.shutdown(socket.SHUT_WR)
    seen = replies_until_closed(sock)  # until the daemon closes the connection
    assert set(seen) == {1, 2, 3, 20, 21}
    assert seen[20] == [{"rid": 20, "ok": True, "outcome": "applied"}] and seen[21] == [
        {"rid": 21, "ok": True, "outcome": "applied"}]
    assert seen[1] == [{"rid": 1, "ok": True, "done": True, "count": 3}]
    assert [len(f["page"]) if "page" in f else f for f in seen[2]] == [3, {"rid": 2, "ok": True, "done": True}]
    *pages, last = seen[3]
    assert [len(f["page"]) for f in pages] == [1]
    assert last["ok"] is False and last["error"]["code"] == "protocol", last
    assert "half-closed" in last["error"]["message"]
    assert daemon.stop() == 0
    assert len(stored(daemon.db)) == 5
