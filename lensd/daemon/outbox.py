"""One connection's replies on their way out, and the requests still owed one.

A write has no task of its own: the committer hands its reply here once it is committed, and one
task per connection (``Outbox.run``) sends every reply ready in one ``send``; only then is the
request's share of the in-flight allowances (``flow``) given back. Kept apart from ``connection``
so that what a connection's unread replies may hold is decided in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


class Outbox:
    """Replies ready to send, with the size each one's request was admitted with."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], release: Callable[[int], None]) -> None:
        self._send = send
        self._release = release  # a request's allowances, given back once its reply is sent
        self._ready: list[tuple[bytes, int]] = []
        self._wake = anyio.Event()  # set when a reply is posted or requests end
        self._owed = 0  # requests read whose reply is not sent yet
        self._ended = False  # no more requests will be read
        self._gone = False  # the connection has ended: a reply only gives its allowances back

    def expect(self) -> None:
        """One more request will post a reply (or ``settle`` without one)."""
        self._owed += 1

    def post(self, frame: bytes, size: int) -> None:
        """A reply to send; ``size`` is what its request was admitted with."""
        if self._gone:
            self.settle(size)
            return
        self._ready.append((frame, size))
        self._wake.set()

    def settle(self, size: int) -> None:
        """A request is done with: its reply was sent, or none will be."""
        self._owed -= 1
        self._release(size)

    def end(self) -> None:
        """No more requests: ``run`` returns once every one read has been answered."""
        self._ended = True
        self._wake.set()

    async def run(self) -> None:
        """Send the replies, every one ready in one ``send``, then give back their allowances;
        return once requests have ended and every request read has been answered."""
        while self._ready or self._owed or not self._ended:
            if not self._ready:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            ready, self._ready = self._ready, []
            await self._send(ready[0][0] if len(ready) == 1 else b"".join(frame for frame, _ in ready))
            for _, size in ready:
                self.settle(size)

    def close(self) -> None:
        """The connection has ended (or was cut off): nobody sends what is left."""
        self._gone = True
        for _, size in self._ready:
            self.settle(size)
        self._ready.clear()
