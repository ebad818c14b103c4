"""Fit-key blocks: the count structure the writer keeps beside the rows (``count_blocks``, v4).

``len(agg.query(q))`` over 10^6 fits cannot be one index seek per candidate (docs/performance.md:
an ``&`` of two half-selecting leaves cost 0.7 s). So the writer also keeps, per block of
``BLOCK`` consecutive fit keys, one row per *name*:

- ``["n", kind, key]``: the numbers of that fact, a dense little-endian float64 array (NaN where
  the fit has no number for the key; sqlite never stores a NaN REAL, and PostgreSQL's writer stores
  NaN as NULL, so NaN means absent and nothing else), without its trailing NaNs: the block being
  filled, rewritten by every batch, costs what it holds, not 32 KiB;
- ``["t", kind, key, text]``, ``["c", by, path, class]`` (``by``: class_name or class_path),
  ``["u", column, value]`` (``SERVED_COLUMNS``): the fits holding that text fact, class node or
  column value, a bitmap;
- ``["f"]`` and ``["r"]``: the fits that exist, and those that are top-level (``parent_id`` NULL).

A bitmap is ``BLOCK // 8`` bytes (bit i of the block's fit ``block * BLOCK + i``, little bit order),
or, while few fits of the block have it, their sorted offsets as ``uint16`` (fewer bytes than
the bitmap, so the length tells the two apart). An empty blob is an empty row (nothing set), which
is what a row becomes when its last fit leaves it: rows are never deleted, so a writer never races
another's delete. No row means no fit of the block has the name.

The writer keeps it exact without planning anything twice: it reads the indexed state of the
batch's stored fits before the batch (``entries``), runs the batch, reads the state of those and
the new fits after, and rewrites only the (name, block) rows whose fits changed, one
read-modify-write each (``maintain``). On PostgreSQL the rows are created if missing and then
locked in (name, block) order, after the fits' own locks, so several daemons queue instead of
deadlocking. ``rebuild`` makes the whole structure from the tables (the v4 migration, ``lensd
migrate``). lensd.query.blockcount reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, TypeAlias

BLOCK: Final = 4096
BITMAP_BYTES: Final = BLOCK // 8
NUMBERS_BYTES: Final = BLOCK * 8
SERVED_COLUMNS: Final = ("unique_tag",)
FITS: Final = '["f"]'
TOP: Final = '["r"]'
TABLE: Final = "count_blocks"
_CHUNK: Final = 400
Entries: TypeAlias = dict[int, dict[str, float | None]]  # fit_key -> name -> number (None: a bit)


@lru_cache(maxsize=1 << 16)
def _name(*parts: object) -> str:
    """A row's name, remembered: a survey's fits repeat a few hundred of them (JSON took a fifth
    of the upkeep)."""
    return json.dumps(list(parts), separators=(",", ":"))


def number_name(kind: int, key: str) -> str:
    return _name("n", kind, key)


def text_name(kind: int, key: str, text: str) -> str:
    return _name("t", kind, key, text)


def class_name(by: str, path: str, name: str) -> str:
    return _name("c", by, path, name)


def column_name(column: str, value: str) -> str:
    return _name("u", column, value)


def is_number(name: str) -> bool:
    return name.startswith('["n",')


# --- blobs ----------------------------------------------------------------------------------
def decode(name: str, data: object) -> Any:
    """A row's blob as a float64 array (numbers) or a bool array (bitmaps) of ``BLOCK``; None for
    a blob lensd never writes (wrong type or size: a crafted file), so the caller falls back."""
    import numpy as np

    if not isinstance(data, (bytes, memoryview)):
        return None
    data = bytes(data)
    if is_number(name):
        if len(data) % 8 or len(data) > NUMBERS_BYTES:
            return None
        numbers = np.full(BLOCK, np.nan)
        numbers[:len(data) // 8] = np.frombuffer(data, "<f8")
        return numbers
    bits = np.zeros(BLOCK, dtype=bool)
    if len(data) == BITMAP_BYTES:
        return np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").astype(bool)
    if len(data) % 2 or len(data) > BITMAP_BYTES:
        return None
    offsets = np.frombuffer(data, "<u2")
    if offsets.size and int(offsets.max()) >= BLOCK:
        return None
    bits[offsets] = True
    return bits


def encode(name: str, values: Any) -> bytes:
    """``decode``'s inverse; an empty row (nothing set) is ``b""``."""
    import numpy as np

    if is_number(name):
        held = np.flatnonzero(~np.isnan(values))
        return values[:int(held[-1]) + 1].astype("<f8").tobytes() if held.size else b""
    offsets = np.flatnonzero(values)
    if offsets.size * 2 < BITMAP_BYTES:
        return offsets.astype("<u2").tobytes()
    return np.packbits(values, bitorder="little").tobytes()


# --- the indexed state of fits --------------------------------------------------------------
def _marks(n: int) -> str:
    return ", ".join("?" * n)


def entries(conn: Any, keys: Iterable[int]) -> Entries:
    """What the structure holds for each of ``keys`` now, read from facts, nodes and fits.

    ``conn`` runs lensd's ``?`` SQL (a sqlite connection, or pgwriter's adapter).
    """
    unique = sorted(set(keys))
    found: Entries = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start:start + _CHUNK]
        where = f"WHERE fit_key IN ({_marks(len(chunk))})"
        _collect(found, conn, where, chunk)
    return found


def _collect(found: Entries, conn: Any, where: str, params: Sequence[Any]) -> None:
    """Add the entries of the fits ``where`` selects (a condition on fit_key) to ``found``."""
    for key, unique_tag, parent_id in conn.execute(
            f"SELECT fit_key, unique_tag, parent_id FROM fits {where}", list(params)):  # noqa: S608
        own = found.setdefault(int(key), {})
        own[FITS] = None
        if parent_id is None:
            own[TOP] = None
        if unique_tag is not None:
            own[column_name("unique_tag", unique_tag)] = None
    for key, kind, fact_key, num, txt in conn.execute(  # (facts of lists, None, NaN are in no block)
            f"SELECT fit_key, kind, key, num, txt FROM facts {where} AND (num IS NOT NULL OR txt IS NOT NULL)",  # noqa: S608
            list(params)):
        own = found.setdefault(int(key), {})
        if num is not None and num == num:
            own[number_name(int(kind), fact_key)] = float(num)
        if txt is not None:
            own[text_name(int(kind), fact_key, txt)] = None
    for key, path, class_path, name in conn.execute(
            f"SELECT fit_key, path, class_path, class_name FROM nodes {where}", list(params)):  # noqa: S608
        own = found.setdefault(int(key), {})
        own[class_name("class_path", path, class_path)] = None
        own[class_name("class_name", path, name)] = None


def changed_ids(ops: Iterable[object]) -> list[str]:
    """The ids of the fits whose indexed state a batch of ``ops`` may change: upserts, patches
    with a new instance, deletes and tags (not progress columns or heartbeats: nothing the blocks
    hold)."""
    from lensd.store.writeops import Delete, Patch, Tag, Upsert

    ids: list[str] = []
    for op in ops:
        if isinstance(op, Upsert):
            ids.append(op.record.id)
        elif isinstance(op, Patch) and op.instance is not None or isinstance(op, Tag):
            ids.append(op.id)
        elif isinstance(op, Delete):
            ids.extend(op.fit_ids)
    return ids


def stored_keys(ids: Iterable[str], existing: Mapping[str, Any]) -> list[int]:
    """The keys of those of ``ids`` that are stored (``existing``: id -> ``batchplan.Existing``)."""
    return sorted({existing[i].fit_key for i in ids if i in existing})


# --- writing --------------------------------------------------------------------------------
_ENSURE_SQL: Final = ("INSERT INTO count_blocks (name, block, data) VALUES (?, ?, ?) "
                     "ON CONFLICT (name, block) DO NOTHING")
_WRITE_SQL: Final = ("INSERT INTO count_blocks (name, block, data) VALUES (?, ?, ?) "
                     "ON CONFLICT (name, block) DO UPDATE SET data = excluded.data")
_CLEAR: Final = object()


def _changes(before: Mapping[int, Mapping[str, float | None]], after: Mapping[int, Mapping[str, float | None]]
             ) -> dict[tuple[str, int], dict[int, Any]]:
    """(name, block) -> offset -> the new number, None (bit set) or _CLEAR, for changed fits only."""
    changes: dict[tuple[str, int], dict[int, Any]] = {}
    for key in sorted({*before, *after}):
        old, new = before.get(key, {}), after.get(key, {})
        block, offset = divmod(key, BLOCK)
        for name in old:
            if name not in new:
                changes.setdefault((name, block), {})[offset] = _CLEAR
        for name, value in new.items():
            if name not in old or _bits(old[name]) != _bits(value):
                changes.setdefault((name, block), {})[offset] = value
    return changes


def _bits(value: float | None) -> str | None:
    """A number as its exact bits: -0.0 equals 0.0 but is stored apart, as a rebuild stores it."""
    return None if value is None else value.hex()


def maintain(conn: Any, before: Entries, after: Entries, lock: bool = False) -> int:
    """Rewrite the rows whose fits changed from ``before`` to ``after``; returns how many.

    ``lock``: PostgreSQL, where other writers may change the same rows: every row is created if
    missing, then read ``FOR UPDATE`` in (name, block) order, before it is changed.
    """
    import numpy as np

    changes = _changes(before, after)
    if not changes:
        return 0
    rows = sorted(changes)
    if lock:  # a row another writer makes meanwhile is then waited for, not overwritten
        conn.executemany(_ENSURE_SQL, [(name, block, b"") for name, block in rows])
    stored: dict[tuple[str, int], Any] = {}
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        sql = (f"SELECT name, block, data FROM {TABLE} WHERE (name, block) IN "  # noqa: S608
               f"(VALUES {', '.join(['(?, ?)'] * len(chunk))}) ORDER BY name, block")
        for name, block, data in conn.execute(sql + (" FOR UPDATE" if lock else ""),
                                              [p for row in chunk for p in row]):
            stored[(name, int(block))] = data
    updates = []
    for name, block in rows:
        values = decode(name, stored.get((name, block), b""))
        if values is None:  # a blob lensd never wrote: start the row again from this batch
            values = decode(name, b"")
        values = values.copy()
        change = changes[(name, block)]
        cleared = [offset for offset, value in change.items() if value is _CLEAR]
        values[cleared] = np.nan if is_number(name) else False
        held = [(offset, value) for offset, value in change.items() if value is not _CLEAR]
        values[[offset for offset, _ in held]] = [True if value is None else value for _, value in held]
        updates.append((name, block, encode(name, values)))
    conn.executemany(_WRITE_SQL, updates)
    return len(updates)


def rebuild(conn: Any, chunk_blocks: int = 16) -> None:
    """Make the whole structure again from facts, nodes and fits, ``chunk_blocks`` blocks at a
    time (the v4 migration, ``lensd migrate``): the rows it held are replaced."""
    conn.execute(f"DELETE FROM {TABLE}")  # noqa: S608
    row = conn.execute("SELECT coalesce(max(fit_key), 0) FROM fits").fetchone()
    top = int(row[0]) if row else 0
    step = chunk_blocks * BLOCK
    for low in range(0, top + 1, step):
        found: Entries = {}
        _collect(found, conn, "WHERE fit_key >= ? AND fit_key < ?", [low, low + step])
        maintain(conn, {}, found)
