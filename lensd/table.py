"""Fits as flat rows: fit columns, one column per parameter path, and ``info.<key>`` columns.

Shared by ``to_rows``/``to_dataframe``, ``lensd export`` and the notebook HTML, so the three
always agree on column names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from lensd.records import flatten

if TYPE_CHECKING:
    from lensd.store import Fit

FIT_FIELDS = ("id", "unique_tag", "name", "path_prefix", "status", "max_log_likelihood",
              "log_evidence", "parent_id")


def fit_row(fit: Fit, median: bool = False) -> dict[str, Any]:
    """One flat row: fit columns, parameter values (max likelihood, or median), info keys."""
    row: dict[str, Any] = {name: getattr(fit, name) for name in FIT_FIELDS}
    source = fit.median if median else fit.instance
    if source is not None:
        row.update(source.to_flat())
    for key, value in flatten(fit.info or {}).items():
        row[f"info.{key}"] = value
    return row


def rows_of(fits: Iterable[Fit], columns: Sequence[str] | None = None,
            median: bool = False) -> Iterator[dict[str, Any]]:
    for fit in fits:
        row = fit_row(fit, median)
        yield row if columns is None else {c: row.get(c) for c in columns}


def dataframe_of(rows: Iterable[dict[str, Any]]) -> Any:
    """A pandas DataFrame of the rows (install ``lensd[pandas]``)."""
    try:
        import pandas
    except ImportError:
        from lensd.errors import LensdError

        raise LensdError("to_dataframe needs pandas: pip install 'lensd[pandas]'") from None
    return pandas.DataFrame.from_records(list(rows))


def html_table(rows: Iterable[dict[str, Any]], total: int) -> str:
    """A small HTML table of the first rows, for Jupyter."""
    rows = list(rows)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<p>{total} fits</p><table><tr>{head}</tr>{body}</table>"
