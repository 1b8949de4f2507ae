"""`p2c migrate`: a one-off load of history from export files, a chunk at a time.

for each flow whose source the export folder holds, in dependency order:
    reference data and inputs: from the export folder where it holds them, else the system
    snapshot the target (what it already holds: a re-run or a resume finds its own writes)
    for each chunk of the export file (a resumed migration skips the committed ones):
        read → window (--since / --until) → prepare → keys an earlier chunk had are rejects
        → compare with the target → load
        commit the chunk's rejects, changes, failed writes, counts and checkpoint together

A kill at any moment loses at most the chunk in flight; the target may already hold some of
its records, and the resumed chunk finds them unchanged, so none is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.connectors.exports import find_export
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.errors import ConfigError, P2CError, StageError
from p2c_etl.jobs.migrate.flow_job import FlowJob
from p2c_etl.jobs.migrate.options import Bars, MigrateOptions, no_bars
from p2c_etl.jobs.run import closed_run, fail_run
from p2c_etl.jobs.wiring import (
    Clock,
    Crash,
    Progress,
    closing_all,
    connector_for,
    interruption,
    new_run_id,
    open_warehouse,
    select_flows,
    utc_now,
)
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Context, Flow
from p2c_etl.model.summary import FlowCounts, RunSummary
from p2c_etl.resources import contracts_dir
from p2c_etl.warehouse.lock import RunLock
from p2c_etl.warehouse.store import Warehouse


def run_migrate(
    settings: Settings,
    options: MigrateOptions,
    *,
    clock: Clock = utc_now,
    progress: Progress = lambda _: None,
    bars: Bars = no_bars,
) -> RunSummary:
    """Migrate the export folder into the configured systems; a stage failure or an
    unexpected exception ends the migration as `failed` (resumable), not raised."""
    contracts = ContractSet.load(contracts_dir())
    started = clock()
    run_id = options.resume or new_run_id(started)
    with RunLock(settings.warehouse_path, f"p2c migrate {run_id}"):
        with open_warehouse(settings) as wh:
            wh.fail_stale_runs()
            options = _begin(wh, settings, contracts, options, run_id, started)
        systems: tuple[SystemName, ...] = ("crm", "erp")
        try:
            flows = _flows(settings, contracts, options)
            connectors = {name: _connector(settings, name, contracts) for name in systems}
        except BaseException as exc:  # the ledger entry is open: close it
            fail_run(
                settings,
                run_id,
                str(exc) if isinstance(exc, P2CError) else interruption(exc),
                clock,
            )
            raise
        with closing_all(connectors):
            return _migrate(
                settings, contracts, options, run_id, flows, connectors, clock, progress, bars
            )


def _begin(
    wh: Warehouse,
    settings: Settings,
    contracts: ContractSet,
    options: MigrateOptions,
    run_id: str,
    at: datetime,
) -> MigrateOptions:
    """Start the ledger entry, or reopen the one a resume names (with its stored options)."""
    if options.chunk_rows < 1:
        raise ConfigError("--chunk-rows must be at least 1")
    if options.resume is None:
        if not options.source.is_dir():
            raise ConfigError(f"export folder {options.source} does not exist")
        flows = _flows(settings, contracts, options)
        wh.start_run(run_id, "migrate", options.dry_run, [f.name for f in flows], at)
        wh.con.execute(
            "INSERT INTO migrations (run_id, source, chunk_rows, since, until, exports) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                run_id,
                str(options.source.resolve()),
                options.chunk_rows,
                options.since,
                options.until,
                json.dumps(
                    _fingerprints(find_export(options.source, f.source.entity) for f in flows)
                ),
            ],
        )
        return options
    run = wh.run(run_id)
    stored = wh.query("SELECT * FROM migrations WHERE run_id = ?", [run_id])
    if run is None or run["mode"] != "migrate" or stored.height == 0:
        raise ConfigError(f"there is no migration {run_id} to resume (see p2c history)")
    if run["status"] not in ("failed", "running"):
        raise ConfigError(f"migration {run_id} ended {run['status']}; there is nothing to resume")
    row = stored.row(0, named=True)
    source = Path(row["source"])
    then = json.loads(row["exports"] or "{}")
    now = _fingerprints(source / name for name in then)
    changed = sorted(name for name in then if now.get(name) != then[name])
    if changed:
        raise ConfigError(
            f"migration {run_id}: {', '.join(changed)} in {source} changed since it started; "
            "resuming would skip or repeat records. Run the migration again without --resume: "
            "what it already wrote is found unchanged and not written twice"
        )
    wh.con.execute(
        "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL WHERE run_id = ?",
        [run_id],
    )
    return MigrateOptions(
        source=Path(row["source"]),
        flows=tuple(run["flows"]),
        since=row["since"],
        until=row["until"],
        chunk_rows=int(row["chunk_rows"]),
        dry_run=bool(run["dry_run"]),
        resume=run_id,
    )


def _fingerprints(paths: Iterable[Path | None]) -> dict[str, list[int]]:
    """Size and modification time of each export a migration reads: a resume must read the
    same files, or its chunks would not be the ones it committed."""
    out: dict[str, list[int]] = {}
    for path in paths:
        if path is not None and path.is_file():
            stat = path.stat()
            out[path.name] = [stat.st_size, stat.st_mtime_ns]
    return out


def _flows(settings: Settings, contracts: ContractSet, options: MigrateOptions) -> list[Flow]:
    """The flows asked for (each must have its export), else every enabled flow whose
    source entity set the export folder holds."""
    chosen = select_flows(settings, contracts, options.flows or None)
    if options.flows:
        for flow in chosen:
            if find_export(options.source, flow.source.entity) is None:
                raise ConfigError(
                    f"flow {flow.name}: {options.source} has no export of "
                    f"{flow.source.entity} ({flow.source.entity}.parquet, .csv or .jsonl)"
                )
        return chosen
    found = [f for f in chosen if find_export(options.source, f.source.entity) is not None]
    if not found:
        raise ConfigError(
            f"{options.source} holds no export for any flow (expected files such as "
            f"accounts.csv or CustomersV2.parquet; see p2c flows)"
        )
    return found


def _connector(settings: Settings, name: SystemName, contracts: ContractSet) -> Connector:
    """The configured system; a files system keeps large entity sets as folders of parts,
    so that each chunk adds a part instead of rewriting the whole entity set."""
    system = settings.system(name)
    if system.kind == "files":
        assert system.path is not None
        return FilesConnector(name, system.path, contracts, new_layout="folder")
    return connector_for(system, contracts)


def _migrate(
    settings: Settings,
    contracts: ContractSet,
    options: MigrateOptions,
    run_id: str,
    flows: list[Flow],
    connectors: dict[SystemName, Connector],
    clock: Clock,
    progress: Progress,
    bars: Bars,
) -> RunSummary:
    context: Context = {"company": settings.company, "rounding": settings.rounding}
    verb = "resuming" if options.resume else "migrating"
    progress(
        f"migrate {run_id}: {verb} {len(flows)} flows from {options.source}, "
        f"{options.chunk_rows:,} records a chunk" + (" (dry run)" if options.dry_run else "")
    )
    counts: list[FlowCounts] = []
    error: str | None = None
    crash: Crash | None = None
    flow_name = ""
    try:
        for i, flow in enumerate(flows):
            flow_name = flow.name
            with open_warehouse(settings) as wh:
                job = FlowJob(wh, run_id, flow, options, contracts, connectors, context, clock)
                counts.append(job.run(flows[:i], progress, bars))
    except P2CError as exc:
        error = str(exc)
        crash = exc.cause if isinstance(exc, StageError) and isinstance(exc.cause, Crash) else None
    except Exception as exc:  # a bug: the migration fails naming the flow (resumable)
        crash = Crash(exc)
        error = f"run {run_id}: migration of flow {flow_name!r} failed: {crash}"
    except BaseException as exc:
        fail_run(settings, run_id, interruption(exc), clock)
        raise
    return closed_run(
        settings, flows, run_id, "migrate", options.dry_run, error, crash, counts, clock
    )
