"""The runs ledger as users ask for it: recent runs (`p2c history`), and old snapshots dropped
(`p2c prune`; the ledger and every reconciliation stay).

`p2c history` never waits for a run: it reads the ledger read-only, at once, and when a run
(or a reconciliation) is inside the warehouse it says so instead, naming it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from p2c_etl.config import Settings
from p2c_etl.errors import LockedError
from p2c_etl.jobs.wiring import open_warehouse
from p2c_etl.warehouse.lock import reconciliations_in_progress, run_in_progress
from p2c_etl.warehouse.store import Warehouse


@dataclass(frozen=True)
class History:
    """The latest runs, newest first (None when no run has made the warehouse yet, or when
    it is `busy`), the run holding the run lock if any, and why the ledger could not be read."""

    runs: pl.DataFrame | None
    in_progress: str | None = None
    busy: str | None = None


def recent_runs(settings: Settings, limit: int) -> History:
    """The latest `limit` runs, without waiting for a run that is inside the warehouse."""
    in_progress = run_in_progress(settings.warehouse_path)
    if not settings.warehouse_path.exists():
        return History(None, in_progress)
    try:
        wh = Warehouse.open_read_only(settings.warehouse_path)
    except LockedError as exc:
        inside = in_progress or ", ".join(reconciliations_in_progress(settings.warehouse_path))
        return History(None, in_progress, busy=inside or str(exc))
    try:
        return History(wh.recent_runs(limit), in_progress)
    finally:
        wh.close()


def prune_runs(settings: Settings, keep_days: int) -> tuple[int, int]:
    """Prune the runs older than `keep_days` (`Warehouse.prune`): (runs pruned, tables dropped)."""
    before = datetime.now(UTC) - timedelta(days=keep_days)
    with open_warehouse(settings) as wh:
        return wh.prune(before)
