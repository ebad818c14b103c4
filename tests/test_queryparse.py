"""The text grammar of ``lensd query``: same trees as Python, pointed syntax errors, nothing evaluated."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _reference import fake_class, predicates
from hypothesis import given, settings
from hypothesis import strategies as st

from lensd.errors import QueryError, QuerySyntaxError
from lensd.query.nodes import And, ClassIs, InfoKey, MedianPath, ModelPath, Not, Or, Predicate
from lensd.query.state import QueryFields, QueryState
from lensd.query.text import parse, parse_operand, tokenize

agg = QueryFields()
lens = agg.model.galaxies.lens
Isothermal = fake_class("autolens.mass.Isothermal")

SEEDS: list[tuple[str, Any]] = [  # SPEC §4, as text and as Python
    ("model.galaxies.lens.mass == autolens.mass.Isothermal", lens.mass == Isothermal),
    ('model.galaxies.lens.mass == "autolens.mass.Isothermal"', lens.mass == "autolens.mass.Isothermal"),
    ('model.galaxies.lens.mass == "Isothermal"', lens.mass == "Isothermal"),
    ("model.galaxies.lens.mass.einstein_radius > 1.0", lens.mass.einstein_radius > 1.0),
    ("(model.galaxies.lens.mass == autolens.mass.Isothermal) & (model.galaxies.lens.mass.einstein_radius > 1.0)",
     (lens.mass == Isothermal) & (lens.mass.einstein_radius > 1.0)),
    ('model.galaxies.lens.mass == autolens.mass.Isothermal & model.galaxies.lens.mass.einstein_radius > 1.0',
     (lens.mass == Isothermal) & (lens.mass.einstein_radius > 1.0)),
    ('(model.galaxies.lens.mass.einstein_radius > 1.0) | (unique_tag == "lens_3")',
     (lens.mass.einstein_radius > 1.0) | (agg.unique_tag == "lens_3")),
    ('unique_tag == "example_dataset_0"', agg.unique_tag == "example_dataset_0"),
    ('search.unique_tag == "example_dataset_0"', agg.search.unique_tag == "example_dataset_0"),
    ('model.galaxies.lens.mass.einstein_radius > 1.0 & unique_tag == "lens_3"',  # SPEC §4's CLI example
     (lens.mass.einstein_radius > 1.0) & (agg.unique_tag == "lens_3")),
]

CASES: list[tuple[str, Any]] = [
    ('info["survey"] == "SLACS"', agg.info["survey"] == "SLACS"),
    ("job['SLURM_ARRAY_JOB_ID'] == 1234", agg.job["SLURM_ARRAY_JOB_ID"] == 1234),
    ('status == "lost"', agg.status == "lost"),
    ("~(model.a > 1 | model.b < 2)", ~((agg.model.a > 1) | (agg.model.b < 2))),
    ("~model.a > 1 & model.b < 2", ~(agg.model.a > 1) & (agg.model.b < 2)),
    ("model.a > 1 | model.b > 1 & model.c > 1", (agg.model.a > 1) | ((agg.model.b > 1) & (agg.model.c > 1))),
    ("agg.model.x >= 1e-3", agg.model.x >= 1e-3),
    ("model.x > -2", agg.model.x > -2),
    ("model.x < +.5E2", agg.model.x < 50.0),
    ("model.x > -inf", agg.model.x > float("-inf")),
    ("-2 < model.x", agg.model.x > -2),
    ("is_complete == true", agg.is_complete == True),  # noqa: E712
    ("is_grid_search != False", agg.is_grid_search != False),  # noqa: E712
    ("model.x == none", agg.model.x.is_none()),
    ("model.x != None", ~agg.model.x.is_none()),
    ("model.x.is_none()", agg.model.x.is_none()),
    ('name.contains("lens")', agg.name.contains("lens")),
    ("model.x.in_([1, 'a', none,])", agg.model.x.in_([1, "a", None])),
    ("model.x.in_(())", agg.model.x.in_([])),
    ('model["contains"].x == 1', agg.model["contains"].x == 1),
    ("model.contains.x == 1", agg.model["contains"].x == 1),
    ('model["a b"]["c.d"] > 0', agg.model["a b"]["c.d"] > 0),
    ("median.galaxies.lens.mass.einstein_radius <= 2", agg.median.galaxies.lens.mass.einstein_radius <= 2),
    ("model.galaxies.lens.mass == Isothermal", ClassIs("galaxies.lens.mass", "class_name", "Isothermal")),
    ("model.galaxies.lens.mass != __main__.Isothermal",
     ~ClassIs("galaxies.lens.mass", "class_path", "__main__.Isothermal")),
    ("max_log_likelihood > 100 & log_evidence < 3", (agg.max_log_likelihood > 100) & (agg.log_evidence < 3)),
    ('id == "x\' OR \'1\'=\'1"', agg.id == "x' OR '1'='1"),
    (r'name == "a\"b\\c\n\t\u00e9\x41\U0001F600"', agg.name == 'a"b\\c\n\té\x41\U0001F600'),
    (r"name == 'it\'s'", agg.name == "it's"),
    ("model.galaxies.lens.mass == <class_path 'my-pkg.mass.Iso Thermal'>",
     ClassIs("galaxies.lens.mass", "class_path", "my-pkg.mass.Iso Thermal")),
    ('model.x != <class_name "a.b">', ~ClassIs("x", "class_name", "a.b")),
    ("model.x == <class_path 'Iso'> | model.y == <class_name 'true'>",
     ClassIs("x", "class_path", "Iso") | ClassIs("y", "class_name", "true")),
    ('name == "un \' mixed"', agg.name == "un ' mixed"),
]


@pytest.mark.parametrize(("text", "python"), SEEDS + CASES, ids=[t for t, _ in SEEDS + CASES])
def test_text_builds_the_python_tree(text: str, python: Any) -> None:
    assert parse(text).to_wire() == python.to_wire()


@pytest.mark.parametrize(("text", "position", "message"), [
    ("", 0, "empty"),
    ("model.x >", 9, "expected a value"),
    ("model.x > 1 and model.y < 2", 12, "use & instead of and"),
    ("not model.x == 1", 0, "use ~ instead of not"),
    ("1 < model.x < 2", 12, "expected & or |"),
    ("model.x = 1", 8, "unexpected character"),
    ('model.x > "abc', 10, "unterminated"),
    (r'name == "a\qb"', 10, "bad escape"),
    ("unique_tag == lens_3", 14, "put text in quotes"),
    ("unique_tag == 3", 14, "holds a string"),
    ("model.x > nan", 10, "NaN"),
    ("(model.x > 1", 12, "expected )"),
    ("model.x > 1)", 11, "expected & or |"),
    ("model._x == 1", 6, "refused"),
    ("model.x.foo()", 11, "expected a comparison"),
    ("model.x.in_(1)", 12, "takes a list"),
    ("model.x > 1abc", 10, "malformed number"),
    ("~" * 70 + "model.x == 1", 64, "nested"),
    ("bogus == 1", 0, "expected a field"),
    ("info.survey == 1", 4, 'expected ["key"]'),
    ("search.bogus == 'a'", 7, "search has"),
    ("model.x == 1 " + "9" * 5000, 13, "expected & or |"),
    ("model.x == <class_path Iso>", 23, "takes a quoted class path"),
    ("model.x == <class_name 'Iso'", 28, "expected > to close"),
    ("unique_tag == <class_name 'Iso'>", 14, "compared with == or != on model nodes"),
    ("model.x > <class_path 'a.Iso'>", 10, "compared with == or != on model nodes"),
])
def test_syntax_errors_point_at_the_problem(text: str, position: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as info:
        parse(text)
    assert info.value.position == position
    assert info.value.text == text
    assert "^" in info.value.pointed()


@pytest.mark.parametrize("text", [
    "__import__('os').system('x')",
    "model.__class__",
    "model.x.__class__ == 1",
    "().__class__",
    "model.x == __import__('os').system('rm')",
    "model.x == (lambda: 1)()",
    "eval('1')",
    "model.x == 1; DROP TABLE fits",
    "model.x == `1`",
    "open('/etc/passwd')",
    "model.x == 1 if True else 2",
])
def test_python_is_never_evaluated(text: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse(text)


def test_operand_alone() -> None:
    assert parse_operand("max_log_likelihood")._ident() == ("column", "max_log_likelihood")
    assert parse_operand("model.galaxies.lens")._ident() == ("model", "galaxies.lens")
    with pytest.raises(QuerySyntaxError):
        parse_operand("model.x > 1")


def test_tokens_carry_positions() -> None:
    assert [(t.kind, t.pos) for t in tokenize('a.b >= "x"')] == [
        ("name", 0), ("op", 1), ("name", 2), ("op", 4), ("string", 7), ("end", 10)]


@settings(max_examples=200, deadline=None)
@given(predicates)
def test_repr_parses_back_to_the_same_tree(predicate: Any) -> None:
    assert parse(repr(predicate)) == predicate


# Class paths are data (model.json), not Python: a '-' or a space, '<locals>', a name a bare word
# would misread; and paths and keys of any text. Junctions are also built by hand and read from
# the wire (an And inside an And, a double negation), as a client may send them.
ODD_NAMES = ["my-pkg.mass.Iso", "a b.C", "Iso", "a.b", "true", "true.x", "none.Iso", "not", "a·b", "m.℘",
             "__main__.f.<locals>.Iso", "x.'\"\n", "autogalaxy.profiles.mass.total.isothermal.Isothermal",
             "a..b", ".a", "a.", "", "Ⅸ", "ﬁ.x"]
odd_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=6)
odd_names = st.sampled_from(ODD_NAMES) | odd_text | st.lists(odd_text, min_size=2, max_size=3).map(".".join)
odd_leaves = st.one_of(
    st.builds(ClassIs, st.sampled_from(["galaxies.lens.mass", ""]) | odd_text,
              st.sampled_from(["class_path", "class_name"]), odd_names),
    st.builds(lambda cls, value: cls(value) == 1, st.sampled_from([ModelPath, MedianPath, InfoKey]),
              st.sampled_from(["a·b", "℘", "x.1", "_x", "in_", "a..b", "Ⅸ"]) | odd_text.filter(bool)),
)


def _from_wire(predicate: Predicate) -> Predicate:
    read = QueryState.from_wire(QueryState(predicate=predicate).to_wire()).predicate
    assert read is not None
    return read


any_predicates: st.SearchStrategy[Predicate] = st.recursive(
    predicates | odd_leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
        children.map(Not), children.map(lambda p: ~p),
    ),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None)
@given(any_predicates)
def test_repr_of_any_query_from_python_or_the_wire_parses_back_to_an_equal_query(predicate: Predicate) -> None:
    read = _from_wire(predicate)  # equal: a Not(Not(p)) built by hand is p, as it is read
    assert parse(repr(read)) == read
    assert parse(repr(predicate)) == read


def test_nested_junctions_and_double_negations_have_one_shape() -> None:
    a, b, c = (agg.model[n] == 1 for n in "abc")
    assert And((And((a, b)), c)) == a & b & c and Or((a, Or((b, c)))) == a | b | c
    assert And((Or((a, b)), c)).items == (a | b, c)
    assert _from_wire(Not(Not(a))) == a and _from_wire(Not(Not(Not(a)))) == ~a
    assert Not(Not(a)) is a and Not(Not(Not(a))) == ~a


_pieces = st.sampled_from([
    "model", "median", "info", "job", "agg", "unique_tag", "status", ".", "[", "]", "(", ")", "==", "!=", "<",
    ">=", "&", "|", "~", "'a'", '"b', "1", "-", "2.5e3", "in_", "contains", "is_none", "none", "x", ",", " ",
    "\\", "__class__", "Isothermal", "inf",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=12).map("".join) | st.text(max_size=20))
def test_any_text_parses_or_raises_a_syntax_error(text: str) -> None:
    try:
        parse(text)
    except QuerySyntaxError as exc:
        assert 0 <= exc.position <= len(text)
    except QueryError as exc:  # pragma: no cover - would be a bug: text errors must carry a position
        raise AssertionError(f"{text!r} raised {exc!r} without a position") from exc
