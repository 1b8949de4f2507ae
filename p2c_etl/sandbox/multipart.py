"""Reading a `$batch` body: multipart/mixed parts, nested change sets, embedded HTTP requests.

Lines may end in CRLF (as the standard says) or in LF alone (as some clients write them).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2c_etl.connectors import multipart
from p2c_etl.connectors.multipart import header_map, split_head
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError


@dataclass(frozen=True)
class Operation:
    """One request inside a batch; `headers` have lower-case names."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


BatchItem = Operation | list[Operation]


def parse_batch(
    content_type: str, body: bytes, *, content_id_required: bool = True
) -> list[BatchItem]:
    """The requests and change sets of a batch body, in order; a request in a change set
    needs a `Content-ID` where `content_id_required`."""
    items: list[BatchItem] = []
    for headers, content in _parts(content_type, body):
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            changeset = [
                _operation(h, c, nested=content_id_required) for h, c in _parts(kind, content)
            ]
            items.append(changeset)
        else:
            items.append(_operation(headers, content, nested=False))
    return items


def _parts(content_type: str, body: bytes) -> list[multipart.Part]:
    try:
        return multipart.parts(content_type, body)
    except multipart.MultipartError as exc:
        raise ODataError(400, str(exc), BAD_QUERY) from None


def _operation(part_headers: dict[str, str], content: bytes, *, nested: bool) -> Operation:
    kind = part_headers.get("content-type", "").lower()
    if kind.startswith("multipart/"):
        raise ODataError(400, "A change set cannot contain another change set", BAD_QUERY)
    if not kind.startswith("application/http"):
        raise ODataError(400, f"A batch part must be application/http, not {kind!r}", BAD_QUERY)
    head, body = split_head(content)
    line, _, fields = head.partition(b"\n")
    method, url = _request_line(line.decode("utf-8", "replace"))
    headers = header_map(fields)
    content_id = part_headers.get("content-id") or headers.get("content-id")
    if nested and content_id is None:
        raise ODataError(400, "A request in a change set needs a Content-ID", BAD_QUERY)
    return Operation(method, url, headers, _body(body, headers), content_id)


def _request_line(line: str) -> tuple[str, str]:
    """`PATCH accounts(...) HTTP/1.1` → method and URL (a URL with raw spaces is tolerated)."""
    method, _, rest = line.strip().partition(" ")
    url, _, version = rest.rpartition(" ")
    if not version.upper().startswith("HTTP/"):
        url = rest
    if not method or not url.strip():
        raise ODataError(400, "A batch part holds no HTTP request line", BAD_QUERY)
    return method.upper(), url.strip()


def _body(body: bytes, headers: dict[str, str]) -> bytes:
    length = headers.get("content-length", "")
    if length.isdigit():
        return body[: int(length)]
    return body.rstrip(b"\r\n")
