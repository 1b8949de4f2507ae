"""The demo company reconciled a few times in a row, once a test session (the demo is synced
once and every test reads what the reconciliations filed):

    synced ── copy ──▶ clean: reconciled straight after the sync
      │
    month-end edits ──▶ month end (the golden file) ──▶ INV-3005 put back, an account renamed
                                                       to a formula, another to a script,
                                                       three days later ──▶ later
                                                    ──▶ --customer, --currency narrowed runs
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import load_settings
from p2c_etl.jobs.demo import demo_config_text, month_end_edits
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.summary import ReconcileSummary
from p2c_etl.resources import demo_fixtures_dir

START = datetime(2026, 1, 31, 22, 0, tzinfo=UTC)
EVIL = "<script>alert(1)</script>"


def ticking(start: datetime) -> Callable[[], datetime]:
    """A clock that ticks one second per call from `start`."""
    state = {"now": start}

    def tick() -> datetime:
        state["now"] += timedelta(seconds=1)
        return state["now"]

    return tick


@dataclass(frozen=True)
class Runs:
    root: Path
    read_only: bool  # the month-end reconciliation changed no file of either system
    clean: ReconcileSummary
    month_end: ReconcileSummary
    later: ReconcileSummary
    agreeing: Any  # click Result of `reconcile --customer ACC-01013-MARGIE --json`
    widewo: Any  # ... of `--customer ACC-01022-WIDEWO --flows order_headers_back,...`
    cad: ReconcileSummary


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.glob("*/*.jsonl"))}


def _demo(root: Path) -> Path:
    for system in ("crm", "erp"):
        shutil.copytree(demo_fixtures_dir() / system, root / system)
    (root / "p2c.toml").write_text(demo_config_text(), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, contracts: ContractSet) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("workpaper")
    demo = _demo(base / "demo")
    settings = load_settings(demo / "p2c.toml")
    clock = ticking(START)
    run_batch(settings, clock=clock, run_id="golden-sync")
    shutil.copytree(demo, base / "clean")
    invoices = (demo / "crm" / "invoices.jsonl").read_bytes()
    clean = run_reconcile(
        load_settings(base / "clean" / "p2c.toml"),
        clock=ticking(START),
        reconciliation_id="clean",
    )
    month_end_edits(demo, contracts)
    before = _files(demo)
    month_end = run_reconcile(settings, clock=clock, reconciliation_id="golden-reconcile")
    read_only = _files(demo) == before
    (demo / "crm" / "invoices.jsonl").write_bytes(invoices)  # INV-3005 put right in Sales
    accounts = demo / "crm" / "accounts.jsonl"  # renamed after the sync: pending
    accounts.write_text(
        accounts.read_text()
        .replace('"Wingtip Toys"', '"=HYPERLINK(\\"x\\")"')
        .replace('"Alpine Ski House"', f'"{EVIL}"')
    )
    later = run_reconcile(
        settings, clock=ticking(START + timedelta(days=3)), reconciliation_id="later"
    )
    config = str(demo / "p2c.toml")
    runner = CliRunner()
    agreeing = runner.invoke(
        main, ["reconcile", "--config", config, "--customer", "ACC-01013-MARGIE", "--json", "-q"]
    )
    widewo = runner.invoke(
        main,
        [
            "reconcile",
            "--config",
            config,
            "--customer",
            "ACC-01022-WIDEWO",
            "--flows",
            "order_headers_back,order_lines_back",
            "--json",
            "-q",
        ],
    )
    cad = run_reconcile(settings, flows=["order_headers_back"], currency="cad")
    yield Runs(demo, read_only, clean, month_end, later, agreeing, widewo, cad)
