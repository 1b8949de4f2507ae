"""`p2c check`: the pre-flight."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from p2c_etl.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    config_option,
    errors_exit,
    event,
    settings_from,
    table,
)
from p2c_etl.jobs.check import check_systems


@click.command()
@config_option
@errors_exit
def check(config_path: Path) -> None:
    """Pre-flight: systems reachable, credentials accepted, contracts match, reference data."""
    findings = check_systems(settings_from(config_path))
    rows = [(f.system, f.check, f.verdict, f.detail) for f in findings]
    table(("system", "check", "result", "detail"), rows)
    failed = [f for f in findings if f.verdict == "failed"]
    if failed:
        event("error", f"{len(failed)} of {len(findings)} checks failed")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)
