"""`p2c reconcile`: compare both systems, read-only, store the verdict in the warehouse and
write the evidence. Records are `records`, money is `money`, the evidence is `report`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.errors import P2CError
from p2c_etl.jobs.reconcile.money import reconcile_money
from p2c_etl.jobs.reconcile.records import Discrepancy, reconcile_records
from p2c_etl.jobs.reconcile.report import (
    HistoryPoint,
    ReconcileData,
    render_index,
    verdicts,
    write_reconciliation,
)
from p2c_etl.jobs.run import fail_run
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
from p2c_etl.model.summary import ReconcileSummary
from p2c_etl.resources import contracts_dir
from p2c_etl.stages.report import write_text
from p2c_etl.warehouse.lock import RunLock, reconcile_lock_path
from p2c_etl.warehouse.store import Warehouse


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
    # No run lock, and the warehouse a flow at a time: a reconciliation goes beside a run.
    # Its own lock tells a later command whether it is still going (see `warehouse.lock`).
    own = reconcile_lock_path(settings.warehouse_path, rec_id)
    with closing_all(connectors), RunLock(settings.warehouse_path, f"p2c reconcile {rec_id}", own):
        with open_warehouse(settings) as wh:
            wh.fail_dead_reconciliations()
            wh.start_run(rec_id, "reconcile", True, [f.name for f in selected], at)
        progress(f"reconcile {rec_id}: {len(selected)} flows, read-only")
        try:
            return _reconcile(
                settings,
                rec_id,
                at,
                selected,
                connectors,
                contracts,
                as_of,
                currency,
                customer,
                clock,
                progress,
            )
        except P2CError as exc:
            fail_run(settings, rec_id, str(exc), clock)
            return ReconcileSummary(None, {}, rec_id, str(exc))
        except Exception as exc:
            crash = Crash(exc)
            error = f"reconcile {rec_id}: {crash}"
            fail_run(settings, rec_id, error, clock)
            return ReconcileSummary(None, {}, rec_id, error, crash.traceback)
        except BaseException as exc:
            fail_run(settings, rec_id, interruption(exc), clock)
            raise


def _reconcile(
    settings: Settings,
    rec_id: str,
    at: datetime,
    selected: list[Flow],
    connectors: dict[SystemName, Connector],
    contracts: ContractSet,
    as_of: date | None,
    currency: str | None,
    customer: str | None,
    clock: Clock,
    progress: Progress,
) -> ReconcileSummary:
    context: Context = {"company": settings.company, "rounding": settings.rounding}
    tolerances = settings_tolerances(settings)
    agreements, found = reconcile_records(
        lambda: open_warehouse(settings),
        rec_id,
        selected,
        connectors,
        contracts,
        context,
        clock,
        tolerances,
    )
    found = [d for d in found if _wanted(d, customer)]
    with open_warehouse(settings) as wh:
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
    return ReconcileSummary(data, {k: str(v) for k, v in paths.items()}, rec_id)


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


def settings_tolerances(settings: Settings) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in settings.tolerances.items()}
