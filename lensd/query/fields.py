"""The fields aggregators expose to build predicates with: ``agg.model``, ``agg.median``,
``agg.info[...]``, ``agg.job[...]``, ``agg.search.<column>`` and every fit column as ``agg.<column>``.

``QueryFields`` is a mixin (the aggregators and the tests use it); it holds no state, so a field
is built the same way wherever it is reached.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Final, Generic, TypeVar

from lensd.errors import QueryError
from lensd.query.nodes import (
    BOOL_COLUMNS,
    NUMBER_COLUMNS,
    TEXT_COLUMNS,
    Column,
    InfoKey,
    JobKey,
    MedianPath,
    ModelPath,
    no_bool,
)

K = TypeVar("K", "InfoKey", "JobKey")


class _Keys(Generic[K]):
    """``agg.info`` and ``agg.job``: subscript with a key to get a field."""

    __slots__ = ("_cls",)
    __bool__ = no_bool
    _cls: type[K]

    def __init__(self, cls: type[K]) -> None:
        self._cls = cls

    def __getitem__(self, key: str) -> K:
        return self._cls(key)

    def __repr__(self) -> str:
        return f"{self._cls._tag}[...]"


FIT_COLUMNS: Final = TEXT_COLUMNS | NUMBER_COLUMNS | BOOL_COLUMNS


class _SearchFields:
    """``agg.search``: every fit column, as PyAutoFit reaches them (``agg.search.unique_tag``,
    ``agg.search.is_complete``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Column:
        if name.startswith("_"):  # dunders and the probes of copy, IPython, numpy
            raise AttributeError(name)
        if name not in FIT_COLUMNS:
            close = get_close_matches(name, sorted(FIT_COLUMNS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise QueryError(f"no fit column named {name!r}{hint} (columns: {', '.join(sorted(FIT_COLUMNS))})")
        return Column(name)

    def __dir__(self) -> list[str]:
        return sorted(FIT_COLUMNS)

    def __repr__(self) -> str:
        return "search"


class QueryFields:
    """Mixin for the aggregators: the fields a query can test, as ``agg.<field>``."""

    __slots__ = ()

    @property
    def model(self) -> ModelPath:
        return ModelPath("")

    @property
    def median(self) -> MedianPath:
        return MedianPath("")

    @property
    def info(self) -> _Keys[InfoKey]:
        return _Keys(InfoKey)

    @property
    def job(self) -> _Keys[JobKey]:
        return _Keys(JobKey)

    @property
    def search(self) -> _SearchFields:
        return _SearchFields()

    @property
    def id(self) -> Column:
        return Column("id")

    @property
    def name(self) -> Column:
        return Column("name")

    @property
    def path_prefix(self) -> Column:
        return Column("path_prefix")

    @property
    def unique_tag(self) -> Column:
        return Column("unique_tag")

    @property
    def status(self) -> Column:
        return Column("status")

    @property
    def parent_id(self) -> Column:
        return Column("parent_id")

    @property
    def max_log_likelihood(self) -> Column:
        return Column("max_log_likelihood")

    @property
    def log_evidence(self) -> Column:
        return Column("log_evidence")

    @property
    def is_complete(self) -> Column:
        return Column("is_complete")

    @property
    def is_grid_search(self) -> Column:
        return Column("is_grid_search")
