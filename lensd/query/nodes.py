"""Query expressions: immutable nodes built by comparing fields of an aggregator.

A predicate is data, not SQL. The same tree is compiled to SQL (compiler.py), parsed from text
(text.py), evaluated in pure Python by the tests and sent to the daemon (``to_wire``), so those
four cannot disagree about what a query means; this module knows nothing of any of them.

The tree's one import point: the operands and the leaf tests holding one are here; the ``Predicate``
base and junctions (predicates.py) and the value checks (values.py) sit below, re-exported here.

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

Around a predicate: order, slice, scope and the strict wire reader in state.py, ``agg.<field>`` in fields.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from lensd.errors import QueryError
from lensd.query.predicates import And, Not, Or, Predicate, set_field
from lensd.query.values import (
    BOOL_COLUMNS,
    COMPARISONS,
    MAX_DEPTH,
    MAX_NODES,
    METHODS,
    NUMBER_COLUMNS,
    TEXT_COLUMNS,
    ClassField,
    Scalar,
    check_list,
    check_scalar,
    check_text,
    class_repr,
    no_bool,
    path_repr,
)
from lensd.store import schema

__all__ = [
    "BOOL_COLUMNS", "COMPARISONS", "MAX_DEPTH", "MAX_NODES", "METHODS", "NUMBER_COLUMNS", "TEXT_COLUMNS", "And",
    "ClassField", "ClassIs", "Column", "Compare", "Contains", "In", "InfoKey", "IsNone", "JobKey", "MedianPath",
    "ModelPath", "Not", "Operand", "Or", "Predicate", "Scalar", "check_operand", "check_scalar", "check_text",
    "fact_address", "no_bool",
]


def fact_address(operand: Operand) -> tuple[int, str] | None:
    """``(kind, key)`` of an operand stored in the facts table; None for a fit column."""
    return (operand._kind, operand._fact_key) if isinstance(operand, _Fact) else None


class Operand:
    """Something a fit has a value for; comparing it builds a Predicate."""

    __slots__ = ()
    __bool__ = no_bool
    # numpy on the left (``np.array(1.0) < agg.model.x``) hands the comparison to the operand, as a
    # number does, instead of comparing element by element and asking the Predicate for a bool
    __array_ufunc__ = None
    _tag: ClassVar[str]
    _field: ClassVar[str]  # the name of its one field, in the wire form too

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
        what = f"{self!r}.in_()"
        values = check_list(values, what)
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

    def _to_wire(self) -> dict[str, Any]:
        """The operand's wire form, ``{"t": tag, <its field>: value}`` (state.py reads it back)."""
        tag, value = self._ident()
        return {"t": tag, self._field: value}


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
    _field = "path"

    def __post_init__(self) -> None:
        set_field(self, "path", check_text(self.path, "a model path"))

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
        return path_repr(self._tag, self.path)


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
    _field = "key"

    def __post_init__(self) -> None:
        set_field(self, "key", check_text(self.key, f"a {self._tag} key"))

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
    _field = "name"

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

    # A boolean column alone is a predicate, as in PyAutoFit: agg.query(agg.is_complete),
    # ~agg.is_grid_search, agg.is_complete & (agg.name == "x"), (agg.name == "x") & agg.is_complete.
    def _as_predicate(self) -> Predicate:
        if self.name not in BOOL_COLUMNS:
            raise QueryError(f"{self.name} is not a yes/no column: compare it (e.g. {self.name} == ...)")
        return Compare(self, "==", True)

    def __invert__(self) -> Predicate:
        return ~self._as_predicate()

    def __and__(self, other: object) -> Predicate:
        return self._as_predicate() & other

    def __or__(self, other: object) -> Predicate:
        return self._as_predicate() | other


def as_predicate(value: object) -> Predicate:
    """``value`` as a predicate: a predicate itself, or a boolean column meaning ``column == True``."""
    if isinstance(value, Column):
        return value._as_predicate()
    if not isinstance(value, Predicate):
        raise QueryError(f"query() takes a predicate such as agg.model.x > 1, not {value!r}")
    return value


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
        set_field(self, "value", check_scalar(self.value, f"{check_operand(self.operand)!r} {self.op}"))
        self.operand._check(self.op, self.value)

    def __repr__(self) -> str:
        return f"{self.operand!r} {self.op} {self.value!r}"

    def _negated_repr(self) -> str | None:
        return f"{self.operand!r} != {self.value!r}" if self.op == "==" else None


@dataclass(frozen=True, eq=False, repr=False)
class Contains(Predicate):
    """The string value holds ``value`` as a substring (case-sensitive)."""

    operand: Operand
    value: str
    _tag = "contains"
    _wire = {"operand": "operand", "value": "text"}

    def __post_init__(self) -> None:
        set_field(self, "value", check_text(self.value, f"{check_operand(self.operand)!r}.contains() argument"))
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
        set_field(self, "values", tuple(check_scalar(v, what) for v in self.values))
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
        set_field(self, "path", check_text(self.path, "a model path"))
        set_field(self, "name", check_text(self.name, "a class name"))
        if self.by not in ("class_path", "class_name"):
            raise QueryError(f"a class test is by class_path or class_name, not {self.by!r}")

    def __repr__(self) -> str:
        return f"{ModelPath(self.path)!r} == {class_repr(self.by, self.name)}"

    def _negated_repr(self) -> str:
        return f"{ModelPath(self.path)!r} != {class_repr(self.by, self.name)}"
