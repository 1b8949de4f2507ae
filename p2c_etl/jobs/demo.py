"""`p2c demo`: the demo company copied into a folder and synced over files, over HTTP against
the sandbox, or at month end, after three things people do by hand after the nightly sync,
which `p2c reconcile` must find and classify (`p2c demo --month-end`):

1. In Sales, someone changes the total of invoice INV-3005 by hand (+100.00).
2. In F&O, line 2 of order SO-2010 is deleted.
3. In F&O, someone raises Fourth Coffee's credit limit by hand.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl

from p2c_etl.config import SANDBOX_SECRET_ENV, Settings, load_settings
from p2c_etl.connectors.files import FilesConnector, read_all, write_atomic
from p2c_etl.flows import flow_names
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.summary import ReconcileSummary, RunSummary
from p2c_etl.resources import contracts_dir, demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

INVOICE, ORDER, LINE, CUSTOMER = "INV-3005", "SO-2010", 2, "Fourth Coffee"


def month_end_edits(directory: Path, contracts: ContractSet) -> list[str]:
    """Apply the three edits to the demo's files; returns what was done, for the user."""
    crm = FilesConnector("crm", directory / "crm", contracts)
    erp = FilesConnector("erp", directory / "erp", contracts)
    _edit(
        crm,
        "invoices",
        pl.col("invoicenumber") == INVOICE,
        {"totalamount": pl.col("totalamount") + Decimal("100.00")},
    )
    _drop(
        erp,
        "CDSSalesOrderLines",
        (pl.col("SalesOrderNumber") == ORDER) & (pl.col("LineCreationSequenceNumber") == LINE),
    )
    _edit(
        erp,
        "CustomersV2",
        pl.col("OrganizationName") == CUSTOMER,
        {"CreditLimit": pl.col("CreditLimit") + Decimal("5000")},
    )
    return [
        f"Sales: invoice {INVOICE}'s total raised by 100.00 by hand",
        f"F&O: line {LINE} of order {ORDER} deleted",
        f"F&O: {CUSTOMER}'s credit limit raised by 5,000.00 by hand",
    ]


def _edit(conn: FilesConnector, entity: str, where: pl.Expr, values: dict[str, pl.Expr]) -> None:
    frame, path = _whole(conn, entity)
    updated = frame.with_columns(
        [
            pl.when(where).then(v).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)
            for c, v in values.items()
        ]
    )
    _save(updated, path)


def _drop(conn: FilesConnector, entity: str, where: pl.Expr) -> None:
    frame, path = _whole(conn, entity)
    _save(frame.filter(~where), path)


def _whole(conn: FilesConnector, entity: str) -> tuple[pl.DataFrame, Path]:
    path = conn.path(entity)
    assert path is not None, f"the demo has no {entity}"
    contract = conn.contracts.get(conn.system, entity)
    return read_all(path, contract.dtypes(contract.columns)), path


def _save(frame: pl.DataFrame, path: Path) -> None:
    write_atomic(frame, path)


def files_demo(directory: Path, progress: Callable[[str], None]) -> RunSummary:
    config = directory / "p2c.toml"
    if not config.exists():
        directory.mkdir(parents=True, exist_ok=True)
        for system in ("crm", "erp"):
            shutil.copytree(demo_fixtures_dir() / system, directory / system, dirs_exist_ok=True)
        config.write_text(demo_config_text(), encoding="utf-8")
        progress(f"demo: copied the demo company into {directory}")
    return run_batch(_settings(config), mode="demo", progress=progress)


def month_end_demo(directory: Path, progress: Callable[[str], None]) -> ReconcileSummary:
    """Sync (if not done yet), make the month's hand edits, then reconcile."""
    if not (directory / "p2c.duckdb").exists():
        files_demo(directory, progress)
    for line in month_end_edits(directory, ContractSet.load(contracts_dir())):
        progress(f"month end: {line}")
    return run_reconcile(_settings(directory / "p2c.toml"), progress=progress)


def http_demo(directory: Path, progress: Callable[[str], None]) -> RunSummary:
    secret = secrets.token_urlsafe(24)
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret=secret, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        progress(f"demo: sandbox: Dataverse at {sandbox.crm_url}, F&O at {sandbox.erp_url}")
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "p2c.toml"
        text = http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url)
        config.write_text(text, encoding="utf-8")
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: secret})
        return run_batch(settings, mode="demo", progress=progress)


def _settings(config: Path) -> Settings:
    return load_settings(config, known_flows=flow_names())


def http_config_text(crm_url: str, erp_url: str, token_url: str, company: str = "usmf") -> str:
    """The p2c.toml of `p2c demo --http`: both systems served by the sandbox."""
    auth = (
        f'token_url = "{token_url}"\ntenant = "sandbox"\nclient_id = "p2c-sandbox"\n'
        f'secret_env = "{SANDBOX_SECRET_ENV}"\n'
    )
    return (
        "# Written by `p2c demo --http`: the sandbox's addresses change with every run.\n"
        '[warehouse]\npath = "p2c.duckdb"\n\n'
        f'[systems.crm]\nkind = "dataverse"\nurl = "{crm_url}"\n{auth}\n'
        f'[systems.erp]\nkind = "finops"\nurl = "{erp_url}"\ncompany = "{company}"\n{auth}\n'
        '[report]\ndir = "reports"\n'
    )


def demo_config_text(company: str = "usmf") -> str:
    """The p2c.toml that `p2c demo` writes beside the copied demo data."""
    return (
        "# Written by `p2c demo`. Paths are relative to this file.\n"
        '[warehouse]\npath = "p2c.duckdb"\n\n'
        '[systems.crm]\nkind = "files"\npath = "crm"\n\n'
        f'[systems.erp]\nkind = "files"\npath = "erp"\ncompany = "{company}"\n\n'
        '[report]\ndir = "reports"\n'
    )
