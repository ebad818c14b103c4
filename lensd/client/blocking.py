"""A blocking client for one-shot CLI commands (``lensd status``, ``lensd jobs``): socket or TCP.

Same protocol, same errors as ``connection.Client``, but a plain blocking ``socket``: a command
that asks one question and exits does not need an event loop, and importing anyio's asyncio
backend and asyncio itself was most of ``lensd status``'s start-up (docs/performance.md).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from lensd.client import address, transport
from lensd.client.address import Endpoint, TargetLike
from lensd.client.secret import read_secret, resolve_secret_file
from lensd.errors import DaemonUnavailable, ProtocolError
from lensd.wire import auth, protocol
from lensd.wire.paging import PageReader

_READ_CHUNK = 1 << 16
CONNECT_TIMEOUT = 10.0


class BlockingClient:
    """One connection that has said hello; ``with BlockingClient(target) as c: c.request("status")``.

    ``target`` is found as for every client (``lensd.client.address``): an address, a socket path,
    the contact file, or the default socket."""

    def __init__(self, target: TargetLike = None, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        route = address.resolve(target)
        self._decoder = protocol.FrameDecoder()
        self._inbox: list[dict[str, Any]] = []
        self._rid = 0
        failures: list[tuple[Endpoint, BaseException | None]] = []
        for endpoint in address.candidates(route, failures):
            try:
                self._sock = transport.open_socket(endpoint, connect_timeout)
            except OSError as exc:
                failures.append((endpoint, exc))
                continue
            self.path = str(endpoint)
            self._greet(endpoint)
            self._sock.settimeout(None)  # like the async client: a busy daemon is waited for
            self._timeout: float | None = None
            return
        raise address.unreachable(route, failures)

    def _greet(self, endpoint: Endpoint) -> None:
        """hello, and over TCP the challenge-response (``lensd.wire.auth``); closes on failure."""
        try:
            secret = read_secret(resolve_secret_file(endpoint.secret_file)) if endpoint.unix is None else None
            greeting = auth.ClientGreeting(secret)
            try:
                self._sock.sendall(protocol.encode_frame(greeting.first()))
            except OSError:
                pass  # a daemon that refused us ("busy") has closed; its reason is still to read
            while (frame := greeting.feed(self._receive())) is not None:
                self._sock.sendall(protocol.encode_frame(frame))
            self.server = greeting.server
        except (OSError, EOFError) as exc:
            self._sock.close()
            raise DaemonUnavailable(f"the daemon at {self.path} did not complete the handshake: {exc}") from None
        except ProtocolError as exc:
            self._sock.close()
            raise address.not_lensd(self.path, exc) from None
        except BaseException:  # LensdError, or Ctrl-C mid-handshake: nothing keeps the socket
            self._sock.close()
            raise

    def _receive(self) -> dict[str, Any]:
        while not self._inbox:
            data = self._sock.recv(_READ_CHUNK)
            if not data:
                raise EOFError("the daemon closed the connection")
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)

    def _reply_for(self, rid: int) -> dict[str, Any]:
        while True:
            message = self._receive()
            if message.get("rid") == rid:
                return message
            if message.get("rid") is None and message.get("ok") is False:
                protocol.raise_for_reply(message)  # the daemon refused our framing

    def _ask(self, op: str, fields: dict[str, Any]) -> int:
        self._rid += 1
        self._sock.sendall(protocol.encode_frame(protocol.request(op, self._rid, **fields)))
        return self._rid

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (``ok``/``done``); raises the daemon's error."""
        try:
            return protocol.raise_for_reply(self._reply_for(self._ask(op, fields)))
        except (OSError, EOFError) as exc:
            raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None

    def stream(self, op: str, **fields: Any) -> Iterator[Any]:
        """Items of a paged read, every page asked for in turn (the command reads them all)."""
        try:
            reader = PageReader(self._ask(op, fields))
            while (items := reader.read(self._reply_for(reader.rid))) is not None:
                self._sock.sendall(protocol.encode_frame(reader.next_request()))
                yield from items
        except (OSError, EOFError) as exc:
            raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None

    def abort(self) -> None:
        """Shut the socket down from another thread: a request blocked on it there ends at once
        (DaemonUnavailable), where ``close`` alone would leave it waiting."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def set_timeout(self, seconds: float | None) -> None:
        """How long a request may wait for the daemon (None: as long as it takes); past it the
        request raises DaemonUnavailable and the connection is in doubt: close it."""
        if seconds != self._timeout:  # a syscall each time: only when it changes
            self._sock.settimeout(seconds)
            self._timeout = seconds

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
