"""Orders the stages of a run; the stages themselves hold the logic.

for each flow, in dependency order:
    extract → prepare (transform + validate) → compare (diff) → load (skipped on dry run)
then the report, then the ledger entry is closed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

from p2c_etl.config import Settings, SystemName, SystemSettings
from p2c_etl.connectors.base import Connector
from p2c_etl.connectors.dataverse import DataverseConnector
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.connectors.finops import FinOpsConnector
from p2c_etl.contracts import ContractSet
from p2c_etl.errors import ConfigError, P2CError, StageError
from p2c_etl.extract import extract_flow
from p2c_etl.flow import Context, Flow, dependency_order
from p2c_etl.flows import ALL_FLOWS, flow_names
from p2c_etl.load import load_flow, retry_flow
from p2c_etl.overrides import apply_overrides
from p2c_etl.reconcile import (
    Discrepancy,
    reconcile_money,
    reconcile_records,
    settings_tolerances,
)
from p2c_etl.reconcile_report import (
    HistoryPoint,
    ReconcileData,
    render_index,
    verdicts,
    write_reconciliation,
)
from p2c_etl.report import build_report_data, write_report, write_text
from p2c_etl.resources import contracts_dir
from p2c_etl.runlock import RunLock
from p2c_etl.stages import compare_flow, prepare_flow
from p2c_etl.summary import (
    FlowCounts,
    ReconcileSummary,
    RunMode,
    RunStatus,
    RunSummary,
    status_of,
)
from p2c_etl.warehouse import Warehouse

Clock = Callable[[], datetime]
Progress = Callable[[str], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(at: datetime) -> str:
    """Sortable by time, unique across machines: `20261124T034500Z-1a2b3c`."""
    return f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def select_flows(
    settings: Settings, contracts: ContractSet, names: Sequence[str] | None = None
) -> list[Flow]:
    """The enabled flows (or exactly `names`) with their p2c.toml overrides, in dependency
    order."""
    if names:
        unknown = [n for n in names if n not in flow_names()]
        if unknown:
            raise ConfigError(
                f"unknown flow {', '.join(unknown)} (flows: {', '.join(flow_names())})"
            )
        chosen = [f for f in ALL_FLOWS if f.name in names]
    else:
        chosen = [f for f in ALL_FLOWS if settings.flow(f.name).enabled]
    return dependency_order(apply_overrides(f, settings.flow(f.name), contracts) for f in chosen)


def connectors_for(settings: Settings, contracts: ContractSet) -> dict[SystemName, Connector]:
    """A connector per system, of the kind p2c.toml names."""
    systems: tuple[SystemName, ...] = ("crm", "erp")
    return {name: connector_for(settings.system(name), contracts) for name in systems}


def connector_for(system: SystemSettings, contracts: ContractSet) -> Connector:
    if system.kind == "dataverse":
        return DataverseConnector(system, contracts)
    if system.kind == "finops":
        return FinOpsConnector(system, contracts)
    assert system.path is not None
    return FilesConnector(system.name, system.path, contracts)


@contextmanager
def closing_all(connectors: Mapping[SystemName, Connector]) -> Iterator[None]:
    """Close every connector when the block ends, however it ends."""
    try:
        yield
    finally:
        for connector in connectors.values():
            connector.close()


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
    """Run the selected flows once; a stage failure ends the run as `failed`, not raised."""
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
        with _open(settings) as wh:
            wh.fail_stale_runs()
            wh.start_run(run_id, mode, dry_run, [f.name for f in selected], started)
        progress(f"run {run_id}: {len(selected)} flows" + (" (dry run)" if dry_run else ""))
        counts: list[FlowCounts] = []
        error: str | None = None
        try:
            for i, flow in enumerate(selected):
                planned = selected[:i] if dry_run else []
                with _open(settings) as wh:  # a flow at a time: reconciliations fit between
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
        except BaseException:
            with _open(settings) as wh:
                wh.finish_run(run_id, "failed", clock(), error="interrupted by an unexpected error")
            raise
        with _open(settings) as wh:
            return _finish(wh, settings, selected, run_id, mode, dry_run, error, counts, clock)


def _finish(
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


@contextmanager
def _open(settings: Settings) -> Iterator[Warehouse]:
    wh = Warehouse.open(settings.warehouse_path)
    try:
        yield wh
    finally:
        wh.close()


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
    wh.save_counts(run_id, counts)
    progress(
        f"{flow.name}: {counts.source_rows} source rows, {counts.filtered_out} filtered out, "
        f"{counts.rejected} rejected, {counts.inserted} inserted, {counts.updated} updated, "
        f"{counts.unchanged} unchanged, {counts.target_only} only in target, "
        f"{counts.failed} failed"
    )
    return counts


def run_reconcile(
    settings: Settings,
    *,
    flows: Sequence[str] | None = None,
    as_of: date | None = None,
    currency: str | None = None,
    customer: str | None = None,
    clock: Clock = utc_now,
    reconciliation_id: str | None = None,
    progress: Progress = lambda _: None,
) -> ReconcileSummary:
    """Compare both systems, read-only: extract, prepare and compare every flow (never load),
    reconcile the money, store the verdict in the warehouse and write the evidence."""
    contracts = ContractSet.load(contracts_dir())
    selected = select_flows(settings, contracts, flows)
    connectors = connectors_for(settings, contracts)
    at = clock()
    rec_id = reconciliation_id or "rec-" + new_run_id(at)
    context = {"company": settings.company, "rounding": settings.rounding}
    tolerances = settings_tolerances(settings)
    with closing_all(connectors):
        # No run lock, and the warehouse a flow at a time: a reconciliation goes beside a run.
        with _open(settings) as wh:
            wh.start_run(rec_id, "reconcile", True, [f.name for f in selected], at)
        progress(f"reconcile {rec_id}: {len(selected)} flows, read-only")
        agreements, found = reconcile_records(
            lambda: _open(settings),
            rec_id,
            selected,
            connectors,
            contracts,
            context,
            clock,
            tolerances,
        )
        found = [d for d in found if _wanted(d, customer)]
        with _open(settings) as wh:
            money = reconcile_money(
                connectors,
                settings.company,
                as_of,
                currency,
                customer,
                tolerances.get("totalamount", Decimal(0)),
                [f.name for f in selected],
            )
            filters = tuple(
                (k, str(v))
                for k, v in (("as of", as_of), ("currency", currency), ("customer", customer))
                if v
            )
            history = _history(wh)
            status = (
                "agree"
                if not found and not any(m.differences or m.header_vs_lines for m in money)
                else "discrepancies"
            )
            data = ReconcileData(
                reconciliation_id=rec_id,
                at=at.isoformat(),
                company=settings.company,
                status=status,
                verdicts=verdicts(tuple(agreements), tuple(money)),
                filters=filters,
                flows=tuple(agreements),
                discrepancies=tuple(found),
                money=tuple(money),
                history=(
                    *history,
                    HistoryPoint(
                        rec_id,
                        at.isoformat(),
                        sum(a.agree for a in agreements),
                        sum(a.compared for a in agreements),
                        status,
                        None,
                    ),
                ),
            )
            out_dir = settings.report_dir / "reconcile"
            paths = write_reconciliation(data, out_dir)
            wh.con.execute(
                "INSERT INTO reconciliations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    rec_id,
                    at,
                    status,
                    data.agree,
                    data.total,
                    list(data.verdicts),
                    str(paths["html"]),
                    str(paths["json"]),
                ],
            )
            write_text(out_dir / "index.html", render_index(list(reversed(_history(wh)))))
            wh.finish_run(
                rec_id,
                "ok" if status == "agree" else "partial",
                clock(),
                report=(str(paths["html"]), str(paths["json"])),
            )
    return ReconcileSummary(data, {k: str(v) for k, v in paths.items()})


def _wanted(item: Discrepancy, customer: str | None) -> bool:
    return customer is None or customer in item.record_key


def _history(wh: Warehouse) -> tuple[HistoryPoint, ...]:
    rows = wh.query(
        "SELECT reconciliation_id, made_at AS at, agree, total, status, report_html "
        "FROM reconciliations "
        "ORDER BY made_at, reconciliation_id"
    )
    return tuple(
        HistoryPoint(
            r["reconciliation_id"],
            r["at"].astimezone(UTC).isoformat(),
            r["agree"],
            r["total"],
            r["status"],
            r["report_html"],
        )
        for r in rows.iter_rows(named=True)
    )


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
        _open(settings) as wh,
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
