"""Fits as flat rows: fit columns, one column per parameter path, and ``info.<key>`` columns.

Shared by ``to_rows``/``to_dataframe``, ``lensd export`` and the notebook HTML, so the three
always agree on column names:

    id, unique_tag, name, path_prefix, status, error, max_log_likelihood, log_evidence, n_samples,
    parent_id, created_at, updated_at, completed_at (unix seconds),
    <parameter paths, sorted>, info.<key> (top-level info keys, sorted)

A parameter column holds the max-likelihood instance value (the median-PDF value with
``median=True``); its name is the dotted path of ``samples.csv`` (``galaxies.lens.mass.einstein_radius``),
or ``model.<path>`` when the path would be mistaken for a fit column or an info column (a bare
``Model`` with a parameter called ``name``). Info columns are the top-level keys, as
``agg.info["key"]`` queries them; a nested value stays whole. Every row has every column (None
where a fit has no value), sorted, so exports of different selections line up.

The columns are fixed before the first row, so rows can stream: from a database file they are the
distinct fact keys of the selected fits (one indexed query, ``statements.select_fact_keys``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from html import escape
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from lensd.store.reader import Fit

FIT_FIELDS: Final = ("id", "unique_tag", "name", "path_prefix", "status", "error", "max_log_likelihood",
                     "log_evidence", "n_samples", "parent_id", "created_at", "updated_at", "completed_at")
INFO: Final = "info."
MODEL: Final = "model."
HTML_ROWS: Final = 20


def parameter_column(path: str) -> str:
    """The column of a parameter path: the path itself unless it would clash with another column."""
    if path in FIT_FIELDS or path.startswith((INFO, MODEL)):
        return MODEL + path
    return path


def columns_of(paths: Iterable[str], info_keys: Iterable[str]) -> list[str]:
    """Fit columns, then parameter columns, then ``info.<key>`` columns, each group sorted."""
    parameters = sorted({parameter_column(p) for p in paths})
    return [*FIT_FIELDS, *parameters, *(INFO + key for key in sorted(set(info_keys)))]


def parameter_values(fit: Fit, median: bool = False) -> dict[str, Any]:
    """Path → max-likelihood value (or median-PDF value) of one fit; empty when it has none."""
    source = fit.median if median else fit.instance
    return {} if source is None else source.to_flat()


def full_row(fit: Fit, median: bool = False) -> dict[str, Any]:
    """Every column this fit has a value for (the row before it is fitted to shared columns)."""
    row: dict[str, Any] = {name: getattr(fit, name) for name in FIT_FIELDS}
    row.update((parameter_column(path), value) for path, value in parameter_values(fit, median).items())
    row.update((INFO + str(key), value) for key, value in (fit.info or {}).items())
    return row


def fit_row(fit: Fit, columns: Sequence[str], median: bool = False) -> dict[str, Any]:
    """One flat row with exactly ``columns`` (None where the fit has no value)."""
    row = full_row(fit, median)
    return {column: row.get(column) for column in columns}


class ColumnSet:
    """The columns of fits seen one at a time: the same rule as the database's fact keys."""

    def __init__(self, median: bool = False) -> None:
        self.median = median
        self.paths: set[str] = set()
        self.info: set[str] = set()

    def add(self, fit: Fit) -> None:
        self.paths.update(parameter_values(fit, False))
        if self.median:
            self.paths.update(parameter_values(fit, True))
        self.info.update(map(str, fit.info or {}))

    def columns(self) -> list[str]:
        return columns_of(self.paths, self.info)


def columns_of_fits(fits: Iterable[Fit], median: bool = False) -> list[str]:
    """The columns of fits already in memory."""
    found = ColumnSet(median)
    for fit in fits:
        found.add(fit)
    return found.columns()


def rows_of(fits: Iterable[Fit], columns: Sequence[str], median: bool = False) -> Iterator[dict[str, Any]]:
    for fit in fits:
        yield fit_row(fit, columns, median)


def dataframe_of(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A pandas DataFrame of the rows, with ``columns`` in order (install ``lensd[pandas]``)."""
    try:
        import pandas
    except ImportError:
        from lensd.errors import LensdError

        raise LensdError("to_dataframe needs pandas: pip install 'lensd[pandas]'") from None
    frame = pandas.DataFrame.from_records(list(rows), columns=list(columns))
    return frame.set_index("id") if "id" in frame.columns else frame  # a fit is found by its id


def cell_text(value: Any) -> str:
    """A value as a table cell shows it: nothing for None, 6 significant digits for a float."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def html_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], total: int) -> str:
    """A small HTML table of the first rows, for Jupyter; every name and value is escaped."""
    rows = list(rows)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell_text(row.get(c)))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    shown = f"the first {len(rows)} of {total} fits" if len(rows) < total else f"{total} fits"
    return f"<p>{shown}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
