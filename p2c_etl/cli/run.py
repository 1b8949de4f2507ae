"""`p2c run` (the nightly batch) and `p2c retry` (send again the writes that failed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from p2c_etl.cli.output import (
    config_option,
    errors_exit,
    event,
    exit_code,
    parse_flows,
    print_summary,
    progress_for,
    quiet_option,
    settings_from,
)
from p2c_etl.jobs.alerts import send_alerts
from p2c_etl.jobs.retry import run_retry
from p2c_etl.jobs.run import run_batch


@click.command()
@config_option
@click.option("--flows", "flows_text", metavar="A,B", help="Run only these flows.")
@click.option("--dry-run", is_flag=True, help="Compute everything; write nothing to either system.")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def run(
    config_path: Path, flows_text: str | None, dry_run: bool, as_json: bool, quiet: bool
) -> None:
    """Run the nightly batch: extract, map, validate, diff, load, report."""
    settings = settings_from(config_path)
    summary = run_batch(
        settings, flows=parse_flows(flows_text), dry_run=dry_run, progress=progress_for(quiet)
    )
    for problem in send_alerts(settings.alerts, summary):
        event("warning", f"alert not delivered: {problem}")
    print_summary(summary, as_json)
    sys.exit(exit_code(summary))


@click.command()
@config_option
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="The run whose failed writes to send again [default: the latest with any].",
)
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def retry(config_path: Path, run_id: str | None, as_json: bool, quiet: bool) -> None:
    """Send again the records whose write failed (rejected records need a fix first)."""
    summary = run_retry(settings_from(config_path), failed_run=run_id, progress=progress_for(quiet))
    print_summary(summary, as_json)
    sys.exit(exit_code(summary))
