"""Reconciliation of records (`p2c reconcile`): do the CRM and the ERP agree, and where not?

Read-only: it extracts, maps, validates and compares exactly as a run does (the stages are the
same), and never loads. Each difference is classified with the warehouse's record of what
p2c-etl last wrote:

    pending        the source changed since the last write (the next run will carry it)
    drift          the target was edited by hand since the last write
    conflict       both
    never synced   p2c-etl never wrote this record
    not synced     only in the source (new, or rejected: the reason says why)
    only in target only in the target

Tolerances per column are configurable. Money is `jobs.reconcile.money`; the job that runs
both and stores the verdict is `jobs.reconcile.job`; the evidence is `jobs.reconcile.report`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any, Literal

from p2c_etl.config import SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Context, Flow
from p2c_etl.model.keys import record_key
from p2c_etl.stages.compare import compare_flow
from p2c_etl.stages.diff import CHANGED, KIND
from p2c_etl.stages.extract import EntityReads, extract_flow, source_frames, target_frame
from p2c_etl.stages.prepare import prepare_flow, staged_table
from p2c_etl.warehouse.store import Warehouse, audit_namespace

Classification = Literal[
    "pending", "drift", "conflict", "never synced", "not synced", "rejected", "only in target"
]
ZERO = Decimal(0)


@dataclass(frozen=True)
class FieldDiff:
    field: str
    source: str | None
    target: str | None
    last_written: str | None


@dataclass(frozen=True)
class Discrepancy:
    flow: str
    record_key: str
    classification: Classification
    detail: str
    fields: tuple[FieldDiff, ...] = ()


@dataclass(frozen=True)
class FlowAgreement:
    flow: str
    source: str
    target: str
    compared: int
    agree: int
    by_class: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EntityRead:
    """What a reconciliation read of one entity set: its system, how many records, when."""

    system: str
    entity: str
    records: int
    at: str


@dataclass(frozen=True)
class RecordsFound:
    agreements: list[FlowAgreement]
    discrepancies: list[Discrepancy]
    reads: list[EntityRead]


def reconcile_records(
    session: Callable[[], AbstractContextManager[Warehouse]],
    run_id: str,
    flows: Sequence[Flow],
    connectors: Mapping[SystemName, Connector],
    contracts: ContractSet,
    context: Context,
    clock: Callable[[], Any],
    tolerances: Mapping[str, Decimal],
    wanted: Callable[[str], bool] | None = None,
) -> RecordsFound:
    """Every flow compared as a run compares it; with `wanted`, only the records whose key it
    keeps are counted and reported (a reconciliation narrowed to a customer or currency)."""
    agreements: list[FlowAgreement] = []
    found: list[Discrepancy] = []
    reads: list[EntityRead] = []
    # Its own mirrors, dropped at the end: an audit does not change what a run last saw.
    entity_reads = EntityReads(connectors, flows, namespace=audit_namespace(run_id))
    try:
        for flow in flows:
            with session() as wh:  # a flow at a time, so a nightly run can work in between
                mine, agreement = _reconcile_flow(
                    wh, run_id, flow, entity_reads, contracts, context, clock, tolerances, wanted
                )
            found.extend(mine)
            agreements.append(agreement)
    finally:
        with session() as wh:
            reads = _reads(wh, entity_reads.namespace)
            wh.drop_mirrors(entity_reads.namespace)
    return RecordsFound(agreements, found, reads)


def _reads(wh: Warehouse, namespace: str) -> list[EntityRead]:
    rows = wh.query(
        "SELECT system, entity, row_count, changed_at FROM mirrors "
        "WHERE starts_with(system, ?) ORDER BY system, entity",
        [f"{namespace}."],
    )
    return [
        EntityRead(
            r["system"].removeprefix(f"{namespace}."),
            r["entity"],
            int(r["row_count"]),
            r["changed_at"].astimezone(UTC).isoformat(),
        )
        for r in rows.iter_rows(named=True)
    ]


def _reconcile_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    reads: EntityReads,
    contracts: ContractSet,
    context: Context,
    clock: Callable[[], Any],
    tolerances: Mapping[str, Decimal],
    wanted: Callable[[str], bool] | None,
) -> tuple[list[Discrepancy], FlowAgreement]:
    """Extract, prepare and compare `flow` as a run does; its discrepancies and agreement."""
    extract_flow(wh, run_id, flow, reads, context, clock)
    frames = source_frames(wh, flow, reads, context)
    prepared, rows = prepare_flow(wh, run_id, flow, frames, contracts, context)
    del frames
    compared = compare_flow(wh, run_id, flow, target_frame(wh, flow, reads, context), rows)
    mine = _flow_discrepancies(wh, run_id, flow, tolerances)
    compared_records = prepared.staged + compared.target_only + prepared.rejected
    if wanted is not None:
        mine = [d for d in mine if wanted(d.record_key)]
        compared_records = sum(map(wanted, _compared_keys(wh, run_id, flow, mine)))
    classes: dict[str, int] = {}
    for item in mine:
        classes[item.classification] = classes.get(item.classification, 0) + 1
    agreement = FlowAgreement(
        flow=flow.name,
        source=str(flow.source),
        target=str(flow.target),
        compared=compared_records,
        agree=compared_records - len(mine),
        by_class=tuple(sorted(classes.items())),
    )
    with wh.transaction():  # an audit leaves its findings, not its working tables
        wh.con.execute(f'DROP TABLE IF EXISTS "{staged_table(run_id, flow)}"')
    return mine, agreement


def _compared_keys(wh: Warehouse, run_id: str, flow: Flow, mine: list[Discrepancy]) -> list[str]:
    """The key of every record compared: each staged one, each only in the target and each
    rejected (these two are discrepancies, already narrowed)."""
    columns = ", ".join(f'"{k}"' for k in flow.keys)
    staged = wh.query(f'SELECT {columns} FROM "{staged_table(run_id, flow)}"')
    keys: list[str] = staged.select(record_key(flow.keys)).to_series().to_list()
    outside = ("only in target", "rejected")
    return [*keys, *(d.record_key for d in mine if d.classification in outside)]


def _flow_discrepancies(
    wh: Warehouse, run_id: str, flow: Flow, tolerances: Mapping[str, Decimal]
) -> list[Discrepancy]:
    changes = wh.for_flow("changes", run_id, flow.name)
    last = {
        row["record_key"]: json.loads(row["values_json"])
        for row in wh.query(
            "SELECT record_key, values_json FROM last_written WHERE flow = ?", [flow.name]
        ).iter_rows(named=True)
    }
    found: list[Discrepancy] = []
    for row in changes.iter_rows(named=True):
        key = row["record_key"]
        if row[KIND] == "insert":
            found.append(Discrepancy(flow.name, key, "not synced", "only in the source"))
        elif row[KIND] == "target_only":
            found.append(Discrepancy(flow.name, key, "only in target", "no source record"))
        else:
            item = _mismatch(flow.name, key, row, last.get(key), tolerances)
            if item is not None:
                found.append(item)
    for reject in (
        wh.for_flow("rejects", run_id, flow.name)
        .unique("source_row", keep="first", maintain_order=True)
        .iter_rows(named=True)
    ):
        found.append(
            Discrepancy(
                flow.name,
                reject["record_key"] or "(no key)",
                "rejected",
                f"{reject['reason']}: {reject['message']}",
            )
        )
    return found


def _mismatch(
    flow: str,
    key: str,
    row: dict[str, Any],
    last: dict[str, Any] | None,
    tolerances: Mapping[str, Decimal],
) -> Discrepancy | None:
    after = json.loads(row["after_json"] or "{}")
    before = json.loads(row["before_json"] or "{}")
    diffs = [
        FieldDiff(
            f,
            _text(after.get(f)),
            _text(before.get(f)),
            _text(last.get(f)) if last is not None else None,
        )
        for f in row[CHANGED]
        if not _within(tolerances.get(f), after.get(f), before.get(f))
    ]
    if not diffs:
        return None
    if last is None:
        return Discrepancy(
            flow, key, "never synced", "differs; p2c-etl never wrote it", tuple(diffs)
        )
    source_moved = any(d.source != d.last_written for d in diffs)
    target_moved = any(d.target != d.last_written for d in diffs)
    if source_moved and target_moved:
        kind: Classification = "conflict"
        detail = "changed in the source and edited in the target since the last write"
    elif target_moved:
        kind, detail = "drift", "edited in the target since the last write"
    else:
        kind, detail = "pending", "changed in the source since the last write"
    return Discrepancy(flow, key, kind, detail, tuple(diffs))


def _within(tolerance: Decimal | None, a: Any, b: Any) -> bool:
    if tolerance is None or a is None or b is None:
        return False
    try:
        return abs(Decimal(str(a)) - Decimal(str(b))) <= tolerance
    except ArithmeticError:
        return False


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
