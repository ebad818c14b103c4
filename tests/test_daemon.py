"""The daemon as jobs see it: a real process, a real socket, a real sqlite file."""

from __future__ import annotations

import os
import socket as socketlib
import stat
import struct
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import integrity_ok, lensd_cli
from records_factory import record
from wire import frame, framed, hello, raw_connection, read_frame, scaled, stressed

import lensd
from lensd.errors import DaemonUnavailable, InvalidRecord, ProtocolError
from lensd.query.state import QueryState
from lensd.wire import protocol

WORKERS = Path(__file__).parent / "workers.py"


def worker(mode: str, socket: Path, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKERS), mode, str(socket), str(first), str(count)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def count_fits(db: Path) -> int:
    return len(lensd.Aggregator.from_database(db, top_level_only=False))


def test_submit_then_read_back_sync_and_async(daemon) -> None:  # type: ignore[no-untyped-def]
    with lensd.connect_sync(socket=daemon.socket) as client:
        outcomes = [client.submit(record(i)) for i in range(5)]
    assert outcomes == ["applied"] * 5

    async def read() -> tuple[int, list[float]]:
        agg = await lensd.AsyncAggregator.connect(socket=daemon.socket)
        async with agg:
            return await agg.count(), [max(s.log_likelihood) async for s in agg.values("samples")]

    n, best = anyio.run(read)
    assert n == 5
    agg = lensd.Aggregator.from_database(daemon.db)
    assert sorted(best) == sorted(max(s.log_likelihood) for s in agg.values("samples"))


def test_resending_the_same_event_is_idempotent(daemon) -> None:  # type: ignore[no-untyped-def]
    async def send() -> list[str]:
        async with lensd.connect(socket=daemon.socket) as client:
            fit = await client.start(id="same", name="x", unique_tag="t")
            first = await fit.progress(max_log_likelihood=1.0)  # seq 2
            again = await client._send("progress", {"id": "same", "seq": 2, "max_log_likelihood": 9.0})
            await fit.complete()
            return [first, again]

    assert anyio.run(send) == ["applied", "duplicate"]
    fits = list(lensd.Aggregator.from_database(daemon.db).fits())
    assert [(f.id, f.status, f.max_log_likelihood) for f in fits] == [("same", "completed", 1.0)]


def test_invalid_record_gets_clear_error_and_daemon_keeps_serving(daemon) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRecord, match="unknown record keys"):
        raise_from_daemon(daemon.socket, {"status": "completed", "evil": 1})
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(1)) == "applied"


@pytest.mark.parametrize("status", [{"a": 1}, ["completed"], 7, None])
def test_a_record_of_wrong_types_is_refused_and_its_neighbours_answered(daemon, status) -> None:  # type: ignore[no-untyped-def]
    """Found by the hypothesis frames: a dict status once raised TypeError, and the connection's
    other requests went unanswered. Each request on the connection gets its one answer."""
    with raw_connection(daemon.socket) as sock:
        hello(sock)
        everything = QueryState().to_wire()
        sock.sendall(frame({"op": "count", "rid": 1, "query": everything})
                     + frame({"op": "submit", "rid": 2, "record": {"id": "x", "status": status}})
                     + frame({"op": "count", "rid": 3, "query": everything}))
        replies = {reply["rid"]: reply for reply in (read_frame(sock) for _ in range(3)) if reply}
    assert replies[2]["ok"] is False and replies[2]["error"]["code"] == "invalid"
    assert "status must be one of" in replies[2]["error"]["message"]
    assert replies[1]["ok"] is True and replies[3]["ok"] is True


def raise_from_daemon(socket: Path, bad_record: dict[str, object]) -> None:
    """Send a record the client would refuse, straight to the daemon, and raise its reply."""
    from lensd.client.connection import Client

    async def send() -> None:
        client = await Client.open(socket)
        try:
            await client.request("submit", record=bad_record)
        finally:
            await client.aclose()

    anyio.run(send)


@pytest.mark.parametrize("payload, expect", [
    (b"\x00\x00\x00\x05garbage-and-more", "protocol"),
    (struct.pack(">I", 2**31) + b"xx", "too_large"),
    (frame({"op": "hello", "v": 99, "rid": 0}), "protocol"),
    (frame({"op": "submit", "rid": 1}), "protocol"),
    (frame([1, 2, 3]), "protocol"),
])
def test_bad_first_frames_get_an_error_and_a_closed_connection(daemon, payload, expect) -> None:  # type: ignore[no-untyped-def]
    with raw_connection(daemon.socket) as sock:
        sock.sendall(payload)
        reply = read_frame(sock)
        assert reply is not None and reply["ok"] is False
        assert reply["error"]["code"] == expect
        assert read_frame(sock) is None  # closed
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(7)) == "applied"


def test_each_bad_hello_is_logged_in_one_short_line(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--handshake-timeout", "1")
    for payload in (frame({"op": "submit", "rid": 1, "record": {}}),
                    frame({"op": "hello", "v": 2, "rid": 0}),
                    frame({"op": "hello", "v": "9" * 100_000, "rid": 0}),
                    b""):  # says nothing: refused at the handshake timeout
        with raw_connection(daemon.socket, timeout=30) as sock:
            sock.sendall(payload)
            reply = read_frame(sock)
            assert reply is not None and reply["error"]["code"] == "protocol", reply
            assert read_frame(sock) is None
    assert daemon.stop() == 0
    lines = [line for line in daemon.stderr_lines if "closing a connection" in line]
    assert len(lines) == 4, daemon.stderr_lines
    assert "got op 'submit'" in lines[0] and "unsupported protocol version 2;" in lines[1]
    assert len(lines[2]) < 400 and "(100002 characters)" in lines[2], lines[2][:500]
    assert "no hello within the handshake timeout" in lines[3]
    assert all("WARNING" in line for line in lines)


def test_unknown_op_and_bad_rid_keep_the_connection(daemon) -> None:  # type: ignore[no-untyped-def]
    with raw_connection(daemon.socket) as sock:
        hello(sock)
        sock.sendall(frame({"op": "explode", "rid": 5}))
        reply = read_frame(sock)
        assert reply == {"rid": 5, "ok": False, "error": {"code": "protocol", "message": "unknown op 'explode'"}}
        sock.sendall(frame({"op": "count", "rid": True, "query": None}))
        reply = read_frame(sock)
        assert reply is not None and reply["ok"] is False and reply["rid"] is None
        sock.sendall(frame({"op": "submit", "rid": 6, "record": {"status": "completed", "id": "ok-1"}}))
        assert read_frame(sock) == {"rid": 6, "ok": True, "outcome": "applied"}


def test_socket_is_private(daemon) -> None:  # type: ignore[no-untyped-def]
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o600


def test_socket_directory_made_private(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(socket=short_tmp / "run" / "s")
    assert stat.S_IMODE(os.stat(daemon.socket.parent).st_mode) == 0o700


def test_second_daemon_on_the_same_database_is_refused(daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    result = lensd_cli("start", "--foreground", "--db", str(daemon.db), "--socket", str(short_tmp / "other"))
    assert result.returncode == 1
    assert "being written by" in result.stderr and "Traceback" not in result.stderr
    result = lensd_cli("start", "--foreground", "--db", str(short_tmp / "x.sqlite"), "--socket",
                       str(daemon.socket))
    assert result.returncode == 1 and "already serves" in result.stderr
    assert os.path.exists(daemon.socket)  # the live socket was not unlinked


def test_status_exit_codes(daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    up = lensd_cli("status", "--socket", str(daemon.socket))
    assert up.returncode == 0, up.stderr
    assert f"pid {daemon.pid}" in up.stdout
    down = lensd_cli("status", "--socket", str(short_tmp / "nothing"))
    assert down.returncode == 3 and "Traceback" not in down.stderr


def test_stop_command_commits_and_exits(daemon) -> None:  # type: ignore[no-untyped-def]
    with lensd.connect_sync(socket=daemon.socket) as client:
        for i in range(20):
            client.submit(record(i))
    result = lensd_cli("stop", "--socket", str(daemon.socket))
    assert result.returncode == 0, result.stderr
    assert daemon.process.wait(30) == 0
    assert count_fits(daemon.db) == 20 and integrity_ok(daemon.db)
    with pytest.raises(DaemonUnavailable), lensd.connect_sync(socket=daemon.socket):
        pass


def test_stopping_with_clients_connected_logs_no_error(daemon) -> None:  # type: ignore[no-untyped-def]
    """Connections open when the daemon stops end cleanly, the daemon's log free of tracebacks:
    cancelling a pending read as its peer closed made asyncio log an InvalidStateError."""
    idle = [raw_connection(daemon.socket) for _ in range(20)]
    for sock in idle:
        hello(sock)
    with raw_connection(daemon.socket) as stopper:  # what `lensd stop` does: ask, read, hang up
        hello(stopper)
        stopper.sendall(frame({"op": "stop", "rid": 1}))
        assert (read_frame(stopper) or {}).get("stopping") is True
    for sock in idle:
        assert read_frame(sock) is None  # closed by the daemon on its way out
        sock.close()
    assert daemon.process.wait(60) == 0
    assert daemon.stop() == 0  # already gone: collects the last of its log
    log = "".join(daemon.stderr_lines)
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_32_processes_50_fits_each(daemon) -> None:  # type: ignore[no-untyped-def]
    procs = [worker("submit", daemon.socket, k * 50, 50) for k in range(32)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-300:] for o in outputs if "error" in o]
    acks = [line for out in outputs for line in out.splitlines() if line.startswith("ack")]
    assert len(acks) == 1600
    assert count_fits(daemon.db) == 1600


def test_sigterm_drains_under_load(daemon) -> None:  # type: ignore[no-untyped-def]
    procs = [worker("submit", daemon.socket, k * 1000, 1000) for k in range(4)]
    assert procs[0].stdout is not None
    acked = set()
    for _ in range(20):  # wait for real traffic: 20 acknowledgements from the first client
        line = procs[0].stdout.readline()
        assert line.startswith("ack")
        acked.add(line.split()[1])
    assert daemon.stop() == 0
    for p in procs:
        p.kill()  # its acknowledgements are already on its stdout; spare it the reconnect backoff
        out, _ = p.communicate(timeout=120)
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack")}
    stored = {f.id for f in lensd.Aggregator.from_database(daemon.db, top_level_only=False).fits()}
    assert acked <= stored
    assert integrity_ok(daemon.db)


@stressed
@pytest.mark.parametrize("trial", range(scaled(5, 20)))
def test_kill_9_loses_nothing_acknowledged(make_daemon, short_tmp, trial) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(db=short_tmp / "k.sqlite", socket=short_tmp / "k")
    procs = [worker("submit", daemon.socket, k * 10_000, 10_000) for k in range(4)]
    assert procs[0].stdout is not None
    acked = set()
    for _ in range(30 + 40 * trial):  # kill at a different depth each trial
        line = procs[0].stdout.readline()
        assert line.startswith("ack")
        acked.add(line.split()[1])  # acknowledged before the kill: these must be stored too
    daemon.kill()
    for p in procs:
        p.kill()  # its acknowledgements are already on its stdout; spare it the reconnect backoff
        out, _ = p.communicate(timeout=120)
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack")}
    restarted = make_daemon(db=daemon.db, socket=daemon.socket)
    stored = {f.id for f in lensd.Aggregator.from_database(daemon.db, top_level_only=False).fits()}
    assert acked <= stored, f"lost {len(acked - stored)} acknowledged records"
    assert restarted.stop() == 0
    assert integrity_ok(daemon.db)


def test_systemd_notify_ready_and_stopping(short_tmp: Path) -> None:
    """With NOTIFY_SOCKET set, the daemon sends READY=1 when it serves and STOPPING=1 on SIGTERM."""
    notify_path = short_tmp / "notify"
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        process = subprocess.Popen([sys.executable, "-m", "lensd", "start", "--foreground", "--db",
                                    str(short_tmp / "n.sqlite"), "--socket", str(short_tmp / "s")],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert notify.recv(256) == b"READY=1"
            assert socketlib.socket(socketlib.AF_UNIX).connect_ex(str(short_tmp / "s")) == 0  # serving
            process.terminate()
            assert notify.recv(256) == b"STOPPING=1"
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize(("body", "fault"), [
    (b"\xc1", "a byte that starts no msgpack value (0xc1, or a reserved type)"),
    (b"\x91" * 3000 + b"\xc0", "nested deeper than msgpack can decode"),
    (b"\x80\x80", "bytes after the end of the message"),
])
def test_a_malformed_frame_is_named_in_words_in_the_log_and_to_the_client(daemon, body: bytes, fault: str) -> None:  # type: ignore[no-untyped-def]
    """msgpack's FormatError and StackError have no text: the daemon logged "malformed msgpack:
    FormatError: " and the client's error ended the same way. Both now say what was wrong."""
    sock = raw_connection(daemon.socket, timeout=60)
    try:
        hello(sock)
        logged = len(daemon.stderr_lines)
        sock.sendall(framed(body))
        reply = read_frame(sock)
    finally:
        sock.close()
    assert reply is not None and reply["error"]["code"] == "protocol", reply
    with pytest.raises(ProtocolError) as raised:
        protocol.raise_for_reply(reply)
    assert str(raised.value) == f"malformed msgpack: {fault}"
    line = daemon.wait_for_log("closing a connection: malformed msgpack", after=logged)
    assert line.rstrip().endswith(f"closing a connection: malformed msgpack: {fault}"), line
