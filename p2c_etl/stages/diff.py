"""Keyed, hash-first diff of what a flow wants in the target against what the target holds.

1. Both sides keep the key and compared columns; empty strings count as null (Finance and
   Operations returns "" where Dataverse returns null), so null equals null and "" equals null.
2. One 64-bit row hash per side; a join on key + hash classifies every key as insert, update,
   unchanged or target-only without touching the columns.
3. Only for keys whose hashes differ are the columns compared, giving the changed field names.

Decimals compare exactly: both sides are cast to the same contract type before hashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

ChangeKind = Literal["insert", "update", "unchanged", "target_only"]
HASH = "__hash"
KIND = "kind"
CHANGED = "changed_fields"


@dataclass(frozen=True)
class DiffResult:
    """Changes (keys, kind, changed_fields, before, after) for every key that is not unchanged."""

    changes: pl.DataFrame
    unchanged: int

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
) -> DiffResult:
    """Compare `source` (wanted) with `target` (held), both keyed by `keys`.

    `claimed` holds keys that source records claim but that were rejected: a target row with
    such a key is not reported as target-only, since its source record is accounted for.
    """
    keys, compare = list(keys), list(compare)
    schema = source.schema
    joined = _hashed(source, keys, compare, schema).join(
        _hashed(target, keys, compare, schema), on=keys, how="full", coalesce=True, suffix="_t"
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
    if claimed is not None and claimed.height:
        changes = _without_claimed(changes, claimed, keys)
    unchanged = joined.height - differs.height
    left = _comparable_rows(source, changes, keys, compare, schema)
    right = _comparable_rows(target, changes, keys, compare, schema)
    return DiffResult(changes=_describe(changes, left, right, keys, compare), unchanged=unchanged)


def _hashed(
    frame: pl.DataFrame, keys: list[str], compare: list[str], schema: pl.Schema
) -> pl.DataFrame:
    """Keys and one hash of the comparable values of each row."""
    row_hash = (
        frame.select([_comparable(c, schema[c]) for c in compare]).hash_rows()
        if compare
        else pl.zeros(frame.height, pl.UInt64, eager=True)
    )
    return frame.select([pl.col(k).cast(schema[k]) for k in keys]).with_columns(
        row_hash.alias(HASH)
    )


def _comparable(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column cast to the source's type; an empty string counts as null."""
    expr = pl.col(name).cast(dtype)
    return (pl.when(expr == "").then(None).otherwise(expr) if dtype == pl.String else expr).alias(
        name
    )


def _comparable_rows(
    frame: pl.DataFrame,
    changes: pl.DataFrame,
    keys: list[str],
    compare: list[str],
    schema: pl.Schema,
) -> pl.DataFrame:
    """Only the rows of `frame` whose keys changed, with comparable values."""
    typed_keys = frame.with_columns([pl.col(k).cast(schema[k]) for k in keys])
    rows = typed_keys.join(changes.select(keys), on=keys, how="semi", nulls_equal=True)
    return rows.select(*keys, *[_comparable(c, schema[c]) for c in compare])


def _without_claimed(changes: pl.DataFrame, claimed: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Drop target-only keys that a rejected source record claims."""
    text = [pl.col(k).cast(pl.String).alias(f"__s{k}") for k in keys]
    claimed_keys = claimed.select(text).unique()
    orphans = changes.filter(pl.col(KIND) == "target_only").with_columns(text)
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
