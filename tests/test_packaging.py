"""A non-editable install must carry the contracts, templates and demo fixtures."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_the_wheel_holds_contracts_templates_and_fixtures(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("p2c_etl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "p2c_etl/_data/contracts/crm/accounts.toml",
        "p2c_etl/_data/contracts/erp/CustomersV2.toml",
        "p2c_etl/_data/templates/run.html",
        "p2c_etl/_data/fixtures/demo/crm/accounts.jsonl",
        "p2c_etl/_data/fixtures/demo/erp/SellableReleasedProducts.jsonl",
    ):
        assert expected in names
    assert not any(n.endswith("make_demo.py") for n in names)
