"""`p2c reconcile`: compare both systems, read-only, store the verdict in the warehouse and
write the evidence. Records are `records`, money is `money`, the evidence is `report`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.errors import P2CError
from p2c_etl.jobs.reconcile.ageing import (
    OpenItem,
    age,
    document_item_key,
    record_item_key,
)
from p2c_etl.jobs.reconcile.data import HistoryPoint, ReconcileData, verdicts
from p2c_etl.jobs.reconcile.evidence import evidence
from p2c_etl.jobs.reconcile.money import (
    Filters,
    MoneyReport,
    all_documents,
    currency_codes,
    customer_numbers,
    customer_table,
    reconcile_money,
    wanted_documents,
)
from p2c_etl.jobs.reconcile.records import Discrepancy, reconcile_records
from p2c_etl.jobs.reconcile.report import render_index, write_reconciliation
from p2c_etl.jobs.reconcile.scope import attribution
from p2c_etl.jobs.reconcile.tieout import ReconcilingItem, TieOut, record_amounts, tie_out
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

ZERO = Decimal(0)


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
        filters = Filters(as_of, currency, customer)
        scope = scope_label(filters, flows)
        progress(f"reconcile {rec_id}: {len(selected)} flows, read-only, scope: {scope}")
        try:
            return _reconcile(
                settings,
                rec_id,
                at,
                selected,
                connectors,
                contracts,
                filters,
                scope,
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
    filters: Filters,
    scope: str,
    clock: Clock,
    progress: Progress,
) -> ReconcileSummary:
    context: Context = {"company": settings.company, "rounding": settings.rounding}
    tolerances = settings_tolerances(settings)
    names = [f.name for f in selected]
    numbers, codes = customer_numbers(connectors["crm"]), currency_codes(connectors["crm"])
    customers = customer_table(numbers, codes)  # Sales' customers and currencies, read once
    needed = wanted_documents(names) or filters.items()  # the documents: money, or a filter
    every = all_documents(connectors, settings.company, codes, numbers) if needed else {}
    who = attribution(customers, every)
    evidence_read: dict[str, dict[str, Any]] = {}  # earlier reconciliations' JSON, by path

    def wanted(key: str) -> bool:
        return who.wanted(key, filters)

    found = reconcile_records(
        lambda: open_warehouse(settings),
        rec_id,
        selected,
        connectors,
        contracts,
        context,
        clock,
        tolerances,
        wanted if filters.items() else None,
    )
    money = reconcile_money(
        connectors, settings.company, filters, tolerances.get("totalamount", ZERO), names, every
    )
    ties = tie_out(money, found.discrepancies, found.agreements)
    currencies = dict(customers.select("number", "currency").iter_rows())
    on_records = record_amounts(found.discrepancies, found.agreements, currencies)
    status = (
        "agree"
        if not found.discrepancies and not any(t.items or t.breaks for t in ties)
        else "discrepancies"
    )
    belongs = tuple(
        (d.record_key, who.customer_of(d.record_key) or "", who.currency_of(d.record_key) or "")
        for d in found.discrepancies
    )
    with open_warehouse(settings) as wh:
        point = HistoryPoint(
            rec_id,
            at.isoformat(),
            sum(a.agree for a in found.agreements),
            sum(a.compared for a in found.agreements),
            status,
            None,
            scope,
        )
        opened = _open_items(found.discrepancies, ties, on_records)
        data = ReconcileData(
            reconciliation_id=rec_id,
            at=at.isoformat(),
            company=settings.company,
            status=status,
            verdicts=verdicts(found.agreements, money, ties),
            filters=filters.items(),
            flows=tuple(found.agreements),
            discrepancies=tuple(found.discrepancies),
            money=tuple(money),
            history=(*_history(wh, evidence_read), point),
            scope=scope,
            tie_out=ties,
            ageing=age(opened, at, _previous(wh, scope, evidence_read)),
            evidence=evidence(settings, at.isoformat(), tolerances, found.reads),
            customers=_customer_names(customers, money, on_records, belongs),
            record_amounts=on_records,
            record_customers=belongs,
        )
        paths = _file(wh, settings, data, clock, evidence_read)
    return ReconcileSummary(data, {k: str(v) for k, v in paths.items()}, rec_id)


def _file(
    wh: Warehouse,
    settings: Settings,
    data: ReconcileData,
    clock: Clock,
    evidence_read: dict[str, dict[str, Any]],
) -> dict[str, Path]:
    """Write the evidence, store the verdict, list it in the index, and close the run."""
    out_dir = settings.report_dir / "reconcile"
    paths = write_reconciliation(data, out_dir)
    wh.con.execute(
        "INSERT INTO reconciliations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            data.reconciliation_id,
            datetime.fromisoformat(data.at),
            data.status,
            data.agree,
            data.total,
            list(data.verdicts),
            str(paths["html"]),
            str(paths["json"]),
        ],
    )
    write_text(out_dir / "index.html", render_index(list(reversed(_history(wh, evidence_read)))))
    wh.finish_run(
        data.reconciliation_id,
        "ok" if data.status == "agree" else "partial",
        clock(),
        report=(str(paths["html"]), str(paths["json"])),
    )
    return paths


def scope_label(filters: Filters, flows: Sequence[str] | None) -> str:
    """What a reconciliation covered, as the report and the history index show it; two
    reconciliations of one label are compared with each other (trend, ageing)."""
    parts = [f"{k} {v}" for k, v in filters.items()]
    if flows:
        parts.insert(0, "flows " + ", ".join(sorted(flows)))
    return " · ".join(parts) or "everything"


def _open_items(
    discrepancies: Sequence[Discrepancy],
    ties: Sequence[TieOut],
    on_records: Sequence[ReconcilingItem],
) -> list[OpenItem]:
    """Every open difference once, named by a key that the next reconciliation finds again;
    a record's carries the amounts of its fields that differ."""
    amounts: dict[str, tuple[str, Decimal]] = {}
    for r in on_records:
        key = record_item_key(r.document, r.number)
        amounts[key] = (r.currency, amounts.get(key, ("", ZERO))[1] + r.amount)
    items = []
    for d in discrepancies:
        key = record_item_key(d.flow, d.record_key)
        currency, amount = amounts.get(key, ("", None))
        items.append(OpenItem(key, f"{d.flow} {d.record_key}", d.classification, currency, amount))
    for tie in ties:
        for doc in (*tie.items, *tie.breaks):
            where = f" (header ≠ lines in {doc.within})" if doc.within else ""
            items.append(
                OpenItem(
                    document_item_key(doc.document, doc.number, doc.within),
                    f"{doc.document} {doc.number}{where}",
                    doc.item_class,
                    doc.currency,
                    doc.amount,
                )
            )
    return list({i.key: i for i in reversed(items)}.values())[::-1]


def _customer_names(
    customers: pl.DataFrame,
    money: Sequence[MoneyReport],
    on_records: Sequence[ReconcilingItem],
    belongs: Sequence[tuple[str, str, str]],
) -> tuple[tuple[str, str], ...]:
    """Number and name of each customer the report shows."""
    shown: set[str | None] = {line.group for m in money for line in m.by_customer}
    shown |= {d.customer for m in money for d in (*m.differences, *m.header_vs_lines)}
    shown |= {r.customer for r in on_records} | {customer for _, customer, _ in belongs}
    return tuple(
        sorted(
            (r["number"], r["name"])
            for r in customers.select("number", "name").iter_rows(named=True)
            if r["number"] in shown and r["name"]
        )
    )


def _stored(path: str | None, read: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A reconciliation's JSON evidence, or {} when it is gone or unreadable; each file read
    once per reconciliation (`read`)."""
    if not path:
        return {}
    if path not in read:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        read[path] = loaded if isinstance(loaded, dict) else {}
    return read[path]


def _scope_of(stored: dict[str, Any]) -> str:
    if "scope" in stored:
        return str(stored["scope"])
    if not stored:
        return "unknown (its evidence is gone)"
    return " · ".join(f"{k} {v}" for k, v in stored.get("filters", [])) or "everything"


def _previous(
    wh: Warehouse, scope: str, read: dict[str, dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]] | None:
    """The last reconciliation of `scope` whose evidence holds its open differences."""
    rows = wh.query(
        "SELECT reconciliation_id, report_json FROM reconciliations "
        "ORDER BY made_at DESC, reconciliation_id DESC"
    )
    for r in rows.iter_rows(named=True):
        stored = _stored(r["report_json"], read)
        if _scope_of(stored) == scope and isinstance(stored.get("ageing"), dict):
            return r["reconciliation_id"], list(stored["ageing"].get("open", []))
    return None


def _history(wh: Warehouse, read: dict[str, dict[str, Any]]) -> tuple[HistoryPoint, ...]:
    rows = wh.query(
        "SELECT reconciliation_id, made_at AS at, agree, total, status, report_html, "
        "report_json FROM reconciliations "
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
            _scope_of(_stored(r["report_json"], read)),
        )
        for r in rows.iter_rows(named=True)
    )


def settings_tolerances(settings: Settings) -> dict[str, Decimal]:
    return {k: Decimal(str(v)) for k, v in settings.tolerances.items()}
