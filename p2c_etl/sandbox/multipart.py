"""Reading a `$batch` body: multipart/mixed parts, nested change sets, embedded HTTP requests.

Lines may end in CRLF (as the standard says) or in LF alone (as some clients write them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class Operation:
    """One request inside a batch; `headers` have lower-case names."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


BatchItem = Operation | list[Operation]


def parse_batch(content_type: str, body: bytes) -> list[BatchItem]:
    """The requests and change sets of a batch body, in order."""
    items: list[BatchItem] = []
    for headers, content in _parts(content_type, body):
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            changeset = [_operation(h, c, nested=True) for h, c in _parts(kind, content)]
            items.append(changeset)
        else:
            items.append(_operation(headers, content, nested=False))
    return items


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or match is None:
        raise ODataError(
            400, "A batch needs Content-Type multipart/mixed with a boundary", BAD_QUERY
        )
    return match.group(1) or match.group(2)


def _parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary_of(content_type).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise ODataError(400, "The batch body holds no parts", BAD_QUERY)
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts
        head, content = _split_head(_trim(chunk))
        parts.append((_headers(head), content))
    raise ODataError(400, "The batch body has no closing boundary", BAD_QUERY)


def _trim(chunk: bytes) -> bytes:
    """A part without the rest of its boundary line and the line break before the next one."""
    _, _, rest = chunk.partition(b"\n")
    if rest.endswith(b"\r\n"):
        return rest[:-2]
    return rest[:-1] if rest.endswith(b"\n") else rest


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Header lines and what follows the first empty line."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    if data.startswith((b"\r\n", b"\n")):
        return b"", data.split(b"\n", 1)[1]
    if not ends:
        return data, b""
    index, width = min(ends)
    return data[:index], data[index + width :]


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _operation(part_headers: dict[str, str], content: bytes, *, nested: bool) -> Operation:
    kind = part_headers.get("content-type", "").lower()
    if kind.startswith("multipart/"):
        raise ODataError(400, "A change set cannot contain another change set", BAD_QUERY)
    if not kind.startswith("application/http"):
        raise ODataError(400, f"A batch part must be application/http, not {kind!r}", BAD_QUERY)
    head, body = _split_head(content)
    lines = head.decode("utf-8", "replace").splitlines()
    method, url = _request_line(lines[0] if lines else "")
    headers = _headers("\n".join(lines[1:]).encode())
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
