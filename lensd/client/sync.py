"""``lensd.connect_sync``: the job API for plain scripts, blocking, no event loop needed.

The async client (jobs.py) runs in an event loop on a daemon thread, reached through an anyio
``BlockingPortal``. The thread is a daemon thread on purpose: a script that never calls
``close()`` still exits (its open fits become ``lost``), where a pool thread would be joined at
interpreter exit and hang the job. The client works with ``with`` and without it, as
``sqlite3.connect`` does: ``client = lensd.connect_sync(); ...; client.close()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.from_thread import BlockingPortal

from lensd.client.jobs import FitHandle, JobClient, connect


def _portal_thread() -> tuple[BlockingPortal, Future[None]]:
    """A BlockingPortal served by an event loop on a new daemon thread; the future ends with it."""
    ready: Future[BlockingPortal] = Future()
    ended: Future[None] = Future()

    async def serve() -> None:
        async with BlockingPortal() as portal:
            ready.set_result(portal)
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
    return ready.result(), ended


class SyncFitHandle:
    """Blocking twin of ``FitHandle``."""

    def __init__(self, portal: BlockingPortal, fit: FitHandle) -> None:
        self._portal = portal
        self._fit = fit
        self.id = fit.id

    def __repr__(self) -> str:
        return repr(self._fit).replace("lensd.FitHandle", "lensd.SyncFitHandle", 1)

    def progress(self, **fields: Any) -> str:
        return self._portal.call(lambda: self._fit.progress(**fields))

    def complete(self, samples: Any = None, summary: Mapping[str, Any] | None = None, **extra: Any) -> str:
        return self._portal.call(lambda: self._fit.complete(samples, summary, **extra))

    def fail(self, message: str) -> str:
        return self._portal.call(self._fit.fail, message)


class SyncJobClient:
    """Blocking twin of ``JobClient``; usable as ``with connect_sync() as c`` or closed by hand."""

    def __init__(self, socket: str | os.PathLike[str] | None, spool: str | os.PathLike[str] | None,
                 heartbeat: float | None, **where: Any) -> None:
        self._portal, self._thread = _portal_thread()
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
        return SyncFitHandle(self._portal, self._portal.call(lambda: self._client.start(**fields)))

    def submit(self, record: Mapping[str, Any]) -> str:
        return str(self._portal.call(self._client.submit, record))

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
