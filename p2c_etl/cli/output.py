"""What every command shares: the common options, the settings, progress and error events on
stderr, the summary table, and exit codes (0 clean, 1 record-level problems, 2 failed, 3 locked;
130/143 interrupted, 141 when whoever read the output closed it: `p2c flows show x | head`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar, get_args

import click

from p2c_etl.config import DEFAULT_CONFIG, AlertSettings, Settings, load_settings
from p2c_etl.errors import LockedError, P2CError
from p2c_etl.flows import flow_names
from p2c_etl.jobs.alerts import send_alerts
from p2c_etl.jobs.wiring import Crash, Interrupted
from p2c_etl.model.summary import (
    ReconcileSummary,
    RunMode,
    RunSummary,
    failed_summary,
)

EXIT_OK, EXIT_RECORDS, EXIT_FAILED, EXIT_LOCKED = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a tool killed by it exits
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

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
    """The edge of every command: what a command raises becomes its message and exit code.

    - a P2CError: its one-line message on stderr and its exit code (2, or 3 when locked);
    - any other exception, a bug: its traceback on stderr, exit 2;
    - Ctrl-C (SIGINT): exit 130; SIGTERM (made `Interrupted` here): exit 143;
    - stdout or stderr closed by its reader (EPIPE: `p2c flows show accounts | head -2`): not
      a bug; the rest of the output goes nowhere, quietly, and the exit code is 141, as of a
      command killed by SIGPIPE. The job itself is not cut short by it (see `event`).

    With `--json`, the command still prints one JSON summary on stdout (`status: failed`,
    `error`), so that a script reading it always finds one."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _exits(func, args, kwargs)
        except BrokenPipeError:  # raised by an output, or by the handling of another error
            _to_devnull(sys.stdout, sys.stderr)
            sys.exit(EXIT_BROKEN_PIPE)

    return wrapper  # type: ignore[return-value]


def _exits(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    """`func(*args, **kwargs)`, its errors made messages and exit codes (`errors_exit`)."""
    previous = _stop_on_sigterm()
    try:
        return func(*args, **kwargs)
    except BrokenPipeError:
        raise
    except P2CError as exc:
        event("error", str(exc), exit_code=exc.exit_code)
        _failed_json(kwargs, str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        event("error", "interrupted (Ctrl-C)", exit_code=EXIT_INTERRUPTED)
        _failed_json(kwargs, "interrupted by SIGINT (Ctrl-C)")
        sys.exit(EXIT_INTERRUPTED)
    except Interrupted as exc:
        event("error", str(exc), exit_code=EXIT_TERMINATED)
        _failed_json(kwargs, f"interrupted: {exc}")
        sys.exit(EXIT_TERMINATED)
    except Exception as exc:
        crash = Crash(exc)
        click.echo(crash.traceback, err=True, nl=False)
        event("error", f"{crash} (a bug: the traceback is above)", exit_code=EXIT_FAILED)
        _failed_json(kwargs, str(crash))
        sys.exit(EXIT_FAILED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _to_devnull(*streams: Any) -> None:
    """Point `streams` at /dev/null: what is still written to them, or flushed at exit, goes
    nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _stop_on_sigterm() -> Any:
    """SIGTERM raises `Interrupted` (so the run is marked failed on the way out); returns
    the handler before, or None off the main thread (where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, stop)


def _failed_json(kwargs: dict[str, Any], error: str) -> None:
    """Under `--json`, the summary of a command that failed before it had one."""
    if not kwargs.get("as_json"):
        return
    ctx = click.get_current_context(silent=True)
    name = ctx.info_name if ctx is not None else None
    if name == "reconcile":
        click.echo(json.dumps(ReconcileSummary(None, {}, error=error).as_json(), indent=2))
        return
    mode: RunMode = name if name in get_args(RunMode) else "run"  # type: ignore[assignment]
    click.echo(failed_summary(mode, error).to_json())


def guarded(mode: RunMode, job: Callable[[], T]) -> T | RunSummary:
    """`job()`, or the failed summary of what it raised (its alert is then still sent): a
    P2CError gives its message; any other exception its traceback too. LockedError (exit 3)
    and interrupts go on to `errors_exit`."""
    try:
        return job()
    except LockedError:
        raise
    except P2CError as exc:
        return failed_summary(mode, str(exc))
    except Exception as exc:
        crash = Crash(exc)
        return failed_summary(mode, str(crash), crash.traceback)


def finish(summary: RunSummary, as_json: bool, alerts: AlertSettings | None) -> NoReturn:
    """The end of run, retry, migrate and demo: the traceback of a crash on stderr, the alert,
    the summary, and the exit code."""
    if summary.traceback:
        click.echo(summary.traceback, err=True, nl=False)
    if alerts is not None:
        for problem in send_alerts(alerts, summary):
            event("warning", f"alert not delivered: {problem}")
    print_summary(summary, as_json)
    sys.exit(exit_code(summary))


def progress_for(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda line: event("info", line))


def settings_from(config_path: Path) -> Settings:
    return load_settings(config_path, known_flows=flow_names())


def parse_flows(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def event(level: str, message: str, **fields: Any) -> None:
    """One event on stderr: a text line, or (--log-format json) one JSON object. A stderr
    its reader closed takes no more events, and the job goes on (a run is not failed because
    `p2c run 2>&1 | head` stopped reading)."""
    try:
        _event(level, message, **fields)
    except BrokenPipeError:
        _to_devnull(sys.stderr)


def _event(level: str, message: str, **fields: Any) -> None:
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
    """The summary on stdout (a table, or `--json`); its error, if any, on stderr."""
    if summary.error:
        event("error", summary.error, run_id=summary.run_id)
    if as_json:
        click.echo(summary.to_json())
        return
    if not summary.run_id:  # failed before it started: the error is all there is
        return
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
    if summary.traceback:
        click.echo(summary.traceback, err=True, nl=False)
    if summary.data is None:
        event("error", summary.error or "failed", run_id=summary.reconciliation_id)
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
        return
    if summary.data is None:
        return
    click.echo(f"Scope: {summary.data.scope}")
    for line in summary.data.verdicts:
        click.echo(line)
    click.echo(f"Report: {summary.paths['html']}")
