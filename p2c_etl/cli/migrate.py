"""`p2c migrate`: load history from export files, with a progress bar per flow."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click

from p2c_etl.cli.output import (
    config_option,
    errors_exit,
    event,
    finish,
    guarded,
    parse_flows,
    progress_for,
    quiet_option,
    settings_from,
)
from p2c_etl.jobs.migrate.job import run_migrate
from p2c_etl.jobs.migrate.options import DEFAULT_CHUNK_ROWS, MigrateOptions, no_bars


@click.command()
@config_option
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The folder of exports: <EntitySet>.parquet, .csv or .jsonl.",
)
@click.option("--flows", "flows_text", metavar="A,B", help="Migrate only these flows.")
@click.option(
    "--since", type=click.DateTime(["%Y-%m-%d"]), help="Only records created on or after this day."
)
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), help="Only records created on or before this day."
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_ROWS,
    show_default=True,
    help="Records read, checked and written (and checkpointed) together.",
)
@click.option("--dry-run", is_flag=True, help="Read, map, validate and compare; write nothing.")
@click.option(
    "--resume",
    "resume",
    metavar="RUN_ID",
    help="Finish an interrupted migration from its last committed chunk.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@errors_exit
def migrate(
    config_path: Path,
    source: Path,
    flows_text: str | None,
    since: datetime | None,
    until: datetime | None,
    chunk_rows: int,
    dry_run: bool,
    resume: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Load history from export files into the configured systems, a chunk at a time.

    Resumable: after an interruption, run it again with --resume RUN_ID (or run it again
    plainly: records already in the target are found unchanged and not written twice).
    """
    settings = settings_from(config_path)
    options = MigrateOptions(
        source=source,
        flows=tuple(parse_flows(flows_text) or ()),
        since=since.date() if since else None,
        until=until.date() if until else None,
        chunk_rows=chunk_rows,
        dry_run=dry_run,
        resume=resume,
    )
    show_bars = not (as_json or quiet) and sys.stderr.isatty()
    bars = _bars if show_bars else no_bars if quiet else _lines
    summary = guarded(
        "migrate",
        lambda: run_migrate(settings, options, progress=progress_for(quiet), bars=bars),
    )
    finish(summary, as_json, settings.alerts)


@contextmanager
def _lines(flow: str, total: int) -> Iterator[Callable[[int], None]]:
    """Off a terminal (a log, a pipe): one progress line on stderr per chunk, once it is
    committed: records done / total, records per second, ETA."""
    started = time.monotonic()
    done = 0

    def tick(records: int) -> None:
        nonlocal done
        done += records
        elapsed = max(time.monotonic() - started, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate and total > done else 0.0
        event(
            "info",
            f"{flow}: {done:,} of {total:,} records done, {rate:,.0f} rows/s, ETA {eta:,.0f} s",
        )

    yield tick


@contextmanager
def _bars(flow: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr: records done / total, records per second, ETA."""
    started = time.monotonic()
    done = 0

    def rate(_: object) -> str:
        elapsed = max(time.monotonic() - started, 1e-9)
        return f"{done / elapsed:,.0f} rows/s"

    with click.progressbar(
        length=max(total, 1),
        label=f"{flow:<20}",
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        item_show_func=rate,
    ) as bar:

        def tick(records: int) -> None:
            nonlocal done
            done += records
            bar.update(records, done)

        yield tick
