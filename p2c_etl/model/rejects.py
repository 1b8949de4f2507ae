"""The vocabulary of rejects: the columns that follow a record through the stages, the reason
codes a record can be refused with, and the shape of a reject row."""

from __future__ import annotations

from typing import Literal, overload

import polars as pl

from p2c_etl.model.contracts import (
    KEY_INVISIBLE,
    LINE_BREAKS,
    REFUSED_CHARACTERS,
    python_character_class,
)

ROW = "__row"
KEY = "__key"
LINE = "__line"  # where a source record starts in its export file (p2c migrate)
RejectReason = Literal[
    "unmapped_value",
    "missing_reference",
    "wrong_type",
    "precision_loss",
    "out_of_range",
    "null_not_allowed",
    "too_long",
    "not_allowed_value",
    "bad_format",
    "duplicate_key",
    "check_failed",
]
REJECT_SCHEMA = pl.Schema(
    {
        ROW: pl.Int64(),
        "field": pl.String(),
        "reason": pl.String(),
        "value": pl.String(),
        "message": pl.String(),
    }
)


SHOWN = 200
"""How much of a long value a reject shows."""
_UNPRINTABLE = python_character_class(REFUSED_CHARACTERS + LINE_BREAKS + KEY_INVISIBLE)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


@overload
def printable(text: str) -> str: ...
@overload
def printable(text: None) -> None: ...
def printable(text: str | None) -> str | None:
    """`text` on one line, with nothing invisible: every control, bidi control, line break,
    zero-width character and non-ASCII space written as its code point, `<U+0000>` (a report
    never carries one as it is: `ACC-1<U+00A0>` is not mistaken for `ACC-1`)."""
    if text is None:
        return None
    return _UNPRINTABLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def shown(value: object) -> str:
    """`value` as a reject shows it: `printable`, and cut after `SHOWN` characters, saying so."""
    text = str(value)
    head = printable(text[:SHOWN])
    return head if len(text) <= SHOWN else f"{head}… (first {SHOWN} of {len(text)} characters)"
