"""Compare: the keyed diff of what a flow wants in the target against what the target holds,
read from the warehouse by run id and committed with its changes and duplicate-key rejects.
The diff itself is `stages.diff`, pure polars."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from p2c_etl.model.flow import Flow
from p2c_etl.model.keys import folded_record_key, record_key
from p2c_etl.model.rejects import KEY, ROW
from p2c_etl.stages.diff import (
    CHANGED,
    FOLD,
    KIND,
    DiffResult,
    diff,
    folded_keys,
    folded_twins,
    respell_keys,
)
from p2c_etl.stages.prepare import Handoff, staged_table
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class CompareInfo:
    inserts: int
    updates: int
    unchanged: int
    target_only: int
    rejected: int = 0
    written: pl.Series = field(default_factory=lambda: pl.Series("key", [], dtype=pl.String))
    """The target keys to insert or update, folded as the target compares keys."""
    doubled: pl.Series = field(default_factory=lambda: pl.Series(ROW, [], dtype=pl.Int64))
    """`__row` of the staged rows rejected as duplicate keys."""


PART = 250_000
"""Records per part of a large diff: the keys are split by a hash of their folded value, so
every record of one key (both sides, each spelling, and its claims) is in one part, and
the parts are diffed one at a time in bounded memory."""


def compare_flow(
    wh: Warehouse, run_id: str, flow: Flow, target: pl.DataFrame, rows: Handoff
) -> CompareInfo:
    """Diff the staged rows (`rows`, from prepare) against the target (in the flow's scope,
    as this run read it: `extract.target_frame`); store every change."""
    staged, claimed = rows.take()
    parts = key_parts(
        flow, -(-max(staged.height, target.height, 1) // PART), staged, target, claimed
    )
    del staged, target, claimed  # the caller keeps no reference to them: parts replace them
    infos: list[CompareInfo] = []
    kept: list[pl.DataFrame] = []
    restaged = False
    with wh.transaction():
        while parts:
            compared = compare_frames(run_id, flow, *parts.pop(0))
            if compared.rejects.height:
                wh.append("rejects", compared.rejects)
            wh.append("changes", change_rows(run_id, flow, compared.result))
            infos.append(compared.info)
            kept.append(compared.staged)
            restaged = restaged or compared.restaged
        if restaged:
            wh.write_table(staged_table(run_id, flow), pl.concat(kept))
    return _merged(infos)


def key_parts(
    flow: Flow, parts: int, staged: pl.DataFrame, target: pl.DataFrame, claimed: pl.DataFrame
) -> list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """(staged, target, claimed) split into `parts` by a hash of the key as text, folded:
    the staged and target keys as the diff types them (the staged types), the claimed ones
    as text, which is how the diff matches claims (`diff._without_claimed`)."""
    if parts == 1:
        return [(staged, target, claimed)]

    def split(frame: pl.DataFrame, typed: bool) -> dict[int, pl.DataFrame]:
        text = [
            (pl.col(k).cast(staged.schema[k]) if typed else pl.col(k))
            .cast(pl.String)
            .str.strip_chars_end(" ")
            .str.to_lowercase()
            for k in flow.keys
        ]
        part = (pl.struct(text).hash(_PART_SEED) % parts).alias("__part")
        pieces = frame.with_columns(part).partition_by("__part", as_dict=True, include_key=False)
        return {int(str(k[0])): v for k, v in pieces.items()}

    sides = [split(staged, True), split(target, True), split(claimed, False)]
    return [
        (
            sides[0].get(i, staged.clear()),
            sides[1].get(i, target.clear()),
            sides[2].get(i, claimed.clear()),
        )
        for i in range(parts)
    ]


_PART_SEED = 0x5032_5041_5254


def _merged(infos: list[CompareInfo]) -> CompareInfo:
    return CompareInfo(
        inserts=sum(i.inserts for i in infos),
        updates=sum(i.updates for i in infos),
        unchanged=sum(i.unchanged for i in infos),
        target_only=sum(i.target_only for i in infos),
        rejected=sum(i.rejected for i in infos),
        written=pl.concat([i.written for i in infos]),
        doubled=pl.concat([i.doubled for i in infos]),
    )


@dataclass(frozen=True)
class Compared:
    """`staged` less the duplicate-key rejects, its keys spelt as the target spells them;
    `restaged` says whether it differs from the staged rows given."""

    staged: pl.DataFrame
    result: DiffResult
    rejects: pl.DataFrame
    info: CompareInfo
    restaged: bool = False


def compare_frames(
    run_id: str, flow: Flow, staged: pl.DataFrame, target: pl.DataFrame, claimed: pl.DataFrame
) -> Compared:
    """Diff staged rows against the target, comparing keys the way the target does.

    Both systems keep their records in SQL Server under case-insensitive collations (F&O's
    database; Dataverse: every language collation is `_CI`), which also ignore trailing
    spaces: `ACC-1`, `acc-1` and `acc-1 ` are one record. So keys are matched folded, and
    a source key matching a target key that is spelt differently takes the target's
    spelling (an update addresses the record as the target holds it; a key cannot be
    renamed). A folded key the target holds more than once (Dataverse has no alternate key
    on most natural keys) cannot be written safely, nor one that several source records
    give: their source records become `duplicate_key` rejects and the target records are
    left alone, until someone fixes them by hand.
    """
    keys, schema = list(flow.keys), staged.schema
    names = [f"{FOLD}{k}" for k in keys]
    held = folded_twins(target, keys, schema)
    given = folded_twins(staged, keys, schema).join(held, on=names, how="anti", nulls_equal=True)
    rejects = _duplicate_rejects(run_id, flow, staged, held, given)
    if held.height or given.height:
        doubled = pl.concat([held.select(names), given.select(names)])
        staged = _without(staged, doubled, keys, schema)
        target = _without(target, doubled, keys, schema)
    result = diff(
        staged.drop(ROW, KEY),
        target,
        flow.keys,
        flow.compare_columns,
        claimed=claimed,
        fold_keys=True,
        empty_date=flow.target.empty_date,
        insert_values=False,  # the staged rows hold them (`report`, `diff.after_values`)
    )
    respelt = result.respelt is not None and result.respelt.height > 0
    return Compared(
        staged=respell_keys(staged, result.respelt, keys),
        result=result,
        rejects=rejects,
        info=CompareInfo(
            inserts=result.count("insert"),
            updates=result.count("update"),
            unchanged=result.unchanged,
            target_only=result.count("target_only"),
            rejected=rejects.height,
            written=result.changes.filter(pl.col(KIND).is_in(["insert", "update"])).select(
                folded_record_key(keys).alias("key")
            )["key"],
            doubled=rejects["source_row"],
        ),
        restaged=respelt or rejects.height > 0,
    )


def _without(
    frame: pl.DataFrame, doubled: pl.DataFrame, keys: list[str], schema: pl.Schema
) -> pl.DataFrame:
    """The rows of `frame` whose folded key is not in `doubled`."""
    folded = frame.with_columns(folded_keys(keys, schema))
    names = [f"{FOLD}{k}" for k in keys]
    return folded.join(doubled, on=names, how="anti", nulls_equal=True).drop(names)


def _duplicate_rejects(
    run_id: str, flow: Flow, staged: pl.DataFrame, held: pl.DataFrame, given: pl.DataFrame
) -> pl.DataFrame:
    """A `duplicate_key` reject for each staged row whose folded key the target holds more
    than once (`held`) or that several staged rows give (`given`)."""
    keys, target = list(flow.keys), str(flow.target)
    names = [f"{FOLD}{k}" for k in keys]
    folded = staged.with_columns(folded_keys(keys, staged.schema))
    held_message = pl.format(
        "{} holds {} records with this key (case and trailing spaces ignored, as it compares"
        " keys); merge them by hand, then the next run writes it",
        pl.lit(target),
        pl.col("len"),
    )
    given_message = pl.format(
        "{} source records have this key once case and trailing spaces are ignored, and {}"
        " compares keys that way: it can hold one; give each record its own key in the source",
        pl.col("len"),
        pl.lit(target),
    )
    parts = [
        _rejects(run_id, flow, folded.join(dup, on=names, nulls_equal=True), message)
        for dup, message in ((held, held_message), (given, given_message))
        if dup.height
    ]
    if not parts:
        return _rejects(
            run_id, flow, folded.clear().with_columns(len=pl.lit(0, pl.UInt32)), held_message
        )
    return pl.concat(parts).sort("source_row")


def _rejects(run_id: str, flow: Flow, rows: pl.DataFrame, message: pl.Expr) -> pl.DataFrame:
    return rows.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        pl.col(KEY).alias("record_key"),
        pl.col(ROW).alias("source_row"),
        pl.lit(",".join(flow.keys)).alias("field"),
        pl.lit("duplicate_key").alias("reason"),
        record_key(flow.keys).alias("value"),
        message.alias("message"),
        pl.lit(None, pl.String).alias("row_json"),
    )


def change_rows(run_id: str, flow: Flow, result: DiffResult) -> pl.DataFrame:
    return result.changes.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        record_key(flow.keys).alias("record_key"),
        KIND,
        CHANGED,
        pl.col("before").alias("before_json"),
        pl.col("after").alias("after_json"),
    ).sort("kind", "record_key")
