"""What the dashboard reads, from the database (a sqlite file or PostgreSQL): the public
Aggregator for fits, and a few aggregate statements (counts, throughput, histograms) that SQL
answers without shipping fits.

Every statement is parameterised and written once, with the dialect's spellings where the engines
differ (``lensd.query.dialect``); every query the user types goes through the text grammar of
``lensd query`` (lensd/query/text.py) into a ``QueryState``, compiled by lensd's compiler. The
connection is read-only (sqlite's WAL readers never block the daemon's writer; a PostgreSQL read
ends its transaction after each statement, so each refresh sees the latest commits) and used by one
thread at a time (the app's limiter).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lensd.aggregator import Aggregator
from lensd.domain.slurm import RetryPlan, retry_plan
from lensd.errors import QueryError, QuerySyntaxError
from lensd.query import text
from lensd.query.nodes import Column, Operand
from lensd.query.state import QueryState
from lensd.store.reader import Fit
from lensd.store.sources import is_postgres, open_source

STATUSES: Final = ("running", "completed", "failed", "lost")
LIST_LIMIT: Final = 50  # running, failed, lost fits shown on the overview
RETRY_LIMIT: Final = 100_000  # lost and failed fits read for the overview's sbatch lines
BUCKETS: Final = 12  # throughput over the last hour, in 5-minute buckets
MAX_LABELS: Final = 8  # colours of a histogram; the rest is "other"
SORTABLE: Final = ("id", "unique_tag", "name", "status", "max_log_likelihood", "log_evidence")
LIST_COLUMNS: Final = ("id", "unique_tag", "name", "status", "progress", "n_samples", "max_log_likelihood",
                       "error", "created_at", "last_event_at", "job")
_LIST_SQL: Final = (f"SELECT {', '.join(LIST_COLUMNS)} FROM fits WHERE status = ? "  # noqa: S608 - fixed names
                    "ORDER BY last_event_at DESC LIMIT ?")


@dataclass(frozen=True)
class Query:
    """The query box's text as a state, or the grammar's error pointing at the problem."""

    text: str
    state: QueryState
    error: str | None = None
    position: int | None = None


def parse_query(expression: str, sort: str = "", descending: bool = False) -> Query:
    """``expression`` (the ``lensd query`` grammar) and a sort key; a bad one keeps its error."""
    state = QueryState()
    try:
        if expression.strip():
            state = state.where(text.parse(expression))
        if sort:
            state = state.ordered(sort_operand(sort), descending)
    except QuerySyntaxError as exc:
        return Query(expression, QueryState(), exc.pointed(), exc.position)
    except QueryError as exc:
        return Query(expression, QueryState(), str(exc))
    return Query(expression, state)


def sort_operand(name: str) -> Operand:
    return Column(name) if name in SORTABLE else text.parse_operand(name)


def _job(value: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _listed(row: Sequence[Any]) -> dict[str, Any]:
    item = dict(zip(LIST_COLUMNS, row, strict=True))
    item["job"] = _job(item["job"])
    return item


class LocalSource:
    """The dashboard's reads of one lensd database, read directly (not through the daemon)."""

    def __init__(self, database: str | Path) -> None:
        self.database = database if is_postgres(database) else Path(database)
        self.source = open_source(database)
        self.dialect = self.source.dialect

    @property
    def label(self) -> str:
        """The database as the pages name it (a PostgreSQL URL without its password)."""
        if isinstance(self.database, Path):
            return str(self.database)
        from lensd.store.pgstore import redact

        return redact(self.database)

    def close(self) -> None:
        self.source.close()

    def _agg(self, state: QueryState) -> Aggregator:
        return Aggregator(self.source, state, self.label)

    def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """All rows of one statement (lensd's own SQL; values only as parameters)."""
        return list(self.source.stream(sql, list(params)))

    # --- overview -------------------------------------------------------------------------
    def overview(self, now: float | None = None) -> dict[str, Any]:
        """Counts by status (every fit, grid cells too, as ``lensd status``), completions and
        failures per 5 minutes over the last hour, and the running, failed and lost fits."""
        now = time.time() if now is None else now
        counts = self.counts()
        start = now - BUCKETS * 300
        done = {s: [self._ended_between(s, start + 300 * b, start + 300 * (b + 1)) for b in range(BUCKETS)]
                for s in ("completed", "failed")}
        lists = {s: [_listed(r) for r in self.rows(_LIST_SQL, [s, LIST_LIMIT])] for s in ("running", "failed", "lost")}
        return {"now": now, "counts": counts, "total": sum(counts.values()), "throughput": done,
                "bucket_seconds": 300, **lists, "retry": [line.command for line in self.retry().lines]}

    def _ended_between(self, status: str, start: float, end: float) -> int:
        """Fits of ``status`` whose last event is in [start, end): one range of the ``(status,
        last_event_at)`` index, counted without reading a row. One ``GROUP BY`` of the hour's
        buckets read and grouped every fit the hour ended: 0.40 s after 10^6 ingested within it,
        against 0.04 s for the 24 ranges (docs/performance.md, "The dashboard's overview")."""
        sql = "SELECT count(*) FROM fits WHERE status = ? AND last_event_at >= ? AND last_event_at < ?"
        return int(self.rows(sql, [status, start, end])[0][0])

    def counts(self) -> dict[str, int]:
        """Fits by status. ``completed`` (most fits) is the total less the others: ``count(*)`` of a
        whole table counts its b-tree's cells page by page without reading rows, and the other
        statuses are short ranges of the status index, so 10^6 fits cost a few page reads."""
        (total,), = self.rows("SELECT count(*) FROM fits", [])
        counts = {s: int(self.rows("SELECT count(*) FROM fits WHERE status = ?", [s])[0][0])
                  for s in STATUSES if s != "completed"}
        counts["completed"] = int(total) - sum(counts.values())  # records are validated: no other status
        return {s: counts[s] for s in STATUSES}

    def retry(self) -> RetryPlan:
        """The ``lensd retry`` lines of the lost and failed fits."""
        rows = self.rows("SELECT id, job FROM fits WHERE status IN ('lost', 'failed') LIMIT ?", [RETRY_LIMIT])
        return retry_plan((fit_id, _job(job)) for fit_id, job in rows)

    # --- the fits table -------------------------------------------------------------------
    def count(self, state: QueryState) -> int:
        return len(self._agg(state))

    def page(self, state: QueryState, offset: int, size: int) -> list[Fit]:
        return list(self._agg(state)[offset:offset + size].fits())

    def export_rows(self, state: QueryState) -> Iterator[dict[str, Any]]:
        return self._agg(state).to_rows()

    # --- one fit --------------------------------------------------------------------------
    def fit(self, fit_id: str) -> Fit | None:
        everything = self._agg(QueryState(top_level_only=False))
        return next(iter(everything.query(everything.id == fit_id).fits()), None)

    def payload_names(self, fit: Fit) -> list[str]:
        rows = self.rows("SELECT name FROM payloads WHERE fit_key = ? ORDER BY name", [fit.fit_key])
        return [str(name) for (name,) in rows]

    def children(self, fit: Fit) -> list[Fit]:
        return list(self._agg(QueryState(top_level_only=False).children_of(fit.id))[:200].fits())

    # --- across fits ----------------------------------------------------------------------
    def histogram(self, state: QueryState, x: str, colour: str = "", y: str = "",
                  bins: int = 40) -> dict[str, Any]:
        """Counts per bin of ``x`` (and of ``y``: a binned scatter), per label of ``colour``, for
        the fits of ``state``, counted in SQL (lensd/web/aggregate.py)."""
        from lensd.web import aggregate

        return aggregate.histogram(self.rows, self.dialect, state, x, colour, y, bins)
