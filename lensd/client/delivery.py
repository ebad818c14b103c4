"""How a write op is delivered, for the async job client (jobs.py) and the blocking one (``lensd submit``).

The rules: a daemon that answered once is waited for (reconnects with backoff, ``RETRY_DELAYS``);
with a spool folder, an op that reaches no daemon is saved there instead, at once when no daemon
was ever reached (a job on another node), after the retries when the daemon went away. A daemon
found through its contact file lends its own spool folder when none was given. A spooled record is
validated first, since no daemon checks it now. Nothing here imports anyio or numpy: ``lensd
submit`` starts without them (docs/performance.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from lensd.client import address
from lensd.client.address import TargetLike
from lensd.errors import Busy, DaemonUnavailable
from lensd.wire import codec, protocol
from lensd.wire import spoolfile as spooling

RETRY_DELAYS: Final = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0)
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


def submit_blocking(records: Sequence[Mapping[str, Any]], target: TargetLike, spool: SpoolLike) -> Iterator[str]:
    """``submit`` each record over one blocking connection; yields each outcome (SPEC §6).

    The same delivery as ``connect_sync().submit`` (reconnects, spool) without its event loop
    thread: what a one-shot ``lensd submit`` needs.
    """
    from lensd.client.blocking import BlockingClient

    client: BlockingClient | None = None
    reached = False
    try:
        try:
            client = BlockingClient(target)
            reached = True
        except (DaemonUnavailable, Busy):
            spool = contact_spool(target, spool)
            if spool is None:
                raise
        for record in records:
            fields = {"record": dict(record)}
            outcome: str | None = None
            last: DaemonUnavailable | Busy = DaemonUnavailable("the daemon did not answer")
            for delay in (0.0, *RETRY_DELAYS):
                if delay:
                    time.sleep(delay)  # backoff between reconnects, not synchronisation
                try:
                    if client is None:
                        client = BlockingClient(target)
                        reached = True
                    outcome = str(client.request("submit", **fields).get("outcome", "applied"))
                    break
                except (DaemonUnavailable, Busy) as exc:
                    last = exc
                    if client is not None:
                        client.close()
                        client = None
                    if spool is not None and not reached:
                        break  # no daemon here (another node's job): spool at once
            if outcome is None:
                if spool is None:
                    raise last
                outcome = save_to_spool(spool, "submit", fields)
            yield outcome
    finally:
        if client is not None:
            client.close()
