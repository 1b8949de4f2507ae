"""Transform: filter, rename, value maps, defaults and lookups — pure polars, frames in and out.

Every source row keeps its position in the snapshot (`__row`) and its source key (`__key`),
so a row that fails a value map or lookup becomes a reject that names the record and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import polars as pl

from p2c_etl.flow import Field, Filter, Flow, FromContext, Lookup, Scalar, Value, normalize_key
from p2c_etl.keys import record_key

ROW = "__row"
KEY = "__key"
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
    {ROW: pl.Int64(), "field": pl.String(), "reason": pl.String(), "message": pl.String()}
)
Context = Mapping[str, Scalar]
References = Mapping[tuple[str, str], pl.DataFrame]


@dataclass(frozen=True)
class Transformed:
    """Mapped rows (`__row`, `__key`, target columns), rejects, and the filtered-out count.

    `claimed` holds the target keys of every row that passed the filters, rejected or not.
    """

    staged: pl.DataFrame
    rejects: pl.DataFrame
    filtered_out: int
    claimed: pl.DataFrame


@dataclass(frozen=True)
class _Problem:
    field: str
    reason: RejectReason
    failed: pl.Expr
    message: pl.Expr


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def transform(flow: Flow, source: pl.DataFrame, refs: References, context: Context) -> Transformed:
    """Map `source` (a snapshot of `flow.source`) onto the target columns of `flow`."""
    frame = source.with_row_index(ROW).with_columns(
        pl.col(ROW).cast(pl.Int64), record_key(flow.source_keys).alias(KEY)
    )
    kept = frame.filter(filters_expr(flow.source_filters, context))
    columns: list[pl.Expr] = []
    problems: list[_Problem] = []
    for field in flow.fields:
        expr, field_problems = _field(field, refs, context)
        columns.append(expr.alias(field.target))
        problems.extend(field_problems)
    flags = [p.failed.alias(f"__fail{i}") for i, p in enumerate(problems)]
    messages = [p.message.alias(f"__msg{i}") for i, p in enumerate(problems)]
    mapped = kept.select(ROW, KEY, *columns, *flags, *messages)
    rejects = pl.concat(
        [
            mapped.filter(pl.col(f"__fail{i}")).select(
                ROW,
                pl.lit(p.field).alias("field"),
                pl.lit(p.reason).alias("reason"),
                pl.col(f"__msg{i}").alias("message"),
            )
            for i, p in enumerate(problems)
        ]
        or [empty_rejects()],
        how="vertical",
    )
    failed_any = pl.any_horizontal(*(pl.col(f"__fail{i}") for i in range(len(problems))))
    staged = mapped.filter(~failed_any) if problems else mapped
    return Transformed(
        staged=staged.select(ROW, KEY, *flow.target_columns),
        rejects=rejects.cast(REJECT_SCHEMA),
        filtered_out=frame.height - kept.height,
        claimed=mapped.select(flow.keys),
    )


def resolve(value: Value, context: Context) -> Scalar:
    return context[value.name] if isinstance(value, FromContext) else value


def filters_expr(filters: tuple[Filter, ...], context: Context) -> pl.Expr:
    """All filters together; string comparisons ignore case, as OData's do on both systems."""
    expr = pl.lit(True)
    for flt in filters:
        value = resolve(flt.value, context)
        column = pl.col(flt.column)
        if isinstance(value, str):
            column, value = column.cast(pl.String).str.to_lowercase(), value.lower()
        test = column.eq_missing(value) if flt.op == "eq" else column.ne_missing(value)
        expr = expr & test
    return expr


def _normalized(expr: pl.Expr) -> pl.Expr:
    """Trimmed, case-folded text; empty becomes null."""
    text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
    return pl.when(text == "").then(None).otherwise(text)


def _field(field: Field, refs: References, context: Context) -> tuple[pl.Expr, list[_Problem]]:
    problems: list[_Problem] = []
    original = pl.col(field.source) if field.source else pl.lit(None, dtype=pl.String)
    value = original
    if field.value_map is not None:
        entries = field.value_map.normalized()
        blank = entries.pop("", None)
        key = _normalized(original)
        mapped = key.replace_strict(entries, default=None, return_dtype=pl.String)
        value = pl.when(key.is_null()).then(pl.lit(blank, dtype=pl.String)).otherwise(mapped)
        problems.append(
            _Problem(
                field.target,
                "unmapped_value",
                key.is_not_null() & mapped.is_null(),
                pl.format(
                    "{} '{}' is not in value map '{}'",
                    pl.lit(field.source),
                    original.cast(pl.String),
                    pl.lit(field.value_map.name),
                ),
            )
        )
    if field.default is not None:
        default = resolve(field.default, context)
        if field.source is None:
            value = pl.lit(default)
        else:
            value = pl.when(_normalized(value).is_null()).then(pl.lit(default)).otherwise(value)
    if field.lookup is not None:
        value, problem = _lookup(field, value, refs)
        problems.append(problem)
    return value, problems


def _lookup(field: Field, value: pl.Expr, refs: References) -> tuple[pl.Expr, _Problem]:
    lookup = field.lookup
    assert lookup is not None
    mapping, ambiguous = reference_mapping(lookup, refs[(lookup.system, lookup.entity)])
    key = _normalized(value)
    resolved = key.replace_strict(mapping, default=None, return_dtype=pl.String)
    reason = pl.when(key.is_in(list(ambiguous))).then(pl.lit(" (ambiguous)")).otherwise(pl.lit(""))
    message = pl.format(
        "no {}.{} with {} = '{}'{}",
        pl.lit(lookup.system),
        pl.lit(lookup.entity),
        pl.lit(lookup.match),
        value.cast(pl.String),
        reason,
    )
    failed = key.is_not_null() & resolved.is_null()
    return resolved, _Problem(field.target, "missing_reference", failed, message)


def reference_mapping(lookup: Lookup, ref: pl.DataFrame) -> tuple[dict[str, str], set[str]]:
    """Normalized `match` → `returns`; keys that name two different records are left out."""
    pairs = (
        ref.select(
            _normalized(pl.col(lookup.match)).alias("k"),
            pl.col(lookup.returns).cast(pl.String).alias("v"),
        )
        .drop_nulls()
        .unique()
    )
    counts = pairs.group_by("k").len()
    ambiguous = set(counts.filter(pl.col("len") > 1)["k"].to_list())
    mapping = {normalize_key(k): v for k, v in pairs.iter_rows() if k not in ambiguous}
    return mapping, ambiguous
