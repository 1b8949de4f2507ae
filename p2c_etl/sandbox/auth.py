"""The token endpoint (`POST /{tenant}/oauth2/v2.0/token`) and the bearer-token check.

Client credentials only, as Microsoft Entra ID answers them: a random access token valid for
`lifetime` seconds on both servers, or an `invalid_client` / `invalid_request` error. The
client secret is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

TOKEN_LIFETIME = 3599


class TokenIssuer:
    """Issues and checks the bearer tokens shared by both servers."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        tenant: str,
        lifetime: float = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self.tenant = tenant
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"TokenIssuer(client_id={self.client_id!r}, tenant={self.tenant!r})"

    def issue(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The status and JSON body answering a token request's form."""
        problem = self._problem(form)
        if problem is not None:
            return problem
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {t: end for t, end in self._tokens.items() if end > now}
            self._tokens[token] = now + self.lifetime
        body = {"token_type": "Bearer", "expires_in": int(self.lifetime), "access_token": token}
        return 200, body | {"ext_expires_in": int(self.lifetime)}

    def valid(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries a live token."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        with self._lock:
            end = self._tokens.get(token.strip())
        return end is not None and end > self._clock()

    def client_of(self, authorization: str | None) -> str | None:
        """The client id a live token was issued to, else None."""
        return self.client_id if self.valid(authorization) else None

    def _problem(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]] | None:
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return _error(
                400,
                "invalid_scope",
                "AADSTS1002012: Client credential flows must have a scope value with "
                "/.default suffixed to the resource identifier.",
            )
        same_id = hmac.compare_digest(form.get("client_id", "").encode(), self.client_id.encode())
        same_secret = hmac.compare_digest(
            form.get("client_secret", "").encode(), self._secret.encode()
        )
        if not (same_id and same_secret):
            return _error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided, or no application with "
                "this identifier in the directory.",
            )
        return None


def _error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}
