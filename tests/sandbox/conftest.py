"""What the sandbox's tests share: a bearer token from its token endpoint, and the demo
company as a tenant that keys accounts by account number."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox import Sandbox

CRM_SCOPE = "https://org.crm.dynamics.com/.default"
ERP_SCOPE = "https://usmf.operations.dynamics.com/.default"
Bearer = Callable[..., str]


def bearer_token(sb: Sandbox, scope: str = CRM_SCOPE) -> str:
    """An access token for the sandbox's client, as a real client asks for it."""
    form = {
        "grant_type": "client_credentials",
        "client_id": "p2c-sandbox",
        "client_secret": "sandbox-secret",
        "scope": scope,
    }
    return str(httpx.post(sb.token_url, data=form).json()["access_token"])


@pytest.fixture(scope="session")
def bearer() -> Bearer:
    return bearer_token


PLANTED = "ca14de9f-8d64-5df1-94c6-21415f0abbe0"  # Contoso Pharmaceuticals East, ACC-01006-CONTOS


def keyed_demo(root: Path) -> Path:
    """A copy of the demo company under `root` whose second ACC-01006-CONTOS account (the
    demo's planted duplicate) has a number of its own, so that it can be served with the
    contract's alternate key on accounts (`accounts(accountnumber='...')`)."""
    for system in ("crm", "erp"):
        shutil.copytree(demo_fixtures_dir() / system, root / system)
    path = root / "crm" / "accounts.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    renumbered = [
        line.replace('"ACC-01006-CONTOS"', '"ACC-01037-CONTOE"') if PLANTED in line else line
        for line in lines
    ]
    assert renumbered != lines, "the demo's planted duplicate account moved"
    path.write_text("".join(renumbered), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def keyed_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keyed_demo(tmp_path_factory.mktemp("keyed"))
