"""OAuth2 client credentials for both Web APIs, as an `httpx.Auth`.

The token is fetched from the Entra ID token endpoint (or the sandbox's), cached until shortly
before it expires, and fetched again once when a request answers 401. The secret is sent only
in the token request's form body; it never reaches a log, an exception or a report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from p2c_etl.config import Secret
from p2c_etl.errors import AuthError

_EARLY = 120.0  # seconds before expiry at which a cached token is renewed


class ClientCredentials(httpx.Auth):
    requires_response_body = True

    def __init__(
        self,
        system: str,
        token_url: str,
        client_id: str,
        secret: Secret,
        scope: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.system, self.token_url, self.client_id = system, token_url, client_id
        self._secret, self.scope, self._clock = secret, scope, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.tokens_fetched = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            token = yield from self._fetch()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            with self._lock:
                if self._token == token:
                    self._token = None
            token = self._cached() or (yield from self._fetch())
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _cached(self) -> str | None:
        with self._lock:
            if self._token is not None and self._clock() < self._expires - _EARLY:
                return self._token
        return None

    def _fetch(self) -> Generator[httpx.Request, httpx.Response, str]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._secret.reveal(),
            "scope": self.scope,
        }
        response = yield httpx.Request("POST", self.token_url, data=form)
        if response.status_code != 200:
            raise AuthError(
                f"{self.system}: the token endpoint {self.token_url} refused client "
                f"{self.client_id} (HTTP {response.status_code}: {_reason(response)})"
            )
        try:
            body = response.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 3599))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AuthError(
                f"{self.system}: the token endpoint {self.token_url} answered without a token"
            ) from None
        with self._lock:
            self._token = token
            self._expires = self._clock() + lifetime
            self.tokens_fetched += 1
            return self._token


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no details"
    return str(body.get("error", "unknown error")) if isinstance(body, dict) else "unknown error"
