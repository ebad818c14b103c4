"""Paged reads, both sides, as state without IO: the credit and cancel rules in one place.

The rules are protocol.py's (its docstring, "Paged reads"): a read request is one credit, each
``next`` one more, the daemon sends a page per credit and then ``done``, which needs none;
``cancel`` is answered with ``done(cancelled=True)`` and the client drops the pages still in
flight until that ``done`` (or an error). The daemon keeps a ``Credit`` per open stream; both
clients (the async ``Client`` and the blocking one) read a stream through a ``PageReader``.
"""

from __future__ import annotations

from typing import Any

from lensd.errors import LensdError, ProtocolError
from lensd.wire import protocol


class Credit:
    """The daemon's side of one stream: how many pages it may send, and whether it was cancelled."""

    __slots__ = ("cancelled", "pages")

    def __init__(self) -> None:
        self.pages = 1  # the read request itself asks for the first page
        self.cancelled = False

    def control(self, op: str) -> None:
        """Apply the client's ``next`` (one more page) or ``cancel`` for this stream."""
        if op == "next":
            self.pages += 1
        elif op == "cancel":
            self.cancelled = True

    @property
    def waiting(self) -> bool:
        """Nothing may be sent now: no credit left and no cancel to answer."""
        return self.pages <= 0 and not self.cancelled

    def spend(self) -> None:
        """One page was sent."""
        self.pages -= 1


class PageReader:
    """A client's side of one stream: what each frame for its rid means, and what to send back."""

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.ended = False  # done or an error arrived: nothing is left to cancel

    def read(self, message: dict[str, Any]) -> list[Any] | None:
        """The items of a page (answer with ``next_request``), or None at the end; raises the
        daemon's error."""
        try:
            message = protocol.raise_for_reply(message)
            if message.get("done"):
                self.ended = True
                return None
            items = message.get("page")
            if not isinstance(items, list):
                raise ProtocolError("a page frame without a page list")
            return items
        except LensdError:
            self.ended = True
            raise

    def next_request(self) -> dict[str, Any]:
        """One more credit: sent after each page."""
        return protocol.request("next", self.rid)

    def cancel_request(self) -> dict[str, Any]:
        """End the stream early; then read frames until ``ends_cancelled`` says the last came."""
        return protocol.request("cancel", self.rid)

    @staticmethod
    def ends_cancelled(message: dict[str, Any]) -> bool:
        """Whether a frame of a cancelled stream is its last (``done`` or an error); pages are dropped."""
        return bool(message.get("done")) or message.get("ok") is False
