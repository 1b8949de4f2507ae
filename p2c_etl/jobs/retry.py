"""`p2c retry`: send again the records whose write failed in an earlier run, as a run of its
own (mode `retry`), with its report.

Without `--run`, the run retried is the latest run that wrote (a nightly run, the demo or a
migration; not a dry run): a later one has sent again, by itself, every record whose write had
failed before it. When that run has no failed writes, or a retry of it ended `ok`, there is
nothing to retry (`NothingToRetry`, exit 0)."""

from __future__ import annotations

from dataclasses import dataclass

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.errors import ConfigError, P2CError, StageError
from p2c_etl.jobs.run import closed_run, fail_run
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
from p2c_etl.model.flow import Flow
from p2c_etl.model.summary import FlowCounts, RunSummary
from p2c_etl.resources import contracts_dir
from p2c_etl.stages.load import retry_flow
from p2c_etl.warehouse.lock import RunLock
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class NothingToRetry:
    """No write is waiting to be sent again; `message` says why."""

    message: str


def run_retry(
    settings: Settings,
    *,
    failed_run: str | None = None,
    clock: Clock = utc_now,
    progress: Progress = lambda _: None,
) -> RunSummary | NothingToRetry:
    """Send again the records whose write failed in `failed_run` (default: see the module);
    the outcome is a run of its own, mode `retry`, with its report. A stage failure or an
    unexpected exception ends it as `failed`, not raised."""
    contracts = ContractSet.load(contracts_dir())
    connectors = connectors_for(settings, contracts)
    started = clock()
    run_id = new_run_id(started)
    with closing_all(connectors), RunLock(settings.warehouse_path, f"p2c retry {run_id}"):
        with open_warehouse(settings) as wh:
            wh.fail_stale_runs()
            source = failed_run or _latest_failed(wh)
            if source is None:
                return NothingToRetry("nothing to retry: the latest run has no failed writes")
            flows = _failed_flows(wh, source, settings, contracts)
            if not flows:
                return NothingToRetry(f"nothing to retry: run {source} has no failed writes")
            wh.start_run(run_id, "retry", False, [f.name for f in flows], started)
            wh.con.execute("UPDATE runs SET retry_of = ? WHERE run_id = ?", [source, run_id])
        progress(f"retry {run_id}: the failed writes of run {source}")
        counts: list[FlowCounts] = []
        error: str | None = None
        crash: Crash | None = None
        try:
            for flow in flows:
                with open_warehouse(settings) as wh:
                    counts.append(_retry(wh, source, run_id, flow, connectors, clock, progress))
        except P2CError as exc:
            error = str(exc)
            cause = exc.cause if isinstance(exc, StageError) else None
            crash = cause if isinstance(cause, Crash) else None
        except BaseException as exc:
            fail_run(settings, run_id, interruption(exc), clock)
            raise
        return closed_run(settings, flows, run_id, "retry", False, error, crash, counts, clock)


def _retry(
    wh: Warehouse,
    source: str,
    run_id: str,
    flow: Flow,
    connectors: dict[SystemName, Connector],
    clock: Clock,
    progress: Progress,
) -> FlowCounts:
    try:
        retried, info = retry_flow(wh, source, run_id, flow, connectors[flow.target.system], clock)
    except P2CError as exc:
        raise StageError("retry", flow.name, run_id, exc) from exc
    except Exception as exc:  # a bug: the retry fails naming the flow
        raise StageError("retry", flow.name, run_id, Crash(exc)) from exc
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
    return counts


def _latest_failed(wh: Warehouse) -> str | None:
    """The latest run that wrote, if it has failed writes that no retry has sent since."""
    rows = wh.query(
        "SELECT r.run_id, coalesce(sum(f.failed), 0) AS failed, "
        "EXISTS (SELECT 1 FROM runs t WHERE t.retry_of = r.run_id AND t.status = 'ok') AS done "
        "FROM runs r LEFT JOIN run_flows f USING (run_id) "
        "WHERE r.mode IN ('run', 'demo', 'migrate') AND NOT r.dry_run AND r.status <> 'running' "
        "GROUP BY r.run_id, r.started_at ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1"
    )
    if rows.height == 0 or rows["failed"][0] == 0 or rows["done"][0]:
        return None
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
    return select_flows(settings, contracts, sorted(names)) if names else []
