"""The one `httpx.Client` a Web API connector talks through: auth, timeouts, pool size."""

from __future__ import annotations

import ssl

import httpx

from p2c_etl.config import SystemSettings
from p2c_etl.connectors.auth import ClientCredentials
from p2c_etl.errors import ConfigError

ENTRA_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


def http_client(settings: SystemSettings, default_scope: str) -> httpx.Client:
    """A client for `settings` with client-credentials auth; the secret must be set."""
    if settings.secret is None:
        raise ConfigError(
            f"{settings.name}: the environment variable {settings.secret_env} "
            f"(systems.{settings.name}.secret_env) holds no client secret"
        )
    assert settings.tenant is not None and settings.client_id is not None
    auth = ClientCredentials(
        system=settings.name,
        token_url=settings.token_url or ENTRA_TOKEN_URL.format(tenant=settings.tenant),
        client_id=settings.client_id,
        secret=settings.secret,
        scope=settings.scope or default_scope,
    )
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    verify: ssl.SSLContext | bool = True
    if settings.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.ca_file))
    return httpx.Client(
        auth=auth, timeout=httpx.Timeout(settings.timeout), limits=limits, verify=verify
    )
