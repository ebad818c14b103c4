"""What a job's writes say, for both job clients: ``connect`` (jobs.py, async) and ``connect_sync``
(sync.py, blocking).

A fit's handle keeps its record, its event counter ``seq`` and what progress last reported (kept
by ``complete()`` when it is given no samples); the fields of every op are made here once, so the
two clients cannot say different things. Nothing here imports anyio: a script that only uses
``connect_sync`` never loads an event loop.

A fit's counter starts at the wall clock in microseconds, so a job that is run again (a SLURM
requeue) opens the same fit id above every event of the earlier run, instead of being taken for a
resend.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from lensd.client import address
from lensd.client.address import Target, TargetLike
from lensd.domain.records import Record, validate_record
from lensd.domain.samples import Samples

# SLURM_SUBMIT_DIR and LENSD_SLURM_SCRIPT tell ``lensd retry`` which script to resubmit (lensd/domain/slurm.py)
SLURM_VARIABLES: Final = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME",
                          "SLURM_SUBMIT_DIR", "LENSD_SLURM_SCRIPT")
HEARTBEAT_MIN: Final = 0.02  # the daemon's --lost-after can be as short as 0.1 s
HEARTBEAT_MAX: Final = 60.0
HEARTBEAT_SHARE: Final = 4  # beats per --lost-after period: one late beat never loses a fit
FAIL_ON_EXIT_TIMEOUT: Final = 10.0  # the longest a raising job waits to report its open fits failed
# What leaving the block fails the open fits for: an error, sys.exit() or Ctrl-C in the job's code.
# A cancellation is not among them (the caller's own timeout, or the loop shutting down).
FAILS_OPEN_FITS: Final = (Exception, SystemExit, KeyboardInterrupt)


def job_facts() -> dict[str, Any]:
    """Where this process runs: SLURM ids when set (the strings the environment holds), host, pid,
    start time."""
    facts: dict[str, Any] = {name: os.environ[name] for name in SLURM_VARIABLES if os.environ.get(name)}
    facts.update(host=socket.gethostname(), pid=os.getpid(), started_at=time.time())
    return facts


def heartbeat_period(lost_after: float) -> float:
    """A quarter of the daemon's --lost-after, at most a minute (one late beat never loses a fit)."""
    return min(HEARTBEAT_MAX, max(HEARTBEAT_MIN, lost_after / HEARTBEAT_SHARE))


def first_period(server: Mapping[str, Any] | None, target: TargetLike) -> float | None:
    """The heartbeat period a client takes at first contact: from the daemon's welcome (its
    ``--lost-after``), else, when no daemon answered, from the contact file; None (the longest
    period) when neither says."""
    if server is not None:
        return heartbeat_period(float(server.get("lost_after") or 600.0))
    route = address.resolve(target)
    if route.contact is not None and route.contact.lost_after:
        return heartbeat_period(route.contact.lost_after)
    return None


def target_of(socket: str | os.PathLike[str] | None = None, address: str | None = None,
              secret_file: str | os.PathLike[str] | None = None, tls_ca: str | os.PathLike[str] | None = None,
              contact: str | os.PathLike[str] | None = None) -> Target:
    """The ``Target`` that the keyword arguments of ``connect()`` and friends describe."""
    def path(value: str | os.PathLike[str] | None) -> Path | None:
        return Path(value) if value is not None else None

    return Target(address=address, socket=path(socket), contact=path(contact), secret_file=path(secret_file),
                  tls_ca=path(tls_ca))


def failure_message(exc: BaseException) -> str:
    """How an exception that left the job's block is recorded as its open fits' error."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def submit_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a ``submit``: the whole record, its samples as they travel."""
    fields = dict(record)
    if isinstance(fields.get("samples"), Samples):
        fields["samples"] = fields["samples"].to_wire()
    return {"record": fields}


def start_record(job: Mapping[str, Any], *, name: str | None = None, unique_tag: str | None = None,
                 path_prefix: str | None = None, model: Mapping[str, Any] | None = None,
                 search: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None,
                 id: str | None = None, parent_id: str | None = None) -> FitEvents:
    """A new fit (status ``running``) with this job's facts, checked as the daemon will check it."""
    record: dict[str, Any] = {
        "name": name, "unique_tag": unique_tag, "path_prefix": path_prefix,
        "model": dict(model) if model is not None else None,
        "search": dict(search) if search is not None else None,
        "info": dict(info) if info is not None else None, "status": "running",
        "job": dict(job), "parent_id": parent_id,
    }
    if id is not None:
        record["id"] = id
    checked: Record = validate_record(record)
    record["id"] = checked.id
    return FitEvents(record, time.time_ns() // 1000)


class FitEvents:
    """One open fit's events as fields to send: ``start``, then ``progress`` and ``complete`` or
    ``fail``, each with the next ``seq``."""

    def __init__(self, record: dict[str, Any], seq: int) -> None:
        self.record = record
        self.id: str = record["id"]
        self.seq = seq
        self._model = record.get("model")
        self._latest: dict[str, Any] = {}  # what progress reported, kept if complete() has no samples

    def start(self) -> dict[str, Any]:
        return {"record": self.record, "seq": self.seq}

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def progress(self, samples: Any = None, max_log_likelihood: float | None = None,
                 progress: float | None = None, n_samples: int | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"id": self.id, "seq": self._next_seq()}
        if samples is not None:
            checked = Samples.from_wire(samples, self._model)
            fields["samples"] = checked.to_wire()
            fields["instance"] = checked.max_log_likelihood_values()
        for key, value in (("max_log_likelihood", max_log_likelihood), ("progress", progress),
                           ("n_samples", n_samples)):
            if value is not None:
                fields[key] = value
        if "samples" in fields:  # newer samples make the older max log L and count stale
            self._latest = {"samples": fields["samples"]}
        self._latest.update((k, fields[k]) for k in ("max_log_likelihood", "n_samples") if k in fields)
        return fields

    def complete(self, samples: Any = None, summary: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Without ``samples``, the samples, max log likelihood and sample count that progress
        last reported are kept."""
        record = {**self.record, "status": "completed", "progress": 1.0, **(extra or {})}
        if samples is not None:
            record["samples"] = samples.to_wire() if isinstance(samples, Samples) else samples
        else:
            record = {**self._latest, **record}
        if summary is not None:
            record["summary"] = summary
        return {"record": record, "seq": self._next_seq()}

    def fail(self, message: str) -> dict[str, Any]:
        return {"id": self.id, "seq": self._next_seq(), "error": str(message)}
