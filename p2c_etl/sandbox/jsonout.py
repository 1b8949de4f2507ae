"""JSON out with exact decimals: a `Decimal` is written as its own digits (`1234.5000`).

The standard encoder cannot write a `Decimal` as a number, so each one is first written as
a marked string and the marks are then taken off in one pass; should any text value carry
the mark itself, the page is written by a plain recursive encoder instead. Dates are written
by the service's own rule (Dataverse `2026-03-01`, F&O `2026-03-01T12:00:00Z`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

DateText = Callable[[date], str]

_MARK = "\x00"
_MARKED = re.compile(r'"\\u0000(-?[0-9.]+)"')


def dataverse_date(value: date) -> str:
    return value.isoformat()


def finops_date(value: date) -> str:
    return f"{value.isoformat()}T12:00:00Z"


def datetime_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(value: Any, date_text: DateText) -> bytes:
    """`value` as compact UTF-8 JSON; decimals exact, dates by `date_text`."""
    marked = 0

    def default(item: Any) -> Any:
        nonlocal marked
        if isinstance(item, Decimal):
            marked += 1
            return _MARK + _number(item)
        return _scalar_text(item, date_text)

    encoded = json.dumps(value, default=default, ensure_ascii=False, separators=(",", ":"))
    result, replaced = _MARKED.subn(r"\1", encoded)
    if replaced != marked:
        result = _plain(value, date_text)
    return result.encode()


def _number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} cannot be written as JSON")
    return format(value, "f")


def _scalar_text(item: Any, date_text: DateText) -> str:
    if isinstance(item, datetime):
        return datetime_text(item)
    if isinstance(item, date):
        return date_text(item)
    raise TypeError(f"cannot write {type(item).__name__} as JSON")


def _plain(value: Any, date_text: DateText) -> str:
    if isinstance(value, Mapping):
        items = (
            f"{json.dumps(str(k), ensure_ascii=False)}:{_plain(v, date_text)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_plain(v, date_text) for v in value) + "]"
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, date):
        return json.dumps(_scalar_text(value, date_text))
    return json.dumps(value, ensure_ascii=False)
