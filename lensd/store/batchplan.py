"""Plan a batch of write operations as rows for ``executemany``.

The writer reads what it needs to know about the batch's fits in one query (key, seq,
created_at), then this module works out, in plain Python, every row to delete, insert and update.
The writer then runs one ``executemany`` per statement, so a batch of any size costs a handful of
calls into sqlite, never one awaited call per record.

What a whole record writes apart from its key and times (JSON columns, facts, class nodes, packed
payloads) depends on the record alone: ``prepare`` works it out when the record arrives, on the
event loop, while the writer thread is still busy with the batch before, and ``plan_batch`` only
fills in keys and times. Planned inside the batch, that work held up every commit (about a sixth
of the writer's time at 1,000 samples a fit).

Job facts are stored as the client sent them, with one addition: a SLURM id (``NUMERIC_JOB_KEYS``)
arrives as the digit string the environment holds, and is indexed as that string *and* as its
number, so ``agg.job["SLURM_ARRAY_TASK_ID"] == "7"``, ``== 7`` and ``< 100`` all find task 7, and
ordering by it is numeric ("12" after "7"). ``fit.job`` still gives the string.

Each progress event adds a row to ``progress_history``. A fit's history is bounded: once it holds
more than ``HISTORY_MAX`` points, every second one is dropped (the first and the latest are kept),
so a long fit keeps between ``HISTORY_MAX / 2`` and ``HISTORY_MAX`` points spread over its whole
run, the recent ones denser. A ``start`` (an upsert of a running record) clears the history: the fit
is being run again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from lensd.domain import modeltree
from lensd.domain.records import Record
from lensd.domain.samples import Samples
from lensd.memo import Memo
from lensd.store.schema import FIT_COLUMNS, KIND_INFO, KIND_JOB, KIND_MEDIAN, KIND_VALUE, encode_fact
from lensd.store.writeops import MarkLost, Op, Touch, Upsert
from lensd.wire import codec

APPLIED = "applied"
DUPLICATE = "duplicate"

# The SQL below is what both engines accept (sqlite >= 3.24 and PostgreSQL): ON CONFLICT upserts,
# a named subquery. A stored fit keeps its created_at; a row the batch made for a new fit (the key
# PostgreSQL's writer reserved for it, its created_at NULL: pgwriter.py) takes the record's.
UPSERT_FIT_SQL = (
    f"INSERT INTO fits (fit_key, {', '.join(FIT_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * (len(FIT_COLUMNS) + 1))}) "
    "ON CONFLICT(fit_key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" if c != "created_at" else "created_at = coalesce(fits.created_at, "
                "excluded.created_at)" for c in FIT_COLUMNS)
)
INSERT_FACT_SQL = "INSERT INTO facts (fit_key, kind, key, num, txt, json) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_NODE_SQL = "INSERT INTO nodes (fit_key, path, class_path, class_name) VALUES (?, ?, ?, ?)"
INSERT_PAYLOAD_SQL = ("INSERT INTO payloads (fit_key, name, data) VALUES (?, ?, ?) "
                      "ON CONFLICT(fit_key, name) DO UPDATE SET data = excluded.data")
DELETE_FACTS_SQL = "DELETE FROM facts WHERE fit_key = ?"
DELETE_FACT_KIND_SQL = "DELETE FROM facts WHERE fit_key = ? AND kind = ?"
DELETE_NODES_SQL = "DELETE FROM nodes WHERE fit_key = ?"
DELETE_PAYLOADS_SQL = "DELETE FROM payloads WHERE fit_key = ?"
TOUCH_SQL = ("UPDATE fits SET last_event_at = ?, "
             "updated_at = CASE WHEN status = 'lost' THEN ? ELSE updated_at END, "
             "status = CASE WHEN status = 'lost' THEN 'running' ELSE status END WHERE id = ?")
INSERT_HISTORY_SQL = ("INSERT INTO progress_history (fit_key, t, max_log_likelihood, n_samples, progress) "
                      "VALUES (?, ?, ?, ?, ?)")
DELETE_HISTORY_SQL = "DELETE FROM progress_history WHERE fit_key = ?"
# Driven by the fit's own index range, so the guard (a count of that range) is all a fit under
# HISTORY_MAX pays: 19 µs against 190 µs for ranking its points every time (docs/performance.md).
# Parameters: fit_key, fit_key, HISTORY_MAX, fit_key, HISTORY_MAX (``thin_history_row``).
THIN_HISTORY_SQL = (
    "DELETE FROM progress_history WHERE fit_key = ? "
    "AND (SELECT count(*) FROM progress_history WHERE fit_key = ?) > ? "
    "AND point IN (SELECT point FROM ("
    "SELECT point, row_number() OVER (ORDER BY t, point) AS r, count(*) OVER () AS n "
    "FROM progress_history WHERE fit_key = ?) AS ranked WHERE n > ? AND r % 2 = 0 AND r < n)"
)
HISTORY_MAX: Final = 256


def thin_history_row(fit_key: int) -> tuple[int, int, int, int, int]:
    """``THIN_HISTORY_SQL``'s parameters for one fit."""
    return (fit_key, fit_key, HISTORY_MAX, fit_key, HISTORY_MAX)
HISTORY_COLUMNS: Final = ("max_log_likelihood", "n_samples", "progress")
MARK_LOST_SQL = ("UPDATE fits SET status = 'lost', updated_at = ? "
                 "WHERE status = 'running' AND last_event_at < ?")

SAMPLES_PAYLOAD = "samples"
FILE_PAYLOAD_PREFIX = "file:"
NUMERIC_JOB_KEYS: Final = frozenset({"SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"})
_MAX_EXACT_DIGITS: Final = 15  # a REAL holds every integer of up to 15 digits exactly


@dataclass(frozen=True)
class Existing:
    """What the writer knows of a stored fit before the batch."""

    fit_key: int
    seq: int | None
    created_at: float | None
    source_sig: str | None = None  # the folder signature it was read from: the same again is a duplicate
    updated_at: float | None = None


@dataclass
class _Pending:
    """The state one fit will have after the batch: a whole row, or column changes."""

    fit_key: int
    seq: int | None
    row: dict[str, Any] | None = None  # set when the fit is written whole
    columns: dict[str, Any] = field(default_factory=dict)
    replace_all: bool = False
    facts: dict[int, list[FactRow]] = field(default_factory=dict)
    nodes: dict[str, str] | None = None
    payloads: dict[str, bytes] = field(default_factory=dict)
    restarted: bool = False  # a running record written whole: its old history goes
    history: list[tuple[Any, ...]] = field(default_factory=list)


FactRow = tuple[str, float | None, str | None, str | None]  # key, num, txt, json


@dataclass(frozen=True)
class Prepared:
    """What a whole record writes that depends on the record alone (``prepare``)."""

    columns: dict[str, Any]  # its ``fits`` row but for the times
    facts: dict[int, list[FactRow]]
    nodes: dict[str, str]
    payloads: dict[str, bytes]


@dataclass
class Plan:
    """Statement → parameter rows, in the order the writer must run them."""

    statements: list[tuple[str, list[tuple[Any, ...]]]] = field(default_factory=list)

    def add(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        if rows:
            self.statements.append((sql, rows))


_NODES: Final[Memo[str | None, dict[str, str]]] = Memo()  # model JSON -> its class nodes (read-only dicts)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


_MODEL_TEXT: Final[Memo[bytes, str]] = Memo()  # a received model's bytes -> its JSON


def _model_json(value: Any) -> str | None:
    """A model in its own key order: PyAutoFit's parameter order (``model.paths``) is the order
    model.json lists its priors in, which sorting the keys would lose. A received model's text is
    remembered by its bytes (a campaign sends one model with every fit)."""
    if value is None:
        return None
    if not isinstance(value, codec.Received):
        return json.dumps(value, default=str)
    return _MODEL_TEXT.get(value.packed, lambda: json.dumps(value, default=str))


def _class_nodes(model_json: str | None, model: Any) -> dict[str, str]:
    """``modeltree.class_nodes(model)``, remembered by the model's JSON text: the fits of one
    survey share a handful of models, and walking each one again is a tenth of planning a fit."""
    return _NODES.get(model_json, lambda: modeltree.class_nodes(model or {}))


def _record_columns(record: Record) -> dict[str, Any]:
    """The ``fits`` row of a whole record but for its times."""
    return {
        "id": record.id, "name": record.name, "path_prefix": record.path_prefix,
        "unique_tag": record.unique_tag, "status": record.status,
        "max_log_likelihood": record.max_log_likelihood, "log_evidence": record.log_evidence,
        "parent_id": record.parent_id, "is_grid_search": int(record.is_grid_search),
        "model": _model_json(record.model), "search": _json(record.search), "info": _json(record.info),
        "job": _json(record.job), "summary": _json(record.summary), "instance": _json(record.instance),
        "error": record.error, "progress": record.progress, "n_samples": record.n_samples,
        "seq": None, "source": record.source, "source_sig": record.source_sig,
    }


def _with_times(columns: Mapping[str, Any], record: Record, created_at: float, now: float) -> dict[str, Any]:
    """The record's times; a fit is never completed before it was created (a folder ingested
    today that PyAutoFit completed last week was created no later than last week)."""
    completed = (record.completed_at if record.completed_at is not None
                 else (now if record.status in ("completed", "failed") else None))
    created = record.created_at or created_at
    return {
        **columns,
        "created_at": created if completed is None else min(created, completed), "updated_at": now,
        "completed_at": completed, "last_event_at": now,
    }


def _fact_rows(kind: int, values: Mapping[str, Any]) -> list[FactRow]:
    return [(key, *fact_columns(kind, key, value)) for key, value in values.items()]


def prepare(op: Op) -> Prepared | None:
    """The record-only part of an ``Upsert``'s rows (None for other ops), for ``plan_batch``."""
    return _prepare_record(op.record) if isinstance(op, Upsert) else None


def _prepare_record(record: Record) -> Prepared:
    columns = _record_columns(record)
    facts = {KIND_VALUE: _fact_rows(KIND_VALUE, record.instance),
             KIND_MEDIAN: _fact_rows(KIND_MEDIAN, record.median),
             KIND_INFO: _fact_rows(KIND_INFO, record.info or {}),
             KIND_JOB: _fact_rows(KIND_JOB, record.job or {})}
    return Prepared(columns, facts, _class_nodes(columns["model"], record.model),
                    record_payloads(record))


def record_payloads(record: Record) -> dict[str, bytes]:
    payloads = {f"{FILE_PAYLOAD_PREFIX}{name}": codec.pack(value) for name, value in record.files.items()}
    if record.samples is not None:
        payloads[SAMPLES_PAYLOAD] = samples_payload(record.samples)
    return payloads


def samples_payload(samples: Samples) -> bytes:
    """The stored form of samples: the bytes they arrived as when those are already that form."""
    return samples.packed if samples.packed is not None else codec.pack(samples.to_wire())


def fact_columns(kind: int, key: str, value: Any) -> tuple[float | None, str | None, str | None]:
    """``(num, txt, json)`` of a fact: ``encode_fact``, plus the number of a SLURM id string."""
    num, txt, json_text = encode_fact(value)
    if (kind == KIND_JOB and key in NUMERIC_JOB_KEYS and txt is not None and txt.isascii()
            and txt.isdigit() and len(txt) <= _MAX_EXACT_DIGITS):
        num = float(txt)
    return num, txt, json_text


def _minimal_row(fit_id: str, created_at: float, now: float) -> dict[str, Any]:
    row = dict.fromkeys(FIT_COLUMNS)
    row.update(id=fit_id, status="running", is_grid_search=0, created_at=created_at, updated_at=now,
               last_event_at=now)
    return row


def _stale(op: Upsert, known: Existing | None) -> bool:
    """Whether a spooled whole record is older than the stored fit's last change.

    Only for a fit stored without a seq (written by a record that had none): otherwise the seqs
    order the two, since the daemon's own ``updated_at`` is when a write was applied, not made.
    """
    return (op.written_at is not None and known is not None and known.seq is None
            and known.updated_at is not None and known.updated_at > op.written_at)


def plan_batch(
    ops: Sequence[Op], existing: Mapping[str, Existing], next_key: int, now: float,
    prepared: Sequence[Prepared | None] | None = None, keys: Mapping[str, int] | None = None,
) -> tuple[Plan, list[str], int]:
    """Rows for a batch; returns the plan, one outcome per op (APPLIED/DUPLICATE), the next free key.

    ``prepared`` is ``prepare(op)`` of each op when the caller worked it out already. ``keys``: the
    key of each new fit when the database handed them out (PostgreSQL's identity); else new fits
    take ``next_key`` on.
    """
    pending: dict[str, _Pending] = {}
    outcomes: list[str] = []
    touches: list[tuple[Any, ...]] = []
    lost_cutoffs: list[float] = []

    def pending_for(fit_id: str) -> _Pending:
        nonlocal next_key
        if fit_id not in pending:
            known = existing.get(fit_id)
            if known is None:
                if keys is None:
                    key, next_key = next_key, next_key + 1
                else:
                    key = keys[fit_id]
                pending[fit_id] = _Pending(key, None, row=_minimal_row(fit_id, now, now), replace_all=True)
            else:
                pending[fit_id] = _Pending(known.fit_key, known.seq)
        return pending[fit_id]

    for index, op in enumerate(ops):
        if isinstance(op, Touch):
            touches.extend((now, now, fit_id) for fit_id in op.fit_ids)
            outcomes.append(APPLIED)
            continue
        if isinstance(op, MarkLost):
            lost_cutoffs.append(now - op.silent_for)
            outcomes.append(APPLIED)
            continue
        fit_id = op.record.id if isinstance(op, Upsert) else op.id
        known_fit = existing.get(fit_id)
        if (isinstance(op, Upsert) and op.record.source_sig is not None and known_fit is not None
                and known_fit.source_sig == op.record.source_sig and fit_id not in pending):
            outcomes.append(DUPLICATE)  # the same folder, unchanged since it was stored
            continue
        state = pending_for(fit_id)
        if op.seq is not None and state.seq is not None and op.seq <= state.seq:
            outcomes.append(DUPLICATE)
            continue
        if isinstance(op, Upsert) and _stale(op, existing.get(fit_id)):
            outcomes.append(DUPLICATE)  # a replayed spool file: the fit changed after it was written
            continue
        if op.seq is not None:
            state.seq = op.seq
        if isinstance(op, Upsert):
            known = existing.get(fit_id)
            created = known.created_at if known and known.created_at else now
            ready = (prepared[index] if prepared is not None else None) or _prepare_record(op.record)
            state.row = _with_times(ready.columns, op.record, created, now)
            state.columns, state.replace_all = {}, True
            state.facts, state.nodes, state.payloads = dict(ready.facts), ready.nodes, dict(ready.payloads)
            if op.record.status == "running":
                state.restarted, state.history = True, []
        else:
            changes = dict(op.columns, updated_at=now, last_event_at=now)
            if op.columns.get("status") == "failed":
                changes["completed_at"] = now
            if state.row is not None:
                state.row.update(changes)
            else:
                state.columns.update(changes)
            if op.samples is not None:
                state.payloads[SAMPLES_PAYLOAD] = samples_payload(op.samples)
            if op.instance is not None:
                state.facts[KIND_VALUE] = _fact_rows(KIND_VALUE, op.instance)
                (state.row if state.row is not None else state.columns)["instance"] = _json(op.instance)
            if op.history:
                state.history.append((state.fit_key, now, *(op.columns.get(c) for c in HISTORY_COLUMNS)))
        outcomes.append(APPLIED)

    plan = Plan()
    whole = [s for s in pending.values() if s.replace_all]
    plan.add(DELETE_FACTS_SQL, ((s.fit_key,) for s in whole))
    plan.add(DELETE_NODES_SQL, ((s.fit_key,) for s in whole))
    plan.add(DELETE_PAYLOADS_SQL, ((s.fit_key,) for s in whole))
    plan.add(DELETE_FACT_KIND_SQL, ((s.fit_key, kind) for s in pending.values() if not s.replace_all
                                    for kind in s.facts))
    plan.add(UPSERT_FIT_SQL, ((s.fit_key, *(dict(s.row, seq=s.seq)[c] for c in FIT_COLUMNS))
                              for s in whole if s.row is not None))
    by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
    for s in pending.values():
        if not s.replace_all and (s.columns or s.seq is not None):
            columns = dict(s.columns, seq=s.seq)
            names = tuple(sorted(columns))
            by_columns[names].append((*(columns[n] for n in names), s.fit_key))
    for names, rows in by_columns.items():
        assignments = ", ".join(f"{name} = ?" for name in names)
        plan.add(f"UPDATE fits SET {assignments} WHERE fit_key = ?", rows)  # noqa: S608 - names are ours
    plan.add(INSERT_FACT_SQL, ((s.fit_key, kind, *row) for s in pending.values()
                               for kind, rows in s.facts.items() for row in rows))
    plan.add(INSERT_NODE_SQL, ((s.fit_key, path, class_path, modeltree.class_name(class_path))
                               for s in pending.values() if s.nodes
                               for path, class_path in s.nodes.items()))
    plan.add(INSERT_PAYLOAD_SQL, ((s.fit_key, name, data) for s in pending.values()
                                  for name, data in s.payloads.items()))
    plan.add(DELETE_HISTORY_SQL, ((s.fit_key,) for s in pending.values() if s.restarted))
    plan.add(INSERT_HISTORY_SQL, (row for s in pending.values() for row in s.history))
    plan.add(THIN_HISTORY_SQL, (thin_history_row(s.fit_key) for s in pending.values() if s.history))
    plan.add(TOUCH_SQL, touches)
    plan.add(MARK_LOST_SQL, ((now, cutoff) for cutoff in lost_cutoffs))
    return plan, outcomes, next_key
