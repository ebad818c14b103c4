"""``lensd migrate --from A --to B``: copy a database between engines, exactly and resumably.

A and B are each a sqlite file or a ``postgresql://`` URL (sqlite → PostgreSQL, back, or
sqlite → sqlite). The copy keeps everything a reader can see: the same fit ids and internal keys
(``fit_key``), every column's value, payload bytes, timestamps and progress history, row for row
in every data table (``copyends.TABLES``).

- **Chunks in key order.** Fits are taken ``chunk`` at a time in ``fit_key`` order; one chunk is
  every row of every table whose ``fit_key`` falls in its key range, written in ONE transaction
  on the target together with the resume mark, so the target is always a whole number of chunks.
- **Resumable.** After an interruption (even ``kill -9``), the same command continues after the
  last committed chunk and ends with the same database as an uninterrupted run. The mark holds a
  fingerprint of the source (fits, largest key, latest ``updated_at``, payloads); a source that
  changed since the interrupted run is refused (empty the target and run again).
- **A consistent snapshot.** The source is read in one read transaction, so a daemon may keep
  writing it: the copy is the state at the start of the run (docs/operating.md).
- **Only into an empty database.** A target holding fits (other than this migrate's own
  unfinished copy) is refused; its schema is created at the current version first.
- **Keys stay unique after it.** On PostgreSQL the identity sequences of ``fit_key`` and of the
  history are set past the largest copied key; sqlite's writer takes ``max(fit_key) + 1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lensd.errors import LensdError
from lensd.store import copyends, writerlock
from lensd.store.sources import is_postgres

CHUNK: Final = 2000
START: Final = -(2**63)  # below every key: the first range is (START, k]


@dataclass
class MigrateReport:
    """What a run did: fits in the source, fits already there from an interrupted run, seconds."""

    fits: int
    resumed: int
    seconds: float


def _same_file(source: str, target: str) -> bool:
    if is_postgres(source) or is_postgres(target):
        return False
    return writerlock.real_database(Path(source)) == writerlock.real_database(Path(target))


def _start_after(target: copyends.Target, fingerprint: str) -> int:
    """The key after which to copy: START for a fresh target, the mark's for a resumed one."""
    mark = target.mark()
    if not mark:
        if target.holds_data():
            raise LensdError(f"{target.name} already holds fits: lensd migrate copies into an empty database only")
        return START
    if mark.get(copyends.MARK_SOURCE) != fingerprint:
        raise LensdError(f"{target.name} holds an unfinished migrate of another source, or the source changed "
                         "since it began: empty the target and run again")
    return int(mark.get(copyends.MARK_DONE, START))


def _columns(source: copyends.Source) -> dict[str, list[str]]:
    """Per table, the current schema's columns that the source has; a table the source lacks (an
    older schema's file has no progress_history) is left empty."""
    found: dict[str, list[str]] = {}
    for table, ours in copyends.schema_columns().items():
        theirs = source.columns(table)
        if theirs is None:
            continue
        if set(theirs) - set(ours):
            raise LensdError(f"{source.name}: its {table} table has columns this lensd does not know")
        found[table] = [c for c in ours if c in theirs]
    return found


def migrate(source_name: str | os.PathLike[str], target_name: str | os.PathLike[str], chunk: int = CHUNK,
            total: Callable[[int], None] | None = None,
            progress: Callable[[int], None] | None = None) -> MigrateReport:
    """Copy ``source_name`` into ``target_name`` (see the module docstring); ``total`` hears the
    number of fits, ``progress`` each chunk's (the ones copied before a resume come first)."""
    began = time.monotonic()
    source_text, target_text = os.fspath(source_name), os.fspath(target_name)
    if _same_file(source_text, target_text):
        raise LensdError(f"{source_text}: the source and the target are the same file")
    if not is_postgres(target_text):
        writerlock.refuse_sidecar(Path(target_text))  # before the source is read: none of its files change
    source = copyends.source_of(source_text)
    try:
        fingerprint = source.fingerprint()
        fits = int(source.scalar("SELECT count(*) FROM fits"))
        if total is not None:
            total(fits)
        target = copyends.target_of(target_text)
        try:
            after = _start_after(target, fingerprint)
            columns = _columns(source)
            resumed = int(source.scalar(copyends.COUNT_UPTO_SQL, [after])) if after != START else 0
            if progress is not None and resumed:
                progress(resumed)
            for low, high in copyends.ranges(source, after, chunk):
                parts = [(table, cols, source.rows(table, cols, low, high)) for table, cols in columns.items()]
                target.write(parts, {copyends.MARK_SOURCE: fingerprint, copyends.MARK_DONE: str(high)})
                if progress is not None:
                    progress(int(source.scalar("SELECT count(*) FROM fits WHERE fit_key > ? AND fit_key <= ?",
                                               [low, high])))
            target.finish()
        finally:
            target.close()
    finally:
        source.close()
    return MigrateReport(fits, resumed, time.monotonic() - began)
