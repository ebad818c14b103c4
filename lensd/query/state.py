"""The query state: which fits an aggregator selects, how it orders and slices them, and the
fields it exposes to build predicates with (``agg.model``, ``agg.info[...]``, ``agg.unique_tag``).

Nodes live in query.py; this module adds what surrounds one predicate: ``OrderKey`` terms, the
offset/limit window, the scope flags (completed only, top level only, children of a parent, grid
parents), and the strict reader of the wire form (``QueryState.from_wire``): the daemon trusts
nothing a client sends, so every shape is checked here and every value by the node constructors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, Generic, TypeVar

from lensd.errors import QueryError
from lensd.query.nodes import (
    MAX_DEPTH,
    MAX_NODES,
    OPERANDS,
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
    check_operand,
    check_scalar,
    check_text,
    no_bool,
    operand_to_wire,
)

MAX_ORDER: Final = 16
MAX_INDEX: Final = 2**62  # offsets and limits stay far inside sqlite's 64-bit integers
_NODES: Final[dict[str, type[Predicate]]] = {
    c._tag: c for c in (Compare, Contains, In, IsNone, ClassIs, And, Or, Not)
}


class _WireReader:
    """Rebuilds nodes from untrusted wire data; every failure is a QueryError, never another error.

    Shapes are checked here (whitelisted ``t``, exact keys, container types, depth, size); values
    are checked by the node constructors, the same checks a Python-built query passes.
    """

    def __init__(self) -> None:
        self.nodes = 0

    def _count(self, nodes: int, depth: int) -> None:
        self.nodes += nodes
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise QueryError(f"query too large: at most {MAX_DEPTH} levels and {MAX_NODES} nodes")

    def _map(self, data: object, depth: int, keys: Iterable[str], what: str) -> dict[str, Any]:
        self._count(1, depth)
        if not isinstance(data, dict) or set(data) != set(keys):
            raise QueryError(f"malformed {what}: expected a map with keys {sorted(keys)}")
        return data

    @staticmethod
    def _tag(data: object, table: dict[str, Any], what: str) -> Any:
        tag = data.get("t") if isinstance(data, dict) else None
        if not isinstance(tag, str) or tag not in table:
            raise QueryError(f"malformed query: unknown {what} type {tag!r}")
        return table[tag]

    def operand(self, data: object, depth: int) -> Operand:
        cls, field = self._tag(data, OPERANDS, "field")
        value = self._map(data, depth, ("t", field), "field")[field]
        return cls(check_text(value, f"a {field}"))  # type: ignore[no-any-return]

    def predicate(self, data: object, depth: int) -> Predicate:
        cls: type[Predicate] = self._tag(data, _NODES, "predicate")
        data = self._map(data, depth, ("t", *cls._wire), "predicate")
        fields: dict[str, Any] = {}
        for name, how in cls._wire.items():
            value = data[name]
            if how == "operand":
                value = self.operand(value, depth + 1)
            elif how == "predicate":
                value = self.predicate(value, depth + 1)
            elif how in ("predicates", "scalars"):
                if not isinstance(value, list):
                    raise QueryError(f"malformed query: {name} must be a list")
                self._count(len(value), depth)
                if how == "predicates":
                    value = tuple(self.predicate(item, depth + 1) for item in value)
                else:
                    value = tuple(check_scalar(item) for item in value)
            elif how == "text":
                value = check_text(value, name)
            fields[name] = value  # "scalar": checked by the constructor
        return cls(**fields)


@dataclass(frozen=True, eq=False)
class OrderKey:
    """One ORDER BY term; fits lacking the value sort last in either direction."""

    operand: Operand
    reverse: bool = False

    def __post_init__(self) -> None:
        check_operand(self.operand)
        if not isinstance(self.reverse, bool):
            raise QueryError("reverse must be True or False")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderKey) and (self.operand._ident(), self.reverse) == (
            other.operand._ident(), other.reverse)

    def __hash__(self) -> int:
        return hash((self.operand._ident(), self.reverse))


def _index(value: object, what: str, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INDEX:
        raise QueryError(f"{what} must be a whole number from 0 to {MAX_INDEX}, not {value!r}")


@dataclass(frozen=True)
class QueryState:
    """Everything that selects and orders fits: what an aggregator is, apart from its connection.

    Refining methods return new states. Filtering or ordering after slicing is refused rather
    than guessed at: ``agg[:10].query(p)`` could mean either order of the two operations.
    """

    predicate: Predicate | None = None
    order: tuple[OrderKey, ...] = ()
    offset: int = 0
    limit: int | None = None
    completed_only: bool = False
    top_level_only: bool = True
    parent_id: str | None = None
    grid_only: bool = False

    def __post_init__(self) -> None:
        if self.predicate is not None and not isinstance(self.predicate, Predicate):
            raise QueryError(f"query() takes a predicate such as agg.model.x > 1, not {self.predicate!r}")
        if not isinstance(self.order, (tuple, list)) or len(self.order) > MAX_ORDER:
            raise QueryError(f"order must be a list of at most {MAX_ORDER} keys")
        if not all(isinstance(key, OrderKey) for key in self.order):
            raise QueryError("order holds OrderKey terms only")
        object.__setattr__(self, "order", tuple(self.order))
        _index(self.offset, "offset")
        _index(self.limit, "limit", none=True)
        for flag in ("completed_only", "top_level_only", "grid_only"):
            if not isinstance(getattr(self, flag), bool):
                raise QueryError(f"{flag} must be True or False")
        if self.parent_id is not None:
            check_text(self.parent_id, "parent_id")

    def _unsliced(self, what: str) -> None:
        if self.offset or self.limit is not None:
            raise QueryError(f"{what} after slicing or limit(): filter and order first, then slice")

    def where(self, predicate: Predicate) -> QueryState:
        """AND ``predicate`` onto the current one."""
        self._unsliced("query()")
        if not isinstance(predicate, Predicate):
            raise QueryError(f"query() takes a predicate such as agg.model.x > 1, not {predicate!r}")
        combined = predicate if self.predicate is None else self.predicate & predicate
        return replace(self, predicate=combined)

    def ordered(self, operand: Operand, reverse: bool = False) -> QueryState:
        """Add an ORDER BY term; the first one added is the primary key."""
        self._unsliced("order_by()")
        return replace(self, order=(*self.order, OrderKey(check_operand(operand), reverse)))

    def sliced(self, start: int | None = None, stop: int | None = None,
               step: int | None = None) -> QueryState:
        """``state[start:stop]`` within the current window, so slices of slices compose."""
        if step not in (None, 1):
            raise QueryError("slices with a step are not supported")
        for bound in (start, stop):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
                raise QueryError(f"slice bounds must be whole numbers >= 0 (no negatives), not {bound!r}")
        begin = start or 0
        limit = None if self.limit is None else max(self.limit - begin, 0)
        if stop is not None:
            limit = max(stop - begin, 0) if limit is None else min(limit, max(stop - begin, 0))
        return replace(self, offset=min(self.offset + begin, MAX_INDEX), limit=limit)

    def limited(self, n: int) -> QueryState:
        """At most ``n`` fits of the current window."""
        _index(n, "limit")
        return replace(self, limit=n if self.limit is None else min(self.limit, n))

    def children_of(self, fit_id: str) -> QueryState:
        """Only the children (grid cells, sensitivity fits) of one fit; they are not top level."""
        self._unsliced("children()")
        return replace(self, parent_id=check_text(fit_id, "a fit id"), top_level_only=False)

    def grids(self) -> QueryState:
        """Only grid-search and sensitivity parents."""
        self._unsliced("grid_searches()")
        return replace(self, grid_only=True)

    def to_wire(self) -> dict[str, Any]:
        """Plain types for msgpack/JSON; ``from_wire`` rebuilds an equal state."""
        return {
            "predicate": None if self.predicate is None else self.predicate.to_wire(),
            "order": [{"operand": operand_to_wire(k.operand), "reverse": k.reverse} for k in self.order],
            "offset": self.offset, "limit": self.limit, "completed_only": self.completed_only,
            "top_level_only": self.top_level_only, "parent_id": self.parent_id, "grid_only": self.grid_only,
        }

    @classmethod
    def from_wire(cls, data: object) -> QueryState:
        """Validate a state sent by an untrusted client; anything malformed is a QueryError."""
        reader = _WireReader()
        fields = reader._map(data, 0, _STATE_KEYS, "query state")
        if not isinstance(fields["order"], list) or len(fields["order"]) > MAX_ORDER:
            raise QueryError(f"malformed query state: order must be a list of at most {MAX_ORDER} keys")
        order = tuple(
            OrderKey(reader.operand(key["operand"], 2), key["reverse"])
            for key in (reader._map(k, 1, ("operand", "reverse"), "order key") for k in fields["order"])
        )
        predicate = fields["predicate"]
        predicate = None if predicate is None else reader.predicate(predicate, 1)
        return cls(**{**fields, "predicate": predicate, "order": order})


_STATE_KEYS: Final = tuple(QueryState.__dataclass_fields__)


# --- the fields aggregators expose ----------------------------------------------------------

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


class _SearchFields:
    """``agg.search``: the columns PyAutoFit reaches through the search (``agg.search.unique_tag``)."""

    __slots__ = ()

    @property
    def unique_tag(self) -> Column:
        return Column("unique_tag")

    @property
    def name(self) -> Column:
        return Column("name")

    @property
    def path_prefix(self) -> Column:
        return Column("path_prefix")


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
