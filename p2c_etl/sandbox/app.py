"""One server's starlette app: the token endpoint, `/_sandbox/*` and the data service.

Every data request needs a live bearer token (401 otherwise), then passes the fault gate
(429 / 503 with `Retry-After`), waits `page_delay` if it is a GET, and is answered by the
service. Responses carry `OData-Version: 4.0`. Requests, statuses and records are counted in
the server's `Stats`; `/_sandbox/*` needs the same bearer token (401 otherwise), sees no
faults and is not counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from p2c_etl.sandbox.auth import TokenIssuer
from p2c_etl.sandbox.changetracking import ChangeTracking
from p2c_etl.sandbox.faults import FaultGate, Faults
from p2c_etl.sandbox.protocol import (
    THROTTLED,
    UNAUTHORIZED,
    UNAVAILABLE,
    ApiRequest,
    ApiResponse,
    error_response,
)
from p2c_etl.sandbox.resource import endpoint_key
from p2c_etl.sandbox.stats import Stats

_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]


class Service(Protocol):
    def handle(self, req: ApiRequest) -> ApiResponse: ...


@dataclass(frozen=True)
class Admin:
    """What `/_sandbox/*` reads and changes; shared by both servers."""

    faults: Faults
    stats: Callable[[], dict[str, Any]]
    reset_stats: Callable[[], None]
    tracking: ChangeTracking


@dataclass(frozen=True)
class ServerParts:
    service: Service
    service_path: str
    issuer: TokenIssuer
    gate: FaultGate
    stats: Stats
    admin: Admin


def build_app(parts: ServerParts) -> Starlette:
    token_path = f"/{parts.issuer.tenant}/oauth2/v2.0/token"
    routes = [
        Route(token_path, _token_endpoint(parts), methods=["POST"]),
        Route("/_sandbox/stats", _admin(parts, _stats_endpoint(parts.admin)), methods=["GET"]),
        Route(
            "/_sandbox/faults",
            _admin(parts, _faults_endpoint(parts.admin)),
            methods=["GET", "POST"],
        ),
        Route(
            "/_sandbox/reset-stats", _admin(parts, _reset_endpoint(parts.admin)), methods=["POST"]
        ),
        Route(
            "/_sandbox/change-tracking",
            _admin(parts, _tracking_endpoint(parts.admin)),
            methods=["GET", "POST"],
        ),
        Route(parts.service_path + "{rest:path}", _data_endpoint(parts), methods=_METHODS),
    ]
    return Starlette(routes=routes)


Endpoint = Callable[[Request], Any]


def _token_endpoint(parts: ServerParts) -> Endpoint:
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        parts.stats.request("POST token")
        status, body = parts.issuer.issue(form)
        parts.stats.status(status)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return token


def _admin(parts: ServerParts, endpoint: Endpoint) -> Endpoint:
    """`endpoint` behind the same bearer token as the data service (401 without one): who
    may switch faults on, or read what was written, is who may call the APIs."""

    async def guarded(request: Request) -> Response:
        if not parts.issuer.valid(request.headers.get("authorization")):
            return _unauthorized(parts, str(request.base_url).rstrip("/"))
        response: Response = await endpoint(request)
        return response

    return guarded


def _unauthorized(parts: ServerParts, base: str) -> Response:
    answer = _unauthorized_answer(parts, base)
    headers = {"OData-Version": "4.0", **answer.headers}
    return Response(answer.body, status_code=answer.status, headers=headers)


def _unauthorized_answer(parts: ServerParts, base: str) -> ApiResponse:
    answer = error_response(401, "The request needs a valid bearer token.", UNAUTHORIZED)
    authority = f"{base}/{parts.issuer.tenant}/oauth2/authorize"
    answer.headers["WWW-Authenticate"] = f"Bearer authorization_uri={authority}"
    return answer


def _stats_endpoint(admin: Admin) -> Endpoint:
    async def stats(request: Request) -> Response:
        return JSONResponse(admin.stats())

    return stats


def _faults_endpoint(admin: Admin) -> Endpoint:
    """GET: the faults planted; POST a JSON object of Faults fields to change them."""
    return _settings_endpoint(admin.faults.as_dict, admin.faults.update, "of Faults fields")


def _tracking_endpoint(admin: Admin) -> Endpoint:
    """GET: which entity sets do not track changes, and the token lifetime; POST a JSON
    object to change them (see `ChangeTracking.update`)."""
    return _settings_endpoint(admin.tracking.as_dict, admin.tracking.update, "")


def _settings_endpoint(
    shown: Callable[[], dict[str, Any]], update: Callable[[dict[str, Any]], None], of: str
) -> Endpoint:
    async def settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError(" ".join(("the body must be a JSON object", of)).strip())
                update(changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(shown())

    return settings


def _reset_endpoint(admin: Admin) -> Endpoint:
    async def reset(request: Request) -> Response:
        admin.reset_stats()
        return JSONResponse(admin.stats())

    return reset


def _data_endpoint(parts: ServerParts) -> Endpoint:
    async def data(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        api = ApiRequest(
            method=request.method,
            path=request.path_params["rest"],
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            root=base + parts.service_path,
        )
        parts.stats.request(endpoint_key(api.method, api.path))
        answer = await _answer(parts, api, base)
        parts.stats.status(answer.status)
        headers = {"OData-Version": "4.0", **answer.headers}
        return Response(answer.body, status_code=answer.status, headers=headers)

    return data


async def _answer(parts: ServerParts, api: ApiRequest, base: str) -> ApiResponse:
    if not parts.issuer.valid(api.header("authorization")):
        return _unauthorized_answer(parts, base)
    refusal = parts.gate.check()
    if refusal is not None:
        code = THROTTLED if refusal.status == 429 else UNAVAILABLE
        response = error_response(refusal.status, refusal.message, code)
        response.headers["Retry-After"] = str(refusal.retry_after)
        return response
    delay = parts.admin.faults.page_delay
    if api.method == "GET" and delay > 0:
        await asyncio.sleep(delay)
    return parts.service.handle(api)
