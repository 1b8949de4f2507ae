"""The vocabulary of rejects: the columns that follow a record through the stages, the reason
codes a record can be refused with, and the shape of a reject row."""

from __future__ import annotations

from typing import Literal

import polars as pl

ROW = "__row"
KEY = "__key"
LINE = "__line"  # where a source record starts in its export file (p2c migrate)
RejectReason = Literal[
    "unmapped_value",
    "missing_reference",
    "wrong_type",
    "precision_loss",
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


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)
