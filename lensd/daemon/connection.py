"""One client connection: handshake, then requests handled concurrently until the peer leaves.

A client's failure stays here: framing errors get an error frame and close this connection only;
errors in one request become an error reply for that request. Writes are answered only after the
group committer reports their commit.

A write request has no task of its own: the reading task checks it and queues it for the
committer, which, once it is committed, hands its reply to this connection's ``Outbox``. Counts
and status keep a task each (they wait on the read side, not on the committer) and post their
reply to the outbox too; read streams send their pages themselves, paced by the client. Bytes
become messages in ``framing.FrameReader``.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio import TypedAttributeLookupError
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from lensd._version import __version__
from lensd.client.streamio import StreamIO
from lensd.daemon import flow
from lensd.daemon.framing import FrameReader
from lensd.daemon.outbox import Outbox
from lensd.daemon.reads import Stream, page_frame
from lensd.daemon.services import ConnectionHost
from lensd.errors import Busy, InvalidRecord, LensdError, ProtocolError, StorageError
from lensd.store.writeops import admin_from_request, op_from_request
from lensd.wire import protocol
from lensd.wire.paging import Credit

if TYPE_CHECKING:
    from lensd.daemon.network import Gate

log = logging.getLogger("lensd.connection")


@dataclass
class _Credit:
    """One stream's ``paging.Credit``, and the event its sender waits on for a change."""

    account: Credit = field(default_factory=Credit)
    wake: anyio.Event = field(default_factory=anyio.Event)
    deaf: bool = False  # the client's side is closed: no "next" or "cancel" can come

    def control(self, op: str) -> None:
        self.account.control(op)
        self._wake()

    def close_ear(self) -> None:
        """The client will send nothing more: send what the credit allows, then end."""
        self.deaf = True
        self._wake()

    def _wake(self) -> None:
        self.wake.set()
        self.wake = anyio.Event()


class Connection:
    """One client over any byte stream: a Unix socket, TCP, or TLS (``gate`` set: authenticate first)."""

    def __init__(self, daemon: ConnectionHost, stream: ByteStream, gate: Gate | None = None,
                 peer: str = "local") -> None:
        self.daemon = daemon
        self.stream = stream
        self.gate = gate
        self.peer = peer
        self.io = StreamIO(stream)
        self.frames = FrameReader(self.io, daemon.settings, daemon.flow)
        self.send_lock = anyio.Lock(fast_acquire=True)
        self.credits: dict[int, _Credit] = {}
        self.reading = anyio.CancelScope()
        self.in_flight = flow.Allowance(flow.MAX_IN_FLIGHT, flow.MAX_IN_FLIGHT_BYTES)
        self.outbox = Outbox(self._send_bytes, self.in_flight, daemon.flow.in_flight)
        self.gone = False  # a send failed: nothing sent from now on reaches the peer

    def finish(self) -> None:
        """Stop reading requests and end open read streams; pending writes still get answers.

        Reading ends by shutting the socket's read side, which the pending receive sees as end of
        stream, rather than by cancelling that receive: anyio's UNIX socket stream leaves a
        readiness callback queued on a cancelled future, and asyncio then logs an
        InvalidStateError traceback at every stop.
        """
        try:
            self.stream.extra(SocketAttribute.raw_socket).shutdown(socket.SHUT_RD)
        except (OSError, TypedAttributeLookupError):
            self.reading.cancel()
        self._end_streams()

    def _end_streams(self) -> None:
        for credit in self.credits.values():
            credit.control("cancel")

    def _frame(self, message: dict[str, Any]) -> bytes:
        try:
            return protocol.encode_frame(message, self.daemon.settings.max_frame)
        except LensdError as exc:
            return protocol.encode_frame(protocol.error(message.get("rid"), exc))

    async def send(self, message: dict[str, Any]) -> None:
        await self._send_bytes(self._frame(message))

    async def _send_bytes(self, data: bytes) -> None:
        async with self.send_lock:
            try:
                await self.io.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.gone = True  # streams produce no more pages (``_stream``)
                self.reading.cancel()  # the peer is gone: stop reading too

    async def _handshake(self) -> bool:
        if self.gate is None:
            return await self._hello()
        try:
            return await self.gate.authenticate(self)
        except ProtocolError as exc:  # garbage before authenticating
            await self.gate.refuse(self.peer, str(exc))
            raise
        finally:
            self.gate.throttle.release(self.peer)

    async def first_messages(self) -> list[dict[str, Any]]:
        """The frames that arrive within the handshake timeout (at least one, else [])."""
        pending: list[dict[str, Any]] = []
        with anyio.move_on_after(self.daemon.settings.handshake_timeout):
            while not pending:
                pending = await self.frames.messages()
        return pending

    async def _hello(self) -> bool:
        """The Unix socket's hello; a bad one is answered and logged, one line per connection (its
        reason quotes the peer's values shortened: ``protocol.shown``)."""
        pending = await self.first_messages()
        if not pending:
            log.warning("closing a connection: no hello within the handshake timeout")
            await self.send(protocol.error(None, ProtocolError("no hello within the handshake timeout")))
            return False
        first, rest = pending[0], pending[1:]
        try:
            rid = protocol.check_hello(first)
        except ProtocolError as exc:
            log.warning("closing a connection: bad hello: %s", exc)
            await self.send(protocol.error(protocol.reply_rid(first), exc))
            return False
        await self.send(self.welcome(protocol.hello_reply(rid, __version__)))
        self._backlog.extend(rest)
        return True

    async def read_frames(self) -> list[dict[str, Any]]:
        """The frames the next chunk of bytes completes (the gate reads the handshake with it)."""
        return await self.frames.messages()

    def queue(self, messages: list[dict[str, Any]]) -> None:
        """Frames that came with the handshake, to dispatch once it has succeeded."""
        self._backlog.extend(messages)

    def welcome(self, reply: dict[str, Any]) -> dict[str, Any]:
        """The reply that opens the connection for requests, with what a client should know."""
        reply["lost_after"] = self.daemon.settings.lost_after
        return reply

    async def serve(self) -> None:
        """Handle this connection until the peer closes it or the daemon stops."""
        self._backlog: list[dict[str, Any]] = []
        try:
            async with anyio.create_task_group() as requests:
                requests.start_soon(self.outbox.run)
                broken = False
                with self.reading:
                    broken = await self._read_requests(requests)
                self.frames.close()  # read no more: an unfinished frame's room goes back now, not
                # once every reply is out (a stream may wait for ever on a peer that does not read)
                for credit in self.credits.values():  # no more "next" can come (see _stream)
                    credit.close_ear()
                self.outbox.end()
                if broken:  # its replies get --frame-timeout to go out, then the connection closes
                    requests.cancel_scope.deadline = anyio.current_time() + self.daemon.settings.frame_timeout
        finally:
            self.outbox.close()  # cut off (the daemon's drain timeout): nobody sends what is left
            self.frames.close()
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _read_requests(self, requests: TaskGroup) -> bool:
        """Read and dispatch until EOF; True: a framing error (or a frame past its deadline) was
        answered and ends the connection."""
        try:
            if not await self._handshake():
                return False
            self.frames.welcomed = True
            sizes = self.frames.sizes
            self.frames.sizes = {id(m): sizes.get(id(m), 0) for m in self._backlog}  # not the hello's
            for message in self._backlog:
                await self._dispatch(message, requests)
            while True:
                for message in await self.frames.messages():
                    await self._dispatch(message, requests)
        except (ProtocolError, Busy) as exc:  # Busy: no room for its frame came in time
            log.warning("closing a connection: %s", exc)
            self.frames.close()  # its room goes to others now, whether or not the error is read
            # A peer that never reads: at the deadline this reply is out whole or not at all (a frame
            # this small enters a Unix socket whole or not at all, a TCP transport's buffer whole, and
            # a lost TLS record fails every later send). A page or batch cut off later, at the owed
            # replies' deadline (``serve``), is followed only by the close.
            with anyio.move_on_after(self.daemon.settings.frame_timeout):
                await self.send(protocol.error(None, exc))
            return True
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                ConnectionError):
            pass
        return False

    async def _admit(self, size: int) -> None:
        """Return once this connection (and the daemon) may take one more request; the request
        will post one reply to the outbox (or ``drop``), which gives back what it took.

        Until then this connection is not read, and counts in ``held_back``: a client that
        pipelines without reading its replies waits on its own socket, and the others are served
        (``flow``, ``outbox``).
        """
        shared = self.daemon.flow
        with shared.holding(self.outbox.full or not (self.in_flight.fits(size) and shared.in_flight.fits(size))):
            await self.outbox.room()
            await self.in_flight.acquire(size)
            try:
                await shared.in_flight.acquire(size)
            except BaseException:
                self.in_flight.release(size)
                raise
        self.outbox.expect()

    async def _dispatch(self, message: dict[str, Any], requests: TaskGroup) -> None:
        size = self.frames.sizes.pop(id(message), 0)
        try:
            op, rid, fields = protocol.parse_request(message)
        except ProtocolError as exc:
            await self._reply_now(protocol.error(protocol.reply_rid(message), exc), size)
            return
        if op in ("next", "cancel"):
            credit = self.credits.get(rid)
            if credit is not None:  # none: it crossed the stream's final frame
                credit.control(op)
        elif op in ("hello", "auth"):
            await self._reply_now(protocol.error(rid, ProtocolError(f"{op} was already said")), size)
        elif op == "stop":
            await self._reply_now(protocol.ok(rid, stopping=True), size)
            self.daemon.request_stop()
        elif op in protocol.WRITE_OPS or op in protocol.ADMIN_OPS:
            await self._admit(size)
            await self._write(op, rid, fields, size)
        elif op in ("count", "status"):
            await self._admit(size)
            requests.start_soon(self._single, op, rid, fields, size)
        elif rid in self.credits:
            await self._reply_now(protocol.error(rid, ProtocolError(f"rid {rid} is in use")), size)
        elif len(self.credits) >= flow.MAX_STREAMS:
            await self._reply_now(protocol.error(rid, Busy(
                f"this connection has {flow.MAX_STREAMS} read streams open: finish or cancel one first")), size)
        else:
            self.credits[rid] = _Credit()
            requests.start_soon(self._stream, op, rid, fields)

    async def _reply_now(self, reply: dict[str, Any], size: int) -> None:
        """Answer a request that needs no handler (a refused envelope, a repeated hello, ``stop``).

        It is admitted like any request and its reply goes through the outbox, so a client sending
        such requests without reading the replies is held back like any other; each used to get a
        task of its own outside every bound.
        """
        await self._admit(size)
        self.outbox.post(self._frame(reply), size)

    async def _write(self, op: str, rid: int, fields: dict[str, Any], size: int) -> None:
        """Check one write and queue it; its reply goes to the outbox once it is committed (or at
        once, refused). ``size`` was admitted (``_admit``)."""
        try:
            write = admin_from_request(op, fields) if op in protocol.ADMIN_OPS else op_from_request(op, fields)
        except LensdError as exc:
            log.info("refused %s: %s", op, exc)
            self._answer(rid, size, exc)
            return
        except Exception as exc:  # a gap in validation must not end the connection's other requests
            log.exception("checking a %s request failed", op)
            self._answer(rid, size, InvalidRecord(f"{op}: the request could not be checked "
                                                  f"({type(exc).__name__}: {exc})"))
            return
        reply = self.outbox.once(size)
        try:
            await self.daemon.committer.queue([write], lambda outcomes: reply.post(self._outcome(rid, outcomes[0])))
        except BaseException:
            reply.drop()  # not queued (or taken as the cancel came: then its answer is ignored)
            raise

    def _answer(self, rid: int, size: int, outcome: str | LensdError) -> None:
        """A write refused before it was queued: its reply joins the outbox."""
        self.outbox.post(self._outcome(rid, outcome), size)

    def _outcome(self, rid: int, outcome: str | LensdError) -> bytes:
        """A write's reply frame (the committer's answer once committed, or a refusal)."""
        reply = protocol.error(rid, outcome) if isinstance(outcome, LensdError) else protocol.ok(rid, outcome=outcome)
        return self._frame(reply)

    async def _single(self, op: str, rid: int, fields: dict[str, Any], size: int) -> None:
        """Answer a count or status into the outbox; ``size`` was admitted (``_admit``)."""
        try:
            reply = await self._single_reply(op, rid, fields, size)
        except BaseException:  # cancelled: nothing will answer it
            self.outbox.drop(size)
            raise
        self.outbox.post(self._frame(reply), size)

    async def _single_reply(self, op: str, rid: int, fields: dict[str, Any], size: int) -> dict[str, Any]:
        try:
            if op == "count":
                reply = protocol.done(rid, count=await self.daemon.reads.count(fields))
            else:
                reply = protocol.done(rid, status=await self.daemon.status(own=size))  # its own share left out
        except LensdError as exc:
            reply = protocol.error(rid, exc)
        except Exception as exc:  # a bug must not end the connection
            log.exception("%s failed", op)
            reply = protocol.error(rid, StorageError(f"{op} failed: {exc}"))
        return reply

    async def _stream(self, op: str, rid: int, fields: dict[str, Any]) -> None:
        credit = self.credits[rid]
        reader: Stream | None = None
        stalled = False
        try:
            max_frame, idle = self.daemon.settings.max_frame, self.daemon.settings.stream_timeout
            reader = await self.daemon.reads.open_stream(op, fields, max_frame)
            while True:
                with anyio.move_on_after(idle):
                    while credit.account.waiting and not credit.deaf:
                        await credit.wake.wait()
                if self.gone:  # a send failed, this stream's or another's: no page would reach the peer
                    log.info("a %s stream stopped, its client gone: %d pages it asked for were not sent",
                             op, credit.account.pages)
                    return
                if credit.account.waiting and credit.deaf:  # it sent the pages it had credit for
                    await self.send(protocol.error(rid, ProtocolError(
                        f"the connection was half-closed: no 'next' can come for this {op} stream, "
                        "so it ends here after the pages asked for")))
                    return
                if credit.account.waiting:  # its snapshot must not be held for ever
                    log.info("closing a %s stream nobody asked a page of for %gs", op, idle)
                    await self.send(protocol.error(rid, ProtocolError(
                        f"this {op} stream got no 'next' for {idle:g}s and was closed "
                        "(lensd start --stream-timeout); ask again")))
                    stalled = True
                    return
                if credit.account.cancelled:
                    await self.send(protocol.done(rid, cancelled=True))
                    return
                items = await reader.next_page()
                if items:  # a page past the frame limit raises: its error is the stream's one end
                    frame = page_frame(rid, op, fields, items, max_frame)
                    credit.account.spend()
                    await self._send_bytes(frame)
                if reader.exhausted:
                    await self.send(protocol.done(rid))
                    return
        except LensdError as exc:
            await self.send(protocol.error(rid, exc))
        except Exception as exc:
            log.exception("%s stream failed", op)
            await self.send(protocol.error(rid, StorageError(f"{op} failed: {exc}")))
        finally:
            self.credits.pop(rid, None)
            if reader is not None:
                with anyio.CancelScope(shield=True):
                    await reader.aclose()
                    # the WAL this stream's snapshot held back is given back to the disk
                    await self.daemon.committer.writer.shrink_wal(force=stalled)
