"""Shared fixtures: the demo company in a temporary folder, and the project's contracts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from p2c_etl.config import Settings, load_settings
from p2c_etl.jobs.demo import demo_config_text
from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import contracts_dir, demo_fixtures_dir


@pytest.fixture(scope="session")
def contracts() -> ContractSet:
    return ContractSet.load(contracts_dir())


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A copy of the demo company with its p2c.toml, as `p2c demo` lays it out."""
    root = tmp_path / "demo"
    for system in ("crm", "erp"):
        shutil.copytree(demo_fixtures_dir() / system, root / system)
    (root / "p2c.toml").write_text(demo_config_text(), encoding="utf-8")
    return root


@pytest.fixture
def demo_settings(demo_dir: Path) -> Settings:
    return load_settings(demo_dir / "p2c.toml")


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """A clock that ticks one second per call from a fixed instant."""
    state = {"now": datetime(2026, 1, 31, 22, 0, tzinfo=UTC)}

    def tick() -> datetime:
        state["now"] += timedelta(seconds=1)
        return state["now"]

    return tick


_EXPECTED_FIRST_RUN = {
    "products": dict(
        source_rows=18,
        filtered_out=3,
        rejected=1,
        inserted=2,
        updated=1,
        unchanged=11,
        target_only=2,
        failed=0,
    ),
    "accounts": dict(
        source_rows=40,
        filtered_out=1,
        rejected=4,
        inserted=6,
        updated=2,
        unchanged=27,
        target_only=1,
        failed=0,
    ),
    "contacts": dict(
        source_rows=62,
        filtered_out=10,
        rejected=3,
        inserted=9,
        updated=0,
        unchanged=40,
        target_only=0,
        failed=0,
    ),
    "contact_customers": dict(
        source_rows=62,
        filtered_out=54,
        rejected=0,
        inserted=3,
        updated=0,
        unchanged=5,
        target_only=0,
        failed=0,
    ),
    "quote_headers": dict(
        source_rows=34,
        filtered_out=6,
        rejected=1,
        inserted=15,
        updated=1,
        unchanged=11,
        target_only=0,
        failed=0,
    ),
    "order_headers_out": dict(
        source_rows=31,
        filtered_out=3,
        rejected=0,
        inserted=5,
        updated=0,
        unchanged=23,
        target_only=0,
        failed=0,
    ),
    "quote_lines": dict(
        source_rows=121,
        filtered_out=21,
        rejected=4,
        inserted=54,
        updated=0,
        unchanged=42,
        target_only=0,
        failed=0,
    ),
    "order_lines_out": dict(
        source_rows=88,
        filtered_out=7,
        rejected=0,
        inserted=13,
        updated=0,
        unchanged=68,
        target_only=0,
        failed=0,
    ),
    "order_headers_back": dict(
        source_rows=28,
        filtered_out=6,
        rejected=0,
        inserted=0,
        updated=22,
        unchanged=0,
        target_only=3,
        failed=0,
    ),
    "order_lines_back": dict(
        source_rows=89,
        filtered_out=16,
        rejected=0,
        inserted=8,
        updated=65,
        unchanged=0,
        target_only=7,
        failed=0,
    ),
    "invoice_headers": dict(
        source_rows=20,
        filtered_out=0,
        rejected=0,
        inserted=20,
        updated=0,
        unchanged=0,
        target_only=0,
        failed=0,
    ),
    "invoice_lines": dict(
        source_rows=59,
        filtered_out=0,
        rejected=0,
        inserted=59,
        updated=0,
        unchanged=0,
        target_only=0,
        failed=0,
    ),
}


@pytest.fixture
def expected_first_run() -> dict[str, dict[str, int]]:
    """The counts of the demo's first run, flow by flow (files or HTTP alike)."""
    return {flow: dict(counts) for flow, counts in _EXPECTED_FIRST_RUN.items()}


ENDS = ("filtered_out", "rejected", "inserted", "updated", "unchanged", "failed")


def _assert_accounted(flows: object) -> None:
    for counts in flows:  # type: ignore[attr-defined]
        row = counts if isinstance(counts, dict) else vars(counts)
        ends = sum(int(row[k]) for k in ENDS)
        assert ends == row["source_rows"], f"{row['flow']}: {ends} ends for {row}"


@pytest.fixture
def assert_accounted() -> Callable[[object], None]:
    """Every source row of every flow ends in exactly one of ENDS (the accounting identity).
    Call it with a RunSummary's `flows` (FlowCounts) or the `flows` list of a `--json` summary."""
    return _assert_accounted
