"""What the sandbox's tests share: a bearer token from its token endpoint."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

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
