"""The writing API for jobs: ``lensd.connect`` (async; its blocking twin ``connect_sync`` is sync.py).

A job opens a fit, reports progress, and completes or fails it; every call returns only once the
daemon has committed it. When the socket cannot be reached and ``spool=`` is given, the op is
saved to the spool folder instead (another node, daemon down) and the call returns ``"spooled"``.
While fits are open, a background task sends heartbeats so the daemon can tell a dead job (no
heartbeat past ``--lost-after``) from a slow one; their period is a quarter of the daemon's
``--lost-after`` unless ``heartbeat=`` says otherwise. Transient connection losses are retried with
backoff; every op carries the fit's event counter ``seq``, so a resend is never stored twice (what
each op says is made in fits.py, for both clients). An exception that leaves ``connect()`` fails
the fits still open, with the exception's text, and then leaves the block as itself: ``except
ValueError`` around the block catches a ValueError raised in it, and ``sys.exit(3)`` still exits 3
(SLURM records the job's own code).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread

from lensd.client.address import TargetLike
from lensd.client.connection import Client
from lensd.client.delivery import CLOSED, RETRY_DELAYS, contact_spool, save_to_spool
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
from lensd.errors import Busy, ClientClosed, ConnectionBusy, DaemonUnavailable, InvalidRecord, LensdError
from lensd.wire import spoolfile as spooling

log = logging.getLogger("lensd.client.jobs")


class FitHandle:
    """An open fit of this job; each method sends one event and waits for its commit."""

    def __init__(self, client: JobClient, events: FitEvents) -> None:
        self._client = client
        self._events = events
        self.id: str = events.id

    def __repr__(self) -> str:
        state = "open" if self.id in self._client._open else "closed"
        return f"<lensd.FitHandle {self.id!r} {state}>"

    async def progress(self, samples: Any = None, max_log_likelihood: float | None = None,
                       progress: float | None = None, n_samples: int | None = None) -> str:
        return await self._client._send("progress", self._events.progress(samples, max_log_likelihood,
                                                                          progress, n_samples))

    async def complete(self, samples: Any = None, summary: Mapping[str, Any] | None = None,
                       **extra: Any) -> str:
        """Finish the fit with its final samples (and PyAutoFit summary, files, ... if any).

        Without ``samples``, the samples, max log likelihood and sample count that progress last
        reported are kept.
        """
        fields = self._events.complete(samples, summary, extra)
        self._client._open.pop(self.id, None)
        try:
            return await self._client._send("complete", fields)
        except InvalidRecord:
            self._client._open[self.id] = self  # refused: the fit is still open
            raise

    async def fail(self, message: str) -> str:
        self._client._open.pop(self.id, None)
        return await self._client._send("fail", self._events.fail(message))


class JobClient:
    """Writes over one connection, reconnecting when it drops; spools when the daemon is away."""

    def __repr__(self) -> str:
        where = self._client.path if self._client is not None else self._target or "the default socket"
        return f"<lensd.JobClient {where}, {len(self._open)} open fit(s)>"

    def __init__(self, target: TargetLike, spool: str | os.PathLike[str] | None,
                 heartbeat: float | None) -> None:
        self._target = target
        self._spool = spool
        self._heartbeat = heartbeat
        self._client: Client | None = None
        self._connecting = anyio.Lock()  # the op and the heartbeat that both find no connection open one
        self._reached = False  # a daemon answered once: when it goes away, wait for its return
        self._open: dict[str, FitHandle] = {}  # fits started and not yet completed or failed
        self._job = job_facts()
        self._closed = False  # by ``aclose`` (the end of ``connect``): every op after it raises

    async def _connection(self) -> Client:
        if self._closed:
            raise ClientClosed(CLOSED)
        async with self._connecting:
            if self._client is None or self._client.closed:
                self._client = await Client.open(self._target)
                self._reached = True
            return self._client

    def _forget_closed(self) -> None:
        """After a failed op: let go of the connection if it is closed (the client closes what it
        gives up); an open one is never dropped, which left its socket open until garbage collection."""
        if self._client is not None and self._client.closed:
            self._client = None

    async def _send(self, op: str, fields: dict[str, Any]) -> str:
        """Deliver one write op; "applied"/"duplicate" from the daemon, or "spooled"."""
        last: DaemonUnavailable | Busy | None = None
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                await anyio.sleep(delay)  # backoff between reconnects, not synchronisation
            try:
                client = await self._connection()
                reply = await client.request(op, **fields)
                return str(reply.get("outcome", "applied"))
            except (DaemonUnavailable, Busy) as exc:  # at its connection cap: wait, or spool
                last = exc
                if self._spool is not None and not self._reached:
                    break  # no daemon here (another node's job): spool at once
                self._forget_closed()
        if self._spool is not None:
            return save_to_spool(self._spool, op, fields)
        assert last is not None
        raise last

    async def start(self, *, name: str | None = None, unique_tag: str | None = None,
                    path_prefix: str | None = None, model: Mapping[str, Any] | None = None,
                    search: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                    id: str | None = None, parent_id: str | None = None) -> FitHandle:
        """Open a fit (status ``running``); its job facts (SLURM ids, host, pid) are recorded."""
        events = start_record(self._job, name=name, unique_tag=unique_tag, path_prefix=path_prefix,
                              model=model, search=search, info=info, id=id, parent_id=parent_id)
        fit = FitHandle(self, events)
        await self._send("start", events.start())
        self._open[events.id] = fit
        return fit

    async def submit(self, record: Mapping[str, Any]) -> str:
        """Store a whole finished record at once."""
        return await self._send("submit", submit_fields(record))

    async def _heartbeats(self) -> None:
        """One heartbeat per period naming every open fit, for as long as the client lives.

        Over the connection when the daemon answers, else (``spool=``) as one small spool file
        per period, so a job that reaches only the spool is not marked lost. A failed beat is never
        fatal to the job: the next one reconnects, and a fit the daemon marked lost meanwhile is
        revived by it.
        """
        while True:
            await anyio.sleep(self._heartbeat or HEARTBEAT_MAX)  # a period, not synchronisation
            if self._open:
                await self._beat(sorted(self._open))

    async def _beat(self, ids: list[str]) -> None:
        """One heartbeat, waiting at most half a period (at least 1 s) to connect and as long for the
        connection's turn and the reply: a reply not had in time closes that connection (the next
        op reconnects); a turn not had leaves it to the op holding it (a long upload is no fault)."""
        timeout = max(1.0, (self._heartbeat or HEARTBEAT_MAX) / 2)
        try:
            with anyio.fail_after(timeout):  # a connect cut short closes its socket (Client.open)
                client = await self._connection()
            await client.request("heartbeat", ids=ids, give_up_after=timeout)
            return
        except DaemonUnavailable:
            self._forget_closed()
        except ConnectionBusy:
            pass  # the op holding the connection keeps it, open; the beat goes to the spool, if any
        except TimeoutError:
            pass  # no connection within the timeout (Client.open closed what it opened)
        except LensdError as exc:
            log.warning("a heartbeat was refused: %s", exc)
            return
        if self._spool is not None:
            try:
                await anyio.to_thread.run_sync(spooling.write, self._spool, "heartbeat", {"ids": ids})
            except OSError as exc:
                log.warning("could not spool a heartbeat: %s", exc)

    async def _fail_open(self, exc: BaseException) -> None:
        """The job's code raised: fail its open fits with the error, if the daemon can be told."""
        message = failure_message(exc)
        for fit in list(self._open.values()):
            try:
                await fit.fail(message)
            except LensdError as error:
                log.warning("could not mark %s failed: %s", fit.id, error)

    async def _first_contact(self) -> None:
        server: dict[str, Any] | None = None
        try:
            server = (await self._connection()).server
        except (DaemonUnavailable, Busy):  # busy: its writes will retry, then spool
            self._spool = contact_spool(self._target, self._spool)  # else the daemon's own, from its contact file
            if self._spool is None:
                raise
        if self._heartbeat is None:
            self._heartbeat = first_period(server, self._target)

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@asynccontextmanager
async def connect(socket: str | os.PathLike[str] | None = None, spool: str | os.PathLike[str] | None = None,
                  heartbeat: float | None = None, *, address: str | None = None,
                  secret_file: str | os.PathLike[str] | None = None, tls_ca: str | os.PathLike[str] | None = None,
                  contact: str | os.PathLike[str] | None = None) -> AsyncIterator[JobClient]:
    """``async with lensd.connect() as client``: a job's connection to the daemon (SPEC §3).

    Where the daemon is: ``address=`` (``tcp://host:port`` or a socket path) or ``socket=``, else
    ``$LENSD_ADDRESS``/``$LENSD_SOCKET``, else the contact file, else the default socket
    (``lensd.client.address``). Without ``spool=``, a daemon found through its contact file lends
    its own spool folder when no address answers.

    The heartbeats run in a task group around the block, but an exception from the block is caught
    inside the group and raised again after it, so it leaves as itself and not wrapped in an
    ExceptionGroup (which ``except ValueError`` would not catch and which turns ``sys.exit(3)``
    into exit 1).
    """
    client = JobClient(target_of(socket, address, secret_file, tls_ca, contact), spool, heartbeat)
    await client._first_contact()
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(client._heartbeats)
            try:
                yield client
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:  # raised again below, unwrapped
                error = exc
                if isinstance(exc, FAILS_OPEN_FITS) and client._open and not isinstance(exc, DaemonUnavailable):
                    with anyio.CancelScope(shield=True), anyio.move_on_after(FAIL_ON_EXIT_TIMEOUT):
                        await client._fail_open(exc)
            finally:
                group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
    if error is not None:
        try:
            raise error
        finally:
            error = None  # no reference cycle through this frame

