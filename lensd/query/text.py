"""The text form of queries, for ``lensd query EXPR``: a tokenizer and a recursive-descent parser.

The text comes from a shell, a script or a web form, so it is read by a grammar that can only
build query nodes: never ``eval``, never ``ast``. It builds them through the same operators as
Python code (``operand == value``), so text and Python give equal trees. Comparisons bind
tighter than ``&`` and ``|`` (unlike Python), so ``a > 1 & b == "x"`` needs no parentheses::

    expr     := conj ("|" conj)*
    conj     := unary ("&" unary)*
    unary    := "~" unary | "(" expr ")" | test
    test     := operand (CMP value | "." method) | literal CMP operand | BOOL_COLUMN
                                                    (is_complete alone means is_complete == true)
    method   := "contains" "(" STRING ")" | "in_" "(" list ")" | "is_none" "(" ")"
    operand  := ["agg" "."] ( ("model" | "median") path | ("info" | "job") "[" STRING "]"
                | "search" "." COLUMN | COLUMN )
    path     := ("." NAME | "[" STRING "]")*        a NAME starting with "_" is refused
    value    := literal | NAME ("." NAME)*          a bare name is a class (model nodes only)
                | "<" ("class_path" | "class_name") STRING ">"     any class path or name, as repr writes it
    literal  := STRING | ["-" | "+"] (NUMBER | "inf") | true | false | none   (or True, None, ...)
    list     := "[" [literal ("," literal)* [","]] "]"        parentheses work too

``repr()`` of any predicate is text this parser reads back to an equal tree.
"""

from __future__ import annotations

import math
import operator
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar

from lensd.errors import QueryError, QuerySyntaxError
from lensd.query.nodes import (
    BOOL_COLUMNS,
    MAX_DEPTH,
    NUMBER_COLUMNS,
    TEXT_COLUMNS,
    ClassIs,
    Column,
    InfoKey,
    JobKey,
    MedianPath,
    ModelPath,
    Operand,
    Predicate,
    Scalar,
    as_predicate,
)
from lensd.query.values import NAME

T = TypeVar("T")
MAX_TEXT: Final = 100_000
_TOKEN: Final = re.compile(
    rf"(?P<space>\s+)|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>{NAME})"
    r"|(?P<string>[\"'])|(?P<op>==|!=|<=|>=|[<>&|~()\[\],.+-])"
)
_ESCAPES: Final = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_HEX_ESCAPES: Final = {"x": 2, "u": 4, "U": 8}
_COMPARE: Final[dict[str, Callable[[Any, Any], Predicate]]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_CONSTANTS: Final[dict[str, Scalar | None]] = {
    "true": True, "True": True, "false": False, "False": False, "none": None, "None": None,
    "null": None, "inf": math.inf, "nan": math.nan,
}
_COLUMNS: Final = TEXT_COLUMNS | NUMBER_COLUMNS | BOOL_COLUMNS
_METHODS: Final = ("contains", "in_", "is_none")
_WORDS: Final = {"and": "&", "or": "|", "not": "~"}


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "string", "op" or "end"
    text: str
    pos: int
    value: Any = None


def _string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at ``start`` and the index after it; Python's escapes."""
    quote, i, out = text[start], start + 1, list[str]()
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text):
            escape = text[i + 1]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                i += 2
                continue
            width = _HEX_ESCAPES.get(escape, 0)
            digits = text[i + 2:i + 2 + width]
            hexadecimal = width and len(digits) == width and all(c in string.hexdigits for c in digits)
            if hexadecimal and int(digits, 16) <= 0x10FFFF:
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
            raise QuerySyntaxError(f"bad escape \\{escape} in a string", text, i)
        out.append(char)
        i += 1
    raise QuerySyntaxError("unterminated string", text, start)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token at ``len(text)``."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QuerySyntaxError(f"unexpected character {text[pos]!r}", text, pos)
        kind, chunk = match.lastgroup or "", match.group()
        if kind == "string":
            value, end = _string(text, pos)
            tokens.append(Token("string", text[pos:end], pos, value))
            pos = end
            continue
        if kind == "number" and match.end() < len(text) and re.match(r"\w", text[match.end()]):
            raise QuerySyntaxError(f"malformed number {chunk + text[match.end()]!r}...", text, pos)
        if kind != "space":
            tokens.append(Token(kind, chunk, pos))
        pos = match.end()
    return [*tokens, Token("end", "", len(text))]


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_TEXT:
            raise QuerySyntaxError(f"query text longer than {MAX_TEXT} characters", text[:80], 80)
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.index += token.kind != "end"
        return token

    def at(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind in ("op", "name") and token.text == text

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.take()
            return True
        return False

    def fail(self, message: str, token: Token | None = None) -> NoReturn:
        token = token or self.peek()
        found = "the end of the query" if token.kind == "end" else repr(token.text[:40])
        raise QuerySyntaxError(f"{message}, found {found}", self.text, token.pos)

    def expect(self, text: str, message: str) -> Token:
        if not self.at(text):
            self.fail(message)
        return self.take()

    def build(self, token: Token, make: Callable[..., T], *args: Any) -> T:
        """``make(*args)``, a node constructor; its QueryError (wrong type, NaN...) points at ``token``."""
        try:
            return make(*args)
        except QuerySyntaxError:
            raise
        except QueryError as exc:
            raise QuerySyntaxError(str(exc), self.text, token.pos) from None

    def no_words(self) -> None:
        """Point Python habits (and, or, not) at the operators this language uses."""
        token = self.peek()
        if token.kind == "name" and token.text in _WORDS:
            self.fail(f"use {_WORDS[token.text]} instead of {token.text}", token)

    def finish(self, result: Any) -> Any:
        self.no_words()
        if self.peek().kind != "end":
            self.fail("expected & or | between tests, or the end of the query")
        return result

    # --- predicates ---------------------------------------------------------------------
    def expr(self) -> Predicate:
        node: Predicate = self.conj()
        while self.at("|"):
            token = self.take()
            node = self.build(token, operator.or_, node, self.conj())
        return node

    def conj(self) -> Predicate:
        node: Predicate = self.unary()
        while self.at("&"):
            token = self.take()
            node = self.build(token, operator.and_, node, self.unary())
        return node

    def unary(self) -> Predicate:
        if self.depth >= MAX_DEPTH:
            self.fail(f"query nested more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            if self.accept("~"):
                return ~self.unary()
            if self.at("("):
                self.take()
                node = self.expr()
                self.no_words()
                self.expect(")", "expected ) or & | between tests")
                return node
            return self.test()
        finally:
            self.depth -= 1

    def test(self) -> Predicate:
        start = self.peek()
        self.no_words()
        if self.starts_literal():
            value = self.literal()
            op = self.comparison()
            return self.build(start, _COMPARE[_FLIPPED[op.text]], self.operand(), value)
        operand = self.operand()
        if self.accept("."):
            return self.method(operand)
        if isinstance(operand, Column) and operand.name in BOOL_COLUMNS and not (
                self.peek().kind == "op" and self.peek().text in _COMPARE):
            return as_predicate(operand)  # a yes/no column alone, as in PyAutoFit
        op = self.comparison()
        value_token = self.peek()
        if value_token.kind == "name" and value_token.text not in _CONSTANTS:
            return self.build(value_token, self.class_test, operand, op.text)
        if self.at("<") and self.peek(1).kind == "name" and self.peek(1).text in ("class_path", "class_name"):
            return self.build(value_token, self.quoted_class_test, operand, op.text)
        return self.build(value_token, _COMPARE[op.text], operand, self.literal())

    def comparison(self) -> Token:
        token = self.peek()
        if token.kind != "op" or token.text not in _COMPARE:
            self.fail("expected a comparison (== != < <= > >=) or a method (.contains .in_ .is_none)")
        return self.take()

    def class_test(self, operand: Operand, op: str) -> Predicate:
        token = self.take()
        name = token.text
        while self.at(".") and self.peek(1).kind == "name":
            self.take()
            name += "." + self.take().text
        if not isinstance(operand, ModelPath) or op not in ("==", "!="):
            raise QueryError(f"unquoted {name}: put text in quotes (\"{name}\"); "
                             "a bare name is a class, compared with == or != on model nodes")
        test = ClassIs(operand.path, "class_path" if "." in name else "class_name", name)
        return test if op == "==" else ~test

    def quoted_class_test(self, operand: Operand, op: str) -> Predicate:
        """``<class_path 'my-pkg.Iso'>``: a class path or name that is not a dotted NAME (class paths
        are data: a ``-``, a space, ``<locals>``), or one a bare name would misread (``Iso`` as a
        class path, ``a.b`` as a class name, ``true``)."""
        self.take()
        by = self.take().text
        name = self.peek()
        if name.kind != "string":
            self.fail(f"<{by} ...> takes a quoted class {by[6:]}")
        self.take()
        self.expect(">", f"expected > to close <{by} ...>")
        if not isinstance(operand, ModelPath) or op not in ("==", "!="):
            raise QueryError(f"<{by} ...> is a class, compared with == or != on model nodes")
        test = ClassIs(operand.path, "class_path" if by == "class_path" else "class_name", name.value)
        return test if op == "==" else ~test

    def method(self, operand: Operand) -> Predicate:
        token = self.take()
        if token.kind != "name" or token.text not in _METHODS:
            self.fail("expected a method: .contains(\"...\"), .in_([...]) or .is_none()", token)
        self.expect("(", f"expected ( after .{token.text}")
        if token.text == "contains":
            argument = self.peek()
            if argument.kind != "string":
                self.fail(".contains() takes a quoted string")
            self.take()
            node: Predicate = self.build(argument, operand.contains, argument.value)
        elif token.text == "in_":
            node = self.build(token, operand.in_, self.values())
        else:
            node = operand.is_none()
        self.expect(")", f"expected ) to close .{token.text}(")
        return node

    def values(self) -> list[Scalar | None]:
        close = {"[": "]", "(": ")"}.get(self.peek().text if self.peek().kind == "op" else "")
        if close is None:
            self.fail(".in_() takes a list such as [1, 2] or [\"a\", \"b\"]")
        self.take()
        values: list[Scalar | None] = []
        while not self.accept(close):
            values.append(self.literal())
            if not self.accept(","):
                self.expect(close, f"expected , or {close} in the list")
                break
        return values

    # --- operands and literals ----------------------------------------------------------
    def operand(self) -> Operand:
        token = self.take()
        if token.kind == "name" and token.text == "agg" and self.at("."):
            self.take()
            token = self.take()
        name = token.text if token.kind == "name" else ""
        if name in ("model", "median"):
            return self.path(ModelPath("") if name == "model" else MedianPath(""))
        if name in ("info", "job"):
            self.expect("[", f"expected [\"key\"] after {name}")
            key = self.peek()
            if key.kind != "string":
                self.fail(f"{name}[...] takes a quoted key")
            self.take()
            self.expect("]", "expected ]")
            return self.build(key, InfoKey if name == "info" else JobKey, key.value)
        if name == "search":
            self.expect(".", "expected .<column> after search, e.g. search.unique_tag")
            field = self.take()
            if field.text not in _COLUMNS:
                self.fail(f"search has the fit columns: {', '.join(sorted(_COLUMNS))}", field)
            return Column(field.text)
        if name in _COLUMNS:
            return Column(name)
        self.fail("expected a field: model.<path>, median.<path>, info[\"key\"], job[\"key\"], "
                  f"search.<field> or a column ({', '.join(sorted(_COLUMNS))})", token)

    def path(self, node: ModelPath | MedianPath) -> Operand:
        while True:
            if self.at("[") and self.peek(1).kind == "string":
                self.take()
                key = self.take()
                self.expect("]", "expected ]")
                node = self.build(key, node.__getitem__, key.value)
            elif self.at("."):
                segment = self.peek(1)
                if segment.kind != "name":
                    self.fail("expected a name after . (use [\"0\"] for names that are not identifiers)",
                              segment)
                if segment.text in _METHODS and self.at("(", 2):
                    return node
                if segment.text.startswith("_"):
                    self.fail(f"path names starting with _ are refused; use [{segment.text!r}] for data "
                              "keys", segment)
                self.take()
                self.take()
                node = node[segment.text]
            else:
                return node

    def starts_literal(self) -> bool:
        token = self.peek()
        return (token.kind in ("string", "number") or (token.kind == "op" and token.text in "-+")
                or (token.kind == "name" and token.text in _CONSTANTS))

    def literal(self) -> Scalar | None:
        token = self.take()
        if token.kind == "string":
            return str(token.value)
        if token.kind == "name" and token.text in _CONSTANTS:
            return _CONSTANTS[token.text]
        sign = -1 if token.text == "-" else 1
        if token.kind == "op" and token.text in "-+":
            token = self.take()
            if token.kind == "name" and token.text == "inf":
                return sign * math.inf
        if token.kind != "number":
            self.fail("expected a value: a number, a \"string\", true, false or none", token)
        try:
            number = float(token.text) if re.search(r"[.eE]", token.text) else int(token.text)
        except ValueError:
            self.fail("number too long", token)
        return sign * number


def parse(text: str) -> Predicate:
    """The predicate written in ``text``; QuerySyntaxError (with ``.position``) if it is not one."""
    parser = _Parser(text)
    if parser.peek().kind == "end":
        parser.fail("empty query: expected a test such as model.x > 1")
    return parser.finish(parser.expr())  # type: ignore[no-any-return]


def parse_operand(text: str) -> Operand:
    """A field alone, e.g. for ordering from the command line: ``max_log_likelihood``."""
    parser = _Parser(text)
    return parser.finish(parser.operand())  # type: ignore[no-any-return]
