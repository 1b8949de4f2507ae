"""Extract: full snapshots of a flow's source, its target and the reference data it looks up.

Source records that cannot be read exactly (a broken CSV line, text that is not UTF-8, a value
not of its type) are kept beside the source snapshot as its bad rows, for prepare to turn into
rejects; target, reference and input data that cannot be read exactly stop the flow."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.badrows import SOURCE_BAD_SCHEMA
from p2c_etl.connectors.base import Connector
from p2c_etl.model.flow import Context, Flow, Input
from p2c_etl.stages.transform import filters_expr
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class ExtractInfo:
    source_rows: int
    target_rows: int
    bad_source_rows: int = 0
    """Bad rows of the source (a record with several bad values has several)."""


def source_name(flow: Flow) -> str:
    return f"{flow.name}.source"


def source_bad_name(flow: Flow) -> str:
    return f"{flow.name}.source.bad"


def source_bad(wh: Warehouse, run_id: str, flow: Flow) -> pl.DataFrame:
    """The bad rows of the flow's source in run `run_id` (SOURCE_BAD_SCHEMA)."""
    try:
        return wh.snapshot(run_id, source_bad_name(flow))
    except KeyError:  # a run extracted before bad rows were kept
        return pl.DataFrame(schema=SOURCE_BAD_SCHEMA)


def target_name(flow: Flow) -> str:
    return f"{flow.name}.target"


def reference_name(flow: Flow, system: str, entity: str) -> str:
    return f"{flow.name}.ref.{system}.{entity}"


def extract_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    connectors: Mapping[SystemName, Connector],
    context: Context,
    now: Callable[[], datetime],
) -> ExtractInfo:
    """Snapshot source (and its bad rows), target (in the flow's target scope) and references
    into the warehouse."""
    bad: list[pl.DataFrame] = [pl.DataFrame(schema=SOURCE_BAD_SCHEMA)]
    source_pages = connectors[flow.source.system].pages(
        flow.source.entity, flow.source_columns, on_bad=bad.append
    )
    taken = now()
    source_rows = wh.save_snapshot_pages(
        run_id, source_name(flow), flow.source.system, flow.source.entity, source_pages, taken
    )
    bad_rows = pl.concat(bad).select(SOURCE_BAD_SCHEMA.names()).cast(SOURCE_BAD_SCHEMA)
    wh.save_snapshot(  # taken with the source, in the same read
        run_id, source_bad_name(flow), flow.source.system, flow.source.entity, bad_rows, taken
    )
    target_columns = [*flow.target_columns, *([flow.target_id] if flow.target_id else [])]
    target_columns += [f.column for f in flow.target_filters]
    target_columns = list(dict.fromkeys(target_columns))
    scope = filters_expr(flow.target_filters, context)
    target_pages = connectors[flow.target.system].pages(
        flow.target.entity, target_columns, missing_ok=True
    )
    target_rows = wh.save_snapshot_pages(
        run_id,
        target_name(flow),
        flow.target.system,
        flow.target.entity,
        (page.filter(scope) for page in target_pages),
        now(),
    )
    for (system, entity), columns in _reference_columns(flow).items():
        # The target system's entity sets may not exist yet: nothing has been written there.
        ref = connectors[system].snapshot(entity, columns, missing_ok=system == flow.target.system)
        wh.save_snapshot(run_id, reference_name(flow, system, entity), system, entity, ref, now())
    for item in flow.inputs:
        if (item.system, item.entity) == (flow.source.system, flow.source.entity):
            # The flow's own source (all lines of a header): read once, not twice.
            frame = wh.snapshot(run_id, source_name(flow)).select(item.columns)
        else:
            frame = connectors[item.system].snapshot(item.entity, item.columns)
        frame = frame.filter(filters_expr(item.filters, context))
        wh.save_snapshot(run_id, input_name(flow, item), item.system, item.entity, frame, now())
    return ExtractInfo(
        source_rows=source_rows, target_rows=target_rows, bad_source_rows=bad_rows.height
    )


def _reference_columns(flow: Flow) -> dict[tuple[SystemName, str], list[str]]:
    """Per reference entity set, the columns every lookup of `flow` on it needs."""
    columns: dict[tuple[SystemName, str], list[str]] = {}
    for lookup in flow.lookups:
        names = columns.setdefault((lookup.system, lookup.entity), [])
        names.extend(c for c in lookup.columns if c not in names)
    return columns


def input_name(flow: Flow, item: Input) -> str:
    return f"{flow.name}.input.{item.name}"


def inputs(wh: Warehouse, run_id: str, flow: Flow) -> dict[str, pl.DataFrame]:
    return {item.name: wh.snapshot(run_id, input_name(flow, item)) for item in flow.inputs}


def references(wh: Warehouse, run_id: str, flow: Flow) -> dict[tuple[str, str], pl.DataFrame]:
    return {
        (lk.system, lk.entity): wh.snapshot(run_id, reference_name(flow, lk.system, lk.entity))
        for lk in flow.lookups
    }
