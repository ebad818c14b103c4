"""The socket client: one connection to the daemon, requests and paged streams over it.

Used by jobs (``lensd.connect``) and by ``AsyncAggregator``. Requests on one connection are
serialised by a lock (one in flight), which keeps replies in order without a reader task.
"""

from __future__ import annotations

import os
import socket as _socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream

from lensd import settings
from lensd.errors import DaemonUnavailable, LensdError, ProtocolError
from lensd.wire import protocol

_READ_CHUNK = 1 << 16
CONNECT_TIMEOUT = 10.0


class Client:
    """A connection that has said hello."""

    def __init__(self, stream: SocketStream, path: Path, server: dict[str, Any]) -> None:
        self._stream = stream
        self._decoder = protocol.FrameDecoder()
        self._inbox: list[dict[str, Any]] = []
        self._lock = anyio.Lock()
        self._rid = 0
        self.path = path
        self.server = server
        self.closed = False

    @classmethod
    async def open(cls, socket: str | os.PathLike[str] | None = None,
                   connect_timeout: float = CONNECT_TIMEOUT) -> Client:
        path = settings.resolve_socket(socket)
        if settings.socket_path_problem(path) is not None:
            raise settings.unreachable(path)
        try:
            with anyio.fail_after(connect_timeout):
                stream = await anyio.connect_unix(str(path))
        except (OSError, TimeoutError) as exc:
            raise settings.unreachable(path, exc) from None
        client = cls(stream, path, {})
        try:
            with anyio.fail_after(connect_timeout):
                try:
                    await client._send(protocol.hello(0))
                except (OSError, anyio.BrokenResourceError):
                    pass  # a daemon that refused us ("busy") has closed; its reason is still to read
                client.server = protocol.raise_for_reply(await client._receive())
        except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            await client.aclose()
            raise DaemonUnavailable(f"the daemon at {path} did not complete the handshake: {exc}") from None
        except LensdError:
            await client.aclose()
            raise
        return client

    async def _send(self, message: dict[str, Any]) -> None:
        await self._stream.send(protocol.encode_frame(message))

    async def _receive(self) -> dict[str, Any]:
        while not self._inbox:
            data = await self._stream.receive(_READ_CHUNK)
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    async def _reply_for(self, rid: int) -> dict[str, Any]:
        while True:
            message = await self._receive()
            if message.get("rid") == rid:
                return message
            if message.get("rid") is None and message.get("ok") is False:
                protocol.raise_for_reply(message)  # the daemon refused our framing

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (``ok``/``done``); raises the daemon's error."""
        async with self._lock:
            rid = self._next_rid()
            try:
                await self._send(protocol.request(op, rid, **fields))
                return protocol.raise_for_reply(await self._reply_for(rid))
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                    anyio.ClosedResourceError) as exc:
                self.closed = True
                raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None

    async def stream(self, op: str, **fields: Any) -> AsyncIterator[Any]:
        """Items of a paged read; the next page is asked for only when this one is consumed."""
        async with self._lock:
            rid = self._next_rid()
            finished = False
            try:
                await self._send(protocol.request(op, rid, **fields))
                while True:
                    message = protocol.raise_for_reply(await self._reply_for(rid))
                    if message.get("done"):
                        finished = True
                        return
                    items = message.get("page")
                    if not isinstance(items, list):
                        raise ProtocolError("a page frame without a page list")
                    await self._send(protocol.request("next", rid))
                    for item in items:
                        yield item
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                    anyio.ClosedResourceError) as exc:
                self.closed = True
                finished = True
                raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None
            except LensdError:
                finished = True
                raise
            finally:
                if not finished and not self.closed:  # the caller stopped early: end the stream
                    with anyio.CancelScope(shield=True):
                        await self._cancel(rid)

    async def _cancel(self, rid: int) -> None:
        try:
            await self._send(protocol.request("cancel", rid))
            while True:
                message = await self._reply_for(rid)
                if message.get("done") or message.get("ok") is False:
                    return
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError,
                LensdError):
            self.closed = True

    async def aclose(self) -> None:
        self.closed = True
        try:
            await self._stream.aclose()
        except (OSError, anyio.BrokenResourceError):
            pass


def socket_answers(path: str | os.PathLike[str]) -> bool:
    """Is something accepting connections at ``path``? (a plain connect, no handshake)."""
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True
