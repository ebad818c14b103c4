"""``lensd.connect_sync``: the job API for plain scripts, blocking, no event loop.

Each call is a plain blocking request on one socket (``delivery.BlockingSender``: the same
reconnects and spool as the async client), so a script that never imports anyio does not load it,
and a call costs a third of what a trip through an event loop on another thread cost
(docs/performance.md). Heartbeats come from a daemon thread that takes turns with the job's calls
on the connection; a daemon thread, so a script that never calls ``close()`` still exits (its open
fits become ``lost``), where a pool thread would be joined at interpreter exit and hang the job.
The client works with ``with`` and without it, as ``sqlite3.connect`` does: ``client =
lensd.connect_sync(); ...; client.close()``. What each op says is made in fits.py, as for the
async client.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from lensd.client.delivery import BlockingSender
from lensd.client.fits import (
    FAIL_ON_EXIT_TIMEOUT,
    FAILS_OPEN_FITS,
    HEARTBEAT_MAX,
    FitEvents,
    failure_message,
    first_period,
    job_facts,
    start_record,
    submit_fields,
    target_of,
)
from lensd.errors import ClientClosed, DaemonUnavailable, InvalidRecord, LensdError
from lensd.wire import spoolfile as spooling

log = logging.getLogger("lensd.client.jobs")


class SyncFitHandle:
    """An open fit of this job; each method sends one event and returns once it is committed."""

    def __init__(self, client: SyncJobClient, events: FitEvents) -> None:
        self._client = client
        self._events = events
        self.id: str = events.id

    def __repr__(self) -> str:
        state = "open" if self.id in self._client._open else "closed"
        return f"<lensd.SyncFitHandle {self.id!r} {state}>"

    def progress(self, samples: Any = None, max_log_likelihood: float | None = None,
                 progress: float | None = None, n_samples: int | None = None) -> str:
        return self._client._send("progress", self._events.progress(samples, max_log_likelihood, progress,
                                                                    n_samples))

    def complete(self, samples: Any = None, summary: Mapping[str, Any] | None = None, **extra: Any) -> str:
        """Finish the fit with its final samples (and PyAutoFit summary, files, ... if any); without
        ``samples``, what progress last reported is kept."""
        fields = self._events.complete(samples, summary, extra)
        self._client._open.pop(self.id, None)
        try:
            return self._client._send("complete", fields)
        except InvalidRecord:
            self._client._open[self.id] = self  # refused: the fit is still open
            raise

    def fail(self, message: str) -> str:
        return self._fail(message)

    def _fail(self, message: str, deadline: float | None = None) -> str:
        self._client._open.pop(self.id, None)
        return self._client._send("fail", self._events.fail(message), deadline)


class SyncJobClient:
    """Blocking twin of ``JobClient``; usable as ``with connect_sync() as c`` or closed by hand."""

    def __init__(self, socket: str | os.PathLike[str] | None, spool: str | os.PathLike[str] | None,
                 heartbeat: float | None, **where: Any) -> None:
        self._target = target_of(socket, **where)
        self._sender = BlockingSender(self._target, spool)
        self._heartbeat = heartbeat
        self._open: dict[str, SyncFitHandle] = {}  # fits started and not yet completed or failed
        self._job = job_facts()
        self._closed = False
        self._first_contact()
        self._stopping = threading.Event()
        self._beats = threading.Thread(target=self._heartbeats, name="lensd-heartbeats", daemon=True)
        self._beats.start()

    def _first_contact(self) -> None:
        client = self._sender.first_contact()
        if self._heartbeat is None:
            self._heartbeat = first_period(client.server if client is not None else None, self._target)

    def __repr__(self) -> str:
        if self._closed:
            return "<lensd.SyncJobClient closed>"
        client = self._sender.client
        where = client.path if client is not None else self._target or "the default socket"
        return f"<lensd.SyncJobClient {where}, {len(self._open)} open fit(s)>"

    def _send(self, op: str, fields: dict[str, Any], deadline: float | None = None) -> str:
        return self._sender.send(op, fields, deadline)

    def start(self, *, name: str | None = None, unique_tag: str | None = None,
              path_prefix: str | None = None, model: Mapping[str, Any] | None = None,
              search: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
              id: str | None = None, parent_id: str | None = None) -> SyncFitHandle:
        """Open a fit (status ``running``); its job facts (SLURM ids, host, pid) are recorded."""
        events = start_record(self._job, name=name, unique_tag=unique_tag, path_prefix=path_prefix,
                              model=model, search=search, info=info, id=id, parent_id=parent_id)
        fit = SyncFitHandle(self, events)
        self._send("start", events.start())
        self._open[events.id] = fit
        return fit

    def submit(self, record: Mapping[str, Any]) -> str:
        """Store a whole finished record at once."""
        return self._send("submit", submit_fields(record))

    def _heartbeats(self) -> None:
        """One heartbeat per period naming every open fit, until the client closes (as the async
        client's task: over the connection, else spooled; a failed beat is never fatal)."""
        while not self._stopping.wait(self._heartbeat or HEARTBEAT_MAX):  # a period, not synchronisation
            ids = sorted(self._open.copy())
            if ids:
                self._beat(ids)

    def _beat(self, ids: list[str]) -> None:
        period = self._heartbeat or HEARTBEAT_MAX
        sender = self._sender
        if sender.lock.acquire(timeout=max(1.0, period / 2)):
            try:
                if self._stopping.is_set():
                    return
                client = sender.connection(connect_timeout=max(1.0, min(period / 2, 10.0)))
                client.set_timeout(max(1.0, period / 2))
                client.request("heartbeat", ids=ids)
                return
            except DaemonUnavailable:
                sender.drop()  # also after a timeout: a late reply would be read as the next one's
            except ClientClosed:  # close() began after the check above: nothing more to send
                return
            except LensdError as exc:
                log.warning("a heartbeat was refused: %s", exc)
                return
            finally:
                sender.lock.release()
        if sender.spool is not None and not self._stopping.is_set():
            try:
                spooling.write(sender.spool, "heartbeat", {"ids": ids})
            except OSError as exc:
                log.warning("could not spool a heartbeat: %s", exc)

    def _fail_open(self, exc: BaseException) -> None:
        """The job's code raised: fail its open fits with the error, if the daemon can be told
        within ``FAIL_ON_EXIT_TIMEOUT``."""
        message = failure_message(exc)
        deadline = time.monotonic() + FAIL_ON_EXIT_TIMEOUT
        for fit in list(self._open.values()):
            try:
                fit._fail(message, deadline)
            except LensdError as error:
                log.warning("could not mark %s failed: %s", fit.id, error)

    def close(self) -> None:
        """Stop the heartbeats and close the connection; open fits stay running (then ``lost``)."""
        self.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Fail the open fits for an exception from the block, then let it propagate unchanged:
        this never swallows nor replaces it."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()  # no new heartbeat: the exit's own requests come first
        try:
            if isinstance(exc, FAILS_OPEN_FITS) and self._open and not isinstance(exc, DaemonUnavailable):
                self._fail_open(exc)
        finally:
            self._sender.close()


def connect_sync(socket: str | os.PathLike[str] | None = None, spool: str | os.PathLike[str] | None = None,
                 heartbeat: float | None = None, **where: Any) -> SyncJobClient:
    """``with lensd.connect_sync() as client`` or ``client = lensd.connect_sync()`` (then
    ``client.close()``): the API of ``lensd.connect``, blocking. ``address=``, ``secret_file=``,
    ``tls_ca=`` and ``contact=`` as for ``connect()``."""
    return SyncJobClient(socket, spool, heartbeat, **where)
