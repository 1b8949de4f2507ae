"""Keyed, hash-first diff of what a flow wants in the target against what the target holds.

1. Both sides keep the key and compared columns; empty strings count as null (Finance and
   Operations returns "" where Dataverse returns null), so null equals null and "" equals null.
   A date the target holds for "no date" (`empty_date`: F&O's 1900-01-01) counts as null too,
   and so does a date-time on that day.
2. One 64-bit row hash per side; a join on key + hash classifies every key as insert, update,
   unchanged or target-only without touching the columns.
3. Only for keys whose hashes differ are the columns compared, giving the changed field names.
4. With `fold_keys` (the target compares text keys as SQL Server does: case-insensitively,
   trailing spaces ignored), a new key that matches a target-only key once folded is that
   record: the pair is compared on its own and reported under the target's spelling, which
   `respelt` maps from the source's. The exact path pays nothing for it: only the few keys
   that matched neither way are folded.

Decimals compare exactly: both sides are cast to the same contract type before hashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import polars as pl

ChangeKind = Literal["insert", "update", "unchanged", "target_only"]
HASH = "__hash"
KIND = "kind"
CHANGED = "changed_fields"
FOLD = "__fold_"
SPELT = "__spelt_"


@dataclass(frozen=True)
class DiffResult:
    """Changes (keys, kind, changed_fields, before, after) for every key that is not unchanged.

    `respelt` maps source keys (the key columns) to the target's spelling of the same record
    (`__spelt_<key>`): the changes name those records as the target spells them."""

    changes: pl.DataFrame
    unchanged: int
    respelt: pl.DataFrame | None = None

    def count(self, kind: ChangeKind) -> int:
        if kind == "unchanged":
            return self.unchanged
        return int((self.changes[KIND] == kind).sum())


def diff(
    source: pl.DataFrame,
    target: pl.DataFrame,
    keys: Sequence[str],
    compare: Sequence[str],
    claimed: pl.DataFrame | None = None,
    *,
    fold_keys: bool = False,
    empty_date: date | None = None,
    insert_values: bool = True,
) -> DiffResult:
    """Compare `source` (wanted) with `target` (held), both keyed by `keys`.

    Without `insert_values`, an insert's `after` is null, not the JSON of the record (a
    first sync of a million records need not describe each one: the staged rows hold them,
    `after_values`).

    `claimed` holds keys that source records claim but that were rejected: a target row with
    such a key is not reported as target-only, since its source record is accounted for.
    With `fold_keys`, each side must hold every folded key once (see `folded_twins`).
    """
    keys, compare = list(keys), list(compare)
    exact = _exact(source, target, keys, compare, empty_date, insert_values)
    if not fold_keys or not _text_keys(keys, source.schema):
        return _claims_settled(exact, claimed, keys, fold=False)
    respelt = _loose_pairs(exact.changes, keys, source.schema)
    if respelt.height == 0:
        return _claims_settled(exact, claimed, keys, fold=True)
    held = respelt.select([pl.col(f"{SPELT}{k}").alias(k) for k in keys])
    typed = target.with_columns([pl.col(k).cast(source.schema[k]) for k in keys])
    pairs = _exact(
        _respell(source, respelt, keys),
        typed.join(held, on=keys, how="semi", nulls_equal=True),
        keys,
        compare,
        empty_date,
        insert_values,
    )
    merged = DiffResult(
        changes=pl.concat([_without_pairs(exact.changes, respelt, keys), pairs.changes]),
        unchanged=exact.unchanged + pairs.unchanged,
        respelt=respelt,
    )
    return _claims_settled(merged, claimed, keys, fold=True)


def _exact(
    source: pl.DataFrame,
    target: pl.DataFrame,
    keys: list[str],
    compare: list[str],
    empty_date: date | None,
    insert_values: bool = True,
) -> DiffResult:
    schema = source.schema
    joined = _hashed(source, keys, compare, schema, empty_date).join(
        _hashed(target, keys, compare, schema, empty_date),
        on=keys,
        how="full",
        coalesce=True,
        suffix="_t",
    )
    differs = joined.filter(pl.col(HASH).ne_missing(pl.col(f"{HASH}_t")))
    kind = (
        pl.when(pl.col(f"{HASH}_t").is_null())
        .then(pl.lit("insert"))
        .when(pl.col(HASH).is_null())
        .then(pl.lit("target_only"))
        .otherwise(pl.lit("update"))
    )
    changes = differs.select(*keys, kind.alias(KIND))
    unchanged = joined.height - differs.height
    described = changes if insert_values else changes.filter(pl.col(KIND) != "insert")
    left = _comparable_rows(source, described, keys, compare, schema, empty_date)
    right = _comparable_rows(target, described, keys, compare, schema, empty_date)
    rows = _describe(described, left, right, keys, compare)
    if not insert_values:  # inserts as keys only
        inserts = changes.filter(pl.col(KIND) == "insert").with_columns(
            pl.lit([], pl.List(pl.String)).alias(CHANGED),
            pl.lit(None, pl.String).alias("before"),
            pl.lit(None, pl.String).alias("after"),
        )
        rows = pl.concat([rows, inserts.select(rows.columns)])
    return DiffResult(changes=rows, unchanged=unchanged)


def after_values(
    frame: pl.DataFrame, keys: Sequence[str], compare: Sequence[str], empty_date: date | None
) -> pl.DataFrame:
    """The keys of `frame` and, as `after`, the JSON of each row's compared values as a diff
    describes an insert (what `insert_values=False` leaves out)."""
    keys, compare, schema = list(keys), list(compare), frame.schema
    rows = frame.select(*keys, *[_comparable(c, schema[c], empty_date) for c in compare])
    after = rows.rename({c: f"{c}__a" for c in compare})
    return after.select(*keys, _json(keys, compare, "__a").alias("after"))


def folded_keys(keys: Sequence[str], schema: pl.Schema) -> list[pl.Expr]:
    """The keys as SQL Server compares them, named `__fold_<key>`: text lower-cased with its
    trailing spaces dropped, any other type as it is."""
    return [_folded(k, schema[k]).alias(f"{FOLD}{k}") for k in keys]


def folded_twins(frame: pl.DataFrame, keys: Sequence[str], schema: pl.Schema) -> pl.DataFrame:
    """The folded keys that `frame` holds more than once, with how often (`len`)."""
    names = [f"{FOLD}{k}" for k in keys]
    folded = frame.select(folded_keys(keys, schema))
    return folded.group_by(names).len().filter(pl.col("len") > 1)


def _folded(name: str, dtype: pl.DataType) -> pl.Expr:
    expr = pl.col(name).cast(dtype)
    return expr.str.strip_chars_end(" ").str.to_lowercase() if dtype == pl.String else expr


def _text_keys(keys: list[str], schema: pl.Schema) -> bool:
    return any(schema[k] == pl.String for k in keys)


def _loose_pairs(changes: pl.DataFrame, keys: list[str], schema: pl.Schema) -> pl.DataFrame:
    """Source keys of inserts that match a target-only key once folded, and that key."""
    names = [f"{FOLD}{k}" for k in keys]
    inserts = changes.filter(pl.col(KIND) == "insert").select(keys)
    orphans = changes.filter(pl.col(KIND) == "target_only").select(keys)
    if inserts.height == 0 or orphans.height == 0:
        return inserts.clear().with_columns([pl.col(k).alias(f"{SPELT}{k}") for k in keys])
    spelt = orphans.select(
        *folded_keys(keys, schema), *[pl.col(k).alias(f"{SPELT}{k}") for k in keys]
    )
    return (
        inserts.with_columns(folded_keys(keys, schema))
        .join(spelt, on=names, nulls_equal=True)
        .drop(names)
    )


def _respell(frame: pl.DataFrame, respelt: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The rows of `frame` whose keys `respelt` maps, under the target's spelling."""
    typed = frame.with_columns([pl.col(k).cast(respelt.schema[k]) for k in keys])
    return (
        typed.join(respelt, on=keys, how="inner", nulls_equal=True)
        .drop(keys)
        .rename({f"{SPELT}{k}": k for k in keys})
        .select(frame.columns)
    )


def respell_keys(
    frame: pl.DataFrame, respelt: pl.DataFrame | None, keys: Sequence[str]
) -> pl.DataFrame:
    """`frame` with each key that `respelt` maps written as the target spells it."""
    if respelt is None or respelt.height == 0:
        return frame
    keys = list(keys)
    marked = respelt.with_columns(pl.lit(True).alias(f"{SPELT}"))
    typed = frame.with_columns([pl.col(k).cast(respelt.schema[k]) for k in keys])
    return (
        typed.join(marked, on=keys, how="left", nulls_equal=True)
        .with_columns(
            [
                pl.when(pl.col(SPELT)).then(pl.col(f"{SPELT}{k}")).otherwise(pl.col(k)).alias(k)
                for k in keys
            ]
        )
        .select(frame.columns)
    )


def _without_pairs(changes: pl.DataFrame, respelt: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """The changes less the inserts and target-only keys that turned out to be one record."""
    paired = pl.concat(
        [respelt.select(keys), respelt.select([pl.col(f"{SPELT}{k}").alias(k) for k in keys])]
    )
    return changes.join(paired, on=keys, how="anti", nulls_equal=True)


def _claims_settled(
    result: DiffResult, claimed: pl.DataFrame | None, keys: list[str], *, fold: bool
) -> DiffResult:
    if claimed is None or claimed.height == 0:
        return result
    changes = _without_claimed(result.changes, claimed, keys, fold)
    return DiffResult(changes=changes, unchanged=result.unchanged, respelt=result.respelt)


def _hashed(
    frame: pl.DataFrame,
    keys: list[str],
    compare: list[str],
    schema: pl.Schema,
    empty_date: date | None,
) -> pl.DataFrame:
    """Keys and one hash of the comparable values of each row."""
    row_hash = (
        frame.select([_comparable(c, schema[c], empty_date) for c in compare]).hash_rows()
        if compare
        else pl.zeros(frame.height, pl.UInt64, eager=True)
    )
    return frame.select([pl.col(k).cast(schema[k]) for k in keys]).with_columns(
        row_hash.alias(HASH)
    )


def _comparable(name: str, dtype: pl.DataType, empty_date: date | None = None) -> pl.Expr:
    """The column cast to the source's type; an empty string counts as null, and so does the
    target's empty date (a date-time on that day included)."""
    expr = pl.col(name).cast(dtype)
    if dtype == pl.String:
        expr = pl.when(expr == "").then(None).otherwise(expr)
    elif empty_date is not None and dtype == pl.Date:
        expr = pl.when(expr == empty_date).then(None).otherwise(expr)
    elif empty_date is not None and isinstance(dtype, pl.Datetime):
        expr = pl.when(expr.dt.date() == empty_date).then(None).otherwise(expr)
    return expr.alias(name)


def _comparable_rows(
    frame: pl.DataFrame,
    changes: pl.DataFrame,
    keys: list[str],
    compare: list[str],
    schema: pl.Schema,
    empty_date: date | None,
) -> pl.DataFrame:
    """Only the rows of `frame` whose keys changed, with comparable values."""
    typed_keys = frame.with_columns([pl.col(k).cast(schema[k]) for k in keys])
    rows = typed_keys.join(changes.select(keys), on=keys, how="semi", nulls_equal=True)
    return rows.select(*keys, *[_comparable(c, schema[c], empty_date) for c in compare])


def _without_claimed(
    changes: pl.DataFrame, claimed: pl.DataFrame, keys: list[str], fold: bool
) -> pl.DataFrame:
    """Drop target-only keys that a rejected source record claims (folded with `fold`)."""

    def text(key: str) -> pl.Expr:
        value = pl.col(key).cast(pl.String)
        folded = value.str.strip_chars_end(" ").str.to_lowercase() if fold else value
        return folded.alias(f"__s{key}")

    claimed_keys = claimed.select([text(k) for k in keys]).unique()
    orphans = changes.filter(pl.col(KIND) == "target_only").with_columns([text(k) for k in keys])
    covered = orphans.join(claimed_keys, on=[f"__s{k}" for k in keys]).select(keys)
    return changes.join(covered, on=keys, how="anti", nulls_equal=True)


def _describe(
    changes: pl.DataFrame,
    left: pl.DataFrame,
    right: pl.DataFrame,
    keys: list[str],
    compare: list[str],
) -> pl.DataFrame:
    """Add changed field names and JSON of both sides to the changed keys."""
    before = right.rename({c: f"{c}__b" for c in compare})
    after = left.rename({c: f"{c}__a" for c in compare})
    wide = changes.join(after, on=keys, how="left", nulls_equal=True).join(
        before, on=keys, how="left", nulls_equal=True
    )
    differs = [
        pl.when(pl.col(f"{c}__a").ne_missing(pl.col(f"{c}__b"))).then(pl.lit(c)) for c in compare
    ]
    changed = (
        pl.when(pl.col(KIND) == "update")
        .then(
            pl.concat_list(differs).list.drop_nulls() if differs else pl.lit([], pl.List(pl.String))
        )
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
    )
    return wide.select(
        *keys,
        KIND,
        changed.alias(CHANGED),
        _json(keys, compare, "__b").alias("before"),
        _json(keys, compare, "__a").alias("after"),
    ).with_columns(
        pl.when(pl.col(KIND) == "insert").then(None).otherwise(pl.col("before")).alias("before"),
        pl.when(pl.col(KIND) == "target_only").then(None).otherwise(pl.col("after")).alias("after"),
    )


def _json(keys: list[str], compare: list[str], suffix: str) -> pl.Expr:
    fields = [pl.col(k) for k in keys] + [pl.col(f"{c}{suffix}").alias(c) for c in compare]
    return pl.struct(fields).struct.json_encode()
