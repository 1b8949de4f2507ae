"""`p2c reconcile`: read-only, differences classified, history kept, beside a nightly run. The
planted month-end edits, the tie-out, filters, ageing and the workpaper: `test_workpaper`."""

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import Settings
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch


def classes(summary_data: Any) -> dict[tuple[str, str], str]:
    return {(d.flow, d.record_key): d.classification for d in summary_data.discrepancies}


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


def test_history_index_lists_every_reconciliation(demo_dir: Path, demo_settings: Settings) -> None:
    first = run_reconcile(demo_settings, flows=["products"])
    second = run_reconcile(demo_settings, flows=["products"])
    index = (demo_settings.report_dir / "reconcile" / "index.html").read_text()
    assert first.data.reconciliation_id in index and second.data.reconciliation_id in index
    assert index.index(second.data.reconciliation_id) < index.index(first.data.reconciliation_id)


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
