"""One connection's read side: bytes in, messages out, within the daemon's flow bounds.

Kept apart from ``connection`` (which decides what each message does) because this part is all
about what a peer may make the daemon hold while a frame is unfinished: the deadlines on a frame's
bytes and the daemon-wide budget of unfinished frames (``flow.PartialFrames``). Large bodies are
decoded off the event loop (``flow.Decoding``).
"""

from __future__ import annotations

from typing import Any

import anyio

from lensd.client.streamio import StreamIO
from lensd.daemon import flow
from lensd.errors import ProtocolError
from lensd.settings import Settings
from lensd.wire import protocol

READ_CHUNK = 1 << 16


class FrameReader:
    """The frames one connection's bytes complete, and what its unfinished frame holds."""

    def __init__(self, io: StreamIO, settings: Settings, shared: flow.Shared) -> None:
        self.io = io
        self.settings = settings
        self.shared = shared
        self.decoder = protocol.FrameDecoder(settings.max_frame)
        self.sizes: dict[int, int] = {}  # id(message) -> its frame's size, until it is dispatched
        self._partial = 0  # bytes of an unfinished frame, counted in the daemon's budget

    async def messages(self) -> list[dict[str, Any]]:
        """The messages the next bytes complete; a frame left unfinished too long ends the connection.

        The bytes of an unfinished frame count in the daemon's budget, and past it this connection
        waits to be read.
        """
        timeout = self.settings.frame_timeout
        if self.decoder.buffered > 0:
            try:
                with anyio.fail_after(timeout):
                    data = await self.io.receive(READ_CHUNK)
            except TimeoutError:
                raise ProtocolError(f"a frame was left unfinished for {timeout:g}s "
                                    "(lensd start --frame-timeout)") from None
        else:  # between frames a connection may idle for ever: no deadline to set up
            data = await self.io.receive(READ_CHUNK)
        bodies = self.decoder.split(data)
        shared = self.shared
        shared.partial.change(self.decoder.buffered - self._partial)
        self._partial = self.decoder.buffered
        messages = []
        for body in bodies:
            try:
                message = await shared.decoding.decode(body)
            except ProtocolError:
                self.decoder.failed()
                raise
            self.sizes[id(message)] = len(body)
            messages.append(message)
        self.decoder.check()
        if self._partial and shared.partial.held > shared.partial.budget:
            await shared.partial.wait_for_room(timeout)
        return messages

    def close(self) -> None:
        """Give back what the unfinished frame holds (the connection has ended)."""
        self.shared.partial.change(-self._partial)
        self._partial = 0
