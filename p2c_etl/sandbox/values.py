"""Record values: JSON in → typed Python values, OData literals → typed values, values → text.

Values are held as the contract types say: string → str, guid → lower-case str, int → int,
bool → bool, decimal(P,S) → `Decimal` with S places, date → `date`, datetime → aware
`datetime`. A JSON value that does not fit its column exactly is a ValueError naming why;
nothing is rounded, truncated or guessed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import polars as pl

from p2c_etl.model.contracts import GUID_PATTERN, ColumnSpec

_GUID = re.compile(GUID_PATTERN)
_WIDE = Context(prec=80)


class GuidLiteral(str):
    """An unquoted GUID in a `$filter` or key: `accounts(00000000-0000-...)`."""


def text(value: Any) -> str:
    """A value as JSON would show it, without quotes: `Yes`, `42`, `12.50`, `true`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)


def folded(value: Any) -> Any:
    """The value as keys and filters compare it, like SQL Server under a `_CI` collation:
    text case-insensitively, trailing spaces ignored (`'ACC-1 ' = 'acc-1'`)."""
    return value.rstrip(" ").casefold() if isinstance(value, str) else value


FINOPS_EMPTY_DATE = date(1900, 1, 1)
"""Finance and Operations' dateNull: a date field holding it is empty, and so is a date-time
field holding any time of that day."""


def finops_held(value: Any) -> Any:
    """What an F&O field holds once `value` is written: a date on its empty date is no date."""
    day = value.date() if isinstance(value, datetime) else value
    return None if isinstance(day, date) and day == FINOPS_EMPTY_DATE else value


def finops_shown(spec: ColumnSpec, value: Any) -> Any:
    """An F&O field as its API returns it: an empty date as dateNull (`1900-01-01T12:00:00Z`,
    a date-time `1900-01-01T00:00:00Z`)."""
    if value is not None or spec.type not in ("date", "datetime"):
        return value
    if spec.type == "date":
        return FINOPS_EMPTY_DATE
    return datetime(1900, 1, 1, tzinfo=UTC)


def parse_date(raw: str) -> date:
    """`2026-03-01` or an OData DateTimeOffset `2026-03-01T12:00:00Z` → 2026-03-01."""
    if len(raw) == 10:
        return date.fromisoformat(raw)
    return datetime.fromisoformat(raw).date()


def parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Reader = Callable[[Any], Any]
"""One column's reading of a JSON value: the typed value it is stored as (ValueError if the
value does not fit). Every reader reads null (None) as None, an empty field, so a caller may
skip it for a null."""


def reader(spec: ColumnSpec) -> Reader:
    """How `spec`'s column reads a JSON value written to it. What depends on the column
    alone (its kind, its length, its allowed values) is decided here, once per column, not
    for every value of every record of a batch; text within its length, the commonest
    value, is taken as it is."""
    kind = "decimal" if spec.type.startswith("decimal") else spec.type
    parse = _JSON_IN[kind]
    allowed = spec.allowed
    if allowed is not None:
        shown = ", ".join(text(a) for a in allowed)

        def read_allowed(value: Any) -> Any:
            if value is None:
                return None
            typed = parse(spec, value)
            if typed not in allowed:
                raise ValueError(f"{text(typed)!r} is not one of the allowed values ({shown})")
            return typed

        return read_allowed
    if kind == "string":
        limit = spec.max_length if spec.max_length is not None else sys.maxsize

        def read_text(value: Any) -> Any:
            if value is None or (type(value) is str and len(value) <= limit):
                return value
            return _string(spec, value)

        return read_text

    def read(value: Any) -> Any:
        return None if value is None else parse(spec, value)

    return read


def _string(spec: ColumnSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {text(value)!r}")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValueError(
            f"the length {len(value)} exceeds the maximum allowed length of {spec.max_length}"
        )
    return value


def _guid(spec: ColumnSpec, value: Any) -> str:
    if not isinstance(value, str) or not _GUID.match(value):
        raise ValueError(f"{text(value)!r} is not a GUID")
    return value.lower()


def _int(spec: ColumnSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"expected a whole number, got {text(value)!r}")
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise ValueError(f"expected a whole number, got {text(value)!r}")
    return int(value)


def _bool(spec: ColumnSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {text(value)!r}")
    return value


def _decimal(spec: ColumnSpec, value: Any) -> Decimal:
    number = _as_decimal(value)
    dtype = spec.dtype
    assert isinstance(dtype, pl.Decimal)
    scale, precision = dtype.scale, dtype.precision or 38
    if number.adjusted() >= precision - scale:
        raise ValueError(f"{text(number)} is out of range for decimal({precision},{scale})")
    exact = number.quantize(Decimal(1).scaleb(-scale), context=_WIDE)
    if exact != number:
        raise ValueError(f"{text(number)} has more than {scale} decimal places")
    return exact


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {text(value)}")
    try:
        number = Decimal(value) if isinstance(value, int | str | Decimal) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"expected a number, got {text(value)!r}")
    return number


def _date(spec: ColumnSpec, value: Any) -> date:
    if isinstance(value, str):
        try:
            return parse_date(value)
        except ValueError:
            pass
    raise ValueError(f"{text(value)!r} is not a date (YYYY-MM-DD)")


def _datetime(spec: ColumnSpec, value: Any) -> datetime:
    try:
        if isinstance(value, str):
            return parse_datetime(value)
    except ValueError:
        pass
    raise ValueError(f"{text(value)!r} is not a date and time (ISO 8601)")


_JSON_IN: dict[str, Callable[[ColumnSpec, Any], Any]] = {
    "string": _string,
    "guid": _guid,
    "int": _int,
    "bool": _bool,
    "decimal": _decimal,
    "date": _date,
    "datetime": _datetime,
}


def literal_for(spec: ColumnSpec | None, value: Any) -> Any:
    """An OData literal from a `$filter` or key, as the typed value of `spec`'s column."""
    if spec is None or value is None:
        return str(value) if isinstance(value, GuidLiteral) else value
    kind = "decimal" if spec.type.startswith("decimal") else spec.type
    if kind in ("date", "datetime") and isinstance(value, date | str):
        return _temporal_literal(kind, value)
    if kind in ("string", "guid") and isinstance(value, str):
        return value.lower() if kind == "guid" else str(value)
    if kind == "decimal" and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return Decimal(value)
    if kind == "int" or (kind == "bool" and isinstance(value, bool)):
        return _int(spec, value) if kind == "int" else value
    raise ValueError(f"{text(value)!r} cannot be compared with {spec.name} ({spec.type})")


def _temporal_literal(kind: str, value: date | str) -> date | datetime:
    if isinstance(value, str):
        value = parse_datetime(value) if kind == "datetime" else parse_date(value)
    if kind == "date":
        return value.date() if isinstance(value, datetime) else value
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
