"""`p2c run` (the nightly batch) and `p2c retry` (send again the writes that failed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from p2c_etl.cli.output import (
    EXIT_OK,
    config_option,
    errors_exit,
    finish,
    guarded,
    parse_flows,
    progress_for,
    quiet_option,
    settings_from,
)
from p2c_etl.jobs.retry import NothingToRetry, run_retry
from p2c_etl.jobs.run import run_batch


@click.command()
@config_option
@click.option("--flows", "flows_text", metavar="A,B", help="Run only these flows.")
@click.option("--dry-run", is_flag=True, help="Compute everything; write nothing to either system.")
@click.option(
    "--full",
    is_flag=True,
    help="Read every entity set in full, and report what the mirrors kept through change "
    "tracking had wrong (as [run] full_every does on schedule).",
)
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def run(
    config_path: Path,
    flows_text: str | None,
    dry_run: bool,
    full: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run the nightly batch: extract, map, validate, diff, load, report."""
    settings = settings_from(config_path)
    summary = guarded(
        "run",
        lambda: run_batch(
            settings,
            flows=parse_flows(flows_text),
            dry_run=dry_run,
            progress=progress_for(quiet),
            full=full,
        ),
    )
    finish(summary, as_json, settings.alerts)


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
    """Send again the records whose write failed (rejected records need a fix first).

    Exits 0 with a message when there is nothing to retry."""
    settings = settings_from(config_path)
    outcome = guarded(
        "retry", lambda: run_retry(settings, failed_run=run_id, progress=progress_for(quiet))
    )
    if isinstance(outcome, NothingToRetry):
        if as_json:
            body = {"mode": "retry", "status": "nothing_to_retry", "message": outcome.message}
            click.echo(json.dumps(body, indent=2))
        else:
            click.echo(outcome.message[0].upper() + outcome.message[1:] + ".")
        sys.exit(EXIT_OK)
    finish(outcome, as_json, settings.alerts)
