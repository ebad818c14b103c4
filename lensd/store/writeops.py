"""Write operations: what the single writer applies, built from validated records and events.

Every write that reaches the database is one of four shapes, so the writer has one code path
for socket events, spool files, watched folders and ``lensd ingest``:

- ``Upsert``: a whole record (submit, start, complete, an ingested folder) replaces the fit.
- ``Patch``: some columns of one fit change (progress, fail), with optional new samples/instance.
- ``Touch``: heartbeats; a ``lost`` fit is revived, an unknown id is ignored.
- ``MarkLost``: running fits silent for ``silent_for`` seconds become ``lost``.

and two that a person asks for (``lensd delete``, ``lensd tag``), applied by store/adminops.py in
the same transaction as the batch they arrive in:

- ``Delete``: fits (and their facts, nodes, payloads, history) are removed.
- ``Tag``: keys of one fit's ``info`` are set (a None value removes the key).

``progress`` keeps the latest state of a running fit (max log likelihood, sample count, fraction
done, samples) and adds a point to its convergence history (``Patch.history``); like every event it
marks the fit ``running``, which revives a ``lost`` one.

``seq`` is the client's event counter for one fit: an op whose seq is not above the stored one was
applied before (a client retry after a lost ack) and is skipped, which makes re-sends idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lensd.domain.records import Record, _instance, _number, _text, count, validate_record, with_status
from lensd.domain.samples import Samples
from lensd.errors import InvalidRecord


@dataclass(frozen=True)
class Upsert:
    record: Record
    seq: int | None = None
    written_at: float | None = None  # a spooled record's time: never replaces a later change

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.record.id,)


@dataclass(frozen=True)
class Patch:
    id: str
    seq: int | None
    columns: dict[str, Any]
    samples: Samples | None = None
    instance: dict[str, Any] | None = None
    history: bool = False  # a progress event: its columns become a point of the fit's history

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id,)


@dataclass(frozen=True)
class Touch:
    fit_ids: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """None: a touch is one keyed UPDATE per fit and needs no stored state read first.

        (Skipping that read doubles the heartbeats a daemon absorbs: docs/performance.md.)
        """
        return ()


@dataclass(frozen=True)
class MarkLost:
    """Running fits with no event for ``silent_for`` seconds, by the writer's clock, become lost.

    The writer's clock, not the sender's: every time a batch stores comes from its writer's one
    clock (on PostgreSQL the server's), so the sweep compares like with like (docs/decisions.md).
    """

    silent_for: float
    ids: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Delete:
    fit_ids: tuple[str, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return ()  # applied by adminops, which reads what it needs itself


@dataclass(frozen=True)
class Tag:
    id: str
    info: dict[str, Any]

    @property
    def ids(self) -> tuple[str, ...]:
        return ()


Op = Upsert | Patch | Touch | MarkLost


def superseded(op: Op | AdminOp) -> bool:
    """A progress event or a heartbeat: the next one of its fit replaces what it says.

    What must survive a power loss is a fit's record, start, completion, failure and the daemon's
    own marks (lost, delete, tag); a batch holding only superseded events is committed without the
    fsync at ``--durability full`` (docs/decisions.md: what that exposes).
    """
    return isinstance(op, Touch) or (isinstance(op, Patch) and op.history)
AdminOp = Delete | Tag
MAX_DELETE: Final = 1_000_000


def _seq(fields: Mapping[str, Any]) -> int | None:
    seq = fields.get("seq")
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq > 2**62:
        raise InvalidRecord("seq must be a non-negative integer")
    return seq


def _fit_id(fields: Mapping[str, Any]) -> str:
    fit = _text(fields, "id")
    if not fit:
        raise InvalidRecord("the event needs the fit's id")
    return fit


def op_from_request(op: str, fields: Mapping[str, Any]) -> Op:
    """Turn a validated wire request (SPEC §6 write ops) into a write operation."""
    if op in ("submit", "start", "complete"):
        record = validate_record(fields.get("record"))
        if op == "start":
            record = with_status(record, "running")
        elif op == "complete" and record.status not in ("completed", "failed"):
            record = with_status(record, "completed")
        return Upsert(record, _seq(fields))
    if op == "progress":
        unknown = set(fields) - {"id", "seq", "max_log_likelihood", "n_samples", "progress", "samples",
                                 "instance"}
        if unknown:
            raise InvalidRecord(f"unknown progress fields {sorted(map(str, unknown))}")
        columns: dict[str, Any] = {"status": "running"}
        samples = None if fields.get("samples") is None else Samples.from_wire(fields["samples"])
        for key in ("max_log_likelihood", "progress"):
            value = _number(fields, key)
            if value is None and key == "max_log_likelihood" and samples is not None:
                best = samples.max_log_likelihood_sample
                value = None if best is None else best.log_likelihood
            if value is not None:
                columns[key] = value
        if not 0.0 <= columns.get("progress", 0.0) <= 1.0:
            raise InvalidRecord("progress is the fraction done: a number from 0 to 1")
        n_samples = count(fields.get("n_samples", len(samples) if samples is not None else None), "n_samples")
        if n_samples is not None:
            columns["n_samples"] = n_samples
        return Patch(_fit_id(fields), _seq(fields), columns, samples, _instance(fields.get("instance")),
                     history=True)
    if op == "fail":
        message = _text(fields, "error") or "failed"
        return Patch(_fit_id(fields), _seq(fields), {"status": "failed", "error": message})
    if op == "heartbeat":
        ids = fields.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(ids) > 100_000:
            raise InvalidRecord("heartbeat needs ids: a list of fit ids")
        return Touch(tuple(ids))
    raise InvalidRecord(f"{op!r} is not a write operation")


def admin_from_request(op: str, fields: Mapping[str, Any]) -> AdminOp:
    """``delete`` ({"ids": [...]}) or ``tag`` ({"id": ..., "info": {...}}) from an untrusted request."""
    if op == "delete":
        ids = fields.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids) or len(ids) > MAX_DELETE:
            raise InvalidRecord(f"delete needs ids: a list of at most {MAX_DELETE} fit ids")
        return Delete(tuple(dict.fromkeys(ids)))
    if op == "tag":
        info = fields.get("info")
        if not isinstance(info, dict) or not info or not all(isinstance(k, str) and k for k in info):
            raise InvalidRecord("tag needs info: a map of keys to JSON values")
        checked = validate_record({"id": _fit_id(fields), "status": "running", "info": info})  # JSON values only
        return Tag(checked.id, dict(info))
    raise InvalidRecord(f"{op!r} is not an admin operation")
