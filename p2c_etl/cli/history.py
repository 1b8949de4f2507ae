"""`p2c history` (recent runs) and `p2c prune` (prune old runs now)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from p2c_etl.cli.output import config_option, errors_exit, settings_from, table
from p2c_etl.jobs.history import prune_runs, recent_runs


@click.command()
@config_option
@click.option(
    "--keep-days",
    type=click.IntRange(min=0),
    help="Keep the runs of the last N days [default: [warehouse] keep_days, 30].",
)
@errors_exit
def prune(config_path: Path, keep_days: int | None) -> None:
    """Prune old runs (every run does it after it ends); the runs ledger, migrations and
    reconciliations are kept, and the file shrinks when most of it is free space."""
    settings = settings_from(config_path)
    days = settings.keep_days if keep_days is None else keep_days
    runs, tables = prune_runs(settings, days)
    click.echo(f"Pruned {runs} runs older than {days} days: {tables} per-run tables dropped.")


@click.command()
@config_option
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@errors_exit
def history(config_path: Path, limit: int) -> None:
    """List recent runs, newest first. Never waits: while a run is inside the warehouse, says
    so in one line (naming it) instead."""
    found = recent_runs(settings_from(config_path), limit)
    if found.busy is not None:
        click.echo(
            f"A run is in progress ({found.busy}): the ledger cannot be read until it steps "
            "out of the warehouse; ask again in a moment."
        )
        return
    if found.runs is None or found.runs.height == 0:
        click.echo("No runs yet.")
    else:
        rows = [
            (
                r["run_id"],
                r["mode"] + (" (dry)" if r["dry_run"] else ""),
                r["status"],
                f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
                str(r["written"]),
                str(r["rejected"]),
                str(r["failed"]),
                _reads(r),
                r["report_html"] or "",
            )
            for r in found.runs.iter_rows(named=True)
        ]
        table(
            ("run", "mode", "status", "started", "written", "rejected", "failed", "read", "report"),
            rows,
        )
    if found.in_progress:
        click.echo(f"In progress: {found.in_progress}")


def _reads(run: dict[str, Any]) -> str:
    """How a run read: `changes` when some entity sets were read through their changes (a
    delta link, a high-water mark), and the full reads that verified mirrors, with drift."""
    parts = []
    if run["change_reads"]:
        parts.append(f"changes ({run['change_reads']} sets)")
    if run["verified_reads"]:
        parts.append(f"verified {run['verified_reads']} sets: {run['drifted']} drifted")
    return "; ".join(parts) or "full"
