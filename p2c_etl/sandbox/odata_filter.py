"""`$filter` → a predicate over records.

Grammar (both APIs, as far as p2c-etl needs it):

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | function | comparison
    comparison := operand ("eq" | "ne" | "gt" | "ge" | "lt" | "le") operand
                | column "in" "(" literal ("," literal)* ")"
    function   := ("contains" | "startswith" | "endswith") "(" column "," 'text' ")"
                | "Microsoft.Dynamics.CRM." name "(" param "=" value ("," ...)* ")"
    operand    := column | literal

The Dataverse query functions (`Microsoft.Dynamics.CRM.In`, `Between`, `On`, ...) are in
`query_functions`; the standard functions and query functions the sandbox does not implement
(`tolower`, `year`, `any`, `LastXDays`, ...) are refused with 501.

A literal compared with a column is read as that column's type (an F&O DateTimeOffset
against a `date` column compares its date). Text compares case-insensitively, as SQL Server
does; `null` equals only null, and an ordering comparison with null is false.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.literals import Token, tokenize
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError, not_implemented
from p2c_etl.sandbox.query_functions import CRM_PREFIX, FunctionCall, crm_function
from p2c_etl.sandbox.values import folded, literal_for

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
Columns = Mapping[str, ColumnSpec | None]

_FLIPPED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_LAMBDA = re.compile(r"/\s*(any|all)\s*\(")
_STANDARD = {
    "concat",
    "indexof",
    "length",
    "substring",
    "matchesPattern",
    "tolower",
    "toupper",
    "trim",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "fractionalseconds",
    "totalseconds",
    "date",
    "time",
    "totaloffsetminutes",
    "mindatetime",
    "maxdatetime",
    "now",
    "round",
    "floor",
    "ceiling",
    "cast",
    "isof",
    "geo.distance",
    "geo.intersects",
    "geo.length",
    "hassubset",
    "hassubsequence",
    "case",
}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, part: part in value,
    "startswith": str.startswith,
    "endswith": str.endswith,
}


def compile_filter(source: str, columns: Columns, type_name: str) -> Predicate:
    """The predicate `source` describes; 400 for a syntax error or an unknown column, 501 for
    what the sandbox does not implement."""
    if _LAMBDA.search(source):
        raise not_implemented("A lambda operator (any/all) in $filter")
    parser = _Parser(tokenize(source), columns, type_name)
    predicate = parser.expression()
    parser.expect_end()
    return predicate


def _test(op: str) -> Callable[[Any, Any], bool]:
    if op == "eq":
        return operator.eq
    if op == "ne":
        return operator.ne
    ordered = _ORDERED[op]

    def test(left: Any, right: Any) -> bool:
        if left is None or right is None:
            return False
        try:
            return bool(ordered(left, right))
        except TypeError:
            return False

    return test


@dataclass(frozen=True)
class _Operand:
    column: str | None
    spec: ColumnSpec | None
    value: Any = None


class _Parser:
    def __init__(self, tokens: list[Token], columns: Columns, type_name: str) -> None:
        self.tokens, self.columns, self.type_name = tokens, columns, type_name
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ODataError(400, "Unexpected end of the $filter expression", BAD_QUERY)
        self.index += 1
        return token

    def accept(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind != "literal" and token.value == word:
            self.index += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            token = self.peek()
            found = repr(token.text) if token else "the end"
            raise ODataError(400, f"Expected {word!r} in $filter, found {found}", BAD_QUERY)

    def expect_end(self) -> None:
        token = self.peek()
        if token is not None:
            raise ODataError(
                400, f"Unexpected {token.text!r} at position {token.position}", BAD_QUERY
            )

    def expression(self) -> Predicate:
        parts = [self.conjunction()]
        while self.accept("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else lambda r: any(p(r) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.accept("and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else lambda r: all(p(r) for p in parts)

    def unary(self) -> Predicate:
        if self.accept("not"):
            inner = self.unary()
            return lambda r: not inner(r)
        if self.accept("("):
            inner = self.expression()
            self.expect(")")
            return inner
        token = self.peek()
        following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        if token and token.kind == "name" and following and following.value == "(":
            return self.function()
        return self.comparison()

    def function(self) -> Predicate:
        name = self.take().text
        if name.startswith(CRM_PREFIX):
            return crm_function(self._call(name), self.columns, self.type_name)
        if name in _STANDARD:
            raise not_implemented(f"The $filter function {name}")
        if name not in _FUNCTIONS:
            raise ODataError(400, f"Unknown function '{name}' in $filter.", BAD_QUERY)
        self.expect("(")
        column = self.operand()
        self.expect(",")
        part = self.take()
        self.expect(")")
        if column.column is None or not isinstance(part.value, str):
            raise ODataError(400, f"{name} needs a column and a text literal", BAD_QUERY)
        test, key, wanted = _FUNCTIONS[name], column.column, folded(part.value)

        def predicate(record: Record) -> bool:
            value = folded(record.get(key))
            return isinstance(value, str) and test(value, wanted)

        return predicate

    def _call(self, name: str) -> FunctionCall:
        """`(Name=value, Name=[v, ...])` after a query function's name."""
        self.expect("(")
        params: dict[str, Any] = {}
        while not self.accept(")"):
            if params:
                self.expect(",")
            key = self.take()
            self.expect("=")
            params[key.text] = self._list("[", "]") if self.accept("[") else self.take().value
        return FunctionCall(name, params)

    def _list(self, opening: str, closing: str) -> list[Any]:
        """Literals up to `closing` (the `opening` already read)."""
        items: list[Any] = []
        while not self.accept(closing):
            if items:
                self.expect(",")
            token = self.take()
            if token.kind != "literal":
                raise ODataError(400, f"Expected a literal in {opening}...{closing}", BAD_QUERY)
            items.append(token.value)
        return items

    def comparison(self) -> Predicate:
        left = self.operand()
        if left.column is not None and self.accept("in"):
            self.expect("(")
            return _membership(left, self._list("(", ")"))
        token = self.take()
        if token.kind != "name" or token.value not in _FLIPPED:
            raise ODataError(400, f"Expected a comparison operator, found {token.text!r}")
        right = self.operand()
        op = token.value
        if left.column is None and right.column is not None:
            left, right, op = right, left, _FLIPPED[op]
        return _comparison(left, op, right)

    def operand(self) -> _Operand:
        token = self.take()
        if token.kind == "literal":
            return _Operand(None, None, token.value)
        if token.kind == "name" and token.value in self.columns:
            return _Operand(token.value, self.columns[token.value])
        if (token.kind == "name" and token.value in ("any", "all")) or "/" in token.text:
            raise not_implemented(f"The $filter path or lambda {token.text!r}")
        raise ODataError(
            400,
            f"Could not find a property named '{token.text}' on type '{self.type_name}'.",
            BAD_QUERY,
        )


def _comparison(left: _Operand, op: str, right: _Operand) -> Predicate:
    test = _test(op)
    if left.column is None:
        outcome = test(folded(left.value), folded(right.value))
        return lambda r: outcome
    column = left.column
    if right.column is not None:
        other = right.column
        return lambda r: test(folded(r.get(column)), folded(r.get(other)))
    try:
        wanted = folded(literal_for(left.spec, right.value))
    except ValueError as exc:
        raise ODataError(400, f"Invalid $filter: {exc}", BAD_QUERY) from None
    return lambda r: test(folded(r.get(column)), wanted)


def _membership(left: _Operand, values: list[Any]) -> Predicate:
    """`column in (a, b, ...)`."""
    column = left.column or ""
    try:
        wanted = {folded(literal_for(left.spec, v)) for v in values}
    except (ValueError, TypeError) as exc:
        raise ODataError(400, f"Invalid $filter: {exc}", BAD_QUERY) from None
    return lambda r: folded(r.get(column)) in wanted
