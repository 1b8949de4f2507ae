"""Transform: derive, filter, rename, value maps, defaults and lookups — pure polars.

Every source row keeps its position (`__row`) and its source key (`__key`), so a row that
fails a value map or lookup becomes a reject that names the record, the field and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from p2c_etl.model.flow import (
    Context,
    Field,
    Filter,
    Flow,
    FromContext,
    Inputs,
    Lookup,
    Scalar,
    UnmappedPolicy,
    Value,
)
from p2c_etl.model.keys import record_key
from p2c_etl.model.rejects import KEY, REJECT_SCHEMA, ROW, RejectReason, empty_rejects

UNMAPPED_SCHEMA = pl.Schema({"field": pl.String(), "value": pl.String(), "count": pl.UInt32()})
References = Mapping[tuple[str, str], pl.DataFrame]
Mappings = Mapping[Lookup, pl.DataFrame]
"""Lookup → its `reference_mapping`, made once when many frames are mapped (a migration's
chunks) instead of once per frame."""


@dataclass(frozen=True)
class Transformed:
    """Mapped rows (`__row`, `__key`, target columns), rejects, and what else was seen.

    `source` is the source after derivations (what `__row` points into); `claimed` holds the
    target keys of every source row, filtered out or rejected or not, so that the diff does not
    report their target records as target-only; `unmapped` counts the
    values no value map knew, whatever the flow's policy did with them.
    """

    source: pl.DataFrame
    staged: pl.DataFrame
    rejects: pl.DataFrame
    filtered_out: int
    claimed: pl.DataFrame
    unmapped: pl.DataFrame
    unmapped_rows: pl.Series
    """`__row` of each row with a value no value map knew (a row counted in `unmapped`)."""
    aligned: bool = True
    """Row `i` of `source` is row `i` of the source given: the derivations kept the rows as
    they were (some add rows, such as a discount line beside its order line)."""


@dataclass(frozen=True)
class _Problem:
    field: str
    reason: RejectReason
    failed: pl.Expr
    value: pl.Expr
    message: pl.Expr


_SOURCE_ROW = "__source_row"


def derive(flow: Flow, source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """The source with every derivation of `flow` applied, in declaration order."""
    for step in flow.derive:
        source = step.function(source, inputs, context)
    return source


def derived_columns(
    flow: Flow, source: pl.DataFrame, inputs: Inputs, context: Context
) -> pl.DataFrame | None:
    """The columns `flow`'s derivations add, one row per row of `source` in its order; None
    when they add or drop rows (which rows became which cannot be told)."""
    marked = source.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(_SOURCE_ROW))
    derived = derive(flow, marked, inputs, context)
    if _SOURCE_ROW not in derived.columns or not derived[_SOURCE_ROW].equals(marked[_SOURCE_ROW]):
        return None
    return derived.select(_added(flow))


def _added(flow: Flow) -> list[str]:
    return list(dict.fromkeys(c for d in flow.derive for c in d.adds))


DERIVED = "__derived"


def derived_hash(flow: Flow, derived: pl.DataFrame) -> pl.Series:
    """Per row of `derived` (a source with `flow`'s derivations applied, or the columns they
    add), a hash of what they add (`__derived`): settle keys a source row by it, so that a row
    whose derived values moved is not the row settled; the same from prepare's rows as from
    settle's own pass."""
    return derived.select(_added(flow)).hash_rows(DERIVED_SEED).alias(DERIVED)


DERIVED_SEED = 0x5032_4445_5256


def transform(
    flow: Flow,
    source: pl.DataFrame,
    refs: References,
    context: Context,
    inputs: Inputs | None = None,
    mappings: Mappings | None = None,
) -> Transformed:
    """Map `source` (a snapshot of `flow.source`) onto the target columns of `flow`."""
    marked = source.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(_SOURCE_ROW))
    derived = derive(flow, marked, inputs or {}, context)
    aligned = _SOURCE_ROW in derived.columns and derived[_SOURCE_ROW].equals(marked[_SOURCE_ROW])
    derived = derived.drop(_SOURCE_ROW, strict=False)
    frame = (
        derived.with_row_index(ROW)
        .with_columns(pl.col(ROW).cast(pl.Int64), record_key(flow.source_keys).alias(KEY))
        .rechunk()
    )
    kept = frame.filter(filters_expr(flow.source_filters, context))
    columns: dict[str, pl.Expr] = {}
    problems: list[_Problem] = []
    unmapped: list[_Problem] = []
    for field in flow.fields:
        expr, field_problems, field_unmapped = _field(
            field, refs, context, flow.unmapped, mappings or {}, frame
        )
        columns[field.target] = expr.alias(field.target)
        problems.extend(field_problems)
        unmapped.extend(field_unmapped)
    checks = [*problems, *unmapped]
    mapped = kept.select(
        ROW,
        KEY,
        *columns.values(),
        *[p.failed.alias(f"__fail{i}") for i, p in enumerate(checks)],
        *[p.value.alias(f"__value{i}") for i, p in enumerate(checks)],
        *[p.message.alias(f"__msg{i}") for i, p in enumerate(problems)],
    )
    failed_any = pl.any_horizontal(*(pl.col(f"__fail{i}") for i in range(len(problems))))
    staged = mapped.filter(~failed_any) if problems else mapped
    return Transformed(
        source=derived,
        staged=staged.select(ROW, KEY, *flow.target_columns),
        rejects=_rejects(mapped, problems),
        filtered_out=frame.height - kept.height,
        claimed=frame.select([columns[k] for k in flow.keys]),
        unmapped=_unmapped_counts(mapped, checks),
        unmapped_rows=_unmapped_rows(mapped, checks),
        aligned=aligned,
    )


def _rejects(mapped: pl.DataFrame, problems: list[_Problem]) -> pl.DataFrame:
    parts = [
        mapped.filter(pl.col(f"__fail{i}")).select(
            ROW,
            pl.lit(p.field).alias("field"),
            pl.lit(p.reason).alias("reason"),
            pl.col(f"__value{i}").alias("value"),
            pl.col(f"__msg{i}").alias("message"),
        )
        for i, p in enumerate(problems)
    ]
    return pl.concat([empty_rejects(), *parts], how="vertical").cast(REJECT_SCHEMA)


def _unmapped_rows(mapped: pl.DataFrame, checks: list[_Problem]) -> pl.Series:
    flags = [pl.col(f"__fail{i}") for i, p in enumerate(checks) if p.reason == "unmapped_value"]
    if not flags:
        return pl.Series(ROW, [], dtype=pl.Int64)
    return mapped.filter(pl.any_horizontal(flags).fill_null(False))[ROW]


def _unmapped_counts(mapped: pl.DataFrame, checks: list[_Problem]) -> pl.DataFrame:
    parts = [
        mapped.filter(pl.col(f"__fail{i}")).select(
            pl.lit(p.field).alias("field"), pl.col(f"__value{i}").alias("value")
        )
        for i, p in enumerate(checks)
        if p.reason == "unmapped_value"
    ]
    if not parts:
        return pl.DataFrame(schema=UNMAPPED_SCHEMA)
    values = pl.concat(parts, how="vertical")
    counts = values.group_by("field", "value").len("count").sort("field", "value")
    return counts.cast(UNMAPPED_SCHEMA)


def resolve(value: Value | None, context: Context) -> Scalar | None:
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


def _field(
    field: Field,
    refs: References,
    context: Context,
    policy: UnmappedPolicy,
    mappings: Mappings,
    frame: pl.DataFrame,
) -> tuple[pl.Expr, list[_Problem], list[_Problem]]:
    value, problems, unmapped = _before_lookup(field, context, policy)
    if field.lookups:
        value, problem = _lookup(field, value, refs, context, mappings, frame)
        problems.append(problem)
    return value, problems, unmapped


def _before_lookup(
    field: Field, context: Context, policy: UnmappedPolicy
) -> tuple[pl.Expr, list[_Problem], list[_Problem]]:
    """The field's value through its value map and default: what its lookups look up."""
    problems: list[_Problem] = []
    unmapped: list[_Problem] = []
    original = pl.col(field.source) if field.source else pl.lit(None, dtype=pl.String)
    value = original
    default = resolve(field.default, context)
    if field.value_map is not None:
        value, problem = _value_map(field, original, policy)
        (problems if policy == "reject" else unmapped).append(problem)
    if default is not None:
        fill = pl.lit(default)
        if field.source is None:
            value = fill
        else:
            value = pl.when(_normalized(value).is_null()).then(fill).otherwise(value)
    return value, problems, unmapped


def lookup_key(field: Field, context: Context, policy: UnmappedPolicy) -> pl.Expr:
    """The key `field`'s lookups match a source row by (normalized, as `reference_mapping`'s
    `k`), computed from the source row."""
    return _normalized(_before_lookup(field, context, policy)[0])


def _value_map(field: Field, original: pl.Expr, policy: UnmappedPolicy) -> tuple[pl.Expr, _Problem]:
    """Map through the field's value map; an unmapped value becomes null (then the default
    applies) unless the policy is `pass`, which keeps it."""
    assert field.value_map is not None
    entries = field.value_map.normalized()
    blank = entries.pop("", None)
    key = _normalized(original)
    mapped = key.replace_strict(entries, default=None, return_dtype=pl.String)
    is_unmapped = key.is_not_null() & mapped.is_null()
    if policy == "pass":
        mapped = pl.when(is_unmapped).then(original.cast(pl.String)).otherwise(mapped)
    value = pl.when(key.is_null()).then(pl.lit(blank, dtype=pl.String)).otherwise(mapped)
    message = pl.format(
        "{} '{}' is not in value map '{}'",
        pl.lit(field.source),
        original.cast(pl.String),
        pl.lit(field.value_map.name),
    )
    return value, _Problem(
        field.target, "unmapped_value", is_unmapped, original.cast(pl.String), message
    )


def _lookup(
    field: Field,
    value: pl.Expr,
    refs: References,
    context: Context,
    mappings: Mappings,
    frame: pl.DataFrame,
) -> tuple[pl.Expr, _Problem]:
    key = _normalized(value)
    # Only the reference entries `frame` asks for (every row: filtered-out rows still claim
    # their keys): replacing through a mapping of millions costs far more than picking the
    # few thousand a chunk needs first.
    wanted = frame.select(key.alias("k"))["k"].drop_nulls().unique().implode()
    resolved: pl.Expr = pl.lit(None, dtype=pl.String)
    for lookup in field.lookups:
        mapping = mappings.get(lookup)
        if mapping is None:  # of the keys wanted only: a few rows need not map millions
            ref = refs[(lookup.system, lookup.entity)]
            mapping = reference_mapping(lookup, ref, context, wanted)
        else:
            mapping = mapping.filter(pl.col("k").is_in(wanted))
        found = key.replace_strict(mapping["k"], mapping["v"], default=None, return_dtype=pl.String)
        resolved = pl.coalesce(resolved, found)
    first = field.lookups[0]
    where = " or ".join(f"{lk.system}.{lk.entity}" for lk in field.lookups)
    message = pl.format(
        "{} '{}' is not in {}",
        pl.lit(first.label or first.match),
        value.cast(pl.String),
        pl.lit(where),
    )
    failed = key.is_not_null() & resolved.is_null()
    return resolved, _Problem(
        field.target, "missing_reference", failed, value.cast(pl.String), message
    )


def reference_mapping(
    lookup: Lookup, ref: pl.DataFrame, context: Context, wanted: pl.Series | None = None
) -> pl.DataFrame:
    """Normalized `match` (`k`) → `returns` (`v`) within the lookup's scope; a key that
    names two different records is left out (so it is reported as missing, never guessed).
    A frame, not a dict: a reference of millions of records never becomes Python objects.
    With `wanted` (an imploded list of normalized keys), only those keys' entries."""
    pairs = ref.filter(filters_expr(lookup.filters, context)).select(
        _normalized(pl.col(lookup.match)).alias("k"),
        pl.col(lookup.returns).cast(pl.String).alias("v"),
    )
    if wanted is not None:
        pairs = pairs.filter(pl.col("k").is_in(wanted))
    pairs = pairs.drop_nulls().unique()
    return pairs.filter(pl.len().over("k") == 1)
