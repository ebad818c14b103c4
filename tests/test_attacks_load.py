"""One input or one client taking the daemon down (issue 19, part 3), each against a real daemon.

Every memory attack ends with the daemon's peak resident size (``VmHWM`` in /proc/<pid>/status)
under ``RSS_BOUND``: a bound on what the attack could make it hold, not a timing.
"""

from __future__ import annotations

import dataclasses
import os
import select
import shutil
import socket as socketlib
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgpack
import pytest
from conftest import DIR_OUTPUT, integrity_ok
from records_factory import record
from test_watch import stored, until
from wire import daemon_status, frame, framed, hello, raw_connection, read_frame, request, wait_for

import lensd
from lensd.daemon import flow
from lensd.daemon.outbox import Outbox
from lensd.domain.records import validate_record
from lensd.errors import IngestError, InvalidRecord
from lensd.ingest import folders
from lensd.query.state import QueryState
from lensd.store.writeops import Upsert
from lensd.store.writer import BatchWriter
from lensd.wire import spoolfile

RSS_BOUND_KB = 500 * 1024
SINGLE = DIR_OUTPUT / "howtofit" / "single"


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def served(socket: Path, start: int, count: int = 5) -> None:
    """Another client is answered while the attack goes on."""
    with lensd.connect_sync(socket=socket) as client:
        assert [client.submit(record(i, n_samples=5)) for i in range(start, start + count)] == ["applied"] * count


def test_a_poison_integer_fails_alone(daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Pipelined on one connection, the 40 writes reach the committer together, in one batch or few."""
    frames = []
    for i in range(40):
        fields = record(i, n_samples=5)
        if i == 17:
            fields["n_samples"] = 2**63
        if i == 23:
            fields["info"] = {"huge": 2**64 - 1}
        frames.append(frame({"op": "submit", "rid": i + 1, "record": fields}))
    sock = raw_connection(daemon.socket, timeout=60)
    hello(sock)
    sock.sendall(b"".join(frames))
    replies: dict[int, dict[str, Any]] = {}
    while len(replies) < 40:
        reply = read_frame(sock)
        assert reply is not None
        replies[reply["rid"] - 1] = reply
    sock.close()
    assert replies[17]["error"]["code"] == "invalid" and "2**63-1" in replies[17]["error"]["message"]
    assert replies[23]["error"]["code"] == "invalid" and "64-bit" in replies[23]["error"]["message"]
    assert [replies[i].get("outcome") for i in range(40) if i not in (17, 23)] == ["applied"] * 38
    assert len(stored(daemon.db)) == 38
    assert daemon.stop() == 0


def test_any_failure_inside_a_batch_falls_back_to_one_by_one(short_tmp: Path) -> None:
    """An op that slips past validation and fails with a non-sqlite error takes nobody with it."""
    db = short_tmp / "b.sqlite"
    poison = dataclasses.replace(validate_record(record(2, n_samples=5)), n_samples=2**64)

    async def run() -> list[object]:
        writer = await BatchWriter.open(db)
        try:
            ops = [Upsert(validate_record(record(1, n_samples=5))), Upsert(poison),
                   Upsert(validate_record(record(3, n_samples=5)))]
            return list(await writer.apply(ops))
        finally:
            await writer.close()

    outcomes = anyio.run(run)
    assert outcomes[0] == outcomes[2] == "applied"
    assert isinstance(outcomes[1], InvalidRecord) and "OverflowError" in str(outcomes[1])
    assert set(stored(db)) == {"fit-1", "fit-3"}


def test_hostile_spool_files_and_fit_files_are_refused_with_bounded_reads(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    spool = short_tmp / "spool"
    spool.mkdir()
    (spool / "1-zero.lensd").symlink_to("/dev/zero")
    os.mkfifo(spool / "2-fifo.lensd")
    with open(spool / "3-sparse.lensd", "wb") as sparse:
        sparse.truncate(3 * 2**30)
    spoolfile.write(spool, "submit", {"record": record(1, n_samples=5)})
    root = short_tmp / "out"
    shutil.copytree(SINGLE, root)
    fits = sorted(p.parent for p in root.rglob("metadata"))
    cases = {"zero": "symbolic link", "fifo": "a FIFO", "sparse": "over the limit", "wide": "columns",
             "zip": "bytes unzipped"}
    samples = [fit / "files" / "samples.csv" for fit in fits]
    for path in samples[:3]:
        path.unlink()
    samples[0].symlink_to("/dev/zero")
    os.mkfifo(samples[1])
    with open(samples[2], "wb") as sparse:
        sparse.truncate(3 * 2**30)
    samples[3].write_bytes(b"," * 10_000_000 + b"\n")
    bomb = root / ("a" * 32 + ".zip")  # a zip-only fit with a member past the per-file cap
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata", "name=bomb\n")
        archive.writestr("files/model.json", "{}")
        archive.writestr("files/samples.csv", b"\0" * (folders.MAX_FILE + 1))
    daemon = make_daemon("--spool", str(spool), "--watch", str(root), "--poll", "--poll-interval", "0.05")
    until(lambda: sorted(os.listdir(spool)) == ["rejected"], spool, what="the hostile spool files rejected")
    notes = "".join(p.read_text() for p in (spool / "rejected").glob("*.why.txt"))
    for reason in ("symbolic link", "a FIFO", "over the limit"):
        assert reason in notes
    assert "fit-1" in stored(daemon.db)

    def log() -> str:
        return "".join(daemon.stderr_lines)

    until(lambda: all(word in log() for word in cases.values()) and "bomb" not in str(stored(daemon.db)),
          short_tmp, what="every hostile fit refused with its reason")
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    assert daemon.stop() == 0  # promptly: no read of a FIFO holds the daemon
    assert integrity_ok(daemon.db)


def test_a_client_pipelining_without_reading_replies_is_held_back(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    served(daemon.socket, 0)
    flood = b"".join(frame({"op": "heartbeat", "rid": i, "ids": ["x" * 64]}) for i in range(200_000))
    sock = raw_connection(daemon.socket, timeout=120)
    hello(sock)
    sent = threading.Event()

    def pipeline() -> None:
        try:
            sock.sendall(flood)  # blocks once the daemon stops reading this connection
        except OSError:
            pass
        sent.set()

    sender = threading.Thread(target=pipeline, daemon=True)
    sender.start()
    served(daemon.socket, 100, 20)  # others are served meanwhile
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    sock.shutdown(socketlib.SHUT_RDWR)
    sock.close()
    sender.join(60)
    assert sent.is_set()
    served(daemon.socket, 200)
    assert daemon.stop() == 0


def held_back(socket: Path) -> int:
    """How many connections the daemon is not reading now because a flow bound is reached."""
    return int(daemon_status(socket)["held_back"])


def in_flight(socket: Path) -> tuple[int, int]:
    """The requests, and their frames' bytes, the daemon-wide allowance counts as being handled now
    (the status request asking left out): 0 once every reply is queued, whoever reads them."""
    status = daemon_status(socket)
    return int(status["in_flight_requests"]), int(status["in_flight_bytes"])


def _jam(sock: socketlib.socket, requests: list[bytes]) -> None:
    """Open a read stream whose first page (a ~1.2 MB fit) fills the socket, so no reply after it
    can be sent, then pipeline ``requests`` without ever reading (until the daemon stops reading)."""
    try:
        sock.sendall(frame({"op": "query", "rid": 1, "query": QueryState().to_wire()}))
        # the page has begun to come (and, far larger than the socket's buffer, cannot all be sent)
        # before any request is pipelined: otherwise, with the stream slow to open on a loaded
        # machine, the replies could go first and the connection never fill
        if not select.select([sock], [], [], 60)[0]:
            return
        for data in requests:
            sock.sendall(data)
    except OSError:
        pass  # the socket's timeout, or its close at the test's end


def big_fit(socket: Path, i: int, info_bytes: int) -> None:
    """Store a fit of about ``info_bytes``; a reply that does not come within 60 s fails the test."""
    fields = record(i, n_samples=5)
    fields["info"] = {f"k{k}": "n" * 50_000 for k in range(info_bytes // 50_000)}
    sock = raw_connection(socket, timeout=60)
    try:
        hello(sock)
        assert request(sock, "submit", 1, record=fields)["outcome"] == "applied"
    finally:
        sock.close()


def test_clients_that_never_read_their_replies_do_not_hold_back_other_writers(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Four clients pipelining ~1 MiB writes and never reading took the daemon-wide 256 MiB for good
    (a request's share came back only once its reply was sent): no other client's write was taken.
    Now it comes back once the reply is queued; only each client's own 64 requests wait on it."""
    daemon = make_daemon()
    big_fit(daemon.socket, 0, 1_200_000)  # the stream's first page, too big for a socket's buffer
    pad = b"x" * (2**20 - 200)
    refused = [frame({"op": "submit", "rid": 100 + i, "record": {"bad": 1}, "pad": pad}) for i in range(66)]
    stuck = [raw_connection(daemon.socket, timeout=90) for _ in range(4)]
    for sock in stuck:
        hello(sock)
        threading.Thread(target=_jam, args=(sock, refused), daemon=True).start()
    wait_for(lambda: held_back(daemon.socket) == len(stuck), timeout=60, interval=0.1,
             what="the four clients to be held back")
    assert in_flight(daemon.socket) == (0, 0)  # their refusals are queued: none of the daemon's share held
    big_fit(daemon.socket, 1, 200_000)  # more than what the four leave of the 256 MiB
    for sock in stuck:
        sock.shutdown(socketlib.SHUT_RDWR)  # now, though its sender thread still waits on it
        sock.close()
    wait_for(lambda: held_back(daemon.socket) == 0, timeout=60, interval=0.1, what="the stuck clients to go")
    served(daemon.socket, 2)
    assert in_flight(daemon.socket) == (0, 0)
    assert set(stored(daemon.db)) == {f"fit-{i}" for i in range(7)}
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    assert daemon.stop() == 0


def test_a_client_flooding_bad_requests_without_reading_the_errors_is_held_back(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Error replies to bad requests (a repeated hello, an unknown op, no rid, a rid in use) each got
    a task of its own, outside every bound: a client that never read them was read for ever, and
    the daemon grew by a task and a reply per frame. Now they are admitted and sent like any reply."""
    daemon = make_daemon()
    big_fit(daemon.socket, 0, 1_200_000)  # the stream's first page, too big for a socket's buffer
    bad = [frame({"op": "hello", "v": 1, "rid": 2}), frame({"op": "nope", "rid": 3}), frame({"op": "count"}),
           frame({"op": "query", "rid": 1, "query": QueryState().to_wire()})]  # rid 1: the open stream
    flood = [b"".join(bad * 5_000)]  # 20,000 requests, ~1.2 MB: far more than one connection may have
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sender = threading.Thread(target=_jam, args=(sock, flood), daemon=True)
    sender.start()
    wait_for(lambda: held_back(daemon.socket) == 1, timeout=60, interval=0.1,
             what="the flooding client to be held back")
    assert sender.is_alive()  # still sending: the daemon stopped reading it
    served(daemon.socket, 1)
    sock.shutdown(socketlib.SHUT_RDWR)
    sock.close()
    sender.join(60)
    wait_for(lambda: held_back(daemon.socket) == 0, timeout=60, interval=0.1, what="the flooding client to go")
    served(daemon.socket, 10)
    assert in_flight(daemon.socket) == (0, 0)
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    assert daemon.stop() == 0


def test_a_connection_past_its_bound_of_unsent_replies_waits_until_they_are_sent() -> None:
    """The outbox's bound, in process: replies past ``limit`` bytes unsent make ``room()`` wait (the
    connection is then not read), and each request's daemon-wide share is back as soon as its reply
    is queued, its connection's share once the reply is sent."""
    async def run() -> list[int]:
        sent: list[int] = []
        unblock = anyio.Event()

        async def send(data: bytes) -> None:
            await unblock.wait()  # a peer that does not read, until it does
            sent.append(len(data))

        own, shared = flow.Allowance(64, 2**20), flow.Allowance(64, 2**20)
        outbox = Outbox(send, own, shared, limit=1000)
        async with anyio.create_task_group() as group:
            group.start_soon(outbox.run)
            for _ in range(3):
                await own.acquire(10)
                await shared.acquire(10)
                outbox.expect()
                outbox.post(b"r" * 600, 10)
                await anyio.lowlevel.checkpoint()
            assert outbox.full and (own.used_count, shared.used_count) == (3, 0)
            roomy = anyio.Event()

            async def wait_for_room() -> None:
                await outbox.room()
                roomy.set()

            group.start_soon(wait_for_room)
            for _ in range(10):  # every task has run as far as it can
                await anyio.lowlevel.checkpoint()
            assert not roomy.is_set()
            unblock.set()
            await roomy.wait()
            outbox.end()
        assert (own.used_count, outbox.unsent) == (0, 0)
        return sent

    assert sum(anyio.run(run)) == 1800


def test_unfinished_frames_are_bounded_and_cut_off(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--frame-timeout", "1")
    body = b"\0" * (60 * 2**20 - 1)
    socks = [raw_connection(daemon.socket, timeout=120) for _ in range(10)]
    for sock in socks:
        hello(sock)
    closed: list[dict[str, object] | None] = []

    def hold(sock: socketlib.socket) -> None:
        try:
            sock.sendall(struct.pack(">I", len(body) + 1) + body)  # all but the last byte
        except OSError:
            pass
        closed.append(read_frame(sock))  # the daemon's error, then its close

    threads = [threading.Thread(target=hold, args=(sock,), daemon=True) for sock in socks]
    for thread in threads:
        thread.start()
    served(daemon.socket, 0)
    for thread in threads:
        thread.join(120)
    assert len(closed) == 10
    for reply in closed:
        assert reply is None or reply["ok"] is False
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    for sock in socks:
        sock.close()
    served(daemon.socket, 50)
    assert daemon.stop() == 0


def _trickle(sock: socketlib.socket, replies: list[dict[str, Any] | None]) -> None:
    """Send a byte of a begun frame every 0.2 s (the attack's pace) until the daemon answers; its
    reply (or None) goes to ``replies``."""
    try:
        while not select.select([sock], [], [], 0.2)[0]:
            sock.sendall(b"\xa1")
    except OSError:
        pass
    replies.append(read_frame(sock))


def test_a_frame_reserves_its_whole_size_when_its_header_comes_first_come_first_served(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """Two peers declare 64 MiB frames and send no more: each held only what it had sent, and the
    budget counted only the bytes that came. Now a frame's whole size is reserved before more of it
    is read, so the second waits in line, held back, until the first's room is given back when its
    peer goes."""
    daemon = make_daemon("--frame-timeout", "90")  # the default --frame-deadline: neither expires here
    socks = [raw_connection(daemon.socket, timeout=90) for _ in range(2)]
    for sock in socks:
        hello(sock)
    header = struct.pack(">I", 64 * 2**20) + b"\x81"  # and a map's first byte: a body well begun
    socks[0].sendall(header)
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] == 67108868, timeout=60, interval=0.1,
             what="the first frame's room to be reserved")
    socks[1].sendall(header)  # together: 128 MiB and 8 bytes, past the budget by 8 bytes
    daemon.wait_for_log("a frame of 67108868 bytes waits for room: 67108868 of the 134217728", timeout=60)
    status = daemon_status(daemon.socket)
    assert (status["reserved_frame_bytes"], status["held_back"]) == (67108868, 1)
    socks[0].close()  # the holder goes: the frame in line (not read while it waits) takes its room
    wait_for(lambda: daemon_status(daemon.socket)["held_back"] == 0, timeout=60, interval=0.1,
             what="the frame in line to be given its room")
    assert daemon_status(daemon.socket)["reserved_frame_bytes"] == 67108868
    socks[1].close()
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] == 0, timeout=60, interval=0.1,
             what="the last frame's room to be given back")
    served(daemon.socket, 0)
    assert daemon.stop() == 0


def test_a_frame_must_come_whole_within_its_deadline(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A peer that trickles a declared 64 MiB frame a byte at a time, never --frame-timeout apart,
    held its room for ever; a frame not whole --frame-deadline after its room was reserved now
    closes its connection with a one-line error, its room given back at once."""
    daemon = make_daemon("--frame-timeout", "60", "--frame-deadline", "3")
    sock = raw_connection(daemon.socket, timeout=90)
    hello(sock)
    sock.sendall(struct.pack(">I", 64 * 2**20) + b"\x81")
    replies: list[dict[str, Any] | None] = []
    trickler = threading.Thread(target=_trickle, args=(sock, replies), daemon=True)
    trickler.start()
    trickler.join(90)
    assert len(replies) == 1
    (reply,) = replies
    assert reply is not None and reply["ok"] is False, reply
    assert reply["error"]["message"] == ("a frame of 67108868 bytes did not arrive whole within 3s "
                                         "(lensd start --frame-deadline)")
    assert read_frame(sock) is None  # and the connection is closed
    daemon.wait_for_log("closing a connection: a frame of 67108868 bytes did not arrive whole", timeout=60)
    status = daemon_status(daemon.socket)
    assert (status["reserved_frame_bytes"], status["held_back"]) == (0, 0)
    sock.close()
    served(daemon.socket, 0)
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    assert daemon.stop() == 0


def test_a_frame_before_the_handshake_reserves_only_what_came_of_it(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """Before its hello (over TCP, before it has authenticated) a peer's header alone must not
    reserve the 64 MiB it declares: its frame holds what came of it and one more read."""
    daemon = make_daemon("--handshake-timeout", "90")
    sock = raw_connection(daemon.socket, timeout=60)
    sock.sendall(struct.pack(">I", 64 * 2**20) + b"\x81")  # a header, and the first byte of a map
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] > 0, timeout=60, interval=0.1,
             what="the frame's first bytes to be read")
    assert daemon_status(daemon.socket)["reserved_frame_bytes"] <= 5 + 2**16
    sock.shutdown(socketlib.SHUT_RDWR)
    sock.close()
    wait_for(lambda: daemon_status(daemon.socket)["reserved_frame_bytes"] == 0, timeout=60, interval=0.1,
             what="the room to be given back")
    assert daemon.stop() == 0


def test_unfinished_frames_wait_for_room_in_the_order_they_came() -> None:
    """``flow.PartialFrames`` in process: a frame that fits while others wait still waits its turn,
    a frame let in whatever its size when nothing is held, and one that gives up makes room for
    the next in line."""
    async def run() -> list[str]:
        partial = flow.PartialFrames(budget=100)
        order: list[str] = []

        async def take(name: str, size: int) -> None:
            await partial.reserve(size, patience=60)
            order.append(name)

        await partial.reserve(150, patience=60)  # nothing held: any size is let in
        async with anyio.create_task_group() as group:
            group.start_soon(take, "big", 90)
            group.start_soon(take, "small", 5)  # fits beside the big one, but came after it
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert order == [] and not partial.may_take(1)
            partial.release(150)
        assert order == ["big", "small"] and partial.held == 95
        with pytest.raises(Exception, match="no room was made within"):
            await partial.reserve(10, patience=0.01)
        partial.release(95)
        return order

    anyio.run(run)


def test_frames_of_millions_of_tiny_values_are_refused_before_they_are_built(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    bodies = [msgpack.packb({"op": "submit", "rid": 1, "record": {"info": {"x": [0] * (8 * 2**20)}}}),
              msgpack.packb({"op": "submit", "rid": 1, "record": {"info": {"x": [[]] * (8 * 2**20)}}})]
    replies = []
    for body in bodies * 2:
        sock = raw_connection(daemon.socket, timeout=120)
        hello(sock)
        sock.sendall(framed(body))
        replies.append(read_frame(sock))
        sock.close()
    for reply in replies:
        assert reply is not None and reply["ok"] is False and "more than" in reply["error"]["message"]
    served(daemon.socket, 0)
    assert peak_rss_kb(daemon.pid) < RSS_BOUND_KB
    assert daemon.stop() == 0


def test_one_fit_may_not_make_the_daemon_hold_more_than_its_cap(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Files each under the per-file cap, together past the per-fit one (folder and zip alike)."""
    monkeypatch.setattr(folders, "MAX_FIT", 3000)
    fit = tmp_path / "fit"
    (fit / "files").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (fit / "files" / f"{name}.json").write_bytes(b"[" + b"0," * 600 + b"0]")
    source: Any = folders._Folder(fit)
    for name in ("a", "b"):
        assert source.read(f"files/{name}.json") is not None
    with pytest.raises(IngestError, match="over the limit"):
        source.read("files/c.json")
    with zipfile.ZipFile(tmp_path / "fit.zip", "w") as archive:
        for name in ("a", "b", "c"):
            archive.writestr(f"files/{name}.json", b"[" + b"0," * 600 + b"0]")
    with zipfile.ZipFile(tmp_path / "fit.zip") as archive:
        zipped: Any = folders._Zipped(archive)
        for name in ("a", "b"):
            assert zipped.read(f"files/{name}.json") is not None
        with pytest.raises(IngestError, match="limit"):
            zipped.read("files/c.json")


def _wal_bytes(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _submit_many(socket: Path, start: int, count: int, n_samples: int = 200) -> None:
    with lensd.connect_sync(socket=socket) as client:
        for i in range(start, start + count):
            client.submit(record(i, n_samples=n_samples))


def test_a_stalled_read_stream_is_closed_and_holds_no_snapshot(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--stream-timeout", "6")
    _submit_many(daemon.socket, 0, 50)
    everything = lensd.Aggregator.from_database(daemon.db).state.to_wire()
    stalled = raw_connection(daemon.socket, timeout=120)
    hello(stalled)
    stalled.sendall(frame({"op": "query", "rid": 1, "query": everything, "page_size": 1}))
    first = read_frame(stalled)
    assert first is not None and len(first["page"]) == 1  # and no "next" is ever sent
    _submit_many(daemon.socket, 50, 60, n_samples=5000)  # ~15 MB of WAL the stall keeps from the database
    grown = _wal_bytes(daemon.db)
    assert select.select([stalled], [], [], 0)[0] == [], "the stream timed out before the WAL was measured"
    fresh = raw_connection(daemon.socket, timeout=60)  # a new stream sees every write, not the stall's snapshot
    hello(fresh)
    fresh.sendall(frame({"op": "query", "rid": 1, "query": everything, "page_size": 10_000}))
    page = read_frame(fresh)
    assert page is not None and len(page["page"]) == 110
    fresh.close()
    closed = read_frame(stalled)  # the daemon ends the stream nobody pulls
    assert closed is not None and closed["ok"] is False and "stream-timeout" in closed["error"]["message"]
    stalled.close()
    # and gives the WAL the stall held back to the disk: checkpointed and truncated, not just reused
    until(lambda: _wal_bytes(daemon.db) < grown // 10, daemon.db.parent, timeout=30, what="the WAL to shrink")
    _submit_many(daemon.socket, 110, 60, n_samples=5000)  # the WAL is checkpointed and reused, not grown again
    assert _wal_bytes(daemon.db) < 1.5 * grown
    assert daemon.stop() == 0 and integrity_ok(daemon.db)
