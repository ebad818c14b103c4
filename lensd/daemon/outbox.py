"""One connection's replies on their way out, and the requests still owed one.

A write has no task of its own: the committer hands its reply here once it is committed, and one
task per connection (``Outbox.run``) sends every reply ready in one ``send``. Kept apart from
``connection`` so that what a connection's unread replies may hold is decided in one place:

- a request's share of the daemon-wide in-flight allowance is given back when its reply is posted
  here (a write's once it is committed: acknowledged data stays committed whether or not the
  reply is read), so clients that never read their replies hold nothing the others need;
- its share of its own connection's allowance is given back only once the reply is sent, and at
  most ``flow.MAX_UNSENT_BYTES`` of replies wait unsent: past either, the connection is not read
  (``Connection._admit``) until its peer reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from lensd.daemon import flow


class Outbox:
    """Replies ready to send, with the size each one's request was admitted with."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], own: flow.Allowance,
                 shared: flow.Allowance, limit: int = flow.MAX_UNSENT_BYTES) -> None:
        self._send = send
        self._own, self._shared = own, shared  # the connection's allowance, and the daemon's
        self.limit = limit
        self.unsent = 0  # bytes of replies posted and not yet sent
        self._sent = anyio.Event()  # set when a send ends
        self._ready: list[tuple[bytes, int]] = []
        self._wake = anyio.Event()  # set when a reply is posted or requests end
        self._owed = 0  # requests read whose reply is not sent yet
        self._ended = False  # no more requests will be read
        self._gone = False  # the connection has ended: a reply only gives its allowances back

    def expect(self) -> None:
        """One more request will post a reply (or ``settle`` without one)."""
        self._owed += 1

    @property
    def full(self) -> bool:
        """More replies wait unsent than the connection may have: do not read it."""
        return self.unsent > self.limit

    async def room(self) -> None:
        """Return once the unsent replies are within the bound."""
        while self.full:
            await self._sent.wait()

    def post(self, frame: bytes, size: int) -> None:
        """A reply to send; ``size`` is what its request was admitted with."""
        self._shared.release(size)
        if self._gone:
            self._settle(size)
            return
        self._ready.append((frame, size))
        self.unsent += len(frame)
        self._wake.set()

    def drop(self, size: int) -> None:
        """A request that will post no reply (never queued, cancelled): give back all it holds."""
        self._shared.release(size)
        self._settle(size)

    def once(self, size: int) -> OneReply:
        """The way out of a request that may be both dropped and answered (a queued write)."""
        return OneReply(self, size)

    def _settle(self, size: int) -> None:
        self._owed -= 1
        self._own.release(size)

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
            try:
                await self._send(ready[0][0] if len(ready) == 1 else b"".join(frame for frame, _ in ready))
            finally:  # sent, or cut off in the middle (cancelled): settled here, once, and never sent again
                for frame, size in ready:
                    self.unsent -= len(frame)
                    self._settle(size)
                self._sent.set()
                self._sent = anyio.Event()

    def close(self) -> None:
        """The connection has ended (or was cut off): nobody sends what is left. A batch whose
        send was cut off was settled by ``run`` itself: it is no longer among the ready ones."""
        self._gone = True
        for frame, size in self._ready:
            self.unsent -= len(frame)
            self._settle(size)
        self._ready.clear()


class OneReply:
    """One request's reply: posted or dropped, whichever comes first; the other is ignored.

    A write cancelled while it waits for room in the committer's queue may have been taken all the
    same (anyio's ``MemoryObjectSendStream.send`` raises the cancel after a receiver took the item):
    its drop comes then, and its committed answer later. Giving its allowances back twice would
    stretch the daemon's bound and leave the outbox owing -1 replies, so ``run`` never returned.
    """

    def __init__(self, outbox: Outbox, size: int) -> None:
        self._outbox, self._size = outbox, size
        self.done = False

    def post(self, frame: bytes) -> None:
        if not self.done:
            self.done = True
            self._outbox.post(frame, self._size)

    def drop(self) -> None:
        if not self.done:
            self.done = True
            self._outbox.drop(self._size)
