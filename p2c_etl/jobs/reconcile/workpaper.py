"""The workpaper's rows: the discrepancies (shared by the CSV and the XLSX's Discrepancies
sheet), with Sales and F&O in fixed columns whatever a flow's direction, and every sheet of
the XLSX (`exports` writes them)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from p2c_etl.jobs.reconcile.ageing import document_item_key, record_item_key
from p2c_etl.jobs.reconcile.data import ReconcileData
from p2c_etl.jobs.reconcile.exports import Cell, Sheet
from p2c_etl.jobs.reconcile.money import MoneyLine
from p2c_etl.jobs.reconcile.tieout import ReconcilingItem, gap, sides

ZERO = Decimal(0)


DISCREPANCY_HEADER = (
    "area",
    "flow or document",
    "record",
    "customer",
    "customer name",
    "currency",
    "classification",
    "detail",
    "field",
    "Sales",
    "F&O",
    "last written",
    "difference",
    "first seen",
    "days open",
)


def from_sales(data: ReconcileData, flow: str) -> bool:
    """Whether `flow` reads Sales (so its source values are Sales', its target's F&O's)."""
    return any(f.flow == flow and f.source.startswith("crm.") for f in data.flows)


def discrepancy_rows(data: ReconcileData) -> list[list[Cell]]:
    """Every open difference as table rows, Sales and F&O in fixed columns: a record one per
    differing field (one row if none), a document's totals, a header against its lines."""
    return [list(DISCREPANCY_HEADER), *(row for row, _ in discrepancy_entries(data))]


def discrepancy_entries(data: ReconcileData) -> list[tuple[list[Cell], str]]:
    """The rows of `discrepancy_rows` (no header), each with its document's month."""
    seen = {i.key: i for i in data.ageing.open}
    names = data.names()
    belongs = {key: (customer, currency) for key, customer, currency in data.record_customers}
    rows: list[tuple[list[Cell], str]] = []
    for item in data.discrepancies:
        age = seen.get(record_item_key(item.flow, item.record_key))
        tail: list[Cell] = [age.first_seen[:10] if age else "", age.days_open if age else None]
        customer, currency = belongs.get(item.record_key, ("", ""))
        head: list[Cell] = ["records", item.flow, item.record_key, customer]
        head += [names.get(customer, ""), currency]
        head += [item.classification, item.detail]
        if not item.fields:
            rows.append(([*head, "", "", "", "", None, *tail], ""))
        sales_first = from_sales(data, item.flow)
        for diff in item.fields:
            sales, fo = sides(diff, sales_first)
            cells = [*head, diff.field, sales or "", fo or "", diff.last_written or ""]
            rows.append(([*cells, gap(sales, fo), *tail], ""))
    for tie in data.tie_out:
        for doc in (*tie.items, *tie.breaks):
            age = seen.get(document_item_key(doc.document, doc.number, doc.within))
            first, days = (age.first_seen[:10], age.days_open) if age else ("", None)
            month = doc.day.strftime("%Y-%m") if doc.day else ""
            rows.append((_document_row(doc, names, first, days), month))
    return rows


def _document_row(
    doc: ReconcilingItem, names: Mapping[str, str], first_seen: str, days: int | None
) -> list[Cell]:
    area = "header ≠ lines" if doc.within else "money"
    field = f"header vs lines in {doc.within}" if doc.within else "total"
    sales = doc.sales if doc.within in (None, "Sales") else None
    fo = doc.fo if doc.within in (None, "F&O") else None
    customer = doc.customer or ""
    return [
        area,
        doc.document,
        doc.number,
        customer,
        names.get(customer, ""),
        doc.currency,
        doc.item_class,
        doc.detail,
        field,
        sales,
        fo,
        "",
        doc.amount,
        first_seen,
        days,
    ]


def sheets(data: ReconcileData, hashes: Mapping[str, str]) -> list[Sheet]:
    names = data.names()
    return [
        _summary(data, hashes),
        _side("By currency", data, "by_currency", names),
        _side("By month", data, "by_month", names),
        _side("By customer", data, "by_customer", names),
        Sheet("Discrepancies", DISCREPANCY_HEADER, discrepancy_rows(data)[1:]),
        _header_vs_lines(data, names),
        _ageing(data),
    ]


TIE_OUT_HEADER = (
    "document",
    "currency",
    "Sales documents",
    "F&O documents",
    "Sales total",
    "F&O total",
    "difference (F&O - Sales)",
    "itemised",
    "unexplained",
    "header ≠ lines",
)


def tie_out_rows(data: ReconcileData) -> list[list[Cell]]:
    return [
        [
            t.document,
            t.currency,
            t.sales_documents,
            t.fo_documents,
            t.sales_total,
            t.fo_total,
            t.difference,
            t.explained,
            t.unexplained,
            sum((b.amount for b in t.breaks), ZERO),
        ]
        for t in data.tie_out
    ]


def _summary(data: ReconcileData, hashes: Mapping[str, str]) -> Sheet:
    preamble: list[list[Cell]] = [
        ["Reconciliation", data.reconciliation_id],
        ["Made at (UTC)", data.at[:19].replace("T", " ")],
        ["Company", data.company],
        ["Scope", data.scope],
        ["Status", data.status],
    ]
    preamble += [["Verdict", line] for line in data.verdicts]
    if data.evidence is not None:
        ev = data.evidence
        preamble += [["Made by", f"{ev.user} on {ev.host}"], ["p2c-etl", ev.version]]
        preamble += [[f"Tolerance {k}", v] for k, v in ev.tolerances]
    preamble += [[f"SHA-256 of the {k.upper()}", v] for k, v in hashes.items()]
    return Sheet("Summary", TIE_OUT_HEADER, tie_out_rows(data), preamble)


def _side(title: str, data: ReconcileData, key: str, names: Mapping[str, str]) -> Sheet:
    """A side-by-side sheet: per currency, or per month or customer and currency."""
    group = title.removeprefix("By ").lower()
    named = group == "customer"
    lead = ("document", group) if group == "currency" else ("document", group, "currency")
    header = (
        *lead[:2],
        *(("customer name",) if named else ()),
        *lead[2:],
        "Sales documents",
        "F&O documents",
        "Sales total",
        "F&O total",
        "difference (F&O - Sales)",
    )
    rows: list[list[Cell]] = []
    for report in data.money:
        line: MoneyLine
        for line in getattr(report, key):
            first: list[Cell] = [report.document, line.group]
            first += [names.get(line.group, "")] if named else []
            first += [line.currency] if group != "currency" else []
            rows.append(
                [
                    *first,
                    line.crm_documents,
                    line.erp_documents,
                    line.crm_total,
                    line.erp_total,
                    line.difference,
                ]
            )
    return Sheet(title, header, rows)


def _header_vs_lines(data: ReconcileData, names: Mapping[str, str]) -> Sheet:
    header = (
        "document",
        "number",
        "customer",
        "customer name",
        "currency",
        "system",
        "header total",
        "lines and charges",
        "header - lines",
        "detail",
    )
    rows: list[list[Cell]] = []
    for tie in data.tie_out:
        for b in tie.breaks:
            total = b.sales if b.within == "Sales" else b.fo
            lines = None if total is None else total - b.amount
            rows.append(
                [
                    b.document,
                    b.number,
                    b.customer or "",
                    names.get(b.customer or "", ""),
                    b.currency,
                    b.within,
                    total,
                    lines,
                    b.amount,
                    b.detail,
                ]
            )
    return Sheet("Header vs lines", header, rows)


def _ageing(data: ReconcileData) -> Sheet:
    header = (
        "status",
        "difference",
        "classification",
        "currency",
        "amount",
        "first seen",
        "days open",
    )
    rows: list[list[Cell]] = [
        ["open", i.what, i.classification, i.currency, i.amount, i.first_seen[:10], i.days_open]
        for i in data.ageing.open
    ]
    rows += [
        ["resolved", i.what, i.classification, i.currency, i.amount, i.first_seen[:10], None]
        for i in data.ageing.resolved
    ]
    return Sheet("Ageing", header, rows)
