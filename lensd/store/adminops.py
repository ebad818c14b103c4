"""``lensd delete`` and ``lensd tag`` inside the single writer's transaction.

They are rare and read what they change (the fit's current ``info``), so they are not planned with
the batch's upserts and patches (batchplan.py) but applied after them, in the same transaction, by
plain keyed statements. Both are idempotent: deleting a fit that is gone, or setting a key to the
value it has, changes nothing and answers ``duplicate``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

from lensd.errors import InvalidRecord, LensdError
from lensd.store.batchplan import INSERT_FACT_SQL, _fact_rows, _json
from lensd.store.schema import KIND_INFO
from lensd.store.writeops import AdminOp, Delete, Tag

log = logging.getLogger("lensd.writer")
APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
_CHUNK: Final = 500
FIT_TABLES: Final = ("facts", "nodes", "payloads", "progress_history")


def _tables(conn: sqlite3.Connection) -> list[str]:
    """The per-fit tables this file has (progress_history arrived with schema v3)."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return [t for t in FIT_TABLES if t in names]


def _delete(conn: Any, op: Delete, tables: Sequence[str]) -> str:
    keys: list[int] = []
    for start in range(0, len(op.fit_ids), _CHUNK):
        chunk = op.fit_ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        keys += [int(r[0]) for r in conn.execute(f"SELECT fit_key FROM fits WHERE id IN ({marks})", chunk)]  # noqa: S608
    if not keys:
        return DUPLICATE
    for table in (*tables, "fits"):
        conn.executemany(f"DELETE FROM {table} WHERE fit_key = ?", [(k,) for k in keys])  # noqa: S608 - fixed names
    log.info("deleted %d fit(s) of %d asked for", len(keys), len(op.fit_ids))
    return APPLIED


def _tag(conn: Any, op: Tag, now: float) -> str:
    row = conn.execute("SELECT fit_key, info FROM fits WHERE id = ?", (op.id,)).fetchone()
    if row is None:
        raise InvalidRecord(f"no fit with id {op.id!r}")
    key, text = int(row[0]), row[1]
    info = json.loads(text) if isinstance(text, str) and text else {}
    info = info if isinstance(info, dict) else {}
    changed = {**info, **op.info}
    changed = {k: v for k, v in changed.items() if v is not None}
    if changed == info:
        return DUPLICATE
    conn.execute("UPDATE fits SET info = ?, updated_at = ? WHERE fit_key = ?", (_json(changed), now, key))
    conn.execute("DELETE FROM facts WHERE fit_key = ? AND kind = ?", (key, KIND_INFO))
    conn.executemany(INSERT_FACT_SQL, [(key, KIND_INFO, *fact) for fact in _fact_rows(KIND_INFO, changed)])
    log.info("tagged %s: %s", op.id, ", ".join(f"{k}={op.info[k]!r}" for k in sorted(op.info)))
    return APPLIED


def apply_admin(conn: Any, op: AdminOp, now: float | None = None,
                tables: Sequence[str] | None = None) -> str | LensdError:
    """Apply one admin op on ``conn`` (inside the writer's transaction); its outcome, or the
    error for it alone (a tag of an unknown id) without undoing the rest of the batch.

    ``conn`` runs lensd's ``?`` SQL (a sqlite connection, or pgwriter's adapter); ``now`` is the
    batch's time by the writer's clock (default: this machine's); ``tables``, the per-fit tables
    the database has (default: those a sqlite file lists).
    """
    try:
        if isinstance(op, Delete):
            return _delete(conn, op, _tables(conn) if tables is None else tables)
        return _tag(conn, op, time.time() if now is None else now)
    except LensdError as exc:
        return exc
