"""The predicate side of the query tree: the ``Predicate`` base, its junctions and its wire form.

The leaf tests that hold an operand (``Compare``, ``In``, ...) are in nodes.py, beside the operands
that build them; everything here works on any predicate without knowing its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from lensd.errors import QueryError
from lensd.query.values import no_bool


class Predicate:
    """A test on one fit; combine with ``&``, ``|`` and ``~``.

    Equality is structural (through the wire form) so trees compare in tests and hash as dict
    keys; ``repr`` is the text form ``lensd query`` parses back.
    """

    __slots__ = ()
    __bool__ = no_bool
    _tag: ClassVar[str]
    _wire: ClassVar[dict[str, str]]  # field name -> how it travels (see state._WireReader)

    def __and__(self, other: object) -> Predicate:
        return And(_flatten(And, self, other))

    def __or__(self, other: object) -> Predicate:
        return Or(_flatten(Or, self, other))

    def __rand__(self, other: object) -> NoReturn:
        raise QueryError(f"cannot combine {other!r} with a query: both sides of & and | must be queries")

    __ror__ = __rand__

    def __invert__(self) -> Predicate:
        return Not(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Predicate) and self.to_wire() == other.to_wire()

    def __hash__(self) -> int:
        return hash(_freeze(self.to_wire()))

    def _negated_repr(self) -> str | None:
        """The text of ``~self`` when it has a shorter form than ``~(...)`` (``x != v``)."""
        return None

    def to_wire(self) -> dict[str, Any]:
        """Plain dicts, lists, strings and numbers: what msgpack and JSON carry."""
        return _to_wire(self)


def _freeze(value: Any) -> Any:
    """A hashable copy of wire data, equal where the dicts are equal."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _flatten(cls: type[And | Or], left: Predicate, right: object) -> tuple[Predicate, ...]:
    convert = getattr(right, "_as_predicate", None)  # a boolean column alone (nodes.Column)
    if convert is not None and not isinstance(right, Predicate):
        right = convert()
    if not isinstance(right, Predicate):
        raise QueryError(f"cannot combine a query with {right!r}: both sides of & and | must be queries")
    return tuple(item for p in (left, right) for item in (p.items if isinstance(p, cls) else (p,)))


def set_field(node: object, name: str, value: object) -> None:
    """Normalise a field of a frozen node in its ``__post_init__``."""
    object.__setattr__(node, name, value)


def _to_wire(node: Predicate) -> dict[str, Any]:
    """``node`` as wire data, led by its ``_wire`` table; operands give their own (``_to_wire``)."""
    out: dict[str, Any] = {"t": node._tag}
    for name, how in node._wire.items():
        value = getattr(node, name)
        if how == "operand":
            value = value._to_wire()
        elif how == "predicate":
            value = _to_wire(value)
        elif how == "predicates":
            value = [_to_wire(item) for item in value]
        elif how == "scalars":
            value = list(value)
        out[name] = value
    return out


@dataclass(frozen=True, eq=False, repr=False)
class _Junction(Predicate):
    items: tuple[Predicate, ...]
    _wire = {"items": "predicates"}
    _joiner: ClassVar[str]

    def __post_init__(self) -> None:
        if not isinstance(self.items, (tuple, list)) or len(self.items) < 2:
            raise QueryError(f"'{self._tag}' joins at least two predicates")
        if not all(isinstance(item, Predicate) for item in self.items):
            raise QueryError(f"'{self._tag}' joins predicates only")
        # one shape per meaning, as ``&`` and ``|`` build (and the text grammar reads back): an And
        # built from the wire holding an And holds its items instead
        flat = (item for p in self.items for item in (p.items if type(p) is type(self) else (p,)))
        set_field(self, "items", tuple(flat))

    def __repr__(self) -> str:
        return self._joiner.join(f"({item!r})" for item in self.items)


@dataclass(frozen=True, eq=False, repr=False)
class And(_Junction):
    _tag = "and"
    _joiner = " & "


@dataclass(frozen=True, eq=False, repr=False)
class Or(_Junction):
    _tag = "or"
    _joiner = " | "


@dataclass(frozen=True, eq=False, repr=False)
class Not(Predicate):
    """Negation; two-valued, so ``~(x == v)`` is true where x is missing."""

    item: Predicate
    _tag = "not"
    _wire = {"item": "predicate"}

    def __new__(cls, item: Predicate) -> Not:
        """``Not(Not(p))`` is ``p`` itself, as ``~~p`` and the wire reader make it: one shape per
        meaning, so the two are equal and compile to the same SQL (never ``NOT (NOT (...))``). A
        Not therefore never holds a Not."""
        if isinstance(item, Not):
            return item.item  # type: ignore[return-value]  # not a Not, so __init__ is not run on it
        return super().__new__(cls)

    def __getnewargs__(self) -> tuple[Predicate]:
        return (self.item,)  # for copy and pickle, which call __new__ before restoring the fields

    def __post_init__(self) -> None:
        if not isinstance(self.item, Predicate):
            raise QueryError(f"~ negates predicates only, not {self.item!r}")

    def __invert__(self) -> Predicate:
        return self.item

    def __repr__(self) -> str:
        negated = self.item._negated_repr()
        return f"~({self.item!r})" if negated is None else negated
