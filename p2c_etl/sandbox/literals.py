"""OData tokens: the literals and names of `$filter` expressions and key predicates.

Literals: `null`, `true`, `false`, integers, decimals, `'text'` (a quote doubled inside),
unquoted GUIDs, dates `2026-03-01`, DateTimeOffsets `2026-03-01T12:00:00Z` and enum literals
`Microsoft.Dynamics.DataEntities.NoYes'Yes'` (the member name, as text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError
from p2c_etl.sandbox.values import GuidLiteral, parse_date, parse_datetime

TokenKind = Literal["literal", "name", "punct"]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>'(?:[^']|'')*')
    |(?P<enum>[A-Za-z_][\w.]*'(?:[^']|'')*')
    |(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)
    |(?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.])
    |(?P<name>[A-Za-z_@$][\w.@$/]*)
    |(?P<punct>[(),=\[\]])
    """,
    re.VERBOSE,
)
_KEYWORDS: dict[str, Any] = {"null": None, "true": True, "false": False}


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: Any
    text: str
    position: int


def tokenize(source: str) -> list[Token]:
    """Every token of `source`; 400 at the first character that starts none."""
    tokens: list[Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise ODataError(400, f"Syntax error at position {position} in {source!r}", BAD_QUERY)
        kind = match.lastgroup or "space"
        if kind != "space":
            tokens.append(_token(kind, match.group(kind), match.start()))
        position = match.end()
    return tokens


def _token(kind: str, raw: str, position: int) -> Token:
    if kind == "name":
        if raw in _KEYWORDS:
            return Token("literal", _KEYWORDS[raw], raw, position)
        return Token("name", raw, raw, position)
    if kind == "punct":
        return Token("punct", raw, raw, position)
    try:
        return Token("literal", _literal(kind, raw), raw, position)
    except ValueError:
        raise ODataError(
            400, f"Invalid literal {raw!r} at position {position}", BAD_QUERY
        ) from None


def _literal(kind: str, raw: str) -> Any:
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    if kind == "enum":
        return raw[raw.index("'") + 1 : -1].replace("''", "'")
    if kind == "guid":
        return GuidLiteral(raw.lower())
    if kind == "datetime":
        return parse_datetime(raw)
    if kind == "date":
        return parse_date(raw)
    return Decimal(raw) if any(c in raw for c in ".eE") else int(raw)


def literal_url_text(value: Any) -> str:
    """A typed value as an OData literal in a URL key: `'O''Brien'`, `42`,
    `2026-03-01T12:00:00Z`."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T12:00:00Z"
    if isinstance(value, Decimal):
        return format(value, "f")
    return "null" if value is None else str(value)
