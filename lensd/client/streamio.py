"""Receive and send on an anyio byte stream, straight on its socket when it is a Unix socket.

anyio's socket streams pay, on every ``receive`` and ``send``, a checkpoint (one more turn of the
event loop), and on every wait for data an ``add_reader``/``remove_reader`` of the socket object,
whose lookup formats the socket's ``repr`` (two more system calls) for a ``KeyError`` it then
drops. One write request pays that twice on each side. For a Unix socket stream (anyio's reads and
writes its socket itself) this reads the socket and waits on its file descriptor
(``anyio.wait_readable``), and sends straight to it. A TCP stream is an asyncio transport that owns
its socket, and TLS wraps one: both, and any other stream, are used as they are. Either way the errors are anyio's:
``EndOfStream`` at the peer's end, ``BrokenResourceError`` for a failed socket.

Fairness stays: a receive that did not wait yields to the loop once, as anyio's does, so a
connection whose bytes are always ready cannot keep the loop to itself.
"""

from __future__ import annotations

import socket

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, SocketAttribute, UNIXSocketStream


class StreamIO:
    """``receive``/``send`` for one stream; only one task receives at a time (as with anyio)."""

    __slots__ = ("_fd", "_raw", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        raw = stream.extra(SocketAttribute.raw_socket) if isinstance(stream, UNIXSocketStream) else None
        self._raw: socket.socket | None = raw if type(raw) is socket.socket else None
        self._fd = self._raw.fileno() if self._raw is not None else -1

    async def receive(self, max_bytes: int) -> bytes:
        raw = self._raw
        if raw is None:
            return await self.stream.receive(max_bytes)
        waited = False
        while True:
            try:
                data = raw.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                waited = True
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not waited:
                await anyio.lowlevel.checkpoint()
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, data: bytes) -> None:
        raw = self._raw
        if raw is None:
            await self.stream.send(data)
            return
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        if sent < len(data):  # the socket's buffer is full: anyio waits for room
            await self.stream.send(data[sent:])
