"""Orders the stages of a run; the stages themselves hold the logic.

for each flow, in dependency order:
    extract → prepare (transform + validate) → compare (diff) → load (skipped on dry run)
then the report, then the ledger entry is closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

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
from p2c_etl.stages.extract import extract_flow
from p2c_etl.stages.load import load_flow
from p2c_etl.stages.prepare import prepare_flow
from p2c_etl.stages.report import build_report_data, write_report
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
) -> RunSummary:
    """Run the selected flows once; a stage failure ends the run as `failed`, not raised,
    and so does an unexpected exception (its traceback in the summary). An interrupt
    (KeyboardInterrupt, `Interrupted`) marks the run failed and is raised."""
    contracts = ContractSet.load(contracts_dir())
    selected = select_flows(settings, contracts, flows)
    connectors = connectors_for(settings, contracts)
    with closing_all(connectors):
        return _run(
            settings, contracts, selected, connectors, mode, dry_run, run_id, clock, progress
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
) -> RunSummary:
    started = clock()
    run_id = run_id or new_run_id(started)
    context = {"company": settings.company, "rounding": settings.rounding}
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
                            connectors,
                            contracts,
                            context,
                            dry_run,
                            clock,
                            progress,
                            planned,
                        )
                    )
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


def _run_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    connectors: dict[SystemName, Connector],
    contracts: ContractSet,
    context: Context,
    dry_run: bool,
    clock: Clock,
    progress: Progress,
    planned: Sequence[Flow] = (),
) -> FlowCounts:
    stage = "extract"
    try:
        progress(f"{flow.name}: extracting {flow.source} and {flow.target}")
        extract_flow(wh, run_id, flow, connectors, context, clock)
        stage = "prepare"
        prepared = prepare_flow(wh, run_id, flow, contracts, context, planned)
        stage = "compare"
        compared = compare_flow(wh, run_id, flow)
        counts = FlowCounts(
            flow=flow.name,
            source_rows=prepared.source_rows,
            filtered_out=prepared.filtered_out,
            rejected=prepared.rejected + compared.rejected,
            inserted=compared.inserts,
            updated=compared.updates,
            unchanged=compared.unchanged,
            target_only=compared.target_only,
        )
        if not dry_run:
            stage = "load"
            progress(
                f"{flow.name}: writing {compared.inserts + compared.updates} records "
                f"to {flow.target}"
            )
            loaded = load_flow(wh, run_id, flow, connectors[flow.target.system], clock)
            counts = replace(
                counts, inserted=loaded.inserted, updated=loaded.updated, failed=loaded.failed
            )
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
