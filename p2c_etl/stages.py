"""The warehouse-facing steps between extract and load: prepare (transform + validate) and
compare (diff). Each reads its inputs from the warehouse by run id, commits its outputs
together, and returns a typed info record.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from p2c_etl.contracts import ContractSet
from p2c_etl.diff import CHANGED, KIND, DiffResult, diff
from p2c_etl.extract import inputs, references, source_name, target_name
from p2c_etl.flow import Context, Flow
from p2c_etl.keys import record_key
from p2c_etl.transform import KEY, ROW, transform
from p2c_etl.validate import validate
from p2c_etl.warehouse import Warehouse, table_name


@dataclass(frozen=True)
class PrepareInfo:
    source_rows: int
    filtered_out: int
    rejected: int
    staged: int


@dataclass(frozen=True)
class CompareInfo:
    inserts: int
    updates: int
    unchanged: int
    target_only: int


def staged_table(run_id: str, flow: Flow) -> str:
    return table_name("stage", run_id, flow.name)


def claimed_table(run_id: str, flow: Flow) -> str:
    return table_name("claimed", run_id, flow.name)


def prepare_flow(
    wh: Warehouse, run_id: str, flow: Flow, contracts: ContractSet, context: Context
) -> PrepareInfo:
    """Map and validate the source snapshot; store good rows, rejects and claimed keys."""
    mapped = transform(
        flow,
        wh.snapshot(run_id, source_name(flow)),
        references(wh, run_id, flow),
        context,
        inputs(wh, run_id, flow),
    )
    checked = validate(mapped.staged, contracts.get(flow.target.system, flow.target.entity))
    rejects = pl.concat([mapped.rejects, checked.rejects], how="vertical")
    with wh.transaction():
        wh.write_table(staged_table(run_id, flow), checked.valid)
        wh.write_table(claimed_table(run_id, flow), mapped.claimed)
        wh.append("rejects", _reject_rows(run_id, flow, mapped.source, rejects))
        wh.append(
            "unmapped_values",
            mapped.unmapped.select(
                pl.lit(run_id).alias("run_id"),
                pl.lit(flow.name).alias("flow"),
                pl.all(),
                pl.lit(flow.unmapped).alias("policy"),
            ),
        )
    return PrepareInfo(
        source_rows=mapped.source.height,
        filtered_out=mapped.filtered_out,
        rejected=rejects[ROW].n_unique(),
        staged=checked.valid.height,
    )


def _reject_rows(
    run_id: str, flow: Flow, source: pl.DataFrame, rejects: pl.DataFrame
) -> pl.DataFrame:
    rows = source.with_row_index(ROW).select(
        pl.col(ROW).cast(pl.Int64),
        record_key(flow.source_keys).alias("record_key"),
        pl.struct(source.columns).struct.json_encode().alias("row_json"),
    )
    return (
        rejects.join(rows, on=ROW, how="left")
        .select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(flow.name).alias("flow"),
            "record_key",
            pl.col(ROW).alias("source_row"),
            "field",
            "reason",
            "value",
            "message",
            "row_json",
        )
        .sort("source_row", "field")
    )


def compare_flow(wh: Warehouse, run_id: str, flow: Flow) -> CompareInfo:
    """Diff the staged rows against the target snapshot; store every change."""
    staged = wh.read_table(staged_table(run_id, flow)).drop(ROW, KEY)
    target = wh.snapshot(run_id, target_name(flow))
    claimed = wh.read_table(claimed_table(run_id, flow))
    result = diff(staged, target, flow.keys, flow.compare_columns, claimed=claimed)
    with wh.transaction():
        wh.append("changes", _change_rows(run_id, flow, result))
    return CompareInfo(
        inserts=result.count("insert"),
        updates=result.count("update"),
        unchanged=result.unchanged,
        target_only=result.count("target_only"),
    )


def _change_rows(run_id: str, flow: Flow, result: DiffResult) -> pl.DataFrame:
    return result.changes.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        record_key(flow.keys).alias("record_key"),
        KIND,
        CHANGED,
        pl.col("before").alias("before_json"),
        pl.col("after").alias("after_json"),
    ).sort("kind", "record_key")
