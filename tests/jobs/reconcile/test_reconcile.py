"""`p2c reconcile`: read-only, the planted month-end edits found and classified, evidence filed."""

import csv
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from openpyxl import load_workbook

from p2c_etl.cli import main
from p2c_etl.config import Settings
from p2c_etl.jobs.demo import month_end_edits
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.contracts import ContractSet

GOLDEN = Path(__file__).parent / "golden" / "demo_reconcile.json"


def classes(summary_data: Any) -> dict[tuple[str, str], str]:
    return {(d.flow, d.record_key): d.classification for d in summary_data.discrepancies}


def files_bytes(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.glob("*/*.jsonl"))}


def test_month_end_edits_are_found_and_classified(
    demo_dir: Path, demo_settings: Settings, contracts: ContractSet
) -> None:
    run_batch(demo_settings)
    month_end_edits(demo_dir, contracts)
    before = files_bytes(demo_dir)
    summary = run_reconcile(demo_settings)
    assert files_bytes(demo_dir) == before  # read-only: neither system was touched
    found = classes(summary.data)
    assert found[("invoice_headers", "INV-3005")] == "drift"
    assert found[("accounts", "usmf|ACC-01008-FOURTH")] == "drift"
    assert found[("order_lines_back", "SO-2010|2")] == "only in target"
    money = {m.document: m for m in summary.data.money}
    assert money["invoices"].agree == 19
    assert money["invoices"].unexplained() == {"USD": -100}
    assert [d.number for d in money["orders"].header_vs_lines] == ["SO-2010"]
    assert "19 of 20 invoices agree; USD -100.00 unexplained" in summary.data.verdicts
    assert summary.data.status == "discrepancies"


def test_pending_and_conflict_are_told_apart(demo_dir: Path, demo_settings: Settings) -> None:
    run_batch(demo_settings)
    accounts = demo_dir / "crm" / "accounts.jsonl"
    accounts.write_text(
        accounts.read_text()
        .replace('"Alpine Ski House"', '"Alpine Ski Lodge"')
        .replace('"Fourth Coffee"', '"Fourth Coffee Roasters"')
    )
    customers = demo_dir / "erp" / "CustomersV2.jsonl"
    customers.write_text(customers.read_text().replace('"Fourth Coffee"', '"4th Coffee"'))
    found = classes(run_reconcile(demo_settings, flows=["accounts"]).data)
    assert found[("accounts", "usmf|ACC-01002-ALPINE")] == "pending"
    assert found[("accounts", "usmf|ACC-01008-FOURTH")] == "conflict"


def test_a_freshly_synced_pair_agrees_and_exits_0(demo_dir: Path) -> None:
    products = demo_dir / "erp" / "SellableReleasedProducts.jsonl"
    products.write_text(
        "".join(x + "\n" for x in products.read_text().splitlines() if '"plt"' not in x)
    )
    crm = demo_dir / "crm" / "products.jsonl"
    crm.write_text(
        "".join(
            x + "\n"
            for x in crm.read_text().splitlines()
            if "SALES-ONLY" not in x and "D0099" not in x
        )
    )
    config = str(demo_dir / "p2c.toml")
    runner = CliRunner()
    assert (
        runner.invoke(main, ["run", "--config", config, "--flows", "products", "-q"]).exit_code == 0
    )
    result = runner.invoke(
        main, ["reconcile", "--config", config, "--flows", "products", "--json", "-q"]
    )
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert summary["status"] == "agree" and summary["agree"] == summary["total"] == 14


def test_evidence_csv_and_xlsx_hold_the_same_rows_and_no_formulas(
    demo_dir: Path, demo_settings: Settings, contracts: ContractSet
) -> None:
    month_end_edits_after_sync(demo_dir, demo_settings, contracts)
    accounts = demo_dir / "crm" / "accounts.jsonl"  # renamed after the sync: pending
    accounts.write_text(accounts.read_text().replace('"Wingtip Toys"', '"=HYPERLINK(\\"x\\")"'))
    result = CliRunner().invoke(
        main, ["reconcile", "--config", str(demo_dir / "p2c.toml"), "--json", "-q"]
    )
    assert result.exit_code == 1
    paths = json.loads(result.stdout)["report"]
    with open(paths["csv"], newline="", encoding="utf-8") as handle:
        csv_rows = list(csv.reader(handle))
    sheet = load_workbook(paths["xlsx"]).active
    xlsx_rows = [
        [c if c is not None else "" for c in row] for row in sheet.iter_rows(values_only=True)
    ]
    assert xlsx_rows == [
        [c.removeprefix("'") if c.startswith("'=") else c for c in row] for row in csv_rows
    ]
    assert any(cell == '=HYPERLINK("x")' for row in xlsx_rows for cell in row)
    assert all(cell.data_type == "s" for row in sheet.iter_rows() for cell in row if cell.value)
    assert any(cell == '\'=HYPERLINK("x")' for row in csv_rows for cell in row)


def month_end_edits_after_sync(demo_dir: Path, settings: Settings, contracts: ContractSet) -> None:
    run_batch(settings)
    month_end_edits(demo_dir, contracts)


def test_history_index_lists_every_reconciliation(demo_dir: Path, demo_settings: Settings) -> None:
    first = run_reconcile(demo_settings, flows=["products"])
    second = run_reconcile(demo_settings, flows=["products"])
    index = (demo_settings.report_dir / "reconcile" / "index.html").read_text()
    assert first.data.reconciliation_id in index and second.data.reconciliation_id in index
    assert index.index(second.data.reconciliation_id) < index.index(first.data.reconciliation_id)


def test_demo_reconciliation_matches_the_golden_file(
    demo_dir: Path,
    demo_settings: Settings,
    contracts: ContractSet,
    clock: Callable[[], datetime],
) -> None:
    """Regenerate on purpose with P2C_REGEN_GOLDEN=1 and review the diff."""
    run_batch(demo_settings, clock=clock, run_id="golden-sync")
    month_end_edits(demo_dir, contracts)
    summary = run_reconcile(demo_settings, clock=clock, reconciliation_id="golden-reconcile")
    data = summary.data.as_json()
    if os.environ.get("P2C_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert data == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_narrowing_by_currency_and_customer(
    demo_dir: Path, demo_settings: Settings, contracts: ContractSet
) -> None:
    month_end_edits_after_sync(demo_dir, demo_settings, contracts)
    cad = run_reconcile(demo_settings, flows=["order_headers_back"], currency="cad")
    orders = cad.data.money[0]
    assert {line.currency for line in orders.by_currency} == {"CAD"}
    assert ("currency", "cad") in cad.data.filters
    one = run_reconcile(demo_settings, flows=["accounts"], customer="ACC-01008-FOURTH")
    assert [d.record_key for d in one.data.discrepancies] == ["usmf|ACC-01008-FOURTH"]


def test_a_reconciliation_runs_beside_a_nightly_run(
    demo_dir: Path, demo_settings: Settings
) -> None:
    import subprocess
    import sys

    hold = (  # holds the lock until killed: no time window for a loaded machine to outlast
        "import sys, threading; from pathlib import Path\n"
        "from p2c_etl.warehouse.lock import RunLock\n"
        "with RunLock(Path(sys.argv[1]), 'p2c run nightly'):\n"
        "    print('ready', flush=True); threading.Event().wait()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(demo_settings.warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        config = str(demo_dir / "p2c.toml")
        busy = CliRunner().invoke(main, ["run", "--config", config, "-q"])
        assert busy.exit_code == 3  # a second run does not start
        result = CliRunner().invoke(
            main, ["reconcile", "--config", config, "-q", "--flows", "products"]
        )
        assert result.exit_code == 1, result.stderr  # ...but a reconciliation does
    finally:
        holder.kill()
        holder.wait()
