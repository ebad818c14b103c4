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

import asyncio
import socket
from collections import deque

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


class WatchedIO(StreamIO):
    """``StreamIO`` for a connection that waits for replies (the client): on asyncio its Unix socket
    stays registered with the loop from one wait to the next, and the loop's callback reads it.

    ``StreamIO.receive`` finds nothing yet after each request (a ``BlockingIOError``), then
    registers the socket and unregisters it again (``anyio.wait_readable``: two ``epoll_ctl`` calls
    and their bookkeeping) for every reply. Here the callback reads what arrives into a buffer and
    wakes the waiting receive; it unregisters only when nobody waits (bytes that no request asked
    for yet are read once, then left in the socket), when the peer ends, or when a wait is cancelled,
    so a connection nobody reads is never watched. ``unwatch()`` before the socket is closed. A
    client used from a new event loop (a second ``asyncio.run``) is watched from that one.
    Elsewhere (trio, TCP, TLS) it is ``StreamIO``.
    """

    __slots__ = ("_chunks", "_ended", "_loop", "_max", "_waiter", "_watching")

    def __init__(self, stream: ByteStream) -> None:
        super().__init__(stream)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chunks: deque[bytes] = deque()
        self._ended: tuple[type[Exception], OSError | None] | None = None  # the peer's end, a failed read
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False
        self._max = 1 << 16

    def _on_readable(self) -> None:
        assert self._raw is not None
        try:
            data = self._raw.recv(self._max)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._ended = (anyio.BrokenResourceError, exc)
        else:
            if data:
                self._chunks.append(data)
            else:
                self._ended = (anyio.EndOfStream, None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            if self._ended is None:
                return  # stay watched for the next reply
        self.unwatch()

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch from ``loop`` from now on; the loop before it (a finished ``asyncio.run``, perhaps
        closed) forgets the socket."""
        if self._loop is not None and self._loop.is_closed():
            self._watching = False  # a closed loop has let go of its readers
        self.unwatch()
        self._loop = loop

    def unwatch(self) -> None:
        """Take the socket off the loop (before it is closed: a closed fd number is reused)."""
        if self._watching and self._loop is not None:
            self._watching = False
            self._loop.remove_reader(self._fd)

    async def receive(self, max_bytes: int) -> bytes:
        if self._raw is None:
            return await self.stream.receive(max_bytes)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's waits
            return await super().receive(max_bytes)
        if loop is not self._loop:  # first use, or a later ``asyncio.run`` with the same client
            self._move_to(loop)
        waited = False
        if not self._chunks and self._ended is None:
            self._max = max_bytes
            if not self._watching:
                loop.add_reader(self._fd, self._on_readable)
                self._watching = True
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            except BaseException:
                self.unwatch()  # cancelled: nobody waits now
                raise
            finally:
                self._waiter = None
            waited = True
        if self._chunks:
            data = self._chunks.popleft()
            if not waited:
                await anyio.lowlevel.checkpoint()
            return data
        assert self._ended is not None
        kind, cause = self._ended
        raise kind from cause
