"""Casts that never change a value: text, numbers and flags to a contract type, exactly.

A value that has no exact counterpart in the target type is reported, never rounded,
truncated or silently turned into null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time

import polars as pl

from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import Contract
from p2c_etl.model.rejects import LINE, REJECT_SCHEMA, ROW, RejectReason, empty_rejects

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_WIDE = pl.Decimal(38, 18)
_DAY_TIMES = (time(0), time(12))
"""The times of day a date-time may have and still be a date: midnight UTC (how Dataverse
returns a date-only value, `2026-10-05T00:00:00Z`) and noon UTC (how Finance and Operations
serves a date field over OData, `2026-10-05T12:00:00Z`). Any other time is not a date: dropping
it would change the value (`2026-10-05T23:30:00+05:00` is 18:30 UTC)."""
_DATE_TEXT = (
    r"^(\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?:00|12):00(?::00(?:\.0+)?)?(?:[Zz]|[+-]00(?::?00)?)?)?$"
)
"""A date as text: `2026-10-05`, or a date-time on it at one of `_DAY_TIMES` (UTC: `Z`, an
offset of zero, or none, as a date-time column reads a time without an offset)."""


@dataclass(frozen=True)
class ExactCast:
    """`value` cast to the target type; `invalid`: not of that type; `lossy`: would change."""

    value: pl.Expr
    invalid: pl.Expr
    lossy: pl.Expr


def exact_cast(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> ExactCast:
    """Cast `expr` from `source` to `target`; a value that would change is `lossy`."""
    held, kind = _held(expr, source, target)
    value = _value(held, kind, target)
    return ExactCast(
        value=value,
        invalid=held.is_not_null() & value.is_null(),
        lossy=_lossy(held, value, kind, target),
    )


def cast_columns(frame: pl.DataFrame, dtypes: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`frame` plus, for each column of `dtypes` whose type differs, `__value.<c>` (the cast),
    `__invalid.<c>` and `__lossy.<c>` (as in `exact_cast`). Each step is computed once, in
    its own pass: several times faster than one expression that repeats its parts."""
    todo = {c: t for c, t in dtypes.items() if frame.schema[c] != t}
    if not todo:
        return frame
    held = {c: _held(pl.col(c), frame.schema[c], t) for c, t in todo.items()}
    step = frame.with_columns(expr.alias(f"__held.{c}") for c, (expr, _) in held.items())
    step = step.with_columns(
        _value(pl.col(f"__held.{c}"), kind, todo[c]).alias(f"__value.{c}")
        for c, (_, kind) in held.items()
    )
    checks = []
    for c, (_, kind) in held.items():
        had, value = pl.col(f"__held.{c}"), pl.col(f"__value.{c}")
        checks.append((had.is_not_null() & value.is_null()).alias(f"__invalid.{c}"))
        checks.append(_lossy(had, value, kind, todo[c]).alias(f"__lossy.{c}"))
    return step.with_columns(checks).drop(f"__held.{c}" for c in todo)


def _cast_in_place(flagged: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`columns` of a `cast_columns` frame, each cast one in place of its column."""
    return flagged.select(
        pl.col(f"__value.{c}").alias(c) if f"__value.{c}" in flagged.columns else pl.col(c)
        for c in columns
    )


def _held(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> tuple[pl.Expr, pl.DataType]:
    """The value to cast, and its type: text trimmed, empty text as null; a float bound for
    a decimal as the shortest text that reads back as the same float (0.1 is 0.1, not
    0.1000000000000000055511; polars' own float → decimal cast can fail outright)."""
    if source.is_float() and isinstance(target, pl.Decimal):
        expr, source = expr.cast(pl.String), pl.String()
    if source == pl.String:
        text = expr.str.strip_chars()
        expr = pl.when(text == "").then(None).otherwise(text)
    return expr, source


_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",  # no offset: UTC, as OData's DateTimeOffset is
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%MZ",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",  # a date: its midnight, UTC (no loss)
)


def _value(expr: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    if source.is_nested() or isinstance(source, pl.Object):
        return pl.lit(None, dtype=target)  # an object or a list is no scalar of any type
    if source == pl.Boolean and (target.is_numeric() or isinstance(target, pl.Decimal)):
        return pl.lit(None, dtype=target)  # a flag is not the number 0 or 1
    if source == pl.String and target == pl.Boolean:
        folded = expr.str.to_lowercase()
        return pl.when(folded.is_in(_TRUE)).then(True).when(folded.is_in(_FALSE)).then(False)
    if source.is_numeric() and target == pl.Boolean:
        return pl.when(expr == 1).then(True).when(expr == 0).then(False)  # 2 is not True
    if target.is_integer() and (source.is_float() or isinstance(source, pl.Decimal)):
        whole = expr.cast(target, strict=False)  # which truncates: 12.5 is not a valid int
        return pl.when(whole.cast(source) == expr).then(whole)
    if source == pl.String and target == pl.Date:
        # A date, or a date-time that is one (`_DAY_TIMES`): never the date part of any text.
        return expr.str.extract(_DATE_TEXT, 1).str.to_date("%Y-%m-%d", strict=False)
    if isinstance(source, pl.Datetime) and target == pl.Date:
        utc = expr.dt.convert_time_zone("UTC") if source.time_zone else expr  # naive: UTC
        return pl.when(utc.dt.time().is_in(_DAY_TIMES)).then(utc.dt.date())
    if source == pl.String and isinstance(target, pl.Datetime):
        # Each value by the first of these formats it matches, never by a format guessed from
        # the first value of the column (which made a naive value after a `Z` one null).
        return pl.coalesce(
            expr.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False)
            for f in _DATETIME_FORMATS
        )
    return expr.cast(target, strict=False)


def _lossy(expr: pl.Expr, value: pl.Expr, source: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Where the cast `value` is not the value `expr` held: 1.23456 as a decimal of scale 4
    (a number that is not whole is no int at all: `invalid`)."""
    if not isinstance(target, pl.Decimal) or not (source == pl.String or source.is_numeric()):
        return pl.lit(False)
    lossy = value.is_not_null() & (value.cast(_WIDE) != expr.cast(_WIDE, strict=False))
    if source == pl.String:
        # Digits beyond what even the wide decimal holds: any non-zero digit after the
        # target's scale, in plain notation ("0.1000000000000000000001" at scale 4).
        scale = target.scale or 0
        beyond = expr.str.contains(rf"\.\d{{{scale}}}\d*[1-9]") & ~expr.str.contains("[eE]")
        lossy = lossy | (value.is_not_null() & beyond)
    return lossy


def typed_frame(
    frame: pl.DataFrame, dtypes: Mapping[str, pl.DataType], where: str, first_line: int = 1
) -> pl.DataFrame:
    """Cast columns to the contract types; the first value that does not fit is a
    ConnectorError naming `where` (a file or URL), the line (the frame's `__line`, or row +
    `first_line`) and column."""
    flagged = cast_columns(frame, dtypes)
    for name, dtype in dtypes.items():
        if f"__value.{name}" not in flagged.columns:
            continue
        failed = pl.col(f"__invalid.{name}") | pl.col(f"__lossy.{name}")
        count = flagged.select(failed.sum()).item()
        if count:
            bad = flagged.with_row_index("__i").filter(failed)
            line = bad[LINE][0] if LINE in bad.columns else bad["__i"][0] + first_line
            raise ConnectorError(
                f"{where}: line {line}: column {name}: {bad[name][0]!r} is not a valid "
                f"{dtype}" + (f" ({count} such values)" if count > 1 else "")
            )
    return _cast_in_place(flagged, frame.columns)


def coerce(
    frame: pl.DataFrame, contract: Contract, columns: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast `columns` to the contract's types; values that cannot be cast exactly are rejects.

    Rows that fail keep a null in the failed column, so later checks still see every row.
    """
    flagged = cast_columns(frame, contract.dtypes(columns))
    checks: dict[str, tuple[str, RejectReason, str]] = {}  # flag column → column, reason, what
    for name in columns:
        if f"__value.{name}" in flagged.columns:
            kind = contract.column(name).type
            checks[f"__invalid.{name}"] = (name, "wrong_type", f"is not a valid {kind}")
            what = f"has more decimal places than {kind} holds"
            checks[f"__lossy.{name}"] = (name, "precision_loss", what)
    if not checks:
        return frame, empty_rejects()
    found = flagged.select(pl.col(list(checks)).any()).row(0, named=True)
    rejects = [
        _reject_rows(flagged, pl.col(flag), *checks[flag]) for flag, hit in found.items() if hit
    ]
    typed = _cast_in_place(flagged, frame.columns)
    return typed, pl.concat([empty_rejects(), *rejects], how="vertical")


def _reject_rows(
    frame: pl.DataFrame, failed: pl.Expr, name: str, reason: RejectReason, what: str
) -> pl.DataFrame:
    text = as_text(pl.col(name), frame.schema[name])
    return (
        frame.filter(failed)
        .select(
            ROW,
            pl.lit(name).alias("field"),
            pl.lit(reason).alias("reason"),
            text.alias("value"),
            pl.format("{} '{}' {}", pl.lit(name), text, pl.lit(what)).alias("message"),
        )
        .cast(REJECT_SCHEMA)
    )


def as_text(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A value as a reject shows it: an object or a list as JSON (`{"a":"x"}`, not the
    `{"x"}` of polars' cast), bytes not at all (they are no text), anything else as text."""
    if dtype.is_nested():
        if _holds_bytes(dtype):
            return pl.lit(None, dtype=pl.String)
        wrapped = pl.struct(expr.alias("v")).struct.json_encode()  # {"v":…}: JSON for any type
        return pl.when(expr.is_not_null()).then(
            wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")
        )
    if dtype == pl.Binary or isinstance(dtype, pl.Object):
        return pl.lit(None, dtype=pl.String)
    return expr.cast(pl.String)


def _holds_bytes(dtype: object) -> bool:
    """Whether `dtype` is or holds bytes (or Python objects), which JSON cannot show."""
    if isinstance(dtype, pl.Struct):
        return any(_holds_bytes(field.dtype) for field in dtype.fields)
    if isinstance(dtype, (pl.List, pl.Array)):
        return _holds_bytes(dtype.inner)
    return dtype == pl.Binary or isinstance(dtype, pl.Object) or "Binary" in str(dtype)
