"""What a connection's unfinished frame holds once the connection is read no more, whatever keeps
it open: a real daemon, raw frames (``wire``), the daemon's ``status`` as the witness."""

from __future__ import annotations

import select
import socket as socketlib
import struct
import threading
from typing import Any

import anyio
import anyio.abc
import msgpack
import pytest
from records_factory import record
from test_attacks_load import big_fit
from test_watch import stored
from wire import daemon_status, frame, framed, hello, integrity, raw_connection, wait_for

import lensd
from lensd.query.state import QueryState

WHOLE = 4 + 64 * 2**20  # a 64 MiB frame and its header


def test_a_half_closed_connection_gives_back_its_unfinished_frames_room_while_its_replies_wait(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A peer half-closed in the middle of a frame: the frame can never come whole, but its 64 MiB
    of room came back only once the connection had sent every reply and closed, so a reader that
    never read its stream's page held half the daemon's budget for unfinished frames for ever."""
    daemon = make_daemon("--frame-timeout", "90")  # no cut-off for silence while the test runs
    big_fit(daemon.socket, 0, 1_200_000)
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sock.sendall(frame({"op": "query", "rid": 1, "query": QueryState().to_wire()}))
    assert select.select([sock], [], [], 60)[0], "the stream's page did not begin to come"
    # the page is far larger than the socket's buffer: its stream waits for this peer to read
    sock.sendall(struct.pack(">I", WHOLE - 4) + b"\x81")  # a header and a map's first byte
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] == WHOLE, timeout=60, interval=0.1,
             what="the frame's room to be reserved")
    sock.shutdown(socketlib.SHUT_WR)  # the frame can never be finished now
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] == 0, timeout=60, interval=0.1,
             what="the half-closed connection's room to be given back")
    sock.close()  # the stream's send fails: the connection ends
    wait_for(lambda: daemon_status(daemon.socket)["connections"] == 1, timeout=60, interval=0.1,
             what="the connection to close")  # 1: the status request's own
    assert _held(daemon_status(daemon.socket)) == (0, 0, 0, 0)
    assert daemon.stop() == 0


def test_a_write_dropped_and_then_answered_gives_its_allowances_back_once() -> None:
    """anyio's memory stream raises a cancel at a sender whose item a receiver has already taken:
    a write cancelled while the committer's queue was full is then both dropped by its connection
    and answered by the committer. Its allowances must come back once, and the outbox owe nothing
    (it owed -1 and never returned)."""
    from lensd.daemon import flow
    from lensd.daemon.outbox import Outbox

    async def run() -> tuple[Any, ...]:
        send, receive = anyio.create_memory_object_stream[int](0)
        taken: list[int] = []

        async def sender(scope: anyio.CancelScope) -> None:
            with scope:
                try:
                    await send.send(1)
                except anyio.get_cancelled_exc_class():
                    taken.append(-1)  # the cancel came, though the item was taken
                    raise

        async with anyio.create_task_group() as tasks:
            scope = anyio.CancelScope()
            tasks.start_soon(sender, scope)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()  # the connection's reading is cancelled (its peer went) ...
            taken.append(receive.receive_nowait())  # ... as the committer takes the write
        own, shared = flow.Allowance(4, 100), flow.Allowance(4, 100)
        sent: list[bytes] = []

        async def deliver(data: bytes) -> None:
            sent.append(data)

        outbox = Outbox(deliver, own, shared)
        for allowance in (own, shared):
            await allowance.acquire(10)
        outbox.expect()
        reply = outbox.once(10)
        reply.drop()  # the connection's except: the cancel
        reply.post(b"late")  # the committer's answer
        outbox.end()
        with anyio.fail_after(30):
            await outbox.run()  # returns: nothing is owed
        return taken, own.used_count, own.used_size, shared.used_count, shared.used_size, sent

    assert anyio.run(run) == ([1, -1], 0, 0, 0, 0, [])


def _keep_alive(sock: socketlib.socket, stop: threading.Event) -> None:
    """A byte of a begun frame every 0.2 s, well inside --frame-timeout, until ``stop``."""
    try:
        while not stop.wait(0.2):
            sock.sendall(b"\xa1")
    except OSError:
        pass


def test_a_tcp_peer_the_daemon_has_no_room_for_is_told_busy_and_not_throttled(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Before its handshake a TCP peer's frame waits for room like any other; when none came within
    --frame-timeout its refusal was a protocol error counted as a failed handshake, so a daemon
    short of memory slowed the next handshakes of an honest node. Now it is ``busy``: try again."""
    from test_tcp import TcpDaemon, refused, tcp_socket

    tcp = TcpDaemon(make_daemon, short_tmp, "--frame-timeout", "5", "--handshake-timeout", "60")
    holders = [raw_connection(tcp.process.socket, timeout=90) for _ in range(2)]
    stop = threading.Event()
    for sock in holders:  # two frames of 64 MiB with their headers: the whole 128 MiB budget
        hello(sock)
        sock.sendall(struct.pack(">I", 64 * 2**20 - 4) + b"\x81")
        wait_for(lambda: daemon_status(tcp.process.socket)["held_back"] == 0, timeout=60, interval=0.1,
                 what="the frame's room")
    wait_for(lambda: daemon_status(tcp.process.socket)["reserved_frame_bytes"] == 2 * 64 * 2**20, timeout=60,
             interval=0.1, what="both frames' room to be reserved")
    keepers = [threading.Thread(target=_keep_alive, args=(sock, stop), daemon=True) for sock in holders]
    for keeper in keepers:
        keeper.start()
    peer = tcp_socket(tcp.port)
    peer.settimeout(90)
    peer.sendall(struct.pack(">I", 1000) + b"\x81")  # a hello begun: its first bytes need room
    assert refused(peer) == "busy"
    assert daemon_status(tcp.process.socket)["failed_handshakes"] == 0
    stop.set()
    for keeper in keepers:
        keeper.join(30)
    for sock in holders:
        sock.close()
    with lensd.connect_sync(address=tcp.address, secret_file=tcp.secret_file) as client:
        assert client.submit(record(1)) == "applied"
    assert tcp.process.stop() == 0


def test_a_batch_of_replies_cut_off_in_the_middle_of_its_send_is_settled_once() -> None:
    """The outbox's task cancelled while a batch was on its way out (its connection cut off at the
    deadline after a framing error, or at the daemon's drain timeout) lost the batch: its bytes
    stayed counted as unsent, its requests as owed, their share of the connection's allowance
    taken, and ``close`` could not see them. ``run`` now settles the batch it was sending, once,
    whether the send ended or was cut off; what was left of it is never sent."""
    from lensd.client.streamio import StreamIO
    from lensd.daemon import flow
    from lensd.daemon.outbox import Outbox

    async def run() -> None:
        ours, theirs = socketlib.socketpair(socketlib.AF_UNIX)  # theirs is a peer that never reads
        stream = await anyio.abc.UNIXSocketStream.from_socket(ours)
        own, shared = flow.Allowance(4, 2**30), flow.Allowance(4, 2**30)
        outbox = Outbox(StreamIO(stream).send, own, shared)
        for _ in range(2):  # far more than the socket's buffer holds: the send waits for the peer
            for allowance in (own, shared):
                await allowance.acquire(10)
            outbox.expect()
            outbox.post(b"r" * 2**22, 10)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(outbox.run)
            await anyio.wait_all_tasks_blocked()  # in the middle of the batch's send
            tasks.cancel_scope.cancel()
        outbox.close()
        assert (own.used_count, own.used_size, shared.used_count, outbox.unsent) == (0, 0, 0, 0)
        outbox.end()
        with anyio.fail_after(30):
            await outbox.run()  # returns at once: no request is owed a reply any more
        await stream.aclose()
        theirs.close()

    anyio.run(run)


def _held(status: dict[str, Any]) -> tuple[int, int, int, int]:
    """What the daemon holds for connections: frame room, connections held back, in-flight share."""
    return (status["reserved_frame_bytes"], status["held_back"], status["in_flight_requests"],
            status["in_flight_bytes"])


def _jammed_with_writes(daemon: Any) -> socketlib.socket:
    """A raw connection whose stream page (a stored fit far larger than a socket's buffer) it never
    reads, so the daemon is blocked sending it, and three writes (fit-10 to fit-12) sent after it,
    committed, their answers waiting behind the page."""
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sock.sendall(frame({"op": "query", "rid": 1, "query": QueryState().to_wire()}))
    assert select.select([sock], [], [], 60)[0], "the stream's page did not begin to come"
    sock.sendall(b"".join(frame({"op": "submit", "rid": 10 + i, "record": record(10 + i, n_samples=5)})
                          for i in range(3)))
    wait_for(lambda: {"fit-10", "fit-11", "fit-12"} <= set(stored(daemon.db)), timeout=60, interval=0.1,
             what="the writes to be committed")  # their answers wait behind the page
    return sock


def test_a_connection_cut_off_after_a_framing_error_sends_nothing_after_a_cut_frame(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A framing error while the daemon is blocked sending a page to a peer that does not read: the
    error reply waits its --frame-timeout, the replies owed (committed writes' answers, waiting in
    the outbox's send) get one more, then the connection is cut off. The page cut in the middle is
    the last thing on the wire, no counter keeps what the connection held, the writes stay stored."""
    daemon = make_daemon()
    big_fit(daemon.socket, 0, 1_200_000)  # sent under the default --frame-timeout
    assert daemon.stop() == 0
    daemon = make_daemon("--frame-timeout", "2")  # the same database
    sock = _jammed_with_writes(daemon)
    sock.sendall(framed(b"\xc1"))  # a byte msgpack never uses
    daemon.wait_for_log("closing a connection: malformed msgpack")
    wait_for(lambda: daemon_status(daemon.socket)["connections"] == 1, timeout=60, interval=0.1,
             what="the connection to be cut off")  # 1: the status request's own
    assert _held(daemon_status(daemon.socket)) == (0, 0, 0, 0)
    received = b""
    while chunk := sock.recv(1 << 20):
        received += chunk
    sock.close()
    (length,) = struct.unpack(">I", received[:4])
    assert 4 < len(received) < 4 + length  # the page, cut: nothing came after it
    unpacker = msgpack.Unpacker()
    unpacker.feed(received[4:])
    with pytest.raises(msgpack.OutOfData):  # the beginning of a page, not garbage
        unpacker.unpack()
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(13, n_samples=5)) == "applied"
    assert {"fit-10", "fit-11", "fit-12", "fit-13"} <= set(stored(daemon.db))
    assert daemon.stop() == 0


def test_a_stream_whose_client_is_gone_produces_no_more_pages(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A client asks for a stream of pages far larger than the socket's buffer, gives it credit
    for three more, and closes its socket while the daemon is blocked sending the first: the
    failed send stops the stream at once, and the daemon logs the three pages it did not produce
    (it used to read and send each into the dead socket, up to the credit); nothing is held."""
    daemon = make_daemon()
    for i in range(4):
        big_fit(daemon.socket, i, 1_200_000)  # each page, one fit, too big for a socket's buffer
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sock.sendall(frame({"op": "query", "rid": 1, "query": QueryState().to_wire(), "page_size": 1}))
    assert select.select([sock], [], [], 60)[0], "the stream's first page did not begin to come"
    sock.sendall(b"".join(frame({"op": "next", "rid": 1}) for _ in range(3))
                 + frame({"op": "submit", "rid": 10, "record": record(10, n_samples=5)}))
    wait_for(lambda: "fit-10" in stored(daemon.db), timeout=60, interval=0.1,
             what="the write after the credit to be committed")  # read after the three "next"s
    logged = len(daemon.stderr_lines)
    sock.close()  # the first page unread: the daemon's send fails
    line = daemon.wait_for_log("a query stream stopped, its client gone", after=logged)
    assert "3 pages it asked for were not sent" in line, line
    daemon.wait_for_log("connection closed (0 open)", after=logged)
    status = daemon_status(daemon.socket)
    assert (status["connections"], *_held(status)) == (1, 0, 0, 0, 0)
    assert daemon.stop() == 0


@pytest.mark.timeout(600)  # a loaded machine: a 1.2 MB write, two writers, a stop
def test_a_stop_cuts_off_a_jammed_connection_at_the_drain_timeout_losing_nothing_acknowledged(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while a client never reads the page its stream is sending (the daemon is blocked on
    that send, and the replies to its committed writes wait behind it) and two writers stream
    acknowledged writes: the daemon stops reading, waits --drain-timeout for the jammed connection,
    logs that it did not finish in time, cuts it off and exits 0; every acknowledged write is
    stored, and the jammed client's committed writes too, answered or not."""
    from test_daemon import worker

    daemon = make_daemon("--drain-timeout", "1")
    big_fit(daemon.socket, 0, 1_200_000)  # the stream's page, far larger than a socket's buffer
    jammed = _jammed_with_writes(daemon)
    writers = [worker("submit", daemon.socket, 1000 * (k + 1), 1000) for k in range(2)]
    assert writers[0].stdout is not None
    acked = set()
    for _ in range(20):  # real traffic when the stop comes: 20 acknowledgements from the first writer
        line = writers[0].stdout.readline()
        assert line.startswith("ack"), line
        acked.add(line.split()[1])
    logged = len(daemon.stderr_lines)
    assert daemon.stop(timeout=300) == 0
    daemon.wait_for_log("connections did not finish in time", after=logged)  # the jammed one, and a
    # writer's too if its last commit took longer than the drain timeout on a loaded machine
    jammed.close()
    for writer in writers:
        writer.kill()  # its acknowledgements are already on its stdout; spare it the reconnect backoff
        out, _ = writer.communicate(timeout=120)
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack")}
    fits = {f.id for f in lensd.Aggregator.from_database(daemon.db, top_level_only=False).fits()}
    assert acked | {"fit-0", "fit-10", "fit-11", "fit-12"} <= fits, sorted(acked - fits)
    assert integrity(daemon.db) == "ok"
