"""Nothing acknowledged is lost, and no client (buggy, hostile, slow or idle) harms the daemon.

Every test runs a real daemon process on a real socket and a real sqlite file, and ends with
``PRAGMA integrity_check``. Counts grow under ``make stress`` (``wire.scaled``). The kill -9 and
SIGTERM-under-load tests live in test_daemon.py; docs/reliability.md lists what each test shows.
"""

from __future__ import annotations

import resource
import select
import shutil
import socket as socketlib
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from records_factory import record
from wire import (
    frame,
    framed,
    hello,
    integrity,
    raw_connection,
    read_frame,
    request,
    scaled,
    stressed,
    wait_for,
)

import lensd
from lensd.domain.records import RECORD_KEYS
from lensd.errors import Busy, LensdError, StorageError
from lensd.mounts import file_system_type, is_network_file_system
from lensd.wire import protocol


def stored_ids(db: Path) -> set[str]:
    return {f.id for f in lensd.Aggregator.from_database(db, top_level_only=False).fits()}


def fit_rows(db: Path, fit_id: str) -> dict[str, Any]:
    """What the database holds for one fit: its rows in every table, to show nothing is doubled."""
    conn = sqlite3.connect(db)
    try:
        keys = [k for (k,) in conn.execute("SELECT fit_key FROM fits WHERE id = ?", (fit_id,))]
        assert len(keys) == 1, f"{fit_id} is stored {len(keys)} times"
        key = keys[0]
        status, seq, best = conn.execute("SELECT status, seq, max_log_likelihood FROM fits WHERE fit_key = ?",
                                         (key,)).fetchone()
        counts = {table: conn.execute(f"SELECT count(*) FROM {table} WHERE fit_key = ?", (key,)).fetchone()[0]
                  for table in ("facts", "nodes", "payloads")}
        distinct = conn.execute("SELECT count(*) FROM (SELECT DISTINCT kind, key FROM facts WHERE fit_key = ?)",
                                (key,)).fetchone()[0]
        assert distinct == counts["facts"], f"{fit_id} has duplicated facts"
        return {"status": status, "seq": seq, "max_log_likelihood": best, **counts}
    finally:
        conn.close()


def submit_many(socket: Path, records: list[dict[str, Any]]) -> None:
    """Pipeline many submits on one raw connection (group commit takes them in a few batches)."""
    with raw_connection(socket, timeout=60) as sock:
        hello(sock)
        sock.sendall(b"".join(frame_of("submit", rid, record=r) for rid, r in enumerate(records, 1)))
        replies = [read_frame(sock) for _ in records]
    assert all(r is not None and r.get("outcome") == "applied" for r in replies), replies[:3]


def frame_of(op: str, rid: int, **fields: Any) -> bytes:
    """A request frame encoded by lensd's own codec (numpy arrays included)."""
    return protocol.encode_frame(protocol.request(op, rid, **fields))


def stop_cleanly(daemon: Any) -> None:
    """SIGTERM, exit 0, no traceback in the log, a sound database."""
    assert daemon.stop() == 0
    wait_for(lambda: any("stopping" in line for line in daemon.stderr_lines), 30, "the daemon's last log lines")
    log = "".join(daemon.stderr_lines)
    assert "Traceback" not in log, log[-3000:]
    assert integrity(daemon.db) == "ok"


# -- 1. crash: a lost acknowledgement, retried, is stored exactly once -----------------------------

@stressed
def test_a_write_whose_ack_is_lost_is_stored_once_when_resent(daemon) -> None:  # type: ignore[no-untyped-def]
    """Send, drop the connection before the ack, reconnect, send the same (id, seq) again.

    Even trials reconnect after the drop; odd trials have the second connection open already and
    resend at once, so the resend can race the original to the committer.
    """
    trials = scaled(20, 200)
    outcomes: set[str] = set()
    for trial in range(trials):
        fit_id = f"retry-{trial}"
        data = record(trial, 30, id=fit_id)
        running = {k: v for k, v in data.items() if k not in ("samples", "status")} | {"status": "running"}
        events: list[tuple[str, dict[str, Any]]] = [("start", {"record": running, "seq": 1000}),
                  ("progress", {"id": fit_id, "seq": 1001, "max_log_likelihood": -1e6, "progress": 0.5}),
                  ("complete", {"record": data, "seq": 1002}),
                  ("submit", {"record": record(trial, 30, id=f"whole-{trial}")})]
        for op, fields in events:
            body = frame_of(op, 1, **fields)
            retry = raw_connection(daemon.socket) if trial % 2 else None
            if retry is not None:
                hello(retry)
            with raw_connection(daemon.socket) as dropped:
                hello(dropped)
                dropped.sendall(body)  # ... and leave before reading the acknowledgement
            retry = retry or raw_connection(daemon.socket)
            with retry:
                if trial % 2 == 0:
                    hello(retry)
                retry.sendall(body)
                reply = read_frame(retry)
            assert reply is not None and reply["ok"] is True, reply
            outcomes.add(str(reply["outcome"]))
        # a frame cut in half by the drop is never applied; its resend is
        half = frame_of("submit", 1, record=record(trial, 30, id=f"half-{trial}"))
        with raw_connection(daemon.socket) as dropped:
            hello(dropped)
            dropped.sendall(half[: len(half) // 2])
        with raw_connection(daemon.socket) as retry:
            hello(retry)
            assert request(retry, "submit", 2, record=record(trial, 30, id=f"half-{trial}"))["outcome"] == "applied"
    stop_cleanly(daemon)  # drains every dropped connection's write before we look
    assert "duplicate" in outcomes  # at least one resend found its original committed
    reference = fit_rows(daemon.db, "whole-0")
    for trial in range(trials):
        stored = fit_rows(daemon.db, f"retry-{trial}")
        expected_best = max(record(trial, 30)["samples"]["log_likelihood"])
        assert stored == {**reference, "status": "completed", "seq": 1002,
                          "max_log_likelihood": pytest.approx(expected_best)}, stored
        assert fit_rows(daemon.db, f"whole-{trial}")["status"] == "completed"
        assert fit_rows(daemon.db, f"half-{trial}")["status"] == "completed"
    assert len(stored_ids(daemon.db)) == 3 * trials


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_job_client_reconnects_to_a_restarted_daemon(make_daemon, short_tmp, how) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon()
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(1)) == "applied"
        fit = client.start(id="open-across-restart", name="live", unique_tag="t")
        if how == "sigterm":
            assert daemon.stop() == 0
        else:
            daemon.kill()
        restarted = make_daemon(db=daemon.db, socket=daemon.socket)
        assert client.submit(record(2)) == "applied"  # the stale connection fails; the client reconnects
        assert fit.progress(max_log_likelihood=-3.0) == "applied"
        assert fit.complete() == "applied"
    stop_cleanly(restarted)
    fits = {f.id: f for f in lensd.Aggregator.from_database(daemon.db, top_level_only=False).fits()}
    assert set(fits) == {"fit-1", "fit-2", "open-across-restart"}
    assert fits["open-across-restart"].status == "completed"
    assert fits["open-across-restart"].max_log_likelihood == -3.0


def test_a_job_with_a_spool_waits_for_its_daemon_to_come_back(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """A job that has reached its daemon retries through a restart instead of spooling at once:
    the spool is for jobs that cannot reach the daemon at all, not for a daemon's brief absence."""
    daemon = make_daemon()
    spool = short_tmp / "spool"
    outcome: dict[str, Any] = {}
    with lensd.connect_sync(socket=daemon.socket, spool=spool) as client:
        assert client.submit(record(1)) == "applied"
        assert daemon.stop() == 0

        def submit_while_away() -> None:
            try:
                outcome["reply"] = client.submit(record(2))
            except BaseException as exc:  # reported by the assertion below
                outcome["reply"] = exc

        sender = threading.Thread(target=submit_while_away)
        sender.start()  # its first attempt finds no daemon; it backs off and tries again
        restarted = make_daemon(db=daemon.db, socket=daemon.socket)
        sender.join(30)
    assert outcome["reply"] == "applied"
    assert not [p for p in spool.rglob("*") if p.is_file()]  # nothing was spooled
    stop_cleanly(restarted)
    assert stored_ids(daemon.db) == {"fit-1", "fit-2"}


# -- 2. bad input: hypothesis frames against the live daemon ------------------------------------

OPS = sorted(protocol.ALL_OPS - {"stop"})  # "stop" is a legitimate request: it would stop the daemon
FIELDS = ["record", "id", "seq", "samples", "ids", "query", "name", "error", "max_log_likelihood", "progress",
          "n_samples", "instance", "page_size", "status", "limit", "v"]
DTYPES = ["<f8", "<i4", ">f4", "|u1", "<c16", "|b1", "|O", "<U4", "|V8", "<M8[s]", "bogus", ""]
KEYS = sorted(RECORD_KEYS | {"paths", "parameters", "log_likelihood", "type", "arguments", "class_path", "value"})

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                    st.text(max_size=12), st.binary(max_size=12))
arrays = hnp.arrays(st.sampled_from(["<f8", "<i4", "|b1", "|u1", ">f8"]),  # complex: refused to send
                    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
values = st.recursive(  # well-framed msgpack of any shape: each request gets exactly one answer
    scalars | arrays,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                                                inner, max_size=3),
    max_leaves=6)
# Fields are drawn a few at a time (not every optional key at once): generating is then cheap
# enough for thousands of frames in CI, and each frame still mixes known keys with wrong types.
samples_like = st.dictionaries(st.sampled_from(["paths", "parameters", "log_likelihood", "log_prior", "weight"]),
                               arrays | values | st.lists(st.text(max_size=8), max_size=4), max_size=4)
records = st.dictionaries(st.sampled_from(sorted(RECORD_KEYS)),
                          st.deferred(lambda: samples_like) | values, max_size=6)
requests = st.builds(
    lambda op, rid, fields: {"op": op, **({} if rid is None else {"rid": rid[0]}), **fields},
    st.sampled_from(OPS) | st.text(max_size=8) | scalars,
    st.none() | st.tuples(st.integers(0, 2**31) | scalars),
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(values, records, samples_like), max_size=3))

lying_arrays = st.builds(  # numpy extension frames whose dtype, shape and bytes need not agree
    lambda dtype, shape, raw: msgpack.ExtType(1, msgpack.packb([dtype, shape, raw])),
    st.sampled_from(DTYPES) | st.text(max_size=6),
    st.lists(st.integers(-2, 2**40) | st.sampled_from([2**32, 2**63, 2**64 - 1]), max_size=9) | scalars,
    st.binary(max_size=64))
other_ext = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16))
# msgpack's own timestamp extension (-1) decodes to an object no lensd field accepts
TIMESTAMP_IN_RECORD = framed(b"\x83\xa2op\xa6submit\xa3rid\x01\xa6record\x82\xa6status\xa9completed"
                             b"\xa4info\x81\xa1t\xd6\xff\x00\x00\x00\x01")


def _depth_bomb(depth: int) -> bytes:
    return framed(b"\x83\xa2op\xa5count\xa3rid\x01\xa5query" + b"\x91" * depth + b"\xc0")


def _in_a_submit(value: Any) -> bytes:
    return framed(msgpack.packb({"op": "submit", "rid": 1, "record": {"status": "completed", "samples": {
        "paths": ["a"], "parameters": value, "log_likelihood": value}}}))


poison = st.one_of(  # frames that break the framing or the codec: the daemon answers once and closes
    st.binary(min_size=1, max_size=64),
    st.builds(lambda n, tail: struct.pack(">I", n) + tail,
              st.integers(protocol.DEFAULT_MAX_FRAME + 1, 2**32 - 1), st.binary(max_size=16)),
    st.integers(10, 3000).map(_depth_bomb),
    (lying_arrays | other_ext).map(_in_a_submit),
    st.sampled_from([framed(msgpack.packb([1, 2])), framed(msgpack.packb({1: 2})), framed(b"\x81\xa2op\xa2\xff\xfe"),
                     framed(b"\x81\xa2op\xdb\xff\xff\xff\xff"), framed(b"\xdd\xff\xff\xff\xff"), framed(b""),
                     TIMESTAMP_IN_RECORD]),
    scalars.map(lambda v: framed(msgpack.packb(v))),
)
HELLO = frame({"op": "hello", "v": 1, "rid": 0})
# most connections say hello and end well, so that most requests are read and answered
openings = st.integers(0, 14).map(lambda n: [b"", frame({"op": "hello", "v": 2, "rid": 0}),
                                            frame({"op": "count"})][n] if n < 3 else HELLO)
endings = st.tuples(st.integers(0, 4), poison).map(lambda pair: pair[1] if pair[0] == 0 else None)


def _encode(message: dict[str, Any]) -> bytes | None:
    try:
        return frame(message)
    except LensdError:  # what msgpack cannot carry (an int past 64 bits) never reaches a socket
        return None


def answers_expected(messages: list[dict[str, Any]]) -> int:
    """Final replies owed for well-framed requests: one each, but none for a well-formed next/cancel."""
    def silent(m: dict[str, Any]) -> bool:
        rid = m.get("rid")
        return m.get("op") in ("next", "cancel") and isinstance(rid, int) and not isinstance(rid, bool)
    return sum(not silent(m) for m in messages)


def exchange(socket: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload``, half-close, and read every reply until the daemon closes the connection."""
    with raw_connection(socket, timeout=60) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socketlib.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed on a framing error before taking everything
        replies = []
        while (reply := read_frame(sock)) is not None:
            replies.append(reply)
        return replies


@stressed
@pytest.mark.timeout(scaled(180, 3600))  # 10^5 frames take about ten minutes on two cores
def test_hypothesis_frames_never_harm_the_live_daemon(daemon) -> None:  # type: ignore[no-untyped-def]
    target = scaled(1_000, 100_000)
    per_connection = scaled(12, 40)
    sent = {"frames": 0, "connections": 0, "replies": 0, "answered": 0}

    @settings(max_examples=target // (per_connection // 2), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(opening=openings, last=endings,
           messages=st.lists(requests, min_size=per_connection // 2, max_size=per_connection))
    def one_connection(opening: bytes, messages: list[dict[str, Any]], last: bytes | None) -> None:
        encoded = [(m, f) for m, f in ((m, _encode(m)) for m in messages) if f is not None]
        frames = ([opening] if opening else []) + [f for _, f in encoded] + ([last] if last else [])
        replies = exchange(daemon.socket, b"".join(frames))
        for reply in replies:  # every reply is a well-formed frame of the protocol
            assert isinstance(reply, dict) and "rid" in reply and ("ok" in reply or "page" in reply), reply
            if reply.get("ok") is False:
                assert isinstance(reply["error"]["code"], str) and reply["error"]["message"], reply
        answers = [r for r in replies if "ok" in r]
        if opening == HELLO and last is None:  # every request was read: each got exactly one answer
            assert len(answers) == 1 + answers_expected([m for m, _ in encoded]), (answers, messages)
            sent["answered"] += len(answers) - 1
        sent["frames"] += len(frames)
        sent["connections"] += 1
        sent["replies"] += len(replies)

    one_connection()
    print(f"hypothesis: {sent['frames']} frames over {sent['connections']} connections, "
          f"{sent['replies']} replies; {sent['answered']} requests checked for exactly one answer")
    assert sent["frames"] >= target
    assert daemon.process.poll() is None
    with lensd.connect_sync(socket=daemon.socket) as client:  # a normal client is still served
        assert client.submit(record(1)) == "applied"
    assert "fit-1" in stored_ids(daemon.db)
    assert integrity(daemon.db) == "ok"
    stop_cleanly(daemon)


# -- 2. bad input: slow, silent, idle and too many clients --------------------------------------

def test_a_slow_loris_is_cut_off_while_others_are_served(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """One byte a second never completes a hello inside the 2 s handshake timeout."""
    daemon = make_daemon("--handshake-timeout", "2")
    served = 0
    with raw_connection(daemon.socket, timeout=30) as loris, lensd.connect_sync(socket=daemon.socket) as client:
        started = time.monotonic()
        reply = None
        for byte in HELLO:
            loris.sendall(bytes([byte]))
            assert client.submit(record(served)) == "applied"  # someone else is served meanwhile
            served += 1
            readable, _, _ = select.select([loris], [], [], 1.0)  # the loris's pace: a byte a second
            if readable:
                reply = read_frame(loris)
                break
        elapsed = time.monotonic() - started
        assert reply is not None, "the slow client was never cut off"
        assert reply["ok"] is False and "handshake timeout" in reply["error"]["message"]
        assert read_frame(loris) is None  # and closed
    assert 1.5 < elapsed < 6 and served <= 5
    stop_cleanly(daemon)
    assert len(stored_ids(daemon.db)) == served


def test_a_client_that_never_says_hello_is_closed_with_an_error(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon("--handshake-timeout", "1")
    with raw_connection(daemon.socket, timeout=30) as silent:
        started = time.monotonic()
        reply = read_frame(silent)  # blocks until the daemon speaks
        elapsed = time.monotonic() - started
        assert reply == {"rid": None, "ok": False,
                         "error": {"code": "protocol", "message": "no hello within the handshake timeout"}}
        assert read_frame(silent) is None
    assert 0.9 < elapsed < 10
    with lensd.connect_sync(socket=daemon.socket) as client:
        assert client.submit(record(1)) == "applied"
    stop_cleanly(daemon)


@pytest.fixture
def many_files() -> Iterator[None]:
    """This test process holds over a thousand sockets too: lift its soft limit as the daemon does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _served(socket: Path, index: int) -> bool:
    try:
        with lensd.connect_sync(socket=socket) as client:
            return client.submit(record(index)) == "applied"
    except Busy:
        return False


@stressed
def test_idle_connections_leave_others_served_and_the_cap_refuses_clearly(make_daemon, many_files) -> None:  # type: ignore[no-untyped-def]
    idle_count = scaled(1_000, 4_000)
    cap = idle_count + 1
    daemon = make_daemon("--max-connections", str(cap))
    idle = []
    try:
        for _ in range(idle_count):
            sock = raw_connection(daemon.socket, timeout=60)
            idle.append(sock)
            sock.sendall(HELLO)
        assert all((read_frame(sock) or {}).get("ok") is True for sock in idle)  # all admitted, then silent
        with lensd.connect_sync(socket=daemon.socket) as client:  # the last free slot
            for i in range(20):
                assert client.submit(record(i)) == "applied"
            refused = rf"connection limit \({cap} connections, lensd start --max-connections\)"
            with pytest.raises(Busy, match=refused), lensd.connect_sync(socket=daemon.socket):
                pass
            with raw_connection(daemon.socket) as extra:  # on the wire: one error frame, then close
                refusal = read_frame(extra)
                assert refusal is not None and refusal["error"]["code"] == "busy"
                assert read_frame(extra) is None
        # the slot the client held is free again once the daemon has seen it close
        wait_for(lambda: _served(daemon.socket, 100), 30, "a freed slot to serve a new client")
        for sock in idle[: idle_count // 2]:
            sock.close()
        wait_for(lambda: _served(daemon.socket, 101), 30, "the daemon to serve after idle clients left")
    finally:
        for sock in idle:
            sock.close()
    assert daemon.process.poll() is None
    stop_cleanly(daemon)
    assert len(stored_ids(daemon.db)) == 22


def test_an_abandoned_read_stream_frees_its_connection(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A reader that takes one page of many and leaves must not hold its slot for ever."""
    daemon = make_daemon("--max-connections", "3")
    submit_many(daemon.socket, [record(i, 5) for i in range(300)])
    for rid in range(20):  # each would leak one of only 3 slots if its stream waited for a "next"
        with raw_connection(daemon.socket) as reader:
            hello(reader)
            first = request(reader, "query", rid + 1, query=lensd.Aggregator.from_database(daemon.db).state.to_wire(),
                            page_size=10)
            assert len(first["page"]) == 10
        wait_for(lambda rid=rid: _served(daemon.socket, 1000 + rid), 30,  # type: ignore[misc]
                 "a slot after an abandoned stream")
    with raw_connection(daemon.socket) as probe:
        hello(probe)
        wait_for(lambda: request(probe, "status", 7)["status"]["connections"] == 1, 30,
                 "every abandoned connection to be closed")
    stop_cleanly(daemon)


# -- 3. full disk ---------------------------------------------------------------------------------

@pytest.fixture
def small_file_system(short_tmp: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (we are root in the sandbox and in CI); skipped where mounting is refused."""
    point = short_tmp / "fs"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "lensd-full-disk", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); "
                    "test_a_database_at_its_quota_refuses_writes_clearly covers a full database")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(client: Any, first: int) -> tuple[set[str], int, StorageError]:
    """Submit until the daemon refuses; the acknowledged ids, the refused index and the error."""
    acked: set[str] = set()
    for i in range(first, first + 5_000):
        try:
            client.submit(record(i))
        except StorageError as exc:
            return acked, i, exc
        acked.add(f"fit-{i}")
    raise AssertionError("the database never filled up")


def test_a_full_disk_refuses_writes_clearly_and_recovers(make_daemon, short_tmp, small_file_system) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(db=small_file_system / "lensd.sqlite", socket=short_tmp / "s")
    with lensd.connect_sync(socket=daemon.socket) as client:
        acked, refused, error = fill(client, 0)
        assert len(acked) >= 3
        assert "database or disk is full" in str(error) and "free disk space, then resend" in str(error)
        with pytest.raises(StorageError, match="full"):  # still full: refused again, never acknowledged
            client.submit(record(refused))
        assert daemon.process.poll() is None
        assert stored_ids(daemon.db) == acked  # everything acknowledged is there, nothing else
        assert integrity(daemon.db) == "ok"
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_file_system)], check=True)  # space returns
        assert client.submit(record(refused)) == "applied"
        for i in range(refused + 1, refused + 20):
            assert client.submit(record(i)) == "applied"
    stop_cleanly(daemon)
    assert stored_ids(daemon.db) == acked | {f"fit-{i}" for i in range(refused, refused + 20)}


def test_a_database_at_its_quota_refuses_writes_clearly(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """``--max-db-mb`` (sqlite's max_page_count): the same full-database path, on any machine."""
    daemon = make_daemon("--max-db-mb", "1")
    with lensd.connect_sync(socket=daemon.socket) as client:
        acked, refused, error = fill(client, 0)
        assert len(acked) >= 3
        assert "may not grow past its quota of 1 MiB (lensd start --max-db-mb)" in str(error)
        assert "raise the quota or free disk space, then resend" in str(error)
        with pytest.raises(StorageError, match="quota"):
            client.submit(record(refused))
        assert daemon.process.poll() is None
        assert stored_ids(daemon.db) == acked
        assert integrity(daemon.db) == "ok"
    stop_cleanly(daemon)
    # space returns: the operator raises the quota; the job's resend now succeeds
    raised = make_daemon("--max-db-mb", "16", db=daemon.db, socket=daemon.socket)
    with lensd.connect_sync(socket=raised.socket) as client:
        for i in range(refused, refused + 20):
            assert client.submit(record(i)) == "applied"
    stop_cleanly(raised)
    assert stored_ids(daemon.db) == acked | {f"fit-{i}" for i in range(refused, refused + 20)}


# -- 4. the database on a network file system -------------------------------------------------------

def test_file_system_type_reads_the_mount_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    real = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    root_type = [parts[2] for parts in real if parts[1] == "/"][-1]
    assert file_system_type(Path("/")) == root_type
    assert file_system_type(Path("/proc/self")) == "proc"
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "server:/export /data nfs4 rw,vers=4.2 0 0\n"
        "/dev/sdb1 /data/local xfs rw 0 0\n"
        "10.0.0.1@o2ib:/fs /scratch lustre rw 0 0\n"
        "host:/x /mnt/with\\040space fuse.sshfs rw 0 0\n"
        "tmpfs /mnt/over tmpfs rw 0 0\n"
        "gpfs0 /mnt/over gpfs rw 0 0\n")
    network = {"/data/run/lensd.sqlite": True, "/data/local/lensd.sqlite": False, "/scratch/u/db": True,
               "/mnt/with space/db": True, "/mnt/over/db": True, "/home/u/lensd.sqlite": False,
               "/database": False}
    for path, expected in network.items():
        assert is_network_file_system(Path(path), table) is expected, path
    assert file_system_type(Path("/mnt/over/db"), table) == "gpfs"  # the later mount hides the earlier
    assert file_system_type(Path("/data"), tmp_path / "absent") == ""


def test_the_daemon_warns_about_a_database_on_a_network_file_system(make_daemon, short_tmp) -> None:  # type: ignore[no-untyped-def]
    """A FUSE mount (bindfs) stands in for NFS or sshfs: sqlite's locks are not to be trusted there."""
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (apt-get install bindfs); the mount-table test covers detection")
    source, point = short_tmp / "src", short_tmp / "fuse"
    source.mkdir()
    point.mkdir()
    mounted = subprocess.run(["bindfs", str(source), str(point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount FUSE here: {mounted.stderr.strip()}")
    try:
        assert is_network_file_system(point)
        daemon = make_daemon(db=point / "lensd.sqlite", socket=short_tmp / "s")
        with lensd.connect_sync(socket=daemon.socket) as client:
            assert client.submit(record(1)) == "applied"
        stop_cleanly(daemon)
        warnings = [line for line in daemon.stderr_lines if "network file system" in line]
        assert warnings and "WARNING" in warnings[0] and "(fuse)" in warnings[0], daemon.stderr_lines[:5]
        assert "put the database on local disk" in warnings[0]
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
