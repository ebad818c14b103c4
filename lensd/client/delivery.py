"""How a write op is delivered, for the async job client (jobs.py) and the blocking ones (``lensd
submit``, ``connect_sync``: ``BlockingSender``).

The rules: a daemon that answered once is waited for (reconnects with backoff, ``RETRY_DELAYS``);
with a spool folder, an op that reaches no daemon is saved there instead, at once when no daemon
was ever reached (a job on another node), after the retries when the daemon went away. A daemon
found through its contact file lends its own spool folder when none was given. A spooled record is
validated first, since no daemon checks it now. Nothing here imports anyio or numpy: ``lensd
submit`` starts without them (docs/performance.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from lensd.client import address
from lensd.client.address import TargetLike
from lensd.errors import Busy, ClientClosed, DaemonUnavailable, LensdError
from lensd.wire import codec, protocol
from lensd.wire import spoolfile as spooling

if TYPE_CHECKING:
    from lensd.client.blocking import BlockingClient

RETRY_DELAYS: Final = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0)
CLOSED: Final = "this lensd client is closed: open a new one (lensd.connect or lensd.connect_sync)"
SpoolLike = str | os.PathLike[str] | None


def contact_spool(target: TargetLike, spool: SpoolLike) -> SpoolLike:
    """``spool``, else the spool folder of the daemon's contact file (if one is found)."""
    if spool is not None:
        return spool
    route = address.resolve(target)
    return route.contact.spool if route.contact is not None else None


def save_to_spool(spool: str | os.PathLike[str], op: str, fields: dict[str, Any]) -> str:
    """Spool one op; a record is first checked as the daemon would receive it (arrays decoded)."""
    if op in protocol.RECORD_OPS:
        from lensd.domain.records import validate_record

        validate_record(codec.unpack(codec.pack(fields["record"])))
    spooling.write(spool, op, fields)
    return "spooled"


class BlockingSender:
    """The delivery rules over one blocking connection (``BlockingClient``): ``lensd submit`` and
    ``connect_sync``. Each ``send`` holds ``lock`` while it talks to the daemon, so a client's
    heartbeat thread and its job's calls take turns on the one connection."""

    def __init__(self, target: TargetLike, spool: SpoolLike) -> None:
        self.target = target
        self.spool = spool
        self.client: BlockingClient | None = None
        self.reached = False  # a daemon answered once: when it goes away, wait for its return
        self.lock = threading.Lock()
        self.closed = False  # by ``close``: every send after it raises ClientClosed

    def first_contact(self) -> BlockingClient | None:
        """Connect, or (no daemon answers) settle for the spool: the given one, else the contact
        file's; with neither, the daemon's absence is raised."""
        try:
            return self.connection()
        except (DaemonUnavailable, Busy):  # busy: its writes will retry, then spool
            self.spool = contact_spool(self.target, self.spool)
            if self.spool is None:
                raise
            return None

    def connection(self, connect_timeout: float | None = None) -> BlockingClient:
        from lensd.client.blocking import CONNECT_TIMEOUT, BlockingClient

        if self.closed:
            raise ClientClosed(CLOSED)
        if self.client is None:
            self.client = BlockingClient(self.target, connect_timeout or CONNECT_TIMEOUT)
            self.reached = True
        return self.client

    def drop(self) -> None:
        """Close the connection (lost, or left in doubt by a timeout); the next send reconnects."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def send(self, op: str, fields: dict[str, Any], deadline: float | None = None) -> str:
        """Deliver one write op: "applied"/"duplicate" from the daemon, or "spooled". With a
        ``deadline`` (``time.monotonic()``), no wait or retry goes past it, the wait for the
        connection (a heartbeat in flight) included."""
        if self.closed:  # before the spool too: a closed client writes nowhere
            raise ClientClosed(CLOSED)
        last: DaemonUnavailable | Busy = DaemonUnavailable("the daemon did not answer")
        patience = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.lock.acquire(timeout=patience):
            last = DaemonUnavailable("the connection stayed busy (a heartbeat the daemon did not answer) "
                                     "past the deadline")
        else:
            try:
                for delay in (0.0, *RETRY_DELAYS):
                    if deadline is not None and time.monotonic() + delay >= deadline:
                        break
                    if delay:
                        time.sleep(delay)  # backoff between reconnects, not synchronisation
                    try:
                        client = self.connection()
                        client.set_timeout(None if deadline is None else max(0.01, deadline - time.monotonic()))
                        return str(client.request(op, **fields).get("outcome", "applied"))
                    except (DaemonUnavailable, Busy) as exc:  # at its connection cap: wait, or spool
                        last = exc
                        self.drop()
                        if self.spool is not None and not self.reached:
                            break  # no daemon here (another node's job): spool at once
                    except LensdError:  # the daemon's answer, read whole: the connection is fine
                        raise
                    except BaseException:  # Ctrl-C, SystemExit mid-frame: the stream is in doubt
                        self.drop()
                        raise
            finally:
                self.lock.release()
        if self.spool is not None:
            return save_to_spool(self.spool, op, fields)
        raise last

    def close(self, patience: float = 1.0) -> None:
        """Close the connection; one that a request in another thread (a heartbeat) still holds
        after ``patience`` seconds is shut down under it. Every send after this raises
        ``ClientClosed``."""
        self.closed = True
        if not self.lock.acquire(timeout=patience):
            client = self.client
            if client is not None:
                client.abort()
            if not self.lock.acquire(timeout=patience):
                return  # that thread is connecting: its daemon thread ends with the process
        try:
            self.drop()
        finally:
            self.lock.release()


def submit_blocking(records: Sequence[Mapping[str, Any]], target: TargetLike, spool: SpoolLike) -> Iterator[str]:
    """``submit`` each record over one blocking connection; yields each outcome (SPEC §6).

    The same delivery as ``connect_sync().submit`` (reconnects, spool), without its heartbeat
    thread: what a one-shot ``lensd submit`` needs.
    """
    sender = BlockingSender(target, spool)
    try:
        sender.first_contact()
        for record in records:
            yield sender.send("submit", {"record": dict(record)})
    finally:
        sender.close()
