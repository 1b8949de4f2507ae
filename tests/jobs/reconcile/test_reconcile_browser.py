"""The reconciliation report in a real browser: headless Chromium (Debian's package)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from p2c_etl.config import Settings
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch

EVIL = "<script>alert(1)</script>"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed here when missing; skipped only if that cannot be done."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            subprocess.run(command, capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip(
            "Debian's chromium is missing and could not be installed "
            "(apt-get install chromium needs root and access to the Debian mirrors)"
        )
    return found


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="p2c-chromium-")
    try:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_crm_text_is_shown_as_text_and_never_runs(
    chromium: str, demo_dir: Path, demo_settings: Settings, tmp_path: Path
) -> None:
    run_batch(demo_settings)
    accounts = demo_dir / "crm" / "accounts.jsonl"
    accounts.write_text(accounts.read_text().replace('"Wingtip Toys"', f'"{EVIL}"'))
    summary = run_reconcile(demo_settings, flows=["accounts"])
    page = Path(summary.paths["html"]).resolve().as_uri()

    dom = _browser(chromium, "--dump-dom", page).stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the name, as text in a cell
    assert dom.count("<script") == 1  # only the report's own search-and-sort script

    shot = tmp_path / "reconcile.png"
    _browser(chromium, "--window-size=1280,2000", f"--screenshot={shot}", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
