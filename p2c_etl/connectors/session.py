"""The one `httpx.Client` a Web API connector talks through: auth, timeouts, pool size."""

from __future__ import annotations

import functools
import os
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
    trust = (
        str(settings.ca_file) if settings.ca_file is not None else None,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )
    return httpx.Client(
        auth=auth, timeout=httpx.Timeout(settings.timeout), limits=limits, verify=_context(*trust)
    )


@functools.lru_cache(maxsize=8)
def _context(ca_file: str | None, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """The TLS context of a client that trusts `ca_file` (else what httpx trusts by default:
    `SSL_CERT_FILE`, `SSL_CERT_DIR` or certifi's bundle), made once per process: loading a
    bundle costs about 30 ms, and a run opens a client per system. A context is safe to share
    between clients and threads once made."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=ca_file)
    return httpx.create_ssl_context()
