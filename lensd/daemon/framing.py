"""One connection's read side: bytes in, messages out, within the daemon's flow bounds.

Kept apart from ``connection`` (which decides what each message does) because this part is all
about what a peer may make the daemon hold while a frame is unfinished (``flow``):

- before more of a begun frame is read, its whole declared size is reserved in the daemon-wide
  budget (``flow.PartialFrames``), first come first served; until it fits this connection is not
  read, for at most ``--frame-timeout``;
- a begun frame must get bytes every ``--frame-timeout`` and be whole ``--frame-deadline`` after
  its room was reserved: a peer trickling a byte at a time cannot hold its reservation for ever;
- before the handshake a frame reserves only what has come of it and one more read: an
  unauthenticated peer must send the bytes it holds (within ``--handshake-timeout``), it cannot
  reserve the budget with a header alone. Its whole size is reserved once the handshake is done.

Past a deadline the reservation is given back at once, and the caller answers one error and
closes the connection. Large bodies are decoded off the event loop (``flow.Decoding``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio

from lensd.client.streamio import StreamIO
from lensd.daemon import flow
from lensd.errors import ProtocolError
from lensd.settings import Settings
from lensd.wire import protocol

log = logging.getLogger("lensd.connection")
READ_CHUNK = 1 << 16


class FrameReader:
    """The frames one connection's bytes complete, and the room its unfinished frame holds."""

    def __init__(self, io: StreamIO, settings: Settings, shared: flow.Shared) -> None:
        self.io = io
        self.settings = settings
        self.shared = shared
        self.decoder = protocol.FrameDecoder(settings.max_frame)
        self.sizes: dict[int, int] = {}  # id(message) -> its frame's size, until it is dispatched
        self.welcomed = False  # the handshake is done: a frame may be as large as the frame limit
        self._reserved = 0  # the whole size of the unfinished frame, reserved in the daemon's budget
        self._deadline = math.inf  # when that frame must be whole (anyio.current_time())

    async def messages(self) -> list[dict[str, Any]]:
        """The messages the next bytes complete; ProtocolError for a frame that does not come whole
        in time, or that the daemon has no room for (the caller then closes the connection)."""
        await self._reserve()
        data = await self._receive()
        bodies = self.decoder.split(data)
        if bodies:  # the frame reserved for is whole: its room goes to whoever waits for it
            self._release()
        messages = []
        for body in bodies:
            try:
                message = await self.shared.decoding.decode(body)
            except ProtocolError:
                self.decoder.failed()
                raise
            self.sizes[id(message)] = len(body)
            messages.append(message)
        self.decoder.check()
        return messages

    async def _reserve(self) -> None:
        """Reserve the begun frame's whole size (before the handshake: what has come and one more
        read) before reading more of it: at once when it fits, else this connection waits in line,
        not read, and counts in ``held_back``."""
        size = self.decoder.pending
        want = size if self.welcomed else min(size, self.decoder.buffered + READ_CHUNK)
        if want <= self._reserved:
            return
        more = want - self._reserved
        partial = self.shared.partial
        held = not partial.may_take(more)
        if held:  # once per frame that waits, as a connection's own lines are
            log.info("a frame of %d bytes waits for room: %d of the %d bytes for unfinished frames are "
                     "reserved", size, partial.held, partial.budget)
        with self.shared.holding(held):
            await partial.reserve(more, self.settings.frame_timeout)
        if not self._reserved:
            self._deadline = anyio.current_time() + self.settings.frame_deadline
        self._reserved += more

    async def _receive(self) -> bytes:
        if self.decoder.buffered == 0:  # between frames a connection may idle for ever
            return await self.io.receive(READ_CHUNK)
        timeout = self.settings.frame_timeout
        whole = self._deadline - anyio.current_time() if self._reserved else math.inf
        try:
            with anyio.fail_after(min(timeout, whole)):
                return await self.io.receive(READ_CHUNK)
        except TimeoutError:
            if whole > timeout:
                raise ProtocolError(f"a frame was left unfinished for {timeout:g}s "
                                    "(lensd start --frame-timeout)") from None
            size = self._reserved
            self.close()
            raise ProtocolError(f"a frame of {size} bytes did not arrive whole within "
                                f"{self.settings.frame_deadline:g}s (lensd start --frame-deadline)") from None

    def _release(self) -> None:
        self.shared.partial.release(self._reserved)
        self._reserved = 0
        self._deadline = math.inf

    def close(self) -> None:
        """Give back the room the unfinished frame holds and read no more (a deadline passed, or
        the connection has ended); safe to call again."""
        self._release()
        self.decoder.failed()
