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
    left = _prepare(source, keys, compare, source.schema)
    right = _prepare(target, keys, compare, left.schema)
    joined = left.select(*keys, HASH).join(
        right.select(*keys, HASH), on=keys, how="full", coalesce=True, suffix="_t"
    )
    kind = (
        pl.when(pl.col(f"{HASH}_t").is_null())
        .then(pl.lit("insert"))
        .when(pl.col(HASH).is_null())
        .then(pl.lit("target_only"))
        .when(pl.col(HASH) == pl.col(f"{HASH}_t"))
        .then(pl.lit("unchanged"))
        .otherwise(pl.lit("update"))
    )
    classified = joined.select(*keys, kind.alias(KIND))
    if claimed is not None and claimed.height:
        orphan = classified.filter(pl.col(KIND) == "target_only")
        claimed_keys = claimed.select([pl.col(k).cast(pl.String) for k in keys]).unique()
        covered = orphan.with_columns([pl.col(k).cast(pl.String).alias(f"__s{k}") for k in keys])
        covered = covered.join(
            claimed_keys.rename({k: f"__s{k}" for k in keys}), on=[f"__s{k}" for k in keys]
        ).select(keys)
        classified = classified.join(covered, on=keys, how="anti", nulls_equal=True)
    unchanged = int((classified[KIND] == "unchanged").sum())
    changes = classified.filter(pl.col(KIND) != "unchanged")
    return DiffResult(changes=_describe(changes, left, right, keys, compare), unchanged=unchanged)


def _prepare(
    frame: pl.DataFrame, keys: list[str], compare: list[str], schema: pl.Schema
) -> pl.DataFrame:
    columns = [*keys, *compare]
    out = frame.select(
        [_comparable(pl.col(c).cast(schema[c]), schema[c]).alias(c) for c in columns]
    )
    hashed = out.select(compare).hash_rows() if compare else pl.Series([0] * out.height)
    return out.with_columns(hashed.alias(HASH))


def _comparable(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return pl.when(expr == "").then(None).otherwise(expr) if dtype == pl.String else expr


def _describe(
    changes: pl.DataFrame,
    left: pl.DataFrame,
    right: pl.DataFrame,
    keys: list[str],
    compare: list[str],
) -> pl.DataFrame:
    """Add changed field names and JSON of both sides to the changed keys."""
    before = right.drop(HASH).rename({c: f"{c}__b" for c in compare})
    after = left.drop(HASH).rename({c: f"{c}__a" for c in compare})
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
