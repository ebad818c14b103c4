"""Authenticated TCP against a real daemon on 127.0.0.1: many clients, attacks, secrets, crashes."""

from __future__ import annotations

import json
import os
import socket as socketlib
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, integrity_ok, lensd_cli
from records_factory import record
from wire import frame, read_frame, replies_until_closed

import lensd
from lensd.client.contact import Contact
from lensd.client.contact import read as read_contact
from lensd.errors import AuthenticationFailed, Busy
from lensd.query.state import QueryState
from lensd.wire import auth, spoolfile

WORKERS = Path(__file__).parent / "workers.py"


class TcpDaemon:
    """A daemon that also listens on TCP (port 0), and where its clients find the secret."""

    def __init__(self, make_daemon: Callable[..., DaemonProcess], folder: Path, *extra: str,
                 db: Path | None = None) -> None:
        self.home = folder / "home"
        self.secret_file = self.home / "secret"
        self.contact_file = self.home / "contact.json"
        self.process = make_daemon("--listen", "127.0.0.1:0", "--secret-file", str(self.secret_file),
                                   "--contact", str(self.contact_file), *extra, db=db or folder / "t.sqlite",
                                   socket=folder / "t")

    @property
    def contact(self) -> Contact:
        found = read_contact(self.contact_file)
        assert found is not None
        return found

    @property
    def port(self) -> int:
        return self.contact.tcp[0][1]

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"LENSD_SECRET_FILE": str(self.secret_file), "LENSD_CONTACT": str(self.contact_file)}

    def log(self) -> str:
        return "".join(self.process.stderr_lines)


@pytest.fixture
def tcp(make_daemon, short_tmp, monkeypatch) -> TcpDaemon:  # type: ignore[no-untyped-def]
    daemon = TcpDaemon(make_daemon, short_tmp)
    for key, value in daemon.env().items():
        monkeypatch.setenv(key, value)
    return daemon


def tcp_socket(port: int) -> socketlib.socket:
    sock = socketlib.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def worker(mode: str, address: str, first: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKERS), mode, address, str(first), str(count)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def just_connect(**where: Any) -> None:
    with lensd.connect_sync(**where):
        pass


def stored_ids(db: Path) -> list[str]:
    return [fit.id for fit in lensd.Aggregator.from_database(db, top_level_only=False).fits()]


def test_the_secret_is_made_private_and_the_contact_file_names_tcp(tcp: TcpDaemon) -> None:
    assert stat.S_IMODE(tcp.secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(tcp.home.stat().st_mode) == 0o700
    assert len(tcp.secret_file.read_bytes()) == 32
    contact = tcp.contact
    assert contact.pid == tcp.process.pid and contact.tcp[0][0] == "127.0.0.1" and contact.tcp[0][1] > 0
    assert contact.socket == str(tcp.process.socket.resolve()) and contact.tls_fingerprint is None
    text = tcp.contact_file.read_text()
    assert tcp.secret_file.read_bytes().hex() not in text
    assert tcp.process.stop() == 0
    assert not tcp.contact_file.exists(), "a clean stop removes the contact file"


def test_32_processes_50_fits_each_over_tcp(tcp: TcpDaemon) -> None:
    procs = [worker("fit", tcp.address, k * 50, 50) for k in range(32)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-300:] for o in outputs if "error" in o]
    completed = [line for out in outputs for line in out.splitlines() if line.startswith("completed")]
    assert len(completed) == 1600
    ids = stored_ids(tcp.process.db)
    assert len(ids) == len(set(ids)) == 1600
    assert "handshake" not in tcp.log()


def genuine_handshake(sock: socketlib.socket, secret: bytes) -> list[bytes]:
    """Authenticate as a real client would; returns the frames sent (for a replay)."""
    side = auth.ClientSide(secret, auth.new_nonce())
    sent = [frame(side.hello(0))]
    sock.sendall(sent[0])
    challenge = read_frame(sock)
    assert challenge is not None and challenge["ok"] is True
    side, answer = side.answer(challenge, 1)
    sent.append(frame(answer))
    sock.sendall(sent[1])
    accepted = read_frame(sock)
    assert accepted is not None and accepted["ok"] is True, accepted
    side.check_accepted(accepted)
    return sent


def refused(sock: socketlib.socket) -> str:
    """The refusal: an error reply's code then a closed connection, or just a closed connection."""
    codes: list[str] = []
    while True:
        reply = read_frame(sock)
        if reply is None:
            sock.close()
            return ",".join(codes) or "closed"
        assert reply.get("ok") is not True or "nonce" in reply, reply  # only a challenge may be ok
        if reply.get("ok") is False:
            codes.append(reply["error"]["code"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_attacks_before_authentication_are_refused_while_a_client_is_served(tcp: TcpDaemon) -> None:
    secret = tcp.secret_file.read_bytes()
    served = 0
    with lensd.connect_sync(address=tcp.address) as good:
        def still_served() -> None:
            nonlocal served
            assert good.submit(record(10_000 + served)) == "applied"
            served += 1

        # no secret at all: the client refuses before connecting, in one line
        with pytest.raises(AuthenticationFailed, match="does not exist"):
            just_connect(address=tcp.address, secret_file=tcp.home / "missing")
        # a plain hello, as a Unix-socket client would send it
        sock = tcp_socket(tcp.port)
        sock.sendall(frame({"op": "hello", "v": 1, "rid": 0}))
        assert refused(sock) == "auth"
        still_served()
        # a wrong secret
        wrong = tcp.home / "wrong"
        wrong.write_bytes(os.urandom(32))
        with pytest.raises(AuthenticationFailed, match="wrong secret"):
            just_connect(address=tcp.address, secret_file=wrong)
        still_served()
        # a replayed handshake: frames recorded from a genuine session, sent again
        sock = tcp_socket(tcp.port)
        recorded = genuine_handshake(sock, secret)
        sock.close()
        sock = tcp_socket(tcp.port)
        sock.sendall(b"".join(recorded))
        assert refused(sock) == "auth"
        still_served()
        # a valid submit frame before authenticating: first, and in place of the auth frame
        sock = tcp_socket(tcp.port)
        sock.sendall(frame({"op": "submit", "rid": 1, "record": record(1)}))
        assert refused(sock) in ("protocol", "auth")
        sock = tcp_socket(tcp.port)
        sock.sendall(frame(auth.client_hello(auth.new_nonce())) + frame({"op": "submit", "rid": 1,
                                                                          "record": record(2)}))
        assert refused(sock) == "auth"
        # garbage before authenticating
        sock = tcp_socket(tcp.port)
        sock.sendall(b"\x00\x00\x00\x07garbage")
        assert refused(sock) == "protocol"
        still_served()
        before = rss_kib(tcp.process.pid)
        outcomes = thousand_failed_handshakes(tcp.port)
        assert sum(outcomes.values()) == 1000 and set(outcomes) <= {"auth", "busy", "closed"}, outcomes
        still_served()
        grown = rss_kib(tcp.process.pid) - before
        assert grown < 40 * 1024, f"the daemon grew by {grown} KiB over 1,000 failed handshakes"
    with lensd.connect_sync(address=tcp.address) as fresh:  # a new client from the same address gets in
        assert fresh.submit(record(20_000)) == "applied"
    assert sorted(stored_ids(tcp.process.db)) == sorted([f"fit-{10_000 + i}" for i in range(served)]
                                                        + ["fit-20000"])
    assert tcp.process.stop() == 0
    log = tcp.log()
    assert log.count("TCP handshake from 127.0.0.1 failed") >= 8
    assert secret.hex() not in log and "Traceback" not in log


def test_requests_pipelined_after_the_auth_frame_are_each_applied_and_answered(tcp: TcpDaemon) -> None:
    sock = tcp_socket(tcp.port)
    side = auth.ClientSide(tcp.secret_file.read_bytes(), auth.new_nonce())
    sock.sendall(frame(side.hello(0)))
    challenge = read_frame(sock)
    assert challenge is not None and "nonce" in challenge
    side, answer = side.answer(challenge, 1)
    # the auth frame and two requests in one write: the daemon reads them as one chunk
    sock.sendall(frame(answer) + frame({"op": "submit", "rid": 2, "record": record(1)})
                 + frame({"op": "submit", "rid": 3, "record": record(2)}))
    accepted = read_frame(sock)
    assert accepted is not None and accepted["ok"] is True and accepted["rid"] == 1, accepted
    side.check_accepted(accepted)
    replies = [read_frame(sock) for _ in range(2)]
    assert sorted((r or {}).get("rid", -1) for r in replies) == [2, 3], replies
    assert all(r is not None and r["outcome"] == "applied" for r in replies), replies
    sock.close()
    assert sorted(stored_ids(tcp.process.db)) == ["fit-1", "fit-2"]


def test_a_tcp_client_that_half_closes_gets_every_reply_before_the_daemon_closes(tcp: TcpDaemon) -> None:
    """SHUT_WR after its requests: over TCP too, each write is answered and a stream sends the page
    it has credit for, then says the connection was half-closed (not ``done, cancelled``)."""
    with lensd.connect_sync(address=tcp.address) as client:
        assert client.submit(record(1, 20)) == client.submit(record(2, 20)) == "applied"
    sock = tcp_socket(tcp.port)
    genuine_handshake(sock, tcp.secret_file.read_bytes())
    sock.sendall(frame({"op": "submit", "rid": 5, "record": record(3, 20, status="failed")})
                 + frame({"op": "query", "rid": 6, "query": QueryState(completed_only=True).to_wire(),
                          "page_size": 1})
                 + frame({"op": "submit", "rid": 7, "record": record(4, 20, status="failed")}))
    sock.shutdown(socketlib.SHUT_WR)
    seen = replies_until_closed(sock)  # until the daemon closes the connection
    assert seen[5] == [{"rid": 5, "ok": True, "outcome": "applied"}]
    assert seen[7] == [{"rid": 7, "ok": True, "outcome": "applied"}]
    page, last = seen[6]
    assert len(page["page"]) == 1 and last["ok"] is False and "half-closed" in last["error"]["message"], seen[6]
    assert sorted(stored_ids(tcp.process.db)) == ["fit-1", "fit-2", "fit-3", "fit-4"]
    assert tcp.process.stop() == 0


def test_a_huge_value_from_an_unauthenticated_peer_is_neither_logged_nor_echoed_whole(tcp: TcpDaemon) -> None:
    huge = "A" * (4 << 20) + "\nforged log line"
    replies = []
    sock = tcp_socket(tcp.port)  # in place of the hello
    sock.sendall(frame({"op": huge, "v": 1, "rid": 0}))
    replies.append(read_frame(sock))
    sock.close()
    sock = tcp_socket(tcp.port)  # a hello of another version
    sock.sendall(frame({"op": "hello", "v": huge, "rid": 0}))
    replies.append(read_frame(sock))
    sock.close()
    sock = tcp_socket(tcp.port)  # in place of the auth frame
    sock.sendall(frame(auth.client_hello(auth.new_nonce())) + frame({"op": huge, "rid": 1}))
    challenge = read_frame(sock)
    assert challenge is not None and "nonce" in challenge
    replies.append(read_frame(sock))
    sock.close()
    unix = socketlib.socket(socketlib.AF_UNIX)  # the Unix socket's hello
    unix.settimeout(30)
    unix.connect(str(tcp.process.socket))
    unix.sendall(frame({"op": huge, "v": 1, "rid": 0}))
    replies.append(read_frame(unix))
    unix.close()
    for reply in replies:
        assert reply is not None and reply["ok"] is False, reply
        assert len(reply["error"]["message"]) < 300, reply["error"]["message"][:300]
    assert [reply["error"]["code"] for reply in replies if reply] == ["protocol", "protocol", "auth", "protocol"]
    with lensd.connect_sync(address=tcp.address) as client:  # still served
        assert client.submit(record(1)) == "applied"
    assert tcp.process.stop() == 0
    log = tcp.log()
    assert len(log) < 20_000 and max(len(line) for line in log.splitlines()) < 1_000, len(log)
    assert "\nforged log line" not in log and log.count("TCP handshake from 127.0.0.1 failed") == 3


def thousand_failed_handshakes(port: int) -> dict[str, int]:
    """1,000 handshakes with a wrong proof from 127.0.0.1, 16 at a time; how each was refused."""
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    budget = iter(range(1000))

    def attacker() -> None:
        for _ in iter(lambda: next(budget, None), None):
            try:
                sock = tcp_socket(port)
                sock.sendall(frame(auth.client_hello(auth.new_nonce())) +
                             frame({"op": "auth", "rid": 1, "proof": os.urandom(32)}))
                how = refused(sock)
            except (ConnectionError, OSError):
                how = "closed"
            with lock:
                outcomes[how] = outcomes.get(how, 0) + 1

    threads = [threading.Thread(target=attacker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return outcomes


@pytest.mark.parametrize("target", ["file", "folder"])
@pytest.mark.parametrize("foreground", [True, False])
def test_a_secret_others_can_read_stops_lensd_start_in_one_line(short_tmp: Path, target: str,
                                                                foreground: bool) -> None:
    home = short_tmp / "home"
    home.mkdir(mode=0o700)
    secret = home / "secret"
    secret.write_bytes(os.urandom(32))
    secret.chmod(0o600)
    (secret if target == "file" else home).chmod(0o644 if target == "file" else 0o755)
    args = ["start", "--db", str(short_tmp / "x.sqlite"), "--socket", str(short_tmp / "x"),
            "--listen", "127.0.0.1:0", "--secret-file", str(secret)]
    result = lensd_cli(*args, *(["--foreground"] if foreground else []), timeout=120)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    fix = f"chmod 600 {secret}" if target == "file" else f"chmod 700 {home}"
    assert fix in lines[0] and "open to other users" in lines[0]
    assert not (short_tmp / "x").exists()


@pytest.mark.parametrize("trial", range(10))
def test_kill_9_while_tcp_clients_submit_loses_and_doubles_nothing(
        make_daemon: Callable[..., DaemonProcess], short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        trial: int) -> None:
    db = short_tmp / "k.sqlite"
    first = TcpDaemon(make_daemon, short_tmp, db=db)
    monkeypatch.setenv("LENSD_SECRET_FILE", str(first.secret_file))
    procs = [worker("submit", first.address, k * 10_000, 10_000) for k in range(4)]
    assert procs[0].stdout is not None
    seen = [procs[0].stdout.readline() for _ in range(20 + 15 * trial)]  # a different depth each trial
    assert all(line.startswith("ack") for line in seen), seen[-3:]
    first.process.kill()
    acked = {line.split()[1] for line in seen}
    for p in procs:
        p.kill()  # its acknowledgements are already on its stdout; spare it the reconnect backoff
        out, _ = p.communicate(timeout=120)
        acked |= {line.split()[1] for line in out.splitlines() if line.startswith("ack")}
    assert len(acked) >= 20
    assert first.contact.stale_reason() is not None  # SIGKILL leaves it behind, recognisably dead
    again = TcpDaemon(make_daemon, short_tmp, db=db)
    assert again.contact.pid == again.process.pid
    ids = stored_ids(db)
    assert acked <= set(ids), f"lost {len(acked - set(ids))} acknowledged records"
    assert len(ids) == len(set(ids))
    assert again.process.stop() == 0
    assert integrity_ok(db)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command (the test's only TLS tool)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=120)
    return cert, key


def test_tls_pinned_by_the_contact_file_and_refused_otherwise(
        make_daemon: Callable[..., DaemonProcess], short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = make_certificate(short_tmp)
    tls = TcpDaemon(make_daemon, short_tmp, "--tls-cert", str(cert), "--tls-key", str(key))
    for name, value in tls.env().items():
        monkeypatch.setenv(name, value)
    contact = tls.contact
    assert contact.tls_fingerprint is not None and contact.tls_fingerprint.startswith("sha256:")
    tls_address = f"tls://127.0.0.1:{tls.port}"
    with lensd.connect_sync(address=tls_address) as client:  # pinned to the contact file's fingerprint
        assert client.submit(record(1)) == "applied"
    with lensd.connect_sync(address=f"tcp://127.0.0.1:{tls.port}", tls_ca=cert) as client:  # verified by CA
        assert client.submit(record(2)) == "applied"
    data = json.loads(tls.contact_file.read_text())
    data["tls_fingerprint"] = "sha256:" + "0" * 64
    wrong = short_tmp / "wrong.json"
    wrong.write_text(json.dumps(data))
    with pytest.raises(AuthenticationFailed, match="not the contact file's"):
        just_connect(address=tls_address, contact=wrong)
    with pytest.raises(lensd.errors.LensdError):  # plain TCP to the TLS port
        just_connect(address=f"tcp://127.0.0.1:{tls.port}")
    sock = tcp_socket(tls.port)  # a plain-TCP client's frames are never read as the protocol
    sock.sendall(frame(auth.client_hello(auth.new_nonce())))
    answer = b""
    while chunk := sock.recv(1 << 16):
        answer += chunk
    sock.close()
    assert answer[:1] in (b"", b"\x15"), answer[:20]  # nothing, or a TLS alert record; then closed
    assert sorted(stored_ids(tls.process.db)) == ["fit-1", "fit-2"]
    assert tls.process.stop() == 0
    assert "TLS handshake failed" in tls.log()


def test_a_tls_client_at_the_connection_cap_is_told_busy_and_a_job_spools(
        make_daemon: Callable[..., DaemonProcess], short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = make_certificate(short_tmp)
    tls = TcpDaemon(make_daemon, short_tmp, "--tls-cert", str(cert), "--tls-key", str(key),
                    "--max-connections", "1")
    for name, value in tls.env().items():
        monkeypatch.setenv(name, value)
    address = f"tls://127.0.0.1:{tls.port}"
    holder = socketlib.socket(socketlib.AF_UNIX)  # the one connection the daemon takes
    holder.settimeout(30)
    holder.connect(str(tls.process.socket))
    holder.sendall(frame({"op": "hello", "v": 1, "rid": 0}))
    welcome = read_frame(holder)
    assert welcome is not None and welcome["ok"] is True
    with pytest.raises(Busy, match="connection limit"):  # not a broken TLS handshake (auth)
        just_connect(address=address)
    spool = short_tmp / "spool"
    with lensd.connect_sync(address=address, spool=spool) as job:  # busy: the job spools
        assert job.submit(record(1, n_samples=5)) == "spooled"
    assert len(spoolfile.pending(spool)) == 1
    logged = len(tls.process.stderr_lines)
    holder.close()
    tls.process.wait_for_log("connection closed (0 open)", after=logged)  # the daemon has freed the slot
    with lensd.connect_sync(address=address) as client:  # the slot is free again
        assert client.submit(record(2)) == "applied"
    assert tls.process.stop() == 0


def test_the_handshake_timeout_and_the_connection_cap_apply_to_tcp(
        make_daemon: Callable[..., DaemonProcess], short_tmp: Path) -> None:
    daemon = TcpDaemon(make_daemon, short_tmp, "--handshake-timeout", "4", "--max-connections", "3")
    silent = tcp_socket(daemon.port)  # says nothing: closed after --handshake-timeout, with a reason
    assert refused(silent) == "auth"
    idle = [tcp_socket(daemon.port) for _ in range(3)]
    for sock in idle:
        sock.sendall(frame(auth.client_hello(auth.new_nonce())))  # half a handshake: holds a slot
        challenge = read_frame(sock)
        assert challenge is not None and "nonce" in challenge
    extra = tcp_socket(daemon.port)
    assert refused(extra) == "busy"
    for sock in idle:
        assert refused(sock) == "auth"  # each times out in turn
    with lensd.connect_sync(address=daemon.address, secret_file=daemon.secret_file) as client:
        assert client.submit(record(1)) == "applied"
