"""`p2c retry`: send again the records whose write failed in an earlier run, as a run of its
own (mode `retry`), with its report."""

from __future__ import annotations

from p2c_etl.config import Settings
from p2c_etl.errors import ConfigError
from p2c_etl.jobs.wiring import (
    Clock,
    Progress,
    closing_all,
    connectors_for,
    new_run_id,
    open_warehouse,
    select_flows,
    utc_now,
)
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Flow
from p2c_etl.model.summary import FlowCounts, RunStatus, RunSummary
from p2c_etl.resources import contracts_dir
from p2c_etl.stages.load import retry_flow
from p2c_etl.stages.report import build_report_data, write_report
from p2c_etl.warehouse.lock import RunLock
from p2c_etl.warehouse.store import Warehouse


def run_retry(
    settings: Settings,
    *,
    failed_run: str | None = None,
    clock: Clock = utc_now,
    progress: Progress = lambda _: None,
) -> RunSummary:
    """Send again the records whose write failed in `failed_run` (default: the latest run
    with failed writes); the outcome is a run of its own, mode `retry`, with its report."""
    contracts = ContractSet.load(contracts_dir())
    connectors = connectors_for(settings, contracts)
    started = clock()
    run_id = new_run_id(started)
    with (
        closing_all(connectors),
        RunLock(settings.warehouse_path, f"p2c retry {run_id}"),
        open_warehouse(settings) as wh,
    ):
        source = failed_run or _latest_failed(wh)
        flows = _failed_flows(wh, source, settings, contracts)
        wh.start_run(run_id, "retry", False, [f.name for f in flows], started)
        progress(f"retry {run_id}: the failed writes of run {source}")
        for flow in flows:
            retried, info = retry_flow(
                wh, source, run_id, flow, connectors[flow.target.system], clock
            )
            counts = FlowCounts(
                flow.name,
                source_rows=retried,
                inserted=info.inserted,
                updated=info.updated,
                failed=info.failed,
            )
            wh.save_counts(run_id, counts)
            progress(
                f"{flow.name}: {retried} retried, {info.inserted} inserted, "
                f"{info.updated} updated, {info.failed} failed"
            )
        status: RunStatus = "partial" if any(c.failed for c in wh.counts(run_id)) else "ok"
        wh.finish_run(run_id, status, clock())
        run = wh.run(run_id)
        assert run is not None
        data = build_report_data(wh, run, flows, settings.company, clock().isoformat())
        html, js = write_report(data, settings.report_dir)
        wh.finish_run(run_id, status, clock(), report=(str(html), str(js)))
        return RunSummary(run_id, "retry", status, False, wh.counts(run_id), str(html), str(js))


def _latest_failed(wh: Warehouse) -> str:
    rows = wh.query(
        "SELECT r.run_id FROM runs r JOIN run_flows f USING (run_id) WHERE r.mode <> 'reconcile' "
        "AND f.failed > 0 ORDER BY r.started_at DESC LIMIT 1"
    )
    if rows.height == 0:
        raise ConfigError("no run has failed writes to retry")
    return str(rows["run_id"][0])


def _failed_flows(
    wh: Warehouse, run_id: str, settings: Settings, contracts: ContractSet
) -> list[Flow]:
    if wh.run(run_id) is None:
        raise ConfigError(f"there is no run {run_id} (see p2c history)")
    names = set(
        wh.query(
            "SELECT DISTINCT flow FROM load_results WHERE run_id = ? AND status = 'failed'",
            [run_id],
        )["flow"].to_list()
    )
    if not names:
        raise ConfigError(f"run {run_id} has no failed writes to retry")
    return [f for f in select_flows(settings, contracts, sorted(names))]
