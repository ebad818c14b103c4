"""``lensd.connect_sync``: the job API for plain scripts, blocking, no event loop needed.

The async client (jobs.py) runs in an event loop on a daemon thread, reached through an anyio
``BlockingPortal``. The thread is a daemon thread on purpose: a script that never calls
``close()`` still exits (its open fits become ``lost``), where a pool thread would be joined at
interpreter exit and hang the job. The client works with ``with`` and without it, as
``sqlite3.connect`` does: ``client = lensd.connect_sync(); ...; client.close()``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from lensd.client.jobs import FitHandle, JobClient, connect

T = TypeVar("T")


@dataclass(frozen=True)
class _Loop:
    """The client's event loop thread: its portal (start, stop, the session), its asyncio loop
    (one call per job API call: ``asyncio.run_coroutine_threadsafe`` costs a third less CPU than
    ``BlockingPortal.call``, 131 against 197 µs a call here, docs/performance.md), and its end."""

    portal: BlockingPortal
    loop: asyncio.AbstractEventLoop
    ended: Future[None]

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """``await function()`` on the loop, from this thread; as ``portal.call`` once the loop ended."""
        if self.ended.done() or self.loop.is_closed():
            return self.portal.call(function)  # raises: the portal is not running

        async def run() -> T:
            return await function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()


def _portal_thread() -> _Loop:
    """A BlockingPortal served by an event loop on a new daemon thread."""
    ready: Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]] = Future()
    ended: Future[None] = Future()

    async def serve() -> None:
        async with BlockingPortal() as portal:
            ready.set_result((portal, asyncio.get_running_loop()))
            await portal.sleep_until_stopped()

    def run() -> None:
        try:
            anyio.run(serve, backend="asyncio")
        except BaseException as exc:  # handed to whoever waits on the thread
            if not ready.done():
                ready.set_exception(exc)
            ended.set_exception(exc)
        else:
            ended.set_result(None)

    threading.Thread(target=run, name="lensd-client", daemon=True).start()
    portal, loop = ready.result()
    return _Loop(portal, loop, ended)


class SyncFitHandle:
    """Blocking twin of ``FitHandle``."""

    def __init__(self, loop: _Loop, fit: FitHandle) -> None:
        self._loop = loop
        self._fit = fit
        self.id = fit.id

    def __repr__(self) -> str:
        return repr(self._fit).replace("lensd.FitHandle", "lensd.SyncFitHandle", 1)

    def progress(self, **fields: Any) -> str:
        return self._loop.call(lambda: self._fit.progress(**fields))

    def complete(self, samples: Any = None, summary: Mapping[str, Any] | None = None, **extra: Any) -> str:
        return self._loop.call(lambda: self._fit.complete(samples, summary, **extra))

    def fail(self, message: str) -> str:
        return self._loop.call(lambda: self._fit.fail(message))


class SyncJobClient:
    """Blocking twin of ``JobClient``; usable as ``with connect_sync() as c`` or closed by hand."""

    def __init__(self, socket: str | os.PathLike[str] | None, spool: str | os.PathLike[str] | None,
                 heartbeat: float | None, **where: Any) -> None:
        self._loop = _portal_thread()
        self._portal, self._thread = self._loop.portal, self._loop.ended
        self._session = self._portal.wrap_async_context_manager(connect(socket, spool, heartbeat, **where))
        try:
            self._client: JobClient = self._session.__enter__()
        except BaseException:
            self._stop_portal()
            raise
        self._closed = False

    def _stop_portal(self) -> None:
        self._portal.call(self._portal.stop)
        self._thread.result()

    def __repr__(self) -> str:
        if self._closed:
            return "<lensd.SyncJobClient closed>"
        return repr(self._client).replace("lensd.JobClient", "lensd.SyncJobClient", 1)

    def start(self, **fields: Any) -> SyncFitHandle:
        return SyncFitHandle(self._loop, self._loop.call(lambda: self._client.start(**fields)))

    def submit(self, record: Mapping[str, Any]) -> str:
        return str(self._loop.call(lambda: self._client.submit(record)))

    def close(self) -> None:
        """Stop the heartbeats and close the connection; open fits stay running (then ``lost``)."""
        self.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Hand the block's exception to the async client (it fails the open fits), then let it
        propagate unchanged: this never swallows nor replaces it."""
        if self._closed:
            return
        self._closed = True
        try:
            self._session.__exit__(kind, exc, traceback)
        except BaseException as raised:
            if raised is not exc:
                raise
        finally:
            self._stop_portal()


def connect_sync(socket: str | os.PathLike[str] | None = None, spool: str | os.PathLike[str] | None = None,
                 heartbeat: float | None = None, **where: Any) -> SyncJobClient:
    """``with lensd.connect_sync() as client`` or ``client = lensd.connect_sync()`` (then
    ``client.close()``): the API of ``lensd.connect``, blocking. ``address=``, ``secret_file=``,
    ``tls_ca=`` and ``contact=`` as for ``connect()``."""
    return SyncJobClient(socket, spool, heartbeat, **where)
