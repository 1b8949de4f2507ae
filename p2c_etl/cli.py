"""The `p2c` command: thin; builds Settings, calls the pipeline, maps outcomes to exit codes.

Exit codes: 0 clean; 1 finished with record-level rejects or failures; 2 failed
(configuration, connection, contract shape); 3 another run holds the lock.
Human progress goes to stderr; `--json` prints one JSON summary on stdout and nothing else.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from p2c_etl.alerts import send_alerts
from p2c_etl.check import run_checks
from p2c_etl.config import (
    DEFAULT_CONFIG,
    SANDBOX_SECRET_ENV,
    Settings,
    demo_config_text,
    http_config_text,
    load_settings,
    sandbox_secret,
)
from p2c_etl.contracts import ContractSet
from p2c_etl.demo import month_end_edits
from p2c_etl.describe import flow_header_lines, flow_markdown, mapping_rows
from p2c_etl.errors import ConfigError, P2CError
from p2c_etl.flow import dependency_order
from p2c_etl.flows import ALL_FLOWS, flow_names, get_flow
from p2c_etl.migrate import DEFAULT_CHUNK_ROWS, MigrateOptions, no_bars, run_migrate
from p2c_etl.overrides import apply_overrides
from p2c_etl.pipeline import (
    connectors_for,
    run_batch,
    run_reconcile,
    run_retry,
    select_flows,
)
from p2c_etl.resources import contracts_dir, demo_fixtures_dir
from p2c_etl.sandbox import Faults, Sandbox, serve
from p2c_etl.summary import RunSummary
from p2c_etl.warehouse import Warehouse

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


def _errors_exit(func: F) -> F:
    """Turn a P2CError into its one-line message on stderr and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except P2CError as exc:
            _event("error", str(exc), exit_code=exc.exit_code)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def _progress(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda line: _event("info", line))


def _settings(config_path: Path) -> Settings:
    return load_settings(config_path, known_flows=flow_names())


def _parse_flows(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="p2c-etl")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Progress and errors on stderr as text, or as one JSON object per event.",
)
@click.pass_context
def main(ctx: click.Context, log_format: str) -> None:
    """Keep Dynamics 365 Sales (CRM) and Finance and Operations (ERP) in step."""
    ctx.obj = {"log_format": log_format}


def _event(level: str, message: str, **fields: Any) -> None:
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


@main.command()
@config_option
@click.option("--flows", "flows_text", metavar="A,B", help="Run only these flows.")
@click.option("--dry-run", is_flag=True, help="Compute everything; write nothing to either system.")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@_errors_exit
def run(
    config_path: Path, flows_text: str | None, dry_run: bool, as_json: bool, quiet: bool
) -> None:
    """Run the nightly batch: extract, map, validate, diff, load, report."""
    settings = _settings(config_path)
    summary = run_batch(
        settings, flows=_parse_flows(flows_text), dry_run=dry_run, progress=_progress(quiet)
    )
    for problem in send_alerts(settings.alerts, summary):
        _event("warning", f"alert not delivered: {problem}")
    _print_summary(summary, as_json)
    sys.exit(_exit_code(summary))


@main.command()
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
@_errors_exit
def demo(
    directory: Path | None, over_http: bool, month_end: bool, as_json: bool, quiet: bool
) -> None:
    """Copy the demo company into DIR (once) and run the nightly batch on it.

    With --http, a sandbox of both Web APIs starts on loopback, seeded with the demo company
    (fresh every time), and the batch runs through the Dataverse and F&O connectors; the
    warehouse and reports go to DIR. Exits 0 when the run completed, planted rejects included.
    """
    progress = _progress(quiet)
    if month_end:
        if over_http:
            raise click.UsageError("--month-end works on the files demo; leave out --http")
        _month_end_demo(directory or Path("p2c-demo"), progress, as_json)
        return
    if over_http:
        summary = _http_demo(directory or Path("p2c-demo-http"), progress)
    else:
        summary = _files_demo(directory or Path("p2c-demo"), progress)
    _print_summary(summary, as_json)
    if not as_json and summary.status != "failed":
        again = summary.written and not over_http
        tail = " Run it again: nothing new will be written." if again else ""
        click.echo(f"{summary.written} records written.{tail}")
    sys.exit(EXIT_FAILED if summary.status == "failed" else EXIT_OK)


def _files_demo(directory: Path, progress: Callable[[str], None]) -> RunSummary:
    config = directory / "p2c.toml"
    if not config.exists():
        directory.mkdir(parents=True, exist_ok=True)
        for system in ("crm", "erp"):
            shutil.copytree(demo_fixtures_dir() / system, directory / system, dirs_exist_ok=True)
        config.write_text(demo_config_text(), encoding="utf-8")
        progress(f"demo: copied the demo company into {directory}")
    return run_batch(_settings(config), mode="demo", progress=progress)


def _month_end_demo(directory: Path, progress: Callable[[str], None], as_json: bool) -> None:
    """Sync (if not done yet), make the month's hand edits, then reconcile."""
    if not (directory / "p2c.duckdb").exists():
        _files_demo(directory, progress)
    for line in month_end_edits(directory, ContractSet.load(contracts_dir())):
        progress(f"month end: {line}")
    summary = run_reconcile(_settings(directory / "p2c.toml"), progress=progress)
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
    else:
        for line in summary.data.verdicts:
            click.echo(line)
        click.echo(f"Report: {summary.paths['html']}")
    sys.exit(EXIT_FAILED if summary.data.status == "failed" else EXIT_OK)


def _http_demo(directory: Path, progress: Callable[[str], None]) -> RunSummary:
    secret = secrets.token_urlsafe(24)
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", seed / "erp", client_secret=secret) as sandbox:
        progress(f"demo: sandbox: Dataverse at {sandbox.crm_url}, F&O at {sandbox.erp_url}")
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "p2c.toml"
        text = http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url)
        config.write_text(text, encoding="utf-8")
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: secret})
        return run_batch(settings, mode="demo", progress=progress)


@main.command()
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
@_errors_exit
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
    settings = _settings(config_path)
    options = MigrateOptions(
        source=source,
        flows=tuple(_parse_flows(flows_text) or ()),
        since=since.date() if since else None,
        until=until.date() if until else None,
        chunk_rows=chunk_rows,
        dry_run=dry_run,
        resume=resume,
    )
    show_bars = not (as_json or quiet) and sys.stderr.isatty()
    summary = run_migrate(
        settings, options, progress=_progress(quiet), bars=_bars if show_bars else no_bars
    )
    for problem in send_alerts(settings.alerts, summary):
        _event("warning", f"alert not delivered: {problem}")
    _print_summary(summary, as_json)
    sys.exit(_exit_code(summary))


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


@main.command()
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
@_errors_exit
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
        _settings(config_path),
        flows=_parse_flows(flows_text),
        as_of=as_of.date() if as_of else None,
        currency=currency,
        customer=customer,
        progress=_progress(quiet),
    )
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
    else:
        for line in summary.data.verdicts:
            click.echo(line)
        click.echo(f"Report: {summary.paths['html']}")
    sys.exit(EXIT_OK if summary.data.status == "agree" else EXIT_RECORDS)


@main.command()
@config_option
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="The run whose failed writes to send again [default: the latest with any].",
)
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary on stdout.")
@quiet_option
@_errors_exit
def retry(config_path: Path, run_id: str | None, as_json: bool, quiet: bool) -> None:
    """Send again the records whose write failed (rejected records need a fix first)."""
    summary = run_retry(_settings(config_path), failed_run=run_id, progress=_progress(quiet))
    _print_summary(summary, as_json)
    sys.exit(_exit_code(summary))


@main.command()
@config_option
@click.option(
    "--keep-days",
    type=click.IntRange(min=0),
    required=True,
    help="Keep the snapshots of runs of the last N days.",
)
@_errors_exit
def prune(config_path: Path, keep_days: int) -> None:
    """Remove old snapshots; the runs ledger and every reconciliation are kept."""
    settings = _settings(config_path)
    before = datetime.now(UTC) - timedelta(days=keep_days)
    wh = Warehouse.open(settings.warehouse_path)
    try:
        runs, tables = wh.prune(before)
    finally:
        wh.close()
    click.echo(f"Pruned {runs} runs older than {keep_days} days: {tables} snapshot tables dropped.")


@main.command()
@config_option
@_errors_exit
def check(config_path: Path) -> None:
    """Pre-flight: systems reachable, credentials accepted, contracts match, reference data."""
    settings = _settings(config_path)
    contracts = ContractSet.load(contracts_dir())
    flows = select_flows(settings, contracts)
    connectors = connectors_for(settings, contracts)
    try:
        findings = run_checks(connectors, contracts, flows)
    finally:
        for connector in connectors.values():
            connector.close()
    rows = [(f.system, f.check, f.verdict, f.detail) for f in findings]
    _table(("system", "check", "result", "detail"), rows)
    failed = [f for f in findings if f.verdict == "failed"]
    if failed:
        _event("error", f"{len(failed)} of {len(findings)} checks failed")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.group()
def sandbox() -> None:
    """The local Dataverse and Finance and Operations servers (for demos and tests)."""


@sandbox.command("serve")
@click.option(
    "--crm",
    "crm_seed",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Seed the Dataverse side from this folder [default: the demo company].",
)
@click.option(
    "--erp",
    "erp_seed",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Seed the F&O side from this folder [default: the demo company].",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--crm-port", default=8401, show_default=True)
@click.option("--erp-port", default=8402, show_default=True)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--client-id", default="p2c-sandbox", show_default=True)
@click.option("--throttle", metavar="N/SECONDS", help="Answer 429 after N requests a window.")
@click.option("--error-rate", type=float, default=0.0, help="Fraction of requests answered 503.")
@click.option("--page-delay", type=float, default=0.0, help="Seconds before each page.")
@click.option(
    "--reject",
    metavar="FIELD=VALUE",
    multiple=True,
    help="Refuse records whose FIELD equals VALUE (400 for that record).",
)
def sandbox_serve(
    crm_seed: Path | None,
    erp_seed: Path | None,
    host: str,
    crm_port: int,
    erp_port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_id: str,
    throttle: str | None,
    error_rate: float,
    page_delay: float,
    reject: tuple[str, ...],
) -> None:
    """Serve both Web APIs on loopback until interrupted. The client secret is read from
    P2C_SANDBOX_SECRET (default: sandbox-secret)."""
    faults = Faults(
        error_rate=error_rate, page_delay=page_delay, reject=dict(r.split("=", 1) for r in reject)
    )
    if throttle:
        count, _, window = throttle.partition("/")
        faults.throttle_requests, faults.throttle_window = int(count), float(window or 1)
    seed = demo_fixtures_dir()
    serve(
        crm_seed or seed / "crm",
        erp_seed or seed / "erp",
        host=host,
        crm_port=crm_port,
        erp_port=erp_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_id=client_id,
        client_secret=sandbox_secret(),
        faults=faults,
    )


@main.group("flows", invoke_without_command=True)
@click.pass_context
def flows_command(ctx: click.Context) -> None:
    """List every flow: direction, source, target, keys, dependencies."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [
        (
            f.name,
            f.direction,
            str(f.source),
            str(f.target),
            ", ".join(f.keys),
            ", ".join(f.depends_on) or "—",
        )
        for f in dependency_order(ALL_FLOWS)
    ]
    _table(("flow", "direction", "source", "target", "keys", "after"), rows)


@flows_command.command("show")
@click.argument("name")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Show the flow with the overrides of this p2c.toml.",
)
@click.option("--markdown", is_flag=True, help="Print a Markdown section instead of a table.")
@_errors_exit
def flows_show(name: str, config_path: Path | None, markdown: bool) -> None:
    """Print the mapping table of flow NAME: target field, source field, rule."""
    try:
        flow = get_flow(name)
    except KeyError:
        raise ConfigError(f"unknown flow {name} (flows: {', '.join(flow_names())})") from None
    if config_path is not None:
        settings = _settings(config_path)
        flow = apply_overrides(flow, settings.flow(name), ContractSet.load(contracts_dir()))
    if markdown:
        click.echo(flow_markdown(flow))
        return
    click.echo(f"{flow.name}: {flow.source} → {flow.target}, keys {', '.join(flow.keys)}")
    for line in flow_header_lines(flow):
        click.echo(line)
    _table(("target field", "source field", "rule"), mapping_rows(flow))


@main.command()
@config_option
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@_errors_exit
def history(config_path: Path, limit: int) -> None:
    """List recent runs, newest first."""
    settings = _settings(config_path)
    if not settings.warehouse_path.exists():
        click.echo("No runs yet.")
        return
    wh = Warehouse.open(settings.warehouse_path)
    try:
        runs = wh.recent_runs(limit)
    finally:
        wh.close()
    rows = [
        (
            r["run_id"],
            r["mode"] + (" (dry)" if r["dry_run"] else ""),
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            str(r["written"]),
            str(r["rejected"]),
            str(r["failed"]),
            r["report_html"] or "",
        )
        for r in runs.iter_rows(named=True)
    ]
    _table(("run", "mode", "status", "started", "written", "rejected", "failed", "report"), rows)


def _exit_code(summary: RunSummary) -> int:
    return {"ok": EXIT_OK, "partial": EXIT_RECORDS}.get(summary.status, EXIT_FAILED)


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        click.echo(summary.to_json())
        return
    if summary.error:
        _event("error", summary.error, run_id=summary.run_id)
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
    _table(
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


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
