"""The client: one connection to the daemon (Unix socket or TCP), requests and paged streams over it.

Used by jobs (``lensd.connect``) and by ``AsyncAggregator``. Frames on one connection move under a
lock, without a reader task: whoever holds it sends, then reads until its own rid's frame comes,
keeping the frames of the other rids still waited for (a request's reply, an open stream's page)
for them and dropping the rest (a late reply nobody waits for). A stream holds the lock only while
its frames move, never while its caller consumes a page, so reads may nest (``await agg.count()``
inside ``async for fit in agg.fits()``) and a stream left unfinished is closed from any task.
"""

from __future__ import annotations

import math
import os
import socket as _socket
from collections.abc import AsyncGenerator
from typing import Any

import anyio
from anyio.abc import ByteStream

from lensd.client import address, transport
from lensd.client.address import Endpoint, Route, TargetLike
from lensd.client.secret import read_secret, resolve_secret_file
from lensd.client.streamio import WatchedIO
from lensd.errors import ConnectionBusy, DaemonUnavailable, LensdError, ProtocolError
from lensd.wire import auth, protocol
from lensd.wire.paging import PageReader

_READ_CHUNK = 1 << 16
CONNECT_TIMEOUT = 10.0


class Client:
    """A connection that has said hello (and, over TCP, authenticated)."""

    def __init__(self, stream: ByteStream, endpoint: Endpoint, server: dict[str, Any],
                 route: Route | None = None) -> None:
        self._stream = stream
        self._io = WatchedIO(stream)  # straight on the socket when it is a plain one, watched between replies
        self._decoder = protocol.FrameDecoder()
        self._inbox: list[dict[str, Any]] = []
        self._waited: set[int] = set()  # rids whose frames are kept: replies due, streams open
        self._lock = anyio.Lock(fast_acquire=True)
        self._rid = 0
        self.endpoint = endpoint
        self.path = str(endpoint)  # where, for messages
        self.server = server
        self.route = route
        self.closed = False

    @classmethod
    async def open(cls, target: TargetLike = None, connect_timeout: float = CONNECT_TIMEOUT) -> Client:
        """Connect to the first endpoint of ``target``'s route that answers (``lensd.client.address``)."""
        route = address.resolve(target)
        failures: list[tuple[Endpoint, BaseException | None]] = []
        for endpoint in address.candidates(route, failures):
            try:
                with anyio.fail_after(connect_timeout):
                    stream = await transport.open_stream(endpoint)
            except (OSError, TimeoutError) as exc:
                failures.append((endpoint, exc))
                continue
            client = cls(stream, endpoint, {}, route)
            try:
                await client._greet(seconds=connect_timeout)
            except BaseException:  # also a caller's timeout cutting the handshake short: close what it opened
                await client._abandon()
                raise
            return client
        raise address.unreachable(route, failures)

    async def _greet(self, *, seconds: float) -> None:
        """hello (and the TCP challenge-response); the stream is closed if it fails."""
        secret = read_secret(resolve_secret_file(self.endpoint.secret_file)) if self.endpoint.unix is None else None
        greeting = auth.ClientGreeting(secret)
        try:
            with anyio.fail_after(seconds):
                try:
                    await self._send(greeting.first())
                except (OSError, anyio.BrokenResourceError):
                    pass  # a daemon that refused us ("busy") has closed; its reason is still to read
                while (frame := greeting.feed(await self._receive())) is not None:
                    await self._send(frame)
                self.server = greeting.server
        except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            await self.aclose()
            raise DaemonUnavailable(f"the daemon at {self.path} did not complete the handshake: "
                                    f"{exc or type(exc).__name__}") from None
        except ProtocolError as exc:
            await self.aclose()
            raise address.not_lensd(self.path, exc) from None
        except LensdError:
            await self.aclose()
            raise

    async def _send(self, message: dict[str, Any]) -> None:
        """One whole frame. A send cut short by a caller's cancel scope closes the connection: part
        of the frame may be in the socket, and whatever followed it would be read as its rest. (A
        peer gone is the caller's to handle: a daemon that refused the hello has a reason to read.)"""
        frame = protocol.encode_frame(message)
        try:
            await self._io.send(frame)
        except anyio.get_cancelled_exc_class():
            await self._abandon()
            raise

    async def _receive(self) -> dict[str, Any]:
        while not self._inbox:
            data = await self._io.receive(_READ_CHUNK)
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    async def _reply_for(self, rid: int) -> dict[str, Any]:
        """The next frame for ``rid`` (called with the lock held); frames of the other waited rids
        are kept for them, others dropped (each stream has at most a page and its end in flight)."""
        while True:
            for index, message in enumerate(self._inbox):
                if message.get("rid") == rid:
                    return self._inbox.pop(index)
                if message.get("rid") is None and message.get("ok") is False:
                    protocol.raise_for_reply(message)  # the daemon refused our framing
            data = await self._io.receive(_READ_CHUNK)
            self._inbox.extend(message for message in self._decoder.feed(data)
                               if message.get("rid") in self._waited or message.get("rid") == rid
                               or (message.get("rid") is None and message.get("ok") is False))

    async def request(self, op: str, *, give_up_after: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (``ok``/``done``); raises the daemon's error.

        ``give_up_after`` bounds, in seconds, the wait for the connection's turn (ConnectionBusy, a
        lensd error that is also a TimeoutError: nothing was sent, the request holding it keeps it),
        then the wait for the reply: a reply not had in time closes the connection, as a lost one is
        (a reply arriving late, or a frame half sent, would meet the next request), and is
        DaemonUnavailable. Whoever gives a connection up finds it closed. (An
        ``anyio.fail_after`` around the call could not tell a turn not had from a reply still due.)
        """
        deadline = math.inf if give_up_after is None else anyio.current_time() + give_up_after
        with anyio.CancelScope(deadline=deadline) as turn:
            await self._lock.acquire()
        if turn.cancelled_caught:
            raise ConnectionBusy(f"another request held the connection to {self.path} for {give_up_after:g}s")
        rid = self._next_rid()
        self._waited.add(rid)
        try:
            with anyio.CancelScope(deadline=deadline):
                try:
                    await self._send(protocol.request(op, rid, **fields))
                    return protocol.raise_for_reply(await self._reply_for(rid))
                except (OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                        anyio.ClosedResourceError) as exc:
                    await self._abandon()
                    raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None
            await self._abandon()  # only the deadline leaves the scope without a reply
            raise DaemonUnavailable(f"the daemon at {self.path} did not answer {op} within {give_up_after:g}s")
        finally:
            self._waited.discard(rid)  # a reply that comes after all is dropped
            self._lock.release()

    async def stream(self, op: str, **fields: Any) -> AsyncGenerator[Any, None]:
        """Items of a paged read; the next page is asked for as each page is handed on (one in
        flight). The lock is held while frames move, not while the caller consumes items."""
        reader = PageReader(self._next_rid())
        self._waited.add(reader.rid)
        try:
            async with self._lock:
                await self._send(protocol.request(op, reader.rid, **fields))
            while True:
                async with self._lock:
                    if (items := reader.read(await self._reply_for(reader.rid))) is None:
                        return
                    await self._send(reader.next_request())
                for item in items:
                    yield item
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream,
                anyio.ClosedResourceError) as exc:
            await self._abandon()
            raise DaemonUnavailable(f"lost the connection to the daemon at {self.path}: {exc}") from None
        except LensdError:  # the daemon refused the connection's framing: nothing to cancel
            reader.ended = True
            raise
        finally:
            if not reader.ended and not self.closed:  # the caller stopped early: end the stream
                with anyio.CancelScope(shield=True):
                    async with self._lock:  # in whichever task closes the generator
                        await self._cancel(reader)
            self._waited.discard(reader.rid)

    async def _cancel(self, reader: PageReader) -> None:
        try:
            await self._send(reader.cancel_request())
            while not reader.ends_cancelled(await self._reply_for(reader.rid)):
                pass
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError,
                LensdError):
            await self._abandon()

    async def _abandon(self) -> None:
        """Close a connection that cannot be used again (lost, or a reply still due), even from a
        cancelled task: marked closed and left for the next one to replace, its socket stayed open."""
        if self.closed:
            return
        with anyio.CancelScope(shield=True):
            await self.aclose()

    async def aclose(self) -> None:
        self.closed = True
        self._io.unwatch()
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
