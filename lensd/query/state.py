"""The query state: which fits an aggregator selects, and how it orders and slices them (the
fields an aggregator exposes to build predicates with, ``agg.model`` and co., are in fields.py).

Nodes live in query.py; this module adds what surrounds one predicate: ``OrderKey`` terms, the
offset/limit window, the scope flags (completed only, top level only, children of a parent or of
another state's fits, grid parents), and the strict reader of the wire form
(``QueryState.from_wire``): the daemon trusts nothing a client sends, so every shape is checked
here and every value by the node constructors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from lensd.errors import QueryError
from lensd.query.fields import QueryFields  # re-exported: the agg.<field> mixin lives in fields.py
from lensd.query.nodes import (
    MAX_DEPTH,
    MAX_NODES,
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
    as_predicate,
    check_operand,
    check_scalar,
    check_text,
)

MAX_ORDER: Final = 16
MAX_SLICES: Final = 16  # slices waiting for the fit count (a negative bound); more is a mistake
MAX_INDEX: Final = 2**62  # offsets and limits stay far inside sqlite's 64-bit integers
MAX_GENERATIONS: Final = 8  # agg.children().children()...: the deepest chain of parent states
_NODES: Final[dict[str, type[Predicate]]] = {
    c._tag: c for c in (Compare, Contains, In, IsNone, ClassIs, And, Or, Not)
}
OPERANDS: Final[dict[str, tuple[type[Operand], str]]] = {  # wire type -> class, its one field
    c._tag: (c, c._field) for c in (ModelPath, MedianPath, InfoKey, JobKey, Column)
}


def operand_to_wire(operand: Operand) -> dict[str, Any]:
    """``{"t": tag, <field>: value}``: what ``_WireReader.operand`` reads back."""
    return operand._to_wire()


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
        return cls(**fields)  # a Not of a Not is its item (predicates.Not): one shape, however sent

    def state(self, data: object, depth: int) -> QueryState:
        """A whole state; its ``parent`` (the state whose children it selects) nests one level down."""
        if isinstance(data, dict):  # a client from before negative slices, or from before parent states
            data = {"slices": [], "parent": None, **data}
        fields = self._map(data, depth, _STATE_KEYS, "query state")
        if not isinstance(fields["slices"], list) or len(fields["slices"]) > MAX_SLICES:
            raise QueryError(f"malformed query state: slices must be a list of at most {MAX_SLICES} pairs")
        if not isinstance(fields["order"], list) or len(fields["order"]) > MAX_ORDER:
            raise QueryError(f"malformed query state: order must be a list of at most {MAX_ORDER} keys")
        order = tuple(
            OrderKey(self.operand(key["operand"], depth + 2), key["reverse"])
            for key in (self._map(k, depth + 1, ("operand", "reverse"), "order key") for k in fields["order"])
        )
        predicate = fields["predicate"]
        predicate = None if predicate is None else self.predicate(predicate, depth + 1)
        parent = fields["parent"]
        if parent is not None:
            if depth >= MAX_GENERATIONS:
                raise QueryError(f"query too large: children of children at most {MAX_GENERATIONS} deep")
            parent = self.state(parent, depth + 1)
        return QueryState(**{**fields, "predicate": predicate, "order": order, "parent": parent})


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

    ``offset``/``limit`` is a window counted from the first fit. A slice with a negative bound
    (``agg[-2:]``, ``agg[:-1]``) needs the number of fits, which only the database knows when the
    query runs: such slices (and any slicing after them) wait in ``slices`` until the reader
    calls ``resolved(total)``, which applies them with Python's own slice rules. The daemon gets
    them the same way, so the file and the socket answer ``agg[-2:]`` alike.

    ``parent``: only the children (grid cells, sensitivity fits) of the fits that state selects,
    what ``agg.children()`` means. It stays a state, compiled into the same statement as a
    subquery, so no fit id is read or sent however many parents there are.
    """

    predicate: Predicate | None = None
    order: tuple[OrderKey, ...] = ()
    offset: int = 0
    limit: int | None = None
    completed_only: bool = False
    top_level_only: bool = True
    parent_id: str | None = None
    grid_only: bool = False
    slices: tuple[tuple[int | None, int | None], ...] = ()
    parent: QueryState | None = None

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
        if not isinstance(self.slices, (tuple, list)) or len(self.slices) > MAX_SLICES:
            raise QueryError(f"at most {MAX_SLICES} slices with negative bounds")
        object.__setattr__(self, "slices", tuple(_pending(item) for item in self.slices))
        if self.parent is not None:
            if not isinstance(self.parent, QueryState):
                raise QueryError(f"parent must be a query state, not {type(self.parent).__name__}")
            if self.parent.generations >= MAX_GENERATIONS:
                raise QueryError(f"children of children at most {MAX_GENERATIONS} deep")

    @property
    def generations(self) -> int:
        """How many parent states stand above this one (``agg.children().children()``: 2)."""
        return 0 if self.parent is None else 1 + self.parent.generations

    def _unsliced(self, what: str) -> None:
        if self.offset or self.limit is not None or self.slices:
            raise QueryError(f"{what} after slicing or limit(): filter and order first, then slice")

    def where(self, predicate: Predicate | Column) -> QueryState:
        """AND ``predicate`` onto the current one."""
        self._unsliced("query()")
        predicate = as_predicate(predicate)
        combined = predicate if self.predicate is None else self.predicate & predicate
        return replace(self, predicate=combined)

    def ordered(self, operand: Operand, reverse: bool = False) -> QueryState:
        """Add an ORDER BY term; the first one added is the primary key."""
        self._unsliced("order_by()")
        return replace(self, order=(*self.order, OrderKey(check_operand(operand), reverse)))

    def sliced(self, start: int | None = None, stop: int | None = None,
               step: int | None = None) -> QueryState:
        """``state[start:stop]`` within the current window, so slices of slices compose.

        Negative bounds count from the end of the window, as for a list; they wait for the count.
        """
        if step not in (None, 1):
            raise QueryError("slices with a step are not supported")
        start, stop = _pending((start, stop))
        if self.slices or any(bound is not None and bound < 0 for bound in (start, stop)):
            return replace(self, slices=(*self.slices, (start, stop)))
        begin = start or 0
        limit = None if self.limit is None else max(self.limit - begin, 0)
        if stop is not None:
            limit = max(stop - begin, 0) if limit is None else min(limit, max(stop - begin, 0))
        return replace(self, offset=min(self.offset + begin, MAX_INDEX), limit=limit)

    def limited(self, n: int) -> QueryState:
        """At most ``n`` fits of the current window."""
        _index(n, "limit")
        if self.slices:
            return replace(self, slices=(*self.slices, (None, n)))
        return replace(self, limit=n if self.limit is None else min(self.limit, n))

    @property
    def needs_total(self) -> bool:
        """True when slices wait for the number of fits (``resolved`` applies them), here or in
        the parent state (``readplan.resolve`` resolves both)."""
        return bool(self.slices) or (self.parent is not None and self.parent.needs_total)

    def unwindowed(self) -> QueryState:
        """The same fits before any slicing: what ``resolved`` needs the count of."""
        return replace(self, offset=0, limit=None, slices=())

    def resolved(self, total: int) -> QueryState:
        """The window as ``offset``/``limit`` once ``total`` (the count of ``unwindowed()``) is known.

        ``range`` slicing is Python's list slicing, so ``agg[-2:]`` is exactly ``fits[-2:]``.
        """
        if not self.slices:
            return self
        window = range(total)[self.offset:None if self.limit is None else self.offset + self.limit]
        for start, stop in self.slices:
            window = window[start:stop]
        return replace(self, offset=min(window.start, MAX_INDEX), limit=len(window), slices=())

    def children_of(self, fit_id: str) -> QueryState:
        """Only the children (grid cells, sensitivity fits) of one fit; they are not top level."""
        self._unsliced("children()")
        return replace(self, parent_id=check_text(fit_id, "a fit id"), top_level_only=False)

    def children(self) -> QueryState:
        """The children of the fits this state selects (its order and slices included): grid-search
        cells and sensitivity fits, complete only when this state asks for that."""
        return QueryState(parent=self, completed_only=self.completed_only, top_level_only=False)

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
            "slices": [list(item) for item in self.slices],
            # sent only when set, so a daemon from before parent states still reads every other query
            **({"parent": self.parent.to_wire()} if self.parent is not None else {}),
        }

    @classmethod
    def from_wire(cls, data: object) -> QueryState:
        """Validate a state sent by an untrusted client; anything malformed is a QueryError."""
        return _WireReader().state(data, 0)


def _pending(item: object) -> tuple[int | None, int | None]:
    """One ``(start, stop)`` slice: whole numbers (negatives count from the end) or None."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise QueryError("a slice is a [start, stop] pair")
    for bound in item:
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)
                                  or not -MAX_INDEX <= bound <= MAX_INDEX):
            raise QueryError(f"slice bounds must be whole numbers within ±{MAX_INDEX} or None, not {bound!r}")
    return item[0], item[1]


_STATE_KEYS: Final = tuple(QueryState.__dataclass_fields__)

__all__ = ["MAX_GENERATIONS", "MAX_ORDER", "MAX_SLICES", "OrderKey", "QueryFields", "QueryState"]
