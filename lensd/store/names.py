"""Names a query uses that no fit has: ``model.centr``, ``status == "faild"``, a class written with an
import alias (``al.mp.Isothermal``), ``values("bogus")``; each with the closest names that exist.

A query that names nothing stored answers nothing, silently; this module says why. It asks the
indexes only: whether a name exists is one index seek, and the names that do exist are read by
a skip-scan of the index (one seek per distinct name, never a scan of the facts), so it stays
cheap on a database of a million fits. The CLI prints the notes on stderr; the aggregators warn
(``lensd.errors.NoSuchName``, once per note). Nothing here raises for an absent name.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Iterator
from difflib import get_close_matches
from typing import Final

from lensd.domain.records import STATUSES
from lensd.errors import LensdError, NoSuchName
from lensd.query.nodes import (
    And,
    ClassIs,
    Column,
    Compare,
    Contains,
    In,
    InfoKey,
    IsNone,
    JobKey,
    MedianPath,
    ModelPath,
    Not,
    Operand,
    Or,
    Predicate,
)
from lensd.store import schema
from lensd.store.batchplan import FILE_PAYLOAD_PREFIX

MAX_NAMES: Final = 5_000  # distinct names read for suggestions; a tree wider than this is unusual
FIELD_VALUES: Final = ("samples", "instance", "info", "model", "search", "summary", "job")

_HAS_FACT: Final = "SELECT 1 FROM facts WHERE kind = ? AND key = ? LIMIT 1"
_FACT_KEYS: Final = """
WITH RECURSIVE k(key) AS (
    SELECT min(key) FROM facts WHERE kind = ?1
    UNION ALL
    SELECT (SELECT min(key) FROM facts WHERE kind = ?1 AND key > k.key) FROM k WHERE k.key IS NOT NULL
) SELECT key FROM k WHERE key IS NOT NULL LIMIT ?2"""
_HAS_NODE: Final = "SELECT 1 FROM nodes WHERE path = ? LIMIT 1"
_NODE_PATHS: Final = """
WITH RECURSIVE k(path) AS (
    SELECT min(path) FROM nodes
    UNION ALL
    SELECT (SELECT min(path) FROM nodes WHERE path > k.path) FROM k WHERE k.path IS NOT NULL
) SELECT path FROM k WHERE path IS NOT NULL LIMIT ?1"""
_HAS_CLASS: Final = {
    "class_path": "SELECT 1 FROM nodes WHERE path = ? AND class_path = ? LIMIT 1",
    "class_name": "SELECT 1 FROM nodes WHERE path = ? AND class_name = ? LIMIT 1",
}
_CLASSES_AT: Final = """
WITH RECURSIVE k(name) AS (
    SELECT min(class_path) FROM nodes WHERE path = ?1
    UNION ALL
    SELECT (SELECT min(class_path) FROM nodes WHERE path = ?1 AND class_path > k.name) FROM k
    WHERE k.name IS NOT NULL
) SELECT name FROM k WHERE name IS NOT NULL LIMIT ?2"""
_PAYLOAD_NAMES: Final = ("SELECT DISTINCT name FROM payloads WHERE fit_key IN "
                         "(SELECT fit_key FROM fits ORDER BY fit_key DESC LIMIT 200)")
_KINDS: Final[dict[type, int]] = {ModelPath: schema.KIND_VALUE, MedianPath: schema.KIND_MEDIAN,
                                  InfoKey: schema.KIND_INFO, JobKey: schema.KIND_JOB}

_WHAT: Final[dict[type, str]] = {ModelPath: "parameter path", MedianPath: "median path", InfoKey: "info key",
                                 JobKey: "job key"}


def _closest(name: str, names: list[str]) -> str:
    close = get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:  # a last segment that matches, e.g. centre for galaxies.lens.centre
        tail = name.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == tail][:3]
    return f"; the closest: {', '.join(close)}" if close else ""


def _operands(node: Predicate) -> Iterator[tuple[Operand, object]]:
    """Every (operand, compared value) in a predicate tree; the value is None for is_none."""
    if isinstance(node, (And, Or)):
        for item in node.items:
            yield from _operands(item)
    elif isinstance(node, Not):
        yield from _operands(node.item)
    elif isinstance(node, (Compare, Contains)):
        yield node.operand, node.value
    elif isinstance(node, In):
        for value in node.values:
            yield node.operand, value
    elif isinstance(node, IsNone):
        yield node.operand, None


class Names:
    """The lookups of one read connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _one(self, sql: str, params: tuple[object, ...]) -> bool:
        return self._conn.execute(sql, params).fetchone() is not None

    def _all(self, sql: str, params: tuple[object, ...]) -> list[str]:
        return [str(row[0]) for row in self._conn.execute(sql, params)]

    def missing(self, predicate: Predicate | None) -> list[str]:
        """One note per name in ``predicate`` that no fit in the database has."""
        if predicate is None or not self._one("SELECT 1 FROM fits LIMIT 1", ()):
            return []  # an empty database: every name is absent, and that is no news
        notes: dict[str, None] = {}
        for node in _classes(predicate):
            notes.update(dict.fromkeys(self._class_note(node)))
        for operand, value in _operands(predicate):
            notes.update(dict.fromkeys(self._operand_note(operand, value)))
        return list(notes)

    def _operand_note(self, operand: Operand, value: object) -> Iterator[str]:
        if isinstance(operand, Column):
            if operand.name == "status" and isinstance(value, str) and value not in STATUSES:
                yield (f"no fit has status {value!r}: a status is one of {', '.join(sorted(STATUSES))}"
                       f"{_closest(value, sorted(STATUSES))}")
            return
        kind = _KINDS[type(operand)]
        key = operand._fact_key  # type: ignore[attr-defined]
        if self._one(_HAS_FACT, (kind, key)):
            return
        if isinstance(operand, ModelPath) and (key == "" or self._one(_HAS_NODE, (key,))):
            return  # a model node (a class test on it is checked by _class_note)
        what = _WHAT[type(operand)]
        names = self._all(_FACT_KEYS, (kind, MAX_NAMES))
        if isinstance(operand, ModelPath):
            names += self._all(_NODE_PATHS, (MAX_NAMES,))
        if isinstance(operand, MedianPath) and not names:
            yield f"no fit has median values ({operand!r}): they come from a samples summary or samples"
            return
        yield f"no fit in the database has the {what} {key!r}{_closest(key, sorted(set(names)))}"

    def _class_note(self, node: ClassIs) -> Iterator[str]:
        if self._one(_HAS_CLASS[node.by], (node.path, node.name)):
            return
        if not self._one(_HAS_NODE, (node.path,)):
            paths = self._all(_NODE_PATHS, (MAX_NAMES,))
            yield f"no fit in the database has a model node at {node.path!r}{_closest(node.path, paths)}"
            return
        classes = self._all(_CLASSES_AT, (node.path, MAX_NAMES))
        bare = node.name.rsplit(".", 1)[-1]
        same_name = [c for c in classes if c.rsplit(".", 1)[-1] == bare]
        hint = (f"; the classes there named {bare}: {', '.join(same_name[:3])} (write the full class "
                f"path, or just {bare})") if same_name else _closest(node.name, classes)
        yield f"no fit has the class {node.name!r} at {node.path!r}{hint}"

    def missing_value(self, name: str) -> str | None:
        """A note when ``values(name)`` found nothing because no fit has a value of that name."""
        if name in FIELD_VALUES:
            return None
        prefix = FILE_PAYLOAD_PREFIX
        recent = [n.removeprefix(prefix) for n in self._all(_PAYLOAD_NAMES, ()) if n.startswith(prefix)]
        if name in recent:
            return None
        known = sorted({*FIELD_VALUES, *recent})
        return f"no selected fit has a value named {name!r}{_closest(name, known)} (values: {', '.join(known)})"


def _classes(node: Predicate) -> Iterator[ClassIs]:
    if isinstance(node, ClassIs):
        yield node
    elif isinstance(node, (And, Or)):
        for item in node.items:
            yield from _classes(item)
    elif isinstance(node, Not):
        yield from _classes(node.item)


_WARNED: set[str] = set()


def warn_once(note: str, stacklevel: int = 3) -> None:
    """``warnings.warn(note, NoSuchName)`` the first time this process meets ``note``."""
    if note in _WARNED:
        return
    _WARNED.add(note)
    warnings.warn(note, NoSuchName, stacklevel=stacklevel)


def notes_for(conn: sqlite3.Connection, predicate: Predicate | None, value: str | None = None) -> list[str]:
    """What an empty answer to ``predicate`` (and ``values(value)``) owes to names no fit has."""
    names = Names(conn)
    try:
        notes = names.missing(predicate)
        note = names.missing_value(value) if value is not None else None
    except sqlite3.Error:
        return []  # a diagnosis must never turn an empty answer into an error
    return [*notes, *([note] if note else [])]


def notes_for_file(path: str | os.PathLike[str], predicate: Predicate | None, value: str | None = None) -> list[str]:
    """``notes_for`` on a database file opened read-only; no notes when it cannot be opened."""
    from lensd.store.reader import open_readonly

    try:
        conn = open_readonly(path)
    except LensdError:
        return []
    try:
        return notes_for(conn, predicate, value)
    finally:
        conn.close()
