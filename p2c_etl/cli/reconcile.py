"""`p2c reconcile`: do both systems agree? Read-only."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from p2c_etl.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RECORDS,
    config_option,
    errors_exit,
    event,
    parse_flows,
    print_reconciliation,
    progress_for,
    quiet_option,
    settings_from,
)
from p2c_etl.errors import LockedError, P2CError
from p2c_etl.jobs.alerts import send_alerts
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.wiring import Crash
from p2c_etl.model.summary import ReconcileSummary


@click.command()
@config_option
@click.option("--flows", "flows_text", metavar="A,B", help="Reconcile only these flows.")
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only documents dated up to this day (and their lines).",
)
@click.option("--currency", help="Only documents and customers in this currency (ISO code).")
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

    Exit 0 when everything agrees within tolerance, 1 when there are discrepancies, 2 on failure
    (its alert sent). --customer, --currency, --as-of and --flows narrow every count, verdict,
    table and export, and the exit code, to what they select.
    """
    settings = settings_from(config_path)
    try:
        summary = run_reconcile(
            settings,
            flows=parse_flows(flows_text),
            as_of=as_of.date() if as_of else None,
            currency=currency,
            customer=customer,
            progress=progress_for(quiet),
        )
    except LockedError:
        raise
    except P2CError as exc:  # before the reconciliation started (flows, connectors)
        summary = ReconcileSummary(None, {}, error=str(exc))
    except Exception as exc:
        crash = Crash(exc)
        summary = ReconcileSummary(None, {}, error=str(crash), traceback=crash.traceback)
    print_reconciliation(summary, as_json)
    if summary.status == "failed":
        for problem in send_alerts(settings.alerts, summary.as_run()):
            event("warning", f"alert not delivered: {problem}")
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK if summary.status == "agree" else EXIT_RECORDS)
