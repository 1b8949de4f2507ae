"""Compare: the keyed diff of what a flow wants in the target against what the target holds,
read from the warehouse by run id and committed with its changes and duplicate-key rejects.
The diff itself is `stages.diff`, pure polars."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from p2c_etl.model.flow import Flow
from p2c_etl.model.keys import record_key
from p2c_etl.model.rejects import KEY, ROW
from p2c_etl.stages.diff import CHANGED, KIND, DiffResult, diff
from p2c_etl.stages.extract import target_name
from p2c_etl.stages.prepare import claimed_table, staged_table
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class CompareInfo:
    inserts: int
    updates: int
    unchanged: int
    target_only: int
    rejected: int = 0


def compare_flow(wh: Warehouse, run_id: str, flow: Flow) -> CompareInfo:
    """Diff the staged rows against the target snapshot; store every change."""
    staged = wh.read_table(staged_table(run_id, flow))
    target = wh.snapshot(run_id, target_name(flow))
    claimed = wh.read_table(claimed_table(run_id, flow))
    compared = compare_frames(run_id, flow, staged, target, claimed)
    with wh.transaction():
        if compared.rejects.height:
            wh.write_table(staged_table(run_id, flow), compared.staged)
            wh.append("rejects", compared.rejects)
        wh.append("changes", change_rows(run_id, flow, compared.result))
    return compared.info


@dataclass(frozen=True)
class Compared:
    staged: pl.DataFrame
    result: DiffResult
    rejects: pl.DataFrame
    info: CompareInfo


def compare_frames(
    run_id: str, flow: Flow, staged: pl.DataFrame, target: pl.DataFrame, claimed: pl.DataFrame
) -> Compared:
    """Diff staged rows against the target.

    A key the target holds more than once (Dataverse has no alternate key on most natural
    keys) cannot be written safely: its source records become `duplicate_key` rejects and
    its target records are left alone, until someone merges them by hand.
    """
    keys = list(flow.keys)
    doubled = target.group_by(keys).len().filter(pl.col("len") > 1)
    rejects = staged.join(doubled, on=keys, how="inner", nulls_equal=True)
    if doubled.height:
        staged = staged.join(doubled, on=keys, how="anti", nulls_equal=True)
        target = target.join(doubled, on=keys, how="anti", nulls_equal=True)
    result = diff(staged.drop(ROW, KEY), target, flow.keys, flow.compare_columns, claimed=claimed)
    return Compared(
        staged=staged,
        result=result,
        rejects=_doubled_rejects(run_id, flow, rejects),
        info=CompareInfo(
            inserts=result.count("insert"),
            updates=result.count("update"),
            unchanged=result.unchanged,
            target_only=result.count("target_only"),
            rejected=rejects.height,
        ),
    )


def _doubled_rejects(run_id: str, flow: Flow, rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        pl.col(KEY).alias("record_key"),
        pl.col(ROW).alias("source_row"),
        pl.lit(",".join(flow.keys)).alias("field"),
        pl.lit("duplicate_key").alias("reason"),
        record_key(flow.keys).alias("value"),
        pl.format(
            "{} holds {} records with this key; merge them by hand, then the next run writes it",
            pl.lit(str(flow.target)),
            pl.col("len"),
        ).alias("message"),
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
