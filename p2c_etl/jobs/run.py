"""Orders the stages of a run; the stages themselves hold the logic.

for each flow, in dependency order:
    extract → prepare (transform + validate) → compare (diff) → load (skipped on dry run)
then the report, then the ledger entry is closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import polars as pl

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.errors import P2CError, StageError
from p2c_etl.jobs.wiring import (
    Clock,
    Crash,
    Progress,
    closing_all,
    connectors_for,
    interruption,
    new_run_id,
    open_warehouse,
    select_flows,
    utc_now,
)
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Context, Flow
from p2c_etl.model.summary import FlowCounts, RunMode, RunStatus, RunSummary, status_of
from p2c_etl.resources import contracts_dir
from p2c_etl.stages.compare import compare_flow
from p2c_etl.stages.extract import (
    EntityReads,
    extract_flow,
    flow_entities,
    source_frames,
    target_frame,
)
from p2c_etl.stages.load import load_flow
from p2c_etl.stages.prepare import Handoff, PrepareInfo, compute_rows, save_rows
from p2c_etl.stages.report import build_report_data, write_report
from p2c_etl.stages.settle import (
    Plan,
    confirm_written,
    context_print,
    fingerprint,
    keep_settled,
    plan_rows,
    remember,
    settle_again,
    settled_counts,
    settled_outcomes,
    settled_run,
)
from p2c_etl.warehouse.lock import RunLock
from p2c_etl.warehouse.store import Warehouse


def run_batch(
    settings: Settings,
    *,
    mode: RunMode = "run",
    flows: Sequence[str] | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    clock: Clock = utc_now,
    progress: Progress = lambda _: None,
    full: bool = False,
) -> RunSummary:
    """Run the selected flows once; a stage failure ends the run as `failed`, not raised,
    and so does an unexpected exception (its traceback in the summary). An interrupt
    (KeyboardInterrupt, `Interrupted`) marks the run failed and is raised. `full`: read every
    entity set in full, verifying the mirrors kept through their changes (`p2c run --full`)."""
    contracts = ContractSet.load(contracts_dir())
    selected = select_flows(settings, contracts, flows)
    connectors = connectors_for(settings, contracts)
    with closing_all(connectors):
        return _run(
            settings, contracts, selected, connectors, mode, dry_run, run_id, clock, progress, full
        )


def _run(
    settings: Settings,
    contracts: ContractSet,
    selected: list[Flow],
    connectors: dict[SystemName, Connector],
    mode: RunMode,
    dry_run: bool,
    run_id: str | None,
    clock: Clock,
    progress: Progress,
    full: bool = False,
) -> RunSummary:
    started = clock()
    run_id = run_id or new_run_id(started)
    context = {"company": settings.company, "rounding": settings.rounding}
    # every column any enabled flow reads, so that the mirrors keep their shape from run to run
    reads = EntityReads(
        connectors,
        [*selected, *select_flows(settings, contracts)],
        full=full,
        full_every=settings.full_every,
    )
    with RunLock(settings.warehouse_path, f"p2c {mode} {run_id}"):
        with open_warehouse(settings) as wh:
            wh.fail_stale_runs()
            wh.start_run(run_id, mode, dry_run, [f.name for f in selected], started)
        progress(f"run {run_id}: {len(selected)} flows" + (" (dry run)" if dry_run else ""))
        counts: list[FlowCounts] = []
        error: str | None = None
        crash: Crash | None = None
        try:
            for i, flow in enumerate(selected):
                planned = selected[:i] if dry_run else []
                with open_warehouse(
                    settings
                ) as wh:  # a flow at a time: reconciliations fit between
                    counts.append(
                        _run_flow(
                            wh,
                            run_id,
                            flow,
                            FlowRun(
                                connectors,
                                reads,
                                contracts,
                                context,
                                repr(settings.flow(flow.name)),
                            ),
                            dry_run,
                            clock,
                            progress,
                            planned,
                        )
                    )
                    reads.commit_links(wh)  # with the flow's results: see EntityReads
            with open_warehouse(settings) as wh:
                back = reads.read_back(wh, run_id, clock)
                reads.commit_links(wh)
                if back:
                    names = ", ".join(f"{system}.{entity}" for system, entity in back)
                    progress(f"read back {len(back)} written entity sets: {names}")
                if not dry_run:
                    confirm_writes(wh, selected, counts, reads, context, progress)
        except P2CError as exc:
            error = str(exc)
            crash = (
                exc.cause if isinstance(exc, StageError) and isinstance(exc.cause, Crash) else None
            )
        except Exception as exc:  # outside a flow's stages: a bug all the same
            crash = Crash(exc)
            error = f"run {run_id}: {crash}"
        except BaseException as exc:
            fail_run(settings, run_id, interruption(exc), clock)
            raise
        return closed_run(settings, selected, run_id, mode, dry_run, error, crash, counts, clock)


def confirm_writes(
    wh: Warehouse,
    selected: Sequence[Flow],
    counts: Sequence[FlowCounts],
    reads: EntityReads,
    context: Context,
    progress: Progress,
) -> None:
    """Of each flow that wrote, whose target was read after it (back, or by a later flow),
    the records written that hold what was sent: kept as settled now (`confirm_written`),
    not by the next night; and each flow whose inputs or lookups a later flow wrote,
    settled again now (`settle_again`)."""
    for flow, done in zip(selected, counts, strict=True):
        if done.inserted + done.updated == 0:
            continue
        if not reads.is_current((flow.target.system, flow.target.entity)):
            continue
        held, written = confirm_written(wh, flow, reads, context)
        if written:
            progress(f"{flow.name}: {held} of {written} records written read back as sent")
    for flow in selected:
        derived, moved = settle_again(wh, flow, reads, context)
        if derived or moved:
            progress(
                f"{flow.name}: settled again from what later flows wrote "
                f"({derived} source rows derived, {moved} to compute next run)"
            )


def closed_run(
    settings: Settings,
    selected: list[Flow],
    run_id: str,
    mode: RunMode,
    dry_run: bool,
    error: str | None,
    crash: Crash | None,
    counts: list[FlowCounts],
    clock: Clock,
) -> RunSummary:
    """`close_run` in a warehouse session of its own; when closing crashes too (the report,
    say), the run is failed with that error and its summary has no report."""
    trace = crash.traceback if crash else None
    try:
        with open_warehouse(settings) as wh:
            summary = close_run(wh, settings, selected, run_id, mode, dry_run, error, counts, clock)
        return replace(summary, traceback=trace)
    except P2CError as exc:
        late, late_trace = f"run {run_id}: closing the run failed: {exc}", None
    except Exception as exc:
        bug = Crash(exc)
        late, late_trace = f"run {run_id}: the report failed: {bug}", bug.traceback
    except BaseException as exc:
        fail_run(settings, run_id, interruption(exc), clock)
        raise
    message = f"{error}; then {late}" if error else late
    fail_run(settings, run_id, message, clock)
    with open_warehouse(settings) as wh:
        flows = wh.counts(run_id)
    traces = "".join(t for t in (trace, late_trace) if t) or None
    return RunSummary(run_id, mode, "failed", dry_run, flows, error=message, traceback=traces)


def fail_run(settings: Settings, run_id: str, error: str, clock: Clock) -> None:
    """Mark `run_id` failed in the ledger with `error`."""
    with open_warehouse(settings) as wh:
        wh.finish_run(run_id, "failed", clock(), error=error)


def close_run(
    wh: Warehouse,
    settings: Settings,
    selected: list[Flow],
    run_id: str,
    mode: RunMode,
    dry_run: bool,
    error: str | None,
    counts: list[FlowCounts],
    clock: Clock,
) -> RunSummary:
    """Close the ledger entry and write the report."""
    status: RunStatus = "failed" if error else status_of(tuple(counts))
    wh.finish_run(run_id, status, clock(), error=error)
    ended = clock()
    run = wh.run(run_id)
    assert run is not None
    data = build_report_data(wh, run, selected, settings.company, ended.isoformat())
    html, js = write_report(data, settings.report_dir)
    wh.finish_run(run_id, status, ended, report=(str(html), str(js)), error=error)
    wh.prune(ended - timedelta(days=settings.keep_days))  # `[warehouse] keep_days`
    return RunSummary(
        run_id=run_id,
        mode=mode,
        status=status,
        dry_run=dry_run,
        flows=wh.counts(run_id),
        report_html=str(html),
        report_json=str(js),
        error=error,
    )


@dataclass(frozen=True)
class FlowRun:
    """What every flow of a run shares: the connectors, the run's reads, the contracts and
    context, and the flow's own settings (as text, for its fingerprint)."""

    connectors: dict[SystemName, Connector]
    reads: EntityReads
    contracts: ContractSet
    context: Context
    settings: str


def _prepare(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    shared: FlowRun,
    planned: Sequence[Flow],
    plan: Plan | None,
) -> tuple[PrepareInfo, Handoff, pl.DataFrame | None, Plan | None]:
    """Prepare the rows `plan` says to compute (all without one); a settled row whose target
    key a computed row stages too is computed with it. Stores the prepared rows, and hands
    them to compare."""
    reads, context, contracts = shared.reads, shared.context, shared.contracts
    ords = plan.ords if plan else None
    frames = source_frames(wh, flow, reads, context, ords, keep_ord=True)  # outcomes by place
    prepared, outcomes = compute_rows(wh, run_id, flow, frames, contracts, context, planned)
    if plan is not None and plan.ords is not None:
        again = outcomes is None  # rows that cannot be told apart: every row, every time
        if outcomes is None:
            plan = plan.every_row()
        elif (twins := plan.twins(outcomes)).len():
            plan, again = plan.without(twins), True
        if again:
            frames = source_frames(wh, flow, reads, context, plan.ords, keep_ord=True)
            prepared, outcomes = compute_rows(wh, run_id, flow, frames, contracts, context)
    del frames
    rows = save_rows(wh, run_id, flow, prepared)
    return prepared.info, rows, outcomes, plan


def _run_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    shared: FlowRun,
    dry_run: bool,
    clock: Clock,
    progress: Progress,
    planned: Sequence[Flow] = (),
) -> FlowCounts:
    stage = "extract"
    reads, context = shared.reads, shared.context
    try:
        progress(f"{flow.name}: extracting {flow.source} and {flow.target}")
        extract_flow(wh, run_id, flow, reads, context, clock)
        print_ = None
        if not dry_run:  # a dry run plans on what earlier flows would write: never settled
            versions = reads.versions(flow_entities(flow))
            print_ = fingerprint(flow, shared.settings, context, versions)
            origin = settled_run(wh, flow, print_)
            if origin is not None:
                counts = settled_counts(wh, run_id, flow, origin)
                progress(
                    f"{flow.name}: nothing it reads changed since run {origin}: "
                    f"{counts.unchanged} unchanged, {counts.rejected} rejected as then"
                )
                return counts
        stage = "prepare"
        plan = None
        if not dry_run:
            here = context_print(flow, shared.settings, context)
            plan = plan_rows(wh, flow, reads, context, here)
            if plan.ords is not None:
                progress(
                    f"{flow.name}: computing {plan.ords.len()} of {plan.source.height} source "
                    "rows (the others are as they were)"
                )
        prepared, rows, outcomes, plan = _prepare(wh, run_id, flow, shared, planned, plan)
        stage = "compare"
        keys = outcomes["target_key"] if outcomes is not None else None
        ords = plan.target_ords(keys) if plan and keys is not None else None
        compared = compare_flow(  # the target passed as made: the diff's parts release it
            wh, run_id, flow, target_frame(wh, flow, reads, context, ords), rows
        )
        settled = (plan.unchanged, plan.filtered) if plan else (0, 0)
        counts = FlowCounts(
            flow=flow.name,
            source_rows=prepared.source_rows + sum(settled),
            filtered_out=prepared.filtered_out + settled[1],
            rejected=prepared.rejected + compared.rejected,
            inserted=compared.inserts,
            updated=compared.updates,
            unchanged=compared.unchanged + settled[0],
            target_only=compared.target_only,
        )
        if not dry_run:
            stage = "load"
            progress(
                f"{flow.name}: writing {compared.inserts + compared.updates} records "
                f"to {flow.target}"
            )
            connector = shared.connectors[flow.target.system]
            loaded = load_flow(wh, run_id, flow, connector, clock)
            if compared.inserts + compared.updates:
                written = loaded.inserted + loaded.updated
                reads.written(flow.target.system, flow.target.entity, written)
            counts = replace(
                counts, inserted=loaded.inserted, updated=loaded.updated, failed=loaded.failed
            )
            quiet = compared.inserts + compared.updates == 0 and loaded.failed == 0
            if plan is not None:
                done = None
                if outcomes is not None:
                    done = settled_outcomes(outcomes, compared.written, compared.doubled)
                keep_settled(wh, flow, plan, done, run_id, loaded.staged)
            remember(wh, flow, print_ if quiet else None, run_id)
    except P2CError as exc:
        raise StageError(stage, flow.name, run_id, exc) from exc
    except Exception as exc:  # a bug: the run fails naming the stage and flow, and goes on
        raise StageError(stage, flow.name, run_id, Crash(exc)) from exc
    wh.save_counts(run_id, counts)
    progress(
        f"{flow.name}: {counts.source_rows} source rows, {counts.filtered_out} filtered out, "
        f"{counts.rejected} rejected, {counts.inserted} inserted, {counts.updated} updated, "
        f"{counts.unchanged} unchanged, {counts.target_only} only in target, "
        f"{counts.failed} failed"
    )
    return counts
