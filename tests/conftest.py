"""Shared fixtures: the demo company in a temporary folder, and the project's contracts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from p2c_etl.config import Settings, demo_config_text, load_settings
from p2c_etl.contracts import ContractSet
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
