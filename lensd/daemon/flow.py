"""Back-pressure: what one connection, and all of them together, may make the daemon hold.

Without these bounds one client could grow the daemon without limit: pipelining requests without
reading the replies (200,000 of them grew it to 1.33 GB), or opening frames and never finishing
them (ten connections held 600 MB). So:

- per connection, at most ``MAX_IN_FLIGHT`` requests (and ``MAX_IN_FLIGHT_BYTES`` of their
  frames) are being handled or have a reply not sent yet, and at most ``MAX_UNSENT_BYTES`` of
  replies wait unsent; past that the connection is simply not read until its peer reads, so the
  client waits on its own socket and every other client is served;
- all connections together have at most ``4 * MAX_IN_FLIGHT_BYTES`` of requests being handled; a
  request's share of it is given back once its reply is queued (``outbox``), so clients that never
  read their replies hold none of it;
- all connections together hold at most ``PARTIAL_BUDGET`` bytes of unfinished frames: a frame's
  whole declared size is reserved before more of it is read, first come first served, so a frame
  let in always may complete; a connection whose frame does not fit is not read (it holds one read
  chunk) until others finish or are cut off. A frame that gets no byte for ``--frame-timeout``, or
  no room for as long, or is not whole ``--frame-deadline`` after its room was reserved, closes its
  connection (``framing``): trickling bytes cannot hold room for ever. Before the handshake a
  frame reserves only the bytes that came and one more read, so an unauthenticated peer cannot
  reserve the budget with a header alone;
- ``Shared.held_back`` counts the connections not read now because one of these bounds is
  reached, and ``Shared.in_flight`` what all connections' requests hold of theirs (``lensd status``
  shows both: ``held_back``, ``in_flight_requests``, ``in_flight_bytes``);
- bodies over ``codec.SCAN_ABOVE`` bytes are decoded in a worker thread, ``HEAVY_DECODES`` at a
  time, after ``codec.check_shape`` has bounded what they may allocate.

A connection may always have one request in flight, whatever its size (up to the frame limit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import anyio
import anyio.to_thread

from lensd.errors import Busy
from lensd.wire import codec, protocol

MAX_IN_FLIGHT: Final = 64
MAX_IN_FLIGHT_BYTES: Final = 64 * 2**20
MAX_UNSENT_BYTES: Final = 8 * 2**20  # replies a connection's peer has not read: past it, it is not read
MAX_STREAMS: Final = 32  # read streams one connection may hold open
PARTIAL_BUDGET: Final = 128 * 2**20
HEAVY_DECODES: Final = 2


class Allowance:
    """A count and a byte total that acquirers wait for; one acquirer is always let in."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.used_count = self.used_size = 0
        self._changed = anyio.Event()
        self._waiting = 0  # acquirers waiting: a release wakes them, and makes a new Event, only then

    def fits(self, size: int) -> bool:
        """Whether ``acquire(size)`` would return at once."""
        return self.used_count == 0 or (self.used_count < self.count and self.used_size + size <= self.size)

    async def acquire(self, size: int) -> None:
        while not self.fits(size):
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1
        self.used_count += 1
        self.used_size += size

    def release(self, size: int) -> None:
        self.used_count -= 1
        self.used_size -= size
        if self._waiting:
            self._changed.set()
            self._changed = anyio.Event()


class PartialFrames:
    """The daemon-wide budget for unfinished frames, reserved a whole frame at a time.

    A frame's whole declared size is reserved before more of it is read, first come first served:
    a frame let in may always complete, and a connection whose frame does not fit waits in line
    (once, every connection holding part of a frame stopped being read past the budget, so none
    could finish and all were cut off). A frame is let in whatever its size when nothing is held.
    """

    def __init__(self, budget: int = PARTIAL_BUDGET) -> None:
        self.budget = budget
        self.held = 0
        self._queue: deque[tuple[int, anyio.Event]] = deque()  # waiting, in order of arrival

    def may_take(self, size: int) -> bool:
        """Whether ``reserve(size)`` would return at once."""
        return not self._queue and self._fits(size)

    def _fits(self, size: int) -> bool:
        return self.held == 0 or self.held + size <= self.budget

    def release(self, size: int) -> None:
        self.held -= size
        while self._queue and self._fits(self._queue[0][0]):
            first, granted = self._queue.popleft()
            self.held += first
            granted.set()

    async def reserve(self, size: int, patience: float) -> None:
        """Return once ``size`` bytes are reserved; Busy after ``patience`` seconds (the daemon's
        budget stayed full: not the peer's fault, so it is told to try again, and over TCP before
        its handshake this is no failed handshake for the throttle to count)."""
        if self.may_take(size):
            self.held += size
            return
        entry = (size, anyio.Event())
        self._queue.append(entry)
        try:
            with anyio.move_on_after(patience):
                await entry[1].wait()
        except BaseException:
            self._withdraw(entry)
            raise
        if not entry[1].is_set():
            self._withdraw(entry)
            raise Busy(f"the daemon holds {self.held} bytes of unfinished frames; a frame of "
                                f"{size} bytes would pass its budget of {self.budget}, and no room was "
                                f"made within {patience:g}s: try again later")

    def _withdraw(self, entry: tuple[int, anyio.Event]) -> None:
        if entry[1].is_set():  # granted, but the caller will not take it
            self.release(entry[0])
        else:
            self._queue.remove(entry)
            self.release(0)  # the next in line may fit now


class Decoding:
    """Decode frame bodies: small ones at once, large ones in a worker thread, a few at a time."""

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(HEAVY_DECODES)

    async def decode(self, body: bytes) -> dict[str, object]:
        if len(body) <= codec.SCAN_ABOVE:
            return protocol.decode_body(body)
        return await anyio.to_thread.run_sync(protocol.decode_body, body, limiter=self._limiter)


class Shared:
    """The daemon-wide bounds, made once the daemon's event loop runs."""

    def __init__(self) -> None:
        self.partial = PartialFrames()
        self.decoding = Decoding()
        self.in_flight = Allowance(1 << 30, 4 * MAX_IN_FLIGHT_BYTES)  # all connections' requests
        self.held_back = 0  # connections not read now because a bound is reached (``status``)

    @contextmanager
    def holding(self, held: bool) -> Iterator[None]:
        """Count a connection in ``held_back`` while it waits for a bound (when ``held``)."""
        if not held:
            yield
            return
        self.held_back += 1
        try:
            yield
        finally:
            self.held_back -= 1
