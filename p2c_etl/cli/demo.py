"""`p2c demo`: the demo company, over files, over HTTP or at month end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from p2c_etl.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    errors_exit,
    finish,
    guarded,
    print_reconciliation,
    print_summary,
    progress_for,
    quiet_option,
)
from p2c_etl.jobs.demo import files_demo, http_demo, month_end_demo


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to put the demo [default: ./p2c-demo, with --http ./p2c-demo-http].",
)
@click.option(
    "--http",
    "over_http",
    is_flag=True,
    help="Serve the demo company from the local sandbox and sync over HTTP.",
)
@click.option(
    "--month-end",
    is_flag=True,
    help="After the sync, make three edits by hand in the demo's systems and reconcile.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def demo(
    directory: Path | None, over_http: bool, month_end: bool, as_json: bool, quiet: bool
) -> None:
    """Copy the demo company into DIR (once) and run the nightly batch on it.

    With --http, a sandbox of both Web APIs starts on loopback, seeded with the demo company
    (fresh every time), and the batch runs through the Dataverse and F&O connectors; the
    warehouse and reports go to DIR. Exits 0 when the run completed, planted rejects included.
    """
    progress = progress_for(quiet)
    if month_end:
        if over_http:
            raise click.UsageError("--month-end works on the files demo; leave out --http")
        reconciled = month_end_demo(directory or Path("p2c-demo"), progress)
        print_reconciliation(reconciled, as_json)
        sys.exit(EXIT_FAILED if reconciled.status == "failed" else EXIT_OK)
    if over_http:
        summary = guarded("demo", lambda: http_demo(directory or Path("p2c-demo-http"), progress))
    else:
        summary = guarded("demo", lambda: files_demo(directory or Path("p2c-demo"), progress))
    if summary.status == "failed":
        finish(summary, as_json, None)  # exit 2; the demo's p2c.toml has no alerts
    print_summary(summary, as_json)
    if not as_json:
        again = summary.written and not over_http
        tail = " Run it again: nothing new will be written." if again else ""
        click.echo(f"{summary.written} records written.{tail}")
    sys.exit(EXIT_OK)
