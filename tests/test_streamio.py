"""lensd.client.streamio on a real Unix socket: ``WatchedIO`` keeps the client's socket registered
with the loop between replies, and still loses no bytes when a wait is cancelled, reads every byte
in order, and ends as anyio's streams do (``EndOfStream`` at the peer's close, every time)."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest

from lensd.client.streamio import WatchedIO


def test_watched_io_reads_in_order_across_cancelled_waits_and_ends(short_tmp: Path) -> None:
    path = str(short_tmp / "w.sock")

    async def main() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            stream = await anyio.connect_unix(path)
            peer, _ = listener.accept()
            io = WatchedIO(stream)
            try:
                peer.sendall(b"one")
                assert await io.receive(100) == b"one"
                assert io._watching  # registered once, kept for the next reply
                for _ in range(3):
                    peer.sendall(b"x" * 10)
                    assert await io.receive(100) == b"x" * 10
                    assert io._watching

                with anyio.CancelScope() as scope:  # a wait cancelled (a timeout) before any byte
                    scope.cancel()
                    await io.receive(100)
                assert scope.cancelled_caught and not io._watching
                peer.sendall(b"two")
                assert await io.receive(100) == b"two"

                peer.sendall(b"three")
                peer.close()
                received = b""
                with pytest.raises(anyio.EndOfStream):
                    while True:
                        received += await io.receive(2)
                assert received == b"three"
                with pytest.raises(anyio.EndOfStream):  # and again, as anyio's streams do
                    await io.receive(100)
                assert not io._watching
            finally:
                io.unwatch()
                await stream.aclose()

    anyio.run(main, backend="asyncio")


def test_watched_io_follows_the_client_to_a_new_event_loop(short_tmp: Path) -> None:
    """A connection opened under one ``anyio.run`` and read under the next (a notebook's cells, a
    script's two ``asyncio.run``): the second loop gets the replies (the first one is closed)."""
    path = str(short_tmp / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)

        async def first() -> tuple[anyio.abc.SocketStream, WatchedIO, socket.socket]:
            stream = await anyio.connect_unix(path)
            peer, _ = listener.accept()
            io = WatchedIO(stream)
            peer.sendall(b"one")
            assert await io.receive(100) == b"one"
            assert io._watching
            return stream, io, peer

        stream, io, peer = anyio.run(first, backend="asyncio")

        async def second() -> list[bytes]:
            got = []
            for chunk in (b"two", b"three"):
                peer.sendall(chunk)
                with anyio.fail_after(10):
                    got.append(await io.receive(100))
            io.unwatch()
            await stream.aclose()
            return got

        try:
            assert anyio.run(second, backend="asyncio") == [b"two", b"three"]
        finally:
            peer.close()
