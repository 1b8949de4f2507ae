"""The runs ledger as users ask for it: recent runs (`p2c history`), and old snapshots dropped
(`p2c prune`; the ledger and every reconciliation stay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from p2c_etl.config import Settings
from p2c_etl.jobs.wiring import open_warehouse


def recent_runs(settings: Settings, limit: int) -> pl.DataFrame | None:
    """The latest `limit` runs, newest first; None when no run has made the warehouse yet."""
    if not settings.warehouse_path.exists():
        return None
    with open_warehouse(settings) as wh:
        return wh.recent_runs(limit)


def prune_runs(settings: Settings, keep_days: int) -> tuple[int, int]:
    """Drop the snapshots of runs older than `keep_days`: (runs pruned, tables dropped)."""
    before = datetime.now(UTC) - timedelta(days=keep_days)
    with open_warehouse(settings) as wh:
        return wh.prune(before)
