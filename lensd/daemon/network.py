"""TCP for the daemon: listeners, optional TLS, the secret, and the per-address handshake throttle.

The connection handling itself is transport-agnostic (``lensd.daemon.connection``: one Connection
over any anyio byte stream). What TCP adds lives here, in a ``Gate`` that the TCP listeners hand
to each of their connections: the secret the challenge-response needs (``lensd.wire.auth``), the
TLS context when ``--tls-cert`` is given, and a ``Throttle`` that slows an address whose
handshakes keep failing. The Unix socket has no gate: its file mode (0600) is its access control.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener
from anyio.streams.tls import TLSStream

from lensd._version import __version__
from lensd.client import contact as contacts
from lensd.client.contact import Contact, this_host
from lensd.client.secret import ensure_secret, resolve_secret_file
from lensd.client.transport import fingerprint
from lensd.daemon.services import ConnectionHost
from lensd.errors import AuthenticationFailed, Busy, LensdError, ProtocolError
from lensd.safefiles import log_name
from lensd.settings import Database, Settings, shown
from lensd.wire import auth, protocol


class Greeting(Protocol):
    """What the gate uses of a connection while it authenticates (``lensd.daemon.connection``)."""

    daemon: ConnectionHost
    peer: str

    async def send(self, message: dict[str, Any]) -> None: ...

    async def read_frames(self) -> list[dict[str, Any]]: ...

    def queue(self, messages: list[dict[str, Any]]) -> None: ...

    def welcome(self, reply: dict[str, Any]) -> dict[str, Any]: ...

log = logging.getLogger("lensd.network")
_REASON = 300  # characters of a failed handshake's reason in its log line


@dataclass
class _Peer:
    failures: int = 0
    last_failure: float = 0.0
    pending: int = 0  # connections from this address that have not finished their handshake


@dataclass
class Throttle:
    """Slows handshakes from an address that keeps failing them; memory stays bounded.

    After a failure from an address, its next failure is answered only after a delay that doubles
    (``base`` up to ``cap`` seconds), and while it has failures on record it may hold at most
    ``max_pending`` unfinished handshakes: further connections from it are closed at once. So one
    address cannot fill the connection cap with slow failures, and guessing is slowed to a few
    tries a second. Failures are forgotten after ``forget_after`` seconds of quiet or a success;
    at most ``max_addresses`` addresses are remembered (the least recently seen go first).
    """

    base: float = 0.05
    cap: float = 2.0
    max_pending: int = 8
    forget_after: float = 600.0
    max_addresses: int = 4096
    _peers: OrderedDict[str, _Peer] = field(default_factory=OrderedDict)

    def _peer(self, address: str) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer()
            while len(self._peers) > self.max_addresses:  # forget the least recent idle address
                idle = next((a for a, p in self._peers.items() if not p.pending and a != address), None)
                if idle is None:
                    break
                del self._peers[idle]
        else:
            self._peers.move_to_end(address)
        if peer.failures and time.monotonic() - peer.last_failure > self.forget_after:
            peer.failures = 0
        return peer

    def admit(self, address: str) -> bool:
        """Whether a new connection from ``address`` may start a handshake (then ``release`` it)."""
        peer = self._peer(address)
        if peer.failures and peer.pending >= self.max_pending:
            return False
        peer.pending += 1
        return True

    def release(self, address: str) -> None:
        peer = self._peers.get(address)
        if peer is not None and peer.pending > 0:
            peer.pending -= 1

    def failed(self, address: str) -> tuple[int, float]:
        """Record a failure; (failures on record, seconds to wait before answering it)."""
        peer = self._peer(address)
        peer.failures += 1
        peer.last_failure = time.monotonic()
        return peer.failures, min(self.cap, self.base * 2 ** min(peer.failures - 1, 32))

    def succeeded(self, address: str) -> None:
        self._peer(address).failures = 0

    def __len__(self) -> int:
        return len(self._peers)


@dataclass
class Gate:
    """What every TCP connection must pass before its first op: TLS if set up, then the secret."""

    secret: bytes
    tls: ssl.SSLContext | None = None
    fingerprint: str | None = None
    throttle: Throttle = field(default_factory=Throttle)
    failures: int = 0  # for status
    max_refusing: int = 64  # TLS handshakes at once only to say "busy" (``refusal_stream``)
    _refusing: int = 0

    async def refuse(self, peer: str, reason: str) -> None:
        """Log a failed handshake with its peer, then hold the answer back as the throttle says.

        The reason is logged escaped and shortened: it may quote what an unauthenticated peer sent.
        """
        self.failures += 1
        count, delay = self.throttle.failed(peer)
        log.warning("TCP handshake from %s failed (%d in a row from it): %s", peer, count,
                    log_name(reason, _REASON))
        await anyio.sleep(delay)  # the slowing itself, not synchronisation

    async def authenticate(self, connection: Greeting) -> bool:
        """The challenge-response (``lensd.wire.auth``) on a new TCP connection; False: refused.

        Until it succeeds, every frame other than the hello and then the auth frame is refused
        and the connection closed: nothing it carried is applied. Frames that came after a good
        auth frame are left in the connection's backlog for dispatch.
        """
        rid: int | None = None
        failure: LensdError = AuthenticationFailed("no handshake within the handshake timeout")
        with anyio.move_on_after(connection.daemon.settings.handshake_timeout):
            try:
                side = auth.DaemonSide(self.secret, auth.new_nonce())
                pending = await _more(connection, [])
                first = pending.pop(0)
                rid = protocol.reply_rid(first)
                protocol.check_hello(first)
                side, challenge = side.challenge(first)
                await connection.send(challenge)
                message = (await _more(connection, pending)).pop(0)  # the rest came after it
                rid = protocol.reply_rid(message)
                rid = side.verify(message)
            except (ProtocolError, AuthenticationFailed) as exc:
                failure = exc
            except Busy as exc:  # the daemon had no room for its frame: told to retry, not throttled
                log.warning("TCP connection from %s closed before its handshake: %s", connection.peer, exc)
                await connection.send(protocol.error(rid, exc))
                return False
            else:
                self.throttle.succeeded(connection.peer)
                hello = protocol.hello_reply(rid, __version__)
                welcome = connection.welcome({"v": hello["v"], "server": hello["server"]})
                await connection.send(side.accepted(rid, **welcome))
                connection.queue(pending)  # the auth frame is already out of it
                return True
        await self.refuse(connection.peer, str(failure))
        await connection.send(protocol.error(rid, failure))
        return False

    async def open(self, stream: ByteStream, *, seconds: float) -> tuple[ByteStream, str] | None:
        """Admit a new TCP connection (throttle, then TLS); None when it was refused and closed."""
        peer = peer_of(stream)
        if not self.throttle.admit(peer):
            self.failures += 1
            log.warning("TCP connection from %s closed at once: its handshakes keep failing", peer)
            if self.tls is None:
                with anyio.move_on_after(1.0):
                    try:
                        await stream.send(protocol.encode_frame(protocol.error(None, Busy(
                            f"too many failed handshakes from {peer}; try again later"))))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass
            await stream.aclose()
            return None
        wrapped = await self.wrap(stream, peer, seconds=seconds)
        if wrapped is None:
            self.throttle.release(peer)
            await stream.aclose()
            return None
        return wrapped, peer

    async def refusal_stream(self, stream: ByteStream, *, seconds: float) -> ByteStream | None:
        """Where to send a refusal (``busy``) a TCP client can read: inside TLS when it is on.

        A TLS client reads plain bytes as a broken handshake (``auth``, not retried), so with TLS
        the handshake comes first, within ``seconds``. None: it failed or timed out, or
        ``max_refusing`` are under way already (a flood at the connection cap costs no more than
        that); the caller then just closes ``stream``.
        """
        if self.tls is None:
            return stream
        if self._refusing >= self.max_refusing:
            return None
        self._refusing += 1
        try:
            with anyio.move_on_after(seconds):
                try:
                    return await TLSStream.wrap(stream, server_side=True, ssl_context=self.tls,
                                                standard_compatible=False)
                except (ssl.SSLError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
            return None
        finally:
            self._refusing -= 1

    async def wrap(self, stream: ByteStream, peer: str, *, seconds: float) -> ByteStream | None:
        """The stream after the TLS handshake (or as is without TLS); None when TLS failed."""
        if self.tls is None:
            return stream
        reason = f"no TLS handshake within {seconds}s"
        with anyio.move_on_after(seconds):
            try:
                return await TLSStream.wrap(stream, server_side=True, ssl_context=self.tls,
                                            standard_compatible=False)
            except (ssl.SSLError, OSError, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
                reason = f"TLS handshake failed ({getattr(exc, 'reason', None) or type(exc).__name__})"
        await self.refuse(peer, reason)
        return None


async def _more(connection: Greeting, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``pending``, read into until it holds at least one frame."""
    while not pending:
        pending.extend(await connection.read_frames())
    return pending


def peer_of(stream: ByteStream) -> str:
    """The remote host of a TCP stream (the throttle's key), or "local"."""
    try:
        remote = stream.extra(SocketAttribute.remote_address)
    except Exception:
        return "unknown"
    return str(remote[0]) if isinstance(remote, tuple) else "local"


def server_tls(settings: Settings) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context and certificate fingerprint for ``--tls-cert``/``--tls-key``, if given."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None, None
    if settings.tls_cert is None or settings.tls_key is None:
        raise LensdError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        der = ssl.PEM_cert_to_DER_cert(Path(settings.tls_cert).read_text())
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise LensdError(f"cannot load the TLS certificate {settings.tls_cert} and key "
                         f"{settings.tls_key}: {exc}") from None
    return context, fingerprint(der)


def make_gate(settings: Settings) -> Gate | None:
    """The gate for ``--listen``, or None without it; refuses a secret others can reach."""
    if not settings.listen:
        return None
    secret = ensure_secret(resolve_secret_file(settings.secret_file))
    context, print_ = server_tls(settings)
    return Gate(secret, context, print_)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; port 0 picks a free one)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise LensdError(f"--listen {text!r}: expected HOST:PORT (port 0 picks a free one)")
    return host, int(port)


async def bind_tcp(settings: Settings) -> list[tuple[SocketListener, tuple[str, int]]]:
    """One listener per address of each ``--listen``, with the (host, port) it really has."""
    bound: list[tuple[SocketListener, tuple[str, int]]] = []
    try:
        for text in settings.listen:
            host, port = parse_listen(text)
            try:
                multi = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
            except OSError as exc:
                raise LensdError(f"cannot listen on {text}: {exc.strerror or exc}") from None
            for listener in multi.listeners:
                address = listener.extra(SocketAttribute.local_address)
                assert isinstance(address, tuple)
                assert isinstance(listener, SocketListener)
                bound.append((listener, (str(address[0]), int(address[1]))))
    except BaseException:
        for listener, _ in bound:
            await listener.aclose()
        raise
    return bound


def contact_of(settings: Settings, started: float, tcp: list[tuple[str, int]], gate: Gate | None,
               database: Database) -> Contact:
    """What the contact file says about a daemon: a wildcard bind is named by this host's name."""
    named = tuple((this_host() if host in ("0.0.0.0", "::", "") else host, port) for host, port in tcp)
    return Contact(host=this_host(), pid=os.getpid(), started_at=started,
                   socket=str(settings.socket.resolve()), tcp=named,
                   spool=str(settings.spool.resolve()) if settings.spool else None,
                   lost_after=settings.lost_after, tls_fingerprint=gate.fingerprint if gate else None,
                   database=shown(database), version=__version__)


def publish_contact(path: Path, contact: Contact) -> None:
    """Write the contact file before "ready"; a failure is logged, never fatal (the socket works)."""
    try:
        previous = contacts.read(path)
    except LensdError:
        previous = None
    if previous is not None and previous.pid != os.getpid() and previous.stale_reason() is None \
            and previous.on_this_host:
        log.warning("the contact file %s named another running daemon (pid %d); it now names this one "
                    "(give each daemon its own --contact)", path, previous.pid)
    try:
        contacts.write(path, contact)
    except OSError as exc:
        log.warning("cannot write the contact file %s: %s", path, exc)


async def turn_away(stream: ByteStream, gate: Gate | None, limit: int, handshake_timeout: float) -> None:
    """Tell a connection past ``--max-connections`` (``limit``) that the daemon is busy, then close
    it (over TLS after the TLS handshake: ``Gate.refusal_stream``)."""
    refusal = protocol.encode_frame(protocol.error(
        None, "busy", f"the daemon is at its connection limit ({limit} connections, "
                      f"lensd start --max-connections); try again later"))
    told: ByteStream | None = stream
    try:
        if gate is not None:
            told = await gate.refusal_stream(stream, seconds=handshake_timeout)
        if told is not None:
            with anyio.move_on_after(1.0):  # a refused peer that never reads cannot hold us
                await told.send(refusal)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        await (told or stream).aclose()
