"""JSON out with exact decimals: a `Decimal` is written as its own digits (`1234.5000`).

Pages of ten thousand records are the sandbox's largest answers, so they are written by
orjson (in C) rather than the standard encoder, which spent most of a page's time in
Python. A `Decimal` goes into the text as an `orjson.Fragment` holding its digits: never
through float. Dates are written by the service's own rule (Dataverse `2026-03-01`, F&O
`2026-03-01T12:00:00Z`), date-times as `2026-03-01T08:30:00Z`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

DateText = Callable[[date], str]

# Dates and date-times go to `default` (the services' own formats), not orjson's ISO text.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def dataverse_date(value: date) -> str:
    return value.isoformat()


def finops_date(value: date) -> str:
    return f"{value.isoformat()}T12:00:00Z"


def datetime_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(value: Any, date_text: DateText) -> bytes:
    """`value` as compact UTF-8 JSON; decimals exact, dates by `date_text`."""
    return encoder(date_text)(value)


def encoder(date_text: DateText) -> Callable[[Any], bytes]:
    """`dumps` with `date_text` decided once, for many values."""

    def default(item: Any) -> Any:
        if isinstance(item, Decimal):
            return orjson.Fragment(_number(item))
        if isinstance(item, datetime):
            return datetime_text(item)
        if isinstance(item, date):
            return date_text(item)
        if isinstance(item, Mapping):
            return dict(item)
        raise TypeError(f"cannot write {type(item).__name__} as JSON")

    def encode(value: Any) -> bytes:
        return orjson.dumps(value, default=default, option=_OPTIONS)

    return encode


def _number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} cannot be written as JSON")
    return format(value, "f")
