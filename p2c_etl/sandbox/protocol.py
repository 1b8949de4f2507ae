"""What the sandbox's services exchange: a request, a response and an OData error.

The Dataverse and F&O services answer an `ApiRequest` with an `ApiResponse` and know nothing
of the HTTP framework, so one handler serves a top-level request and a request inside a
`$batch` alike. A handler that cannot do what was asked raises `ODataError`; the service
turns it into the `{"error": {"code": ..., "message": ...}}` body both APIs send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

JSON_TYPE = "application/json; odata.metadata=minimal"

NOT_FOUND = "0x80040217"
DUPLICATE = "0x80040237"
DUPLICATE_KEY = "0x80060892"
BAD_PAYLOAD = "0x80048d19"
BAD_QUERY = "0x80060888"
NOT_SUPPORTED = "0x80040800"
UNAUTHORIZED = "0x80072560"
THROTTLED = "0x80072322"
UNAVAILABLE = "0x80040216"
REFUSED = "0x80040265"

_DECODER = json.JSONDecoder(parse_float=Decimal)
"""Numbers with a fraction or exponent read as exact decimals; made once, not per body (as
`json.loads(..., parse_float=)` does)."""


@dataclass(frozen=True)
class ApiRequest:
    """One request to a service: `path` is below the service root, decoded, no leading `/`."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    root: str
    """The absolute service root, ending in `/` (for nextLinks and entity ids)."""

    def header(self, name: str) -> str | None:
        """A request header by its lower-case name."""
        return self.headers.get(name.lower())

    def json(self) -> object:
        """The body as JSON with decimals kept exact; 400 when it is not JSON."""
        body = self.body or b"null"
        try:
            return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ODataError(
                400, f"The request body is not valid JSON: {exc}", BAD_PAYLOAD
            ) from None

    def prefers(self, name: str) -> str | None:
        """The value of one `Prefer` preference ("" when given without a value), else None.
        Preferences are split at commas outside quotes: `odata.include-annotations="a,b"`."""
        for part in _outside_quotes(self.header("prefer") or "", ","):
            key, _, value = part.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"')
        return None


def _outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


@dataclass
class ApiResponse:
    """A service's answer; `headers` are sent as given."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class ODataError(Exception):
    """The request cannot be done; `status` and `code` say why, `message` says what."""

    def __init__(self, status: int, message: str, code: str = BAD_QUERY) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def not_implemented(what: str) -> ODataError:
    """A 501 for a documented feature the sandbox does not implement."""
    return ODataError(501, f"{what} is not implemented by the sandbox.", NOT_SUPPORTED)


def error_response(status: int, message: str, code: str) -> ApiResponse:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return ApiResponse(status, {"Content-Type": JSON_TYPE}, body)


def from_error(error: ODataError) -> ApiResponse:
    return error_response(error.status, error.message, error.code)


def json_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> ApiResponse:
    return ApiResponse(status, {"Content-Type": JSON_TYPE, **(headers or {})}, body)
