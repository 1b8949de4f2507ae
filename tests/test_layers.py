"""The layering of p2c_etl (pyproject's [tool.importlinter]) is checked, and the check bites:
an upward import planted in a copy of the package breaks it, naming both modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "p2c_etl", tmp_path / "p2c_etl", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "planted", "names"),
    [
        ("model/keys.py", "from p2c_etl.jobs.run import run_batch", "p2c_etl.model.keys"),
        ("stages/diff.py", "from p2c_etl.cli import main", "p2c_etl.stages.diff"),
        ("sandbox/store.py", "from p2c_etl.stages.load import load_flow", "p2c_etl.sandbox.store"),
        ("stages/load.py", "from p2c_etl.flows import ALL_FLOWS", "p2c_etl.stages.load"),
    ],
)
def test_an_upward_import_breaks_the_layering_check(
    tmp_path: Path, module: str, planted: str, names: str
) -> None:
    root = _copy(tmp_path)
    assert _lint(root).returncode == 0, "the unchanged copy must pass"
    path = root / "p2c_etl" / module
    path.write_text(path.read_text() + f"\n{planted}  # noqa\n", encoding="utf-8")
    result = _lint(root)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout
    assert names in result.stdout
