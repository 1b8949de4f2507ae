"""What every command shares: the common options, the settings, progress and error events on
stderr, the summary table, and exit codes (0 clean, 1 record-level problems, 2 failed, 3 locked)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from p2c_etl.config import DEFAULT_CONFIG, Settings, load_settings
from p2c_etl.errors import P2CError
from p2c_etl.flows import flow_names
from p2c_etl.model.summary import ReconcileSummary, RunSummary

EXIT_OK, EXIT_RECORDS, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The p2c.toml to use.",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress lines on stderr (errors still go there)."
)


def errors_exit(func: F) -> F:
    """Turn a P2CError into its one-line message on stderr and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except P2CError as exc:
            event("error", str(exc), exit_code=exc.exit_code)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def progress_for(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda line: event("info", line))


def settings_from(config_path: Path) -> Settings:
    return load_settings(config_path, known_flows=flow_names())


def parse_flows(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def event(level: str, message: str, **fields: Any) -> None:
    """One event on stderr: a text line, or (--log-format json) one JSON object."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is not None and (root.obj or {}).get("log_format") == "json":
        event = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "message": message,
            **fields,
        }
        click.echo(json.dumps(event), err=True)
    elif level == "info":
        click.echo(message, err=True)
    else:
        click.echo(f"p2c: {level}: {message}", err=True)


def exit_code(summary: RunSummary) -> int:
    return {"ok": EXIT_OK, "partial": EXIT_RECORDS}.get(summary.status, EXIT_FAILED)


def print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        click.echo(summary.to_json())
        return
    if summary.error:
        event("error", summary.error, run_id=summary.run_id)
    rows = [
        (
            c.flow,
            str(c.source_rows),
            str(c.filtered_out),
            str(c.rejected),
            str(c.inserted),
            str(c.updated),
            str(c.unchanged),
            str(c.target_only),
            str(c.failed),
        )
        for c in summary.flows
    ]
    click.echo(
        f"Run {summary.run_id}: {summary.status}" + (" (dry run)" if summary.dry_run else "")
    )
    table(
        (
            "flow",
            "source",
            "filtered",
            "rejected",
            "inserted",
            "updated",
            "unchanged",
            "target only",
            "failed",
        ),
        rows,
    )
    click.echo(f"Report: {summary.report_html}")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_reconciliation(summary: ReconcileSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
        return
    for line in summary.data.verdicts:
        click.echo(line)
    click.echo(f"Report: {summary.paths['html']}")
