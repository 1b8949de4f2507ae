"""Load: upsert only what changed. Inserts carry every mapped column; updates only the changed
ones, grouped by the set of columns that changed. Every record gets a result row, and what
was written is remembered per record for drift detection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import polars as pl

from p2c_etl.connectors.base import RESULT_SCHEMA, Connector, WriteBatch
from p2c_etl.model.flow import Flow
from p2c_etl.model.ids import stable_id
from p2c_etl.model.keys import record_key
from p2c_etl.model.rejects import KEY, ROW
from p2c_etl.stages.diff import CHANGED, KIND
from p2c_etl.stages.prepare import staged_table
from p2c_etl.warehouse.mirror import mirror_exists, read_mirror
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class LoadInfo:
    inserted: int
    updated: int
    failed: int
    staged: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    """The staged rows as `load_flow` left them in the warehouse (those it sent), so that
    the caller need not read them back."""


def build_batch(
    flow: Flow, staged: pl.DataFrame, changes: pl.DataFrame, target: pl.DataFrame | None = None
) -> WriteBatch:
    """Turn the changes of a flow into one write batch for its target. Updates of a target
    with a primary id carry the record's id from the `target` snapshot."""
    rows = staged.drop(ROW, KEY, strict=False).with_columns(record_key(flow.keys).alias("__rk"))
    ids: list[str] = []
    if flow.target_id and target is not None:
        known = target.select(record_key(flow.keys).alias("__rk"), flow.target_id)
        rows = rows.join(known.unique("__rk"), on="__rk", how="left")
        ids = [flow.target_id]
    insert_keys = changes.filter(pl.col(KIND) == "insert").select(
        pl.col("record_key").alias("__rk")
    )
    inserts = rows.join(insert_keys, on="__rk", how="semi")
    if flow.target_id:
        inserts = inserts.with_columns(
            pl.col("__rk")
            .map_elements(lambda k: stable_id(flow, k), return_dtype=pl.String)
            .alias(flow.target_id)
        )
    updates = []
    by_fields = changes.filter(pl.col(KIND) == "update").group_by(CHANGED, maintain_order=True)
    for (fields,), group in by_fields:
        keys = group.select(pl.col("record_key").alias("__rk"))
        frame = rows.join(keys, on="__rk", how="semi").select(*flow.keys, *ids, *fields)
        updates.append(frame)
    return WriteBatch(keys=flow.keys, inserts=inserts.drop("__rk"), updates=tuple(updates))


def load_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    connector: Connector,
    now: Callable[[], datetime],
) -> LoadInfo:
    """Write the run's inserts and updates of `flow` to its target; record every result.

    What the target now holds is remembered per record: what was written, and, for records
    found already in step, the values they agree on (so a later hand edit shows as drift).
    """
    all_changes = wh.for_flow("changes", run_id, flow.name, _CHANGE_COLUMNS)
    staged = wh.read_table(staged_table(run_id, flow))
    in_step = _newly_in_step(wh, flow, staged, all_changes)
    changes = all_changes.filter(pl.col(KIND).is_in(["insert", "update"]))
    # Of the staged rows, a write (and a retry) needs only those written (a first sync
    # writes every one: then no copy is made).
    written, whole = staged, changes.height >= staged.height
    if not whole:
        written = staged.join(
            changes.select(pl.col("record_key").alias("__rk")),
            left_on=record_key(flow.keys),
            right_on="__rk",
            how="semi",
        )
    del staged
    info = _write(wh, run_id, run_id, flow, connector, written, changes, in_step, now)
    if not whole:  # the staged table already holds exactly these rows otherwise
        wh.write_table(staged_table(run_id, flow), written)
    return replace(info, staged=written)


def retry_flow(
    wh: Warehouse,
    failed_run: str,
    run_id: str,
    flow: Flow,
    connector: Connector,
    now: Callable[[], datetime],
) -> tuple[int, LoadInfo]:
    """Send again the records of `flow` whose write failed in `failed_run` (rejects are not
    failures: they need a fix in the data first). Returns (records retried, outcome)."""
    failed = wh.for_flow("load_results", failed_run, flow.name).filter(pl.col("status") == "failed")
    changes = (
        wh.for_flow("changes", failed_run, flow.name, _CHANGE_COLUMNS)
        .join(failed.select("record_key").unique(), on="record_key", how="semi")
        .filter(pl.col(KIND).is_in(["insert", "update"]))
    )
    staged = wh.read_table(staged_table(failed_run, flow))
    empty = pl.DataFrame(schema={"record_key": pl.String, "values_json": pl.String})
    info = _write(wh, failed_run, run_id, flow, connector, staged, changes, empty, now)
    return changes.height, info


def _values(flow: Flow, staged: pl.DataFrame) -> pl.DataFrame:
    return staged.drop(ROW, KEY).select(
        record_key(flow.keys).alias("record_key"),
        pl.struct(flow.target_columns).struct.json_encode().alias("values_json"),
    )


def _write(
    wh: Warehouse,
    source_run: str,
    run_id: str,
    flow: Flow,
    connector: Connector,
    staged: pl.DataFrame,
    changes: pl.DataFrame,
    in_step: pl.DataFrame,
    now: Callable[[], datetime],
) -> LoadInfo:
    results = send(flow, connector, staged, changes, _target_ids(wh, flow))
    with wh.transaction():
        record_results(wh, run_id, flow, results, staged, in_step, now())
    return outcome(results)


def _target_ids(wh: Warehouse, flow: Flow) -> pl.DataFrame | None:
    """The key and primary id of each target record, as p2c-etl last read them (the target's
    mirror), for the updates of a target that is addressed by id."""
    system, entity = flow.target.system, flow.target.entity
    if not flow.target_id or not mirror_exists(wh, system, entity):
        return None
    return read_mirror(wh, system, entity, [*flow.keys, flow.target_id])


def send(
    flow: Flow,
    connector: Connector,
    staged: pl.DataFrame,
    changes: pl.DataFrame,
    target: pl.DataFrame | None,
) -> pl.DataFrame:
    """Write `changes` (inserts and updates) to the flow's target; one result row each."""
    if changes.height == 0:
        return pl.DataFrame(schema=RESULT_SCHEMA)
    return connector.upsert(flow.target.entity, build_batch(flow, staged, changes, target))


def record_results(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    results: pl.DataFrame,
    staged: pl.DataFrame | None,
    in_step: pl.DataFrame,
    written_at: datetime,
) -> None:
    """Store the results and remember what the target now holds (inside the caller's
    transaction): the values of the `staged` rows written, and `in_step` (record_key,
    values_json). With `staged` None only failures are stored, and nothing is remembered.
    Remembered a slice at a time: JSON of a million records is not held at once."""
    if staged is None:
        results = results.filter(pl.col("status") == "failed")
    wh.append("load_results", results, constants={"run_id": run_id, "flow": flow.name})
    if staged is None:
        return
    ok = results.filter(pl.col("status") == "ok").select(pl.col("record_key").alias("__rk"))
    rows = staged.with_columns(record_key(flow.keys).alias("__rk"))
    new = not wh.remembers(flow.name)  # the slices are of distinct records: none to replace
    for start in range(0, rows.height, _SLICE):
        written = rows.slice(start, _SLICE).join(ok, on="__rk", how="semi").drop("__rk")
        _remember(wh, flow, _values(flow, written), run_id, written_at, new)
    for start in range(0, in_step.height, _SLICE):
        _remember(wh, flow, in_step.slice(start, _SLICE), run_id, written_at, new)


def _remember(
    wh: Warehouse,
    flow: Flow,
    values: pl.DataFrame,
    run_id: str,
    written_at: datetime,
    new: bool = False,
) -> None:
    wh.remember_written(flow.name, values, run_id, written_at, new)


def outcome(results: pl.DataFrame) -> LoadInfo:
    return LoadInfo(
        inserted=_count(results, "insert", "ok"),
        updated=_count(results, "update", "ok"),
        failed=int((results["status"] == "failed").sum()),
    )


_CHANGE_COLUMNS = ("record_key", KIND, CHANGED)
_SLICE = 200_000
"""Staged rows encoded and compared with what was remembered at a time (bounded memory)."""


def _newly_in_step(
    wh: Warehouse, flow: Flow, staged: pl.DataFrame, changes: pl.DataFrame
) -> pl.DataFrame:
    """The staged records found unchanged (not in `changes`) whose remembered values are
    missing or different: `record_key`, `values_json`."""
    unchanged = staged.join(
        changes.select(pl.col("record_key").alias("__rk")),
        left_on=record_key(flow.keys),
        right_on="__rk",
        how="anti",
    )
    found = [pl.DataFrame(schema={"record_key": pl.String, "values_json": pl.String})]
    for start in range(0, unchanged.height, _SLICE):
        values = _values(flow, unchanged.slice(start, _SLICE))
        found.append(wh.not_remembered(flow.name, values))
    return pl.concat(found)


def _count(results: pl.DataFrame, op: str, status: str) -> int:
    return int(((results["op"] == op) & (results["status"] == status)).sum())
