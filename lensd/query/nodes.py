"""Query expressions: immutable nodes built by comparing fields of an aggregator.

A predicate is data, not SQL. The same tree is compiled to SQL (compiler.py), parsed from text
(queryparse.py), evaluated in pure Python by the tests and sent to the daemon (``to_wire``), so
those four cannot disagree about what a query means; this module knows nothing of any of them.

    Operand                          what a fit has             compared as
    ├── ModelPath("a.b")             agg.model.a.b              max-likelihood value, or node class
    ├── MedianPath("a.b")            agg.median.a.b             median-PDF value
    ├── InfoKey("k"), JobKey("k")    agg.info["k"], agg.job[k]  the JSON value, type kept
    └── Column("unique_tag")         agg.unique_tag, ...        the fit's column
    Predicate
    ├── Compare(x, op, v)  Contains(x, s)  In(x, vs)  IsNone(x)  ClassIs(path, by, name)
    └── And(items)  Or(items)  Not(item)

``x != v`` is built as ``Not(x == v)`` and ``x == None`` as ``IsNone(x)``, so each meaning has one
shape. ``__bool__`` raises on every node so ``a and b`` or ``1 < x < 2`` fail loudly instead of
silently dropping half a query. Operand internals are underscored so that they do not shadow
parameter names reached by attribute access (``agg.model.galaxies.lens.kind`` is a path).

What surrounds a predicate in an aggregator (order, slice, scope, the strict wire reader, the
``agg.<field>`` mixin) is in state.py.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, NoReturn, TypeAlias

from lensd.errors import QueryError
from lensd.store import schema

Scalar: TypeAlias = bool | int | float | str
ClassField: TypeAlias = Literal["class_path", "class_name"]

TEXT_COLUMNS: Final = frozenset({"id", "name", "path_prefix", "unique_tag", "status", "parent_id"})
NUMBER_COLUMNS: Final = frozenset({"max_log_likelihood", "log_evidence"})
BOOL_COLUMNS: Final = frozenset({"is_complete", "is_grid_search"})
COMPARISONS: Final = ("==", "<", "<=", ">", ">=")
METHODS: Final = frozenset({"contains", "in_", "is_none", "path"})  # names attribute access cannot reach
_BOOL_MESSAGE: Final = (
    "a query cannot be used as a bool: use & | ~ (with parentheses) instead of and/or/not, "
    "and (a < x) & (x < b) instead of a < x < b"
)


def no_bool(self: object) -> NoReturn:
    raise QueryError(_BOOL_MESSAGE)


def check_text(value: object, what: str) -> str:
    """A string sqlite can bind (no lone surrogates); anything else is a QueryError."""
    if not isinstance(value, str):
        raise QueryError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{what}: not valid unicode (a lone surrogate?): {value!r}") from None
    return value


def check_scalar(value: object, what: str = "a query value") -> Scalar:
    """A value fits can be compared with, normalised to bool, int, float or str (numpy too).

    NaN is refused: it equals nothing and orders with nothing, so a query holding it is a mistake.
    """
    if isinstance(value, str):
        return check_text(value, what)
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real):
        result: int | float = int(value) if isinstance(value, numbers.Integral) else float(value)
        try:
            if math.isnan(float(result)):
                raise QueryError(f"{what}: NaN equals nothing; use .is_none() or a range instead")
        except OverflowError:
            raise QueryError(f"{what}: {value} is too large to compare") from None
        return result
    raise QueryError(f"{what}: cannot compare with {type(value).__name__} {value!r}")


def fact_address(operand: Operand) -> tuple[int, str] | None:
    """``(kind, key)`` of an operand stored in the facts table; None for a fit column."""
    return (operand._kind, operand._fact_key) if isinstance(operand, _Fact) else None


def _path_repr(root: str, path: str) -> str:
    parts = path.split(".")
    if path and not all(p.isidentifier() and not p.startswith("_") and p not in METHODS for p in parts):
        return f"{root}[{path!r}]"
    return root + "".join(f".{p}" for p in parts if path)


class Operand:
    """Something a fit has a value for; comparing it builds a Predicate."""

    __slots__ = ()
    __bool__ = no_bool
    _tag: ClassVar[str]

    def _ident(self) -> tuple[str, str]:
        """(wire type, path/key/name): what makes two operands the same field."""
        raise NotImplementedError

    def __hash__(self) -> int:
        return hash(self._ident())

    def __eq__(self, other: object) -> Predicate:  # type: ignore[override]
        return IsNone(self) if other is None else Compare(self, "==", check_scalar(other, f"{self!r} =="))

    def __ne__(self, other: object) -> Predicate:  # type: ignore[override]
        return ~(self == other)

    def _ordered(self, op: str, other: object) -> Predicate:
        if other is None:
            raise QueryError(f"{self!r} {op} None: None has no order; use .is_none()")
        return Compare(self, op, check_scalar(other, f"{self!r} {op}"))

    def __lt__(self, other: object) -> Predicate:
        return self._ordered("<", other)

    def __le__(self, other: object) -> Predicate:
        return self._ordered("<=", other)

    def __gt__(self, other: object) -> Predicate:
        return self._ordered(">", other)

    def __ge__(self, other: object) -> Predicate:
        return self._ordered(">=", other)

    def __iter__(self) -> NoReturn:
        raise QueryError(f"{self!r} is a query field, not a collection")

    def contains(self, text: str) -> Predicate:
        """Substring test on string values (case-sensitive); never true for numbers."""
        return Contains(self, text)

    def in_(self, values: Iterable[object]) -> Predicate:
        """True when the value equals any of ``values``: the same as ``(x == a) | (x == b)``."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise QueryError(f"{self!r}.in_() takes a list of values, not {type(values).__name__}")
        values = list(values)
        what = f"{self!r}.in_()"
        scalars = tuple(check_scalar(v, what) for v in values if v is not None and not isinstance(v, type))
        parts: list[Predicate] = [In(self, scalars)] if scalars or not values else []
        parts += [self == v for v in values if isinstance(v, type)]
        parts += [IsNone(self)] if any(v is None for v in values) else []
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def is_none(self) -> Predicate:
        """True when the fit has no value here, or the value is None (JSON null)."""
        return IsNone(self)

    def _check(self, op: str, value: Scalar) -> None:
        """Refuse, at build time, comparisons the operand's type makes meaningless."""


@dataclass(frozen=True, eq=False, repr=False)
class _Fact(Operand):
    """An operand stored in the ``facts`` table under ``(kind, key)``."""

    _kind: ClassVar[int]

    @property
    def _fact_key(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False, repr=False)
class _Path(_Fact):
    path: str

    def __post_init__(self) -> None:
        check_text(self.path, "a model path")

    def _ident(self) -> tuple[str, str]:
        return self._tag, self.path

    @property
    def _fact_key(self) -> str:
        return self.path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # dunders and the probes of copy, pickle, IPython, numpy
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        """Extend the path; also for names that clash with methods: ``x["contains"]``."""
        if check_text(name, "a path segment") == "":
            raise QueryError("a path segment cannot be empty")
        return type(self)(f"{self.path}.{name}" if self.path else name)

    def __repr__(self) -> str:
        return _path_repr(self._tag, self.path)


@dataclass(frozen=True, eq=False, repr=False)
class ModelPath(_Path):
    """A model node: its max-likelihood value, or (compared with a class) its class."""

    _tag = "model"
    _kind = schema.KIND_VALUE
    __hash__ = Operand.__hash__  # defining __eq__ would otherwise make the class unhashable

    def __eq__(self, other: object) -> Predicate:  # type: ignore[override]
        if isinstance(other, type):
            return ClassIs(self.path, "class_path", f"{other.__module__}.{other.__qualname__}")
        return super().__eq__(other)

    def _ordered(self, op: str, other: object) -> Predicate:
        if isinstance(other, type):
            raise QueryError(f"{self!r} {op} {other.__name__}: classes have no order")
        return super()._ordered(op, other)


@dataclass(frozen=True, eq=False, repr=False)
class MedianPath(_Path):
    """A parameter's median-PDF value, from the fit's summary."""

    _tag = "median"
    _kind = schema.KIND_MEDIAN


@dataclass(frozen=True, eq=False, repr=False)
class _Key(_Fact):
    key: str

    def __post_init__(self) -> None:
        check_text(self.key, f"a {self._tag} key")

    def _ident(self) -> tuple[str, str]:
        return self._tag, self.key

    @property
    def _fact_key(self) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"{self._tag}[{self.key!r}]"


@dataclass(frozen=True, eq=False, repr=False)
class InfoKey(_Key):
    """A top-level key of the fit's ``info`` dict."""

    _tag = "info"
    _kind = schema.KIND_INFO


@dataclass(frozen=True, eq=False, repr=False)
class JobKey(_Key):
    """A scheduler fact in the fit's ``job`` dict, e.g. ``SLURM_ARRAY_JOB_ID``."""

    _tag = "job"
    _kind = schema.KIND_JOB


@dataclass(frozen=True, eq=False, repr=False)
class Column(Operand):
    """A column of the ``fits`` table; its type is checked when a predicate is built."""

    name: str
    _tag: ClassVar[str] = "column"

    def __post_init__(self) -> None:
        if self.name not in TEXT_COLUMNS | NUMBER_COLUMNS | BOOL_COLUMNS:
            raise QueryError(f"no fit column named {self.name!r}")

    def _ident(self) -> tuple[str, str]:
        return self._tag, self.name

    def _check(self, op: str, value: Scalar) -> None:
        is_text = isinstance(value, str)
        if (self.name in TEXT_COLUMNS) != is_text or (op == "contains" and not is_text):
            wanted = "a string" if self.name in TEXT_COLUMNS else "a number"
            raise QueryError(f"{self.name} holds {wanted}; cannot use {op} with {value!r}")

    def __repr__(self) -> str:
        return self.name


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
    if not isinstance(right, Predicate):
        raise QueryError(f"cannot combine a query with {right!r}: both sides of & and | must be queries")
    return tuple(item for p in (left, right) for item in (p.items if isinstance(p, cls) else (p,)))


def _set(node: object, name: str, value: object) -> None:
    object.__setattr__(node, name, value)  # normalising a field of a frozen node in __post_init__


def check_operand(value: object) -> Operand:
    """``value`` if it is a query field; anything else is a QueryError."""
    if not isinstance(value, Operand):
        raise QueryError(f"expected a query field such as agg.model.x, got {value!r}")
    return value


@dataclass(frozen=True, eq=False, repr=False)
class Compare(Predicate):
    """``operand op value``. ModelPath == "str" also matches the node's class (see docs)."""

    operand: Operand
    op: str
    value: Scalar
    _tag = "cmp"
    _wire = {"operand": "operand", "op": "text", "value": "scalar"}

    def __post_init__(self) -> None:
        if self.op not in COMPARISONS:
            raise QueryError(f"unknown comparison {self.op!r}")
        _set(self, "value", check_scalar(self.value, f"{check_operand(self.operand)!r} {self.op}"))
        self.operand._check(self.op, self.value)

    def __repr__(self) -> str:
        return f"{self.operand!r} {self.op} {self.value!r}"


@dataclass(frozen=True, eq=False, repr=False)
class Contains(Predicate):
    """The string value holds ``value`` as a substring (case-sensitive)."""

    operand: Operand
    value: str
    _tag = "contains"
    _wire = {"operand": "operand", "value": "text"}

    def __post_init__(self) -> None:
        check_text(self.value, f"{check_operand(self.operand)!r}.contains() argument")
        self.operand._check("contains", self.value)

    def __repr__(self) -> str:
        return f"{self.operand!r}.contains({self.value!r})"


@dataclass(frozen=True, eq=False, repr=False)
class In(Predicate):
    """The value equals one of ``values``; ``In(x, ())`` is always false."""

    operand: Operand
    values: tuple[Scalar, ...]
    _tag = "in"
    _wire = {"operand": "operand", "values": "scalars"}

    def __post_init__(self) -> None:
        what = f"{check_operand(self.operand)!r}.in_()"
        if not isinstance(self.values, (tuple, list)):
            raise QueryError(f"{what} takes a list of values")
        _set(self, "values", tuple(check_scalar(v, what) for v in self.values))
        for value in self.values:
            self.operand._check("in_", value)

    def __repr__(self) -> str:
        return f"{self.operand!r}.in_([{', '.join(map(repr, self.values))}])"


@dataclass(frozen=True, eq=False, repr=False)
class IsNone(Predicate):
    """No value at all, or a None (JSON null) value; NaN and lists are not none."""

    operand: Operand
    _tag = "is_none"
    _wire = {"operand": "operand"}

    def __post_init__(self) -> None:
        check_operand(self.operand)

    def __repr__(self) -> str:
        return f"{self.operand!r}.is_none()"


@dataclass(frozen=True, eq=False, repr=False)
class ClassIs(Predicate):
    """The model node at ``path`` names the class ``name`` (by full class path or by class name)."""

    path: str
    by: ClassField
    name: str
    _tag = "class"
    _wire = {"path": "text", "by": "text", "name": "text"}

    def __post_init__(self) -> None:
        check_text(self.path, "a model path")
        check_text(self.name, "a class name")
        if self.by not in ("class_path", "class_name"):
            raise QueryError(f"a class test is by class_path or class_name, not {self.by!r}")

    def _target(self) -> str:
        """The bare name the text grammar reads as a class, when the name can be written so."""
        parts = self.name.split(".")
        bare = all(p.isidentifier() for p in parts) and (len(parts) > 1) == (self.by == "class_path")
        return self.name if bare and self.name not in _LITERAL_NAMES else f"<{self.by} {self.name!r}>"

    def __repr__(self) -> str:
        return f"{ModelPath(self.path)!r} == {self._target()}"


_LITERAL_NAMES: Final = frozenset({"true", "false", "none", "null", "True", "False", "None", "inf", "nan"})


@dataclass(frozen=True, eq=False, repr=False)
class _Junction(Predicate):
    items: tuple[Predicate, ...]
    _wire = {"items": "predicates"}
    _joiner: ClassVar[str]

    def __post_init__(self) -> None:
        if not isinstance(self.items, (tuple, list)) or len(self.items) < 2:
            raise QueryError(f"'{self._tag}' joins at least two predicates")
        _set(self, "items", tuple(self.items))
        if not all(isinstance(item, Predicate) for item in self.items):
            raise QueryError(f"'{self._tag}' joins predicates only")

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

    def __post_init__(self) -> None:
        if not isinstance(self.item, Predicate):
            raise QueryError(f"~ negates predicates only, not {self.item!r}")

    def __invert__(self) -> Predicate:
        return self.item

    def __repr__(self) -> str:
        item = self.item
        if isinstance(item, Compare) and item.op == "==":
            return f"{item.operand!r} != {item.value!r}"
        if isinstance(item, ClassIs):
            return f"{ModelPath(item.path)!r} != {item._target()}"
        return f"~({item!r})"


# --- wire form of the nodes (QueryState.from_wire in state.py reads it back, strictly) ------

MAX_DEPTH: Final = 64
MAX_NODES: Final = 10_000
OPERANDS: Final[dict[str, tuple[type[Operand], str]]] = {
    "model": (ModelPath, "path"), "median": (MedianPath, "path"), "info": (InfoKey, "key"),
    "job": (JobKey, "key"), "column": (Column, "name"),
}


def operand_to_wire(operand: Operand) -> dict[str, Any]:
    tag, value = operand._ident()
    return {"t": tag, OPERANDS[tag][1]: value}


def _to_wire(node: Predicate) -> dict[str, Any]:
    out: dict[str, Any] = {"t": node._tag}
    for name, how in node._wire.items():
        value = getattr(node, name)
        if how == "operand":
            value = operand_to_wire(value)
        elif how == "predicate":
            value = _to_wire(value)
        elif how == "predicates":
            value = [_to_wire(item) for item in value]
        elif how == "scalars":
            value = list(value)
        out[name] = value
    return out
