"""Casts that never change a value: text, numbers and flags to a contract type, exactly.

A value that has no exact counterpart in the target type is reported, never rounded,
truncated or silently turned into null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import Contract
from p2c_etl.model.rejects import REJECT_SCHEMA, ROW, RejectReason, empty_rejects

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_WIDE = pl.Decimal(38, 18)


@dataclass(frozen=True)
class ExactCast:
    """`value` cast to the target type; `invalid`: not of that type; `lossy`: would change."""

    value: pl.Expr
    invalid: pl.Expr
    lossy: pl.Expr


def exact_cast(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> ExactCast:
    if source == pl.String:
        text = expr.str.strip_chars()
        expr = pl.when(text == "").then(None).otherwise(text)
    if source == pl.String and target == pl.Boolean:
        folded = expr.str.to_lowercase()
        value: pl.Expr = (
            pl.when(folded.is_in(_TRUE)).then(True).when(folded.is_in(_FALSE)).then(False)
        )
    elif source == pl.String and target == pl.Date:
        # A date, or the date part of an OData DateTimeOffset ("2026-03-01T12:00:00Z").
        value = expr.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    elif source == pl.String and isinstance(target, pl.Datetime):
        value = expr.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    else:
        value = expr.cast(target, strict=False)
    invalid = expr.is_not_null() & value.is_null()
    lossy = pl.lit(False)
    if isinstance(target, pl.Decimal) and (source == pl.String or source.is_numeric()):
        lossy = value.is_not_null() & (value.cast(_WIDE) != expr.cast(_WIDE, strict=False))
    return ExactCast(value=value, invalid=invalid, lossy=lossy)


def typed_frame(
    frame: pl.DataFrame, dtypes: Mapping[str, pl.DataType], where: str, first_line: int = 1
) -> pl.DataFrame:
    """Cast columns to the contract types; the first value that does not fit is a
    ConnectorError naming `where` (a file or URL), the line (row + `first_line`) and column."""
    casts = []
    for name, dtype in dtypes.items():
        if frame.schema[name] == dtype:
            continue
        cast = exact_cast(pl.col(name), frame.schema[name], dtype)
        bad = frame.with_row_index("__i").filter(cast.invalid | cast.lossy)
        if bad.height:
            line = bad["__i"][0] + first_line
            raise ConnectorError(
                f"{where}: line {line}: column {name}: {bad[name][0]!r} is not a valid {dtype}"
                + (f" ({bad.height} such values)" if bad.height > 1 else "")
            )
        casts.append(cast.value.alias(name))
    return frame.with_columns(casts) if casts else frame


def coerce(
    frame: pl.DataFrame, contract: Contract, columns: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast `columns` to the contract's types; values that cannot be cast exactly are rejects.

    Rows that fail keep a null in the failed column, so later checks still see every row.
    """
    casts: list[pl.Expr] = []
    rejects: list[pl.DataFrame] = []
    for name in columns:
        spec = contract.column(name)
        if frame.schema[name] == spec.dtype:
            continue
        cast = exact_cast(pl.col(name), frame.schema[name], spec.dtype)
        rejects.append(
            _reject_rows(frame, cast.invalid, name, "wrong_type", f"is not a valid {spec.type}")
        )
        rejects.append(
            _reject_rows(
                frame,
                cast.lossy,
                name,
                "precision_loss",
                f"has more decimal places than {spec.type} holds",
            )
        )
        casts.append(cast.value.alias(name))
    typed = frame.with_columns(casts) if casts else frame
    return typed, pl.concat([empty_rejects(), *rejects], how="vertical")


def _reject_rows(
    frame: pl.DataFrame, failed: pl.Expr, name: str, reason: RejectReason, what: str
) -> pl.DataFrame:
    return (
        frame.filter(failed)
        .select(
            ROW,
            pl.lit(name).alias("field"),
            pl.lit(reason).alias("reason"),
            pl.col(name).cast(pl.String).alias("value"),
            pl.format("{} '{}' {}", pl.lit(name), pl.col(name).cast(pl.String), pl.lit(what)).alias(
                "message"
            ),
        )
        .cast(REJECT_SCHEMA)
    )
