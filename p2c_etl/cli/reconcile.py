"""`p2c reconcile`: do both systems agree? Read-only."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from p2c_etl.cli.output import (
    EXIT_OK,
    EXIT_RECORDS,
    config_option,
    errors_exit,
    parse_flows,
    print_reconciliation,
    progress_for,
    quiet_option,
    settings_from,
)
from p2c_etl.jobs.reconcile.job import run_reconcile


@click.command()
@config_option
@click.option("--flows", "flows_text", metavar="A,B", help="Reconcile only these flows.")
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Money: only documents dated up to this day.",
)
@click.option("--currency", help="Money: only this currency (ISO code).")
@click.option("--customer", help="Only this customer (account or contact number).")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def reconcile(
    config_path: Path,
    flows_text: str | None,
    as_of: datetime | None,
    currency: str | None,
    customer: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Do Sales and Finance and Operations agree? Read-only; writes nothing to either system.

    Exit 0 when everything agrees within tolerance, 1 when there are discrepancies, 2 on failure.
    """
    summary = run_reconcile(
        settings_from(config_path),
        flows=parse_flows(flows_text),
        as_of=as_of.date() if as_of else None,
        currency=currency,
        customer=customer,
        progress=progress_for(quiet),
    )
    print_reconciliation(summary, as_json)
    sys.exit(EXIT_OK if summary.data.status == "agree" else EXIT_RECORDS)
