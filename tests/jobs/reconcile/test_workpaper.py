"""The reconciliation as a finance workpaper (issue 15): the tie-out, filters, ageing, the
XLSX and CSV, the evidence; on the demo reconciled in a row (`conftest.runs`)."""

from __future__ import annotations

import csv
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from openpyxl import load_workbook

from p2c_etl.jobs.reconcile.data import ReconcileData
from p2c_etl.model.summary import ReconcileSummary

Runs = Any  # conftest.Runs: the reconciliations every test here reads
GOLDEN = Path(__file__).parent / "golden" / "demo_reconcile.json"
SHEETS = [
    "Summary",
    "By currency",
    "By month",
    "By customer",
    "Discrepancies",
    "Header vs lines",
    "Ageing",
]


def _data(summary: ReconcileSummary) -> ReconcileData:
    assert isinstance(summary.data, ReconcileData), summary.error
    return summary.data


def _tie(data: ReconcileData, document: str, currency: str = "USD") -> Any:
    return next(t for t in data.tie_out if (t.document, t.currency) == (document, currency))


# --- tie-out --------------------------------------------------------------------------------


def test_after_a_clean_sync_every_difference_is_itemised(runs: Runs) -> None:
    data = _data(runs.clean)
    assert all(t.unexplained == 0 for t in data.tie_out)
    orders = _tie(data, "orders")
    assert orders.difference == Decimal("6667.92")
    (item,) = orders.items
    assert (item.number, item.item_class, item.amount) == (
        "SO-2023",
        "awaiting F&O totals",
        Decimal("6667.92"),
    )
    assert "SO-2023" in item.number and item.timing
    assert any(
        v.startswith("30 of 31 orders agree") and "unexplained 0.00" in v for v in data.verdicts
    )
    html = Path(runs.clean.paths["html"]).read_text()
    assert "6,667.92" in html and "awaiting F&amp;O totals" in html


def test_month_end_counts_the_broken_order_and_itemises_all_three_edits(runs: Runs) -> None:
    data = _data(runs.month_end)
    assert runs.read_only and data.status == "discrepancies"
    found = {(d.flow, d.record_key): d.classification for d in data.discrepancies}
    assert found[("invoice_headers", "INV-3005")] == "drift"
    assert found[("accounts", "usmf|ACC-01008-FOURTH")] == "drift"
    assert found[("order_lines_back", "SO-2010|2")] == "only in target"
    orders = next(m for m in data.money if m.document == "orders")
    assert (orders.agree, orders.total) == (29, 31)  # SO-2010 disagrees now
    (broken,) = _tie(data, "orders").breaks
    assert (broken.number, broken.within, broken.amount) == ("SO-2010", "F&O", Decimal("680.40"))
    assert "SO-2010|2" in broken.detail  # the line behind it
    invoices = _tie(data, "invoices")
    (drift,) = invoices.items
    assert (drift.number, drift.item_class, drift.amount) == ("INV-3005", "drift", Decimal(-100))
    assert invoices.unexplained == 0 and _tie(data, "orders").unexplained == 0
    (credit,) = data.record_amounts
    assert (credit.number, credit.item_class, credit.amount, credit.currency) == (
        "usmf|ACC-01008-FOURTH",
        "drift",
        Decimal(5000),
        "USD",
    )
    assert any(v.startswith("29 of 31 orders agree") and "680.40" in v for v in data.verdicts)


def test_a_reconciliation_leaves_no_working_tables_behind(runs: Runs) -> None:
    con = duckdb.connect(str(runs.root / "p2c.duckdb"), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    finally:
        con.close()
    assert [t for t in tables if t.startswith(("stage_rec", "claimed_rec"))] == []
    assert any(t.startswith("stage_") for t in tables)  # the nightly runs' own are kept


def test_the_month_end_matches_the_golden_file(runs: Runs) -> None:
    """Regenerate on purpose with P2C_REGEN_GOLDEN=1 and review the diff."""
    data = _normalised(_data(runs.month_end).as_json(), runs.root)
    if os.environ.get("P2C_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert data == json.loads(GOLDEN.read_text(encoding="utf-8"))


def _normalised(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """What depends on the machine, the folder or the clock of the disk left out."""
    evidence = data["evidence"]
    evidence.update(user="<user>", host="<host>", version="<version>")
    evidence["configuration"] = [
        [k, v.replace(str(root), "<demo>")] for k, v in evidence["configuration"]
    ]
    for read in evidence["reads"]:
        read["at"] = "<read at>"
    return data


# --- filters --------------------------------------------------------------------------------


def test_a_customer_that_agrees_exits_0_and_sees_only_itself(runs: Runs) -> None:
    result = runs.agreeing
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "agree" and 0 < summary["total"] < 451
    assert summary["scope"] == "customer ACC-01013-MARGIE"  # `--json` says what it covers
    assert all(Decimal(t["unexplained"]) == 0 for t in summary["tie_out"])
    stored = json.loads(Path(summary["report"]["json"]).read_text())
    assert stored["scope"] == "customer ACC-01013-MARGIE"
    for money in stored["money"]:
        assert {line["group"] for line in money["by_customer"]} <= {"ACC-01013-MARGIE"}
    workbook = load_workbook(summary["report"]["xlsx"])
    customers = [row[1] for row in workbook["By customer"].iter_rows(min_row=2, values_only=True)]
    assert customers and set(customers) == {"ACC-01013-MARGIE"}
    with open(summary["report"]["csv"], newline="", encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 1  # the header: nothing of anyone else
    html = Path(summary["report"]["html"]).read_text()
    assert html.count("<circle") == 1  # the trend: only the reconciliations of this scope
    index = (runs.root / "reports" / "reconcile" / "index.html").read_text()
    assert "customer ACC-01013-MARGIE" in index and "everything" in index


def test_a_customer_with_a_difference_sees_only_its_documents(runs: Runs) -> None:
    assert runs.widewo.exit_code == 1
    paths = json.loads(runs.widewo.stdout)["report"]
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["record"], r["customer"]) for r in rows] == [("SO-2023", "ACC-01022-WIDEWO")]
    stored = json.loads(Path(paths["json"]).read_text())
    assert all(d["record_key"].startswith("SO-2023") for d in stored["discrepancies"])


def test_a_currency_narrows_the_money(runs: Runs) -> None:
    data = _data(runs.cad)
    orders = data.money[0]
    assert {line.currency for line in orders.by_currency} == {"CAD"}
    assert ("currency", "cad") in data.filters and data.scope.endswith("currency cad")
    assert all(t.currency == "CAD" for t in data.tie_out)


# --- ageing ---------------------------------------------------------------------------------


def test_a_difference_first_seen_earlier_shows_its_days(runs: Runs) -> None:
    ageing = _data(runs.later).ageing
    assert ageing.compared_with == "golden-reconcile"
    aged = {i.key: i for i in ageing.open}
    timing = aged["money|orders|SO-2023"]
    assert timing.first_seen.startswith("2026-01-31") and timing.days_open == 3
    assert aged["money|orders|SO-2010|lines in F&O"].days_open == 3
    assert aged["records|accounts|usmf|ACC-01023-WINGTI"].days_open == 0  # new today
    resolved = {i.key for i in ageing.resolved}
    assert {"money|invoices|INV-3005", "records|invoice_headers|INV-3005"} <= resolved
    bands = {(b.band, b.currency): b for b in ageing.bands}
    assert bands[("0-7 days", "USD")].amount == sum(
        (i.amount or 0 for i in ageing.open if i.currency == "USD"), Decimal(0)
    )


# --- the workpaper --------------------------------------------------------------------------


def test_the_xlsx_is_a_workpaper_whose_amounts_are_numbers(runs: Runs) -> None:
    data = _data(runs.month_end)
    book = load_workbook(runs.month_end.paths["xlsx"])
    assert book.sheetnames == SHEETS
    cells = [c for ws in book.worksheets for row in ws.iter_rows() for c in row]
    assert not any(c.data_type == "f" for c in cells)  # no formula anywhere
    by_currency = book["By currency"]
    assert by_currency.freeze_panes == "A2" and by_currency.auto_filter.ref
    assert by_currency["A1"].font.b
    header = [c.value for c in by_currency[1]]
    sales, fo = header.index("Sales total"), header.index("F&O total")
    rows = list(by_currency.iter_rows(min_row=2))
    assert all(r[sales].number_format == "#,##0.00" for r in rows)
    for document in ("orders", "invoices"):
        mine = [r for r in rows if r[0].value == document]
        html_total = sum(
            (
                line.crm_total
                for m in data.money
                if m.document == document
                for line in m.by_currency
            ),
            Decimal(0),
        )
        assert sum(Decimal(str(r[sales].value)) for r in mine) == html_total
        assert sum(Decimal(str(r[fo].value)) for r in mine) == sum(
            (
                line.erp_total
                for m in data.money
                if m.document == document
                for line in m.by_currency
            ),
            Decimal(0),
        )
    html = Path(runs.month_end.paths["html"]).read_text()
    assert "154,427.16" in html and "161,095.08" in html  # the orders' totals, formatted
    for r in rows:  # every total of the sheet is one the report shows
        for cell in (r[sales], r[fo]):
            shown = f'data-raw="{Decimal(str(cell.value)):.2f}">{Decimal(str(cell.value)):,.2f}<'
            assert shown in html
    hvl = book["Header vs lines"]
    gaps = {r[1]: r[8] for r in hvl.iter_rows(min_row=2, values_only=True)}
    assert gaps["SO-2010"] == 680.4


def test_text_from_a_system_stays_text_and_numbers_stay_numbers(runs: Runs) -> None:
    paths = runs.later.paths
    book = load_workbook(paths["xlsx"])
    sheet = book["Discrepancies"]
    values = [c for row in sheet.iter_rows(min_row=2) for c in row if c.value is not None]
    formula = [c for c in values if c.value == '=HYPERLINK("x")']
    assert formula and all(c.data_type == "s" for c in formula)
    assert not any(c.data_type == "f" for c in values)
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert any(cell == '\'=HYPERLINK("x")' for row in rows for cell in row)
    with open(runs.month_end.paths["csv"], newline="", encoding="utf-8") as handle:
        month_end = list(csv.DictReader(handle))
    drift = next(r for r in month_end if (r["area"], r["record"]) == ("money", "INV-3005"))
    assert drift["difference"] == "-100.00" and float(drift["difference"]) == -100  # not "'-…"
    xlsx_rows = [["" if c is None else c for c in row] for row in sheet.iter_rows(values_only=True)]
    assert len(xlsx_rows) == len(rows) and xlsx_rows[0] == rows[0]


def test_the_evidence_names_who_what_and_the_hashes(runs: Runs) -> None:
    stored = json.loads(Path(runs.month_end.paths["json"]).read_text())
    evidence = stored["evidence"]
    assert evidence["user"] and evidence["host"] and evidence["version"]
    assert dict(evidence["tolerances"])["totalamount"] == "0.00 (exact)"
    assert {"crm", "erp"} <= {r["system"] for r in evidence["reads"]}
    import hashlib

    for kind in ("csv", "xlsx"):
        digest = hashlib.sha256(Path(runs.month_end.paths[kind]).read_bytes()).hexdigest()
        assert evidence["sha256"][kind] == digest
    html = Path(runs.month_end.paths["html"]).read_text()
    digest = hashlib.sha256(Path(runs.month_end.paths["json"]).read_bytes()).hexdigest()
    assert digest in html and "Prepared by" in html and "Reviewed by" in html
    assert "secret" not in json.dumps(evidence).lower()
    assert oct(os.stat(runs.month_end.paths["xlsx"]).st_mode & 0o777) == "0o600"
