"""Query nodes: how Python operators build trees, what they refuse, the state, the wire form."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _reference import fake_class, predicates
from hypothesis import given, settings
from hypothesis import strategies as st

from lensd.errors import QueryError
from lensd.query.nodes import (
    MAX_DEPTH,
    And,
    ClassIs,
    Column,
    Compare,
    Contains,
    In,
    InfoKey,
    IsNone,
    ModelPath,
    Not,
    Or,
)
from lensd.query.state import MAX_GENERATIONS, OrderKey, QueryFields, QueryState

agg = QueryFields()
lens = agg.model.galaxies.lens
Isothermal = fake_class("autolens.profiles.Isothermal")


def test_fields() -> None:
    assert lens.mass.einstein_radius.path == "galaxies.lens.mass.einstein_radius"
    assert agg.model["contains"]["path"].path == "contains.path"
    assert agg.median.a.b._ident() == ("median", "a.b")
    assert isinstance(agg.info["survey"], InfoKey) and agg.job["SLURM_ARRAY_JOB_ID"].key == "SLURM_ARRAY_JOB_ID"
    assert agg.search.unique_tag._ident() == agg.unique_tag._ident() == ("column", "unique_tag")
    for name in ("id", "name", "path_prefix", "status", "parent_id", "max_log_likelihood", "log_evidence",
                 "is_complete", "is_grid_search"):
        assert getattr(agg, name)._ident() == ("column", name)
    with pytest.raises(AttributeError):
        _ = lens.__class_getitem__  # dunders are never paths
    assert not hasattr(lens, "_repr_html_")  # notebook probes get AttributeError, not a path
    with pytest.raises(QueryError):
        agg.model[""]
    with pytest.raises(QueryError):
        Column("fit_key")
    assert hash(lens.mass) == hash(ModelPath("galaxies.lens.mass"))


def test_comparisons_build_nodes() -> None:
    assert (lens.mass == Isothermal) == ClassIs("galaxies.lens.mass", "class_path", "autolens.profiles.Isothermal")
    assert (lens.x > 1) == Compare(ModelPath("galaxies.lens.x"), ">", 1)
    assert (1 < lens.x) == (lens.x > 1)  # noqa: SIM300 - the reflected operator is the point
    assert (lens.x != 2) == Not(Compare(ModelPath("galaxies.lens.x"), "==", 2))
    assert (lens.x == None) == IsNone(ModelPath("galaxies.lens.x"))  # noqa: E711
    assert lens.x.is_none() == IsNone(ModelPath("galaxies.lens.x"))
    assert (lens.x != None) == ~lens.x.is_none()  # noqa: E711
    assert lens.x.contains("a") == Contains(ModelPath("galaxies.lens.x"), "a")
    assert lens.x.in_([]) == In(ModelPath("galaxies.lens.x"), ())
    assert lens.x.in_([1, None, Isothermal, "a"]) == Or((
        In(ModelPath("galaxies.lens.x"), (1, "a")), lens.x == Isothermal, lens.x.is_none()))
    assert (agg.max_log_likelihood > np.float64(2.5)) == (agg.max_log_likelihood > 2.5)
    assert (agg.info["n"] == np.int64(3)).to_wire()["value"] == 3
    assert (agg.info["n"] == 2**63 - 1).to_wire()["value"] == 2**63 - 1  # still an int
    big = (agg.info["n"] < 2**70).to_wire()["value"]  # past 64 bits: the float SQL compares anyway
    assert type(big) is float and big == 2.0**70
    assert (agg.is_complete == True) == Compare(Column("is_complete"), "==", True)  # noqa: E712


def test_numpy_scalars_become_the_plain_values_the_wire_and_the_grammar_carry() -> None:
    """A notebook compares with what numpy hands it: ``np.bool_`` from a comparison, a float32, an
    element of a string array. Each is the plain Python value in the tree (msgpack would refuse
    ``np.bool_``, and ``np.str_('a')`` is no text ``lensd query`` reads)."""
    built = [
        agg.is_complete == np.bool_(True), agg.is_grid_search != np.False_, agg.model.x.fixed == np.bool_(False),
        agg.info["flag"].in_([np.True_, np.int8(3), np.str_("a")]), agg.model.x > np.float32(0.5),
        agg.model.x <= np.uint64(2**64 - 1), agg.info[np.str_("k")] == np.str_("SLACS"),
        agg.name.contains(np.str_("lens")), agg.model[np.str_("a")] == 1,
    ]
    plain = [
        agg.is_complete == True, agg.is_grid_search != False, agg.model.x.fixed == False,  # noqa: E712
        agg.info["flag"].in_([True, 3, "a"]), agg.model.x > 0.5, agg.model.x <= float(2**64 - 1),
        agg.info["k"] == "SLACS", agg.name.contains("lens"), agg.model["a"] == 1,
    ]
    assert built == plain
    assert repr(built) == repr(plain)

    def leaves(wire: Any) -> list[Any]:
        if isinstance(wire, dict):
            return [leaf for value in wire.values() for leaf in leaves(value)]
        return [leaf for value in wire for leaf in leaves(value)] if isinstance(wire, list) else [wire]

    found = [leaf for predicate in built for leaf in leaves(predicate.to_wire())]
    assert {type(leaf) for leaf in found} == {bool, int, float, str}  # what msgpack and JSON carry as is
    assert [leaf for leaf in found if isinstance(leaf, bool)] == [True, False, False, True]


def test_zero_dimensional_arrays_are_their_element_and_other_arrays_are_refused() -> None:
    """``np.array(1.0)`` (a reduction, ``arr[..., 0]``, ``np.asarray`` of a number) is a value,
    not a collection: each 0-d numeric, bool or str array is its ``.item()``, also with the array
    on the left, where numpy compared element by element and asked the query for a bool. An array
    of any other shape is refused, naming it."""
    x = agg.model.x
    built = [x > np.array(1.0), np.array(1.0) < x, x == np.array(3), agg.is_complete == np.array(True),
             agg.info["k"] == np.array("SLACS"), x.contains(np.array("a")), x.in_([np.array(2.5), np.array("b")]),
             agg.max_log_likelihood >= np.array(np.float32(0.5)), np.array(2) == x, x > np.arange(3.0)[..., 1]]
    plain = [x > 1.0, x > 1.0, x == 3, agg.is_complete == True, agg.info["k"] == "SLACS",  # noqa: E712
             x.contains("a"), x.in_([2.5, "b"]), agg.max_log_likelihood >= 0.5, x == 2, x > 1.0]
    assert built == plain and repr(built) == repr(plain)
    assert [type(p.to_wire()["value"]) for p in built[:4]] == [float, float, int, bool]
    for shaped in (np.array([1.0]), np.array([[1.0, 2.0]]), np.zeros((0,))):
        with pytest.raises(QueryError, match="cannot compare with ndarray"):
            x > shaped  # noqa: B015
        with pytest.raises(QueryError, match="cannot compare with ndarray"):
            shaped < x  # noqa: B015
    for refused, message in ((np.array(math.nan), "NaN equals nothing"), (np.array(1 + 2j), "complex"),
                             (np.array(b"a"), "bytes")):
        with pytest.raises(QueryError, match=message):
            x == refused  # noqa: B015


def test_in_takes_a_list_not_a_zero_dimensional_array() -> None:
    """A 0-d array is one value, so ``x.in_(np.array(1.0))`` is refused as ``x.in_(1.0)`` is, with
    a QueryError (numpy's own TypeError, iteration over a 0-d array, escaped the LensdError tree);
    a 1-d array is a list of values."""
    x = agg.model.x
    for one in (np.array(1.0), np.array("a"), np.array(True)):
        with pytest.raises(QueryError, match=r"in_\(\) takes a list of values, not a 0-d array"):
            x.in_(one)
    with pytest.raises(QueryError, match=r"in_\(\) takes a list of values, not float"):
        x.in_(1.0)
    assert x.in_(np.array([1.0, 2.5])) == x.in_([1.0, 2.5])


def test_junctions_flatten_and_negation_simplifies() -> None:
    a, b, c, d = (agg.model[n] > 0 for n in "abcd")
    assert (a & b & c) == And((a, b, c))
    assert ((a & b) & (c & d)) == And((a, b, c, d))
    assert ((a | b) | c) == Or((a, b, c))
    assert ((a & b) | c) == Or((And((a, b)), c))
    assert ~~a == a
    assert ~(a | b) == Not(Or((a, b)))
    assert len({a & b, And((a, b)), a | b}) == 2  # structural hash and equality


@pytest.mark.parametrize("build", [
    lambda: (agg.model.x > 1) and (agg.model.y > 1),
    lambda: (agg.model.x > 1) or (agg.model.y > 1),
    lambda: not (agg.model.x > 1),
    lambda: 1 < agg.model.x < 2,
    lambda: bool(agg.model.x),
    lambda: (agg.model.x > 1) & True,
    lambda: True | (agg.model.x > 1),
    lambda: agg.unique_tag == 3,
    lambda: agg.max_log_likelihood == "high",
    lambda: agg.max_log_likelihood.contains("1"),
    lambda: agg.is_complete == "yes",
    lambda: agg.status.in_(["lost", 1]),
    lambda: agg.model.x < None,
    lambda: agg.model.x == math.nan,
    lambda: agg.model.x > 10**400,
    lambda: agg.model.x < Isothermal,
    lambda: agg.median.x == Isothermal,
    lambda: agg.info["a"] == [1, 2],
    lambda: agg.model.x == agg.model.y,
    lambda: agg.model.x.in_("abc"),
    lambda: agg.model.x.contains(3),
    lambda: agg.model.x == "\ud800",
    lambda: list(agg.model.x),
])
def test_mistakes_raise_query_error(build: Any) -> None:
    with pytest.raises(QueryError):
        build()


def test_repr_is_readable() -> None:
    p = (lens.mass == Isothermal) & ((lens.mass.einstein_radius > 1.0) | ~(agg.unique_tag != "x' y"))
    assert repr(p) == ("(model.galaxies.lens.mass == autolens.profiles.Isothermal) & "
                       "((model.galaxies.lens.mass.einstein_radius > 1.0) | (unique_tag == \"x' y\"))")
    assert repr(agg.model["a b"].c.in_([1, "z"])) == "model['a b.c'].in_([1, 'z'])"


# --- state --------------------------------------------------------------------------------

def test_state_refinements() -> None:
    a, b = agg.model.a > 0, agg.model.b > 0
    state = QueryState()
    assert state.top_level_only and not state.completed_only
    assert state.where(a).where(b).predicate == a & b
    ordered = state.ordered(agg.model.a).ordered(agg.max_log_likelihood, reverse=True)
    assert ordered.order == (OrderKey(ModelPath("a")), OrderKey(Column("max_log_likelihood"), True))
    child = state.children_of("abc")
    assert child.parent_id == "abc" and not child.top_level_only
    assert state.grids().grid_only
    assert state.limited(5).limited(9).limit == 5
    refiners: tuple[Callable[[QueryState], QueryState], ...] = (
        lambda s: s.where(a), lambda s: s.ordered(agg.model.a), lambda s: s.grids())
    for refine in refiners:
        with pytest.raises(QueryError, match="slicing"):
            refine(state.sliced(0, 3))
    for bad in ((0.5, None), (True, None), (None, 2**63), ("1", None)):
        with pytest.raises(QueryError):
            state.sliced(*bad)
    with pytest.raises(QueryError):
        state.sliced(0, 10, 2)
    with pytest.raises(QueryError):
        state.where(True)  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        state.limited(-1)


@given(st.lists(st.tuples(st.none() | st.integers(-14, 14), st.none() | st.integers(-14, 14), st.booleans()),
                max_size=4), st.integers(0, 20))
def test_repeated_slices_compose_like_list_slices(cuts: list[tuple[int | None, int | None, bool]],
                                                  total: int) -> None:
    """Negative bounds included (PyAutoFit's agg[-2:], agg[:-1]): they wait for the fit count."""
    items, state = list(range(total)), QueryState()
    for start, stop, is_limit in cuts:
        if is_limit:
            items, state = items[:abs(stop or 0)], state.limited(abs(stop or 0))
        else:
            items, state = items[start:stop], state.sliced(start, stop)
    state = QueryState.from_wire(state.to_wire()).resolved(total)
    end = None if state.limit is None else state.offset + state.limit
    assert list(range(total))[state.offset:end] == items


# --- wire form ------------------------------------------------------------------------------

@st.composite
def states(draw: st.DrawFn) -> QueryState:
    state = QueryState(predicate=draw(st.none() | predicates), completed_only=draw(st.booleans()),
                       top_level_only=draw(st.booleans()), grid_only=draw(st.booleans()))
    if draw(st.booleans()):
        state = state.children_of(draw(st.text(st.characters(blacklist_categories=["Cs"]), max_size=5)))
    for _ in range(draw(st.integers(0, 2))):
        state = state.ordered(draw(st.sampled_from([agg.model.a, agg.median.b, agg.info["c"], agg.job["d"],
                                                    agg.unique_tag])), draw(st.booleans()))
    state = state.sliced(draw(st.none() | st.integers(0, 5)), draw(st.none() | st.integers(0, 9)))
    return state.children() if draw(st.booleans()) else state  # a parent state nests in the wire form


@settings(max_examples=150, deadline=None)
@given(states())
def test_wire_round_trip(state: QueryState) -> None:
    wire = state.to_wire()
    assert QueryState.from_wire(wire) == state
    assert QueryState.from_wire(wire).to_wire() == wire


VALID: dict[str, Any] = QueryState(predicate=(agg.model.x > 1) & ~agg.info["k"].in_(["a", 2])).to_wire()


def _with(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def _nested_nots(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"t": "is_none", "operand": {"t": "model", "path": "x"}}
    for _ in range(depth):
        node = {"t": "not", "item": node}
    return node


@pytest.mark.parametrize("wire", [
    None, [], "state", {},
    _with(extra=1),
    _with(offset=-1), _with(offset=True), _with(offset=1.0), _with(limit="5"), _with(limit=2**70),
    _with(completed_only=1), _with(parent_id=3), _with(parent_id="\ud800"),
    _with(order={"operand": {"t": "column", "name": "id"}, "reverse": False}),
    _with(order=[{"operand": {"t": "column", "name": "fit_key"}, "reverse": False}]),
    _with(order=[{"operand": {"t": "column", "name": "id"}, "reverse": 1}]),
    _with(order=[{"operand": {"t": "column", "name": "id"}, "reverse": False}] * 17),
    _with(predicate={"t": "eval", "code": "1"}),
    _with(predicate={"t": "__class__"}),
    _with(predicate={"t": ["cmp"]}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": "x"}, "op": "LIKE", "value": 1}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": "x"}, "op": ">", "value": None}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": "x"}, "op": ">", "value": [1]}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": "x"}, "op": ">", "value": math.nan}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": 5}, "op": ">", "value": 1}),
    _with(predicate={"t": "cmp", "operand": {"t": "column", "name": "unique_tag"}, "op": ">", "value": 1}),
    _with(predicate={"t": "cmp", "operand": {"t": "sql", "text": "1=1"}, "op": ">", "value": 1}),
    _with(predicate={"t": "cmp", "operand": {"t": "model", "path": "x", "x": 1}, "op": ">", "value": 1}),
    _with(predicate={"t": "in", "operand": {"t": "model", "path": "x"}, "values": "ab"}),
    _with(predicate={"t": "in", "operand": {"t": "model", "path": "x"}, "values": [{"a": 1}]}),
    _with(predicate={"t": "and", "items": [{"t": "is_none", "operand": {"t": "model", "path": "x"}}]}),
    _with(predicate={"t": "or", "items": {"a": 1}}),
    _with(predicate={"t": "class", "path": "x", "by": "module", "name": "os"}),
    _with(predicate=_nested_nots(MAX_DEPTH + 1)),
    _with(predicate={"t": "in", "operand": {"t": "model", "path": "x"}, "values": list(range(20_000))}),
], ids=lambda wire: repr(wire)[:60])
def test_from_wire_refuses_malformed_states(wire: Any) -> None:
    with pytest.raises(QueryError):
        QueryState.from_wire(wire)


def test_from_wire_accepts_its_limits() -> None:
    QueryState.from_wire(_with(predicate=_nested_nots(MAX_DEPTH - 2)))


def test_children_nest_their_parent_state_to_a_bound() -> None:
    state = QueryState()
    for _ in range(MAX_GENERATIONS):
        state = state.children()
    assert state.generations == MAX_GENERATIONS and QueryState.from_wire(state.to_wire()) == state
    with pytest.raises(QueryError, match="children of children"):
        state.children()
    with pytest.raises(QueryError, match="children of children"):
        QueryState.from_wire({**VALID, "parent": state.to_wire()})
    assert "parent" not in VALID  # sent only when set: older daemons read every other state


_keys = st.sampled_from(["t", "operand", "op", "value", "values", "items", "item", "path", "by", "name", "key",
                         "predicate", "order", "offset", "limit", "reverse"]) | st.text(max_size=3)
_atoms = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
          | st.sampled_from(["cmp", "in", "and", "or", "not", "class", "is_none", "contains", "model", "column",
                             "info", "==", ">", "class_path", "unique_tag"]))
_json = st.recursive(_atoms, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json, st.sampled_from(sorted(VALID)))
def test_from_wire_only_ever_raises_query_error(junk: Any, field: str) -> None:
    for wire in (junk, {**VALID, field: junk}, {**VALID, "predicate": {"t": "not", "item": junk}}):
        try:
            QueryState.from_wire(wire)
        except QueryError:
            pass
