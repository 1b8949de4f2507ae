"""multipart/mixed bodies as `$batch` uses them: parts split on their boundary, each part's
headers and content; change sets are parts whose own content type is multipart/mixed.

A split on the boundary costs microseconds a part, where the standard library's e-mail parser
cost a millisecond and more a record. Lines may end in CRLF (as the standard says) or in LF
alone (as some peers write them). Malformed bodies raise `MultipartError`; the caller decides
what it means (a failed write for a connector, a 400 for the sandbox).
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)

Part = tuple[dict[str, str], bytes]
"""A part's headers (lower-case names) and its content."""


class MultipartError(ValueError):
    """The body is not multipart/mixed with the boundary its content type names."""


def boundary_of(content_type: str) -> str:
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or match is None:
        raise MultipartError("A batch needs Content-Type multipart/mixed with a boundary")
    return match.group(1) or match.group(2)


def parts(content_type: str, body: bytes) -> list[Part]:
    """The parts of `body`, in order, up to its closing boundary."""
    delimiter = b"--" + boundary_of(content_type).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise MultipartError("The batch body holds no parts")
    found: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return found
        head, content = split_head(_trim(chunk))
        found.append((header_map(head), content))
    raise MultipartError("The batch body has no closing boundary")


def _trim(chunk: bytes) -> bytes:
    """A part without the rest of its boundary line and the line break before the next one."""
    _, _, rest = chunk.partition(b"\n")
    if rest.endswith(b"\r\n"):
        return rest[:-2]
    return rest[:-1] if rest.endswith(b"\n") else rest


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Header lines and what follows the first empty line (CRLF or LF line ends)."""
    if data.startswith((b"\r\n", b"\n")):
        return b"", data.split(b"\n", 1)[1]
    crlf = data.find(b"\r\n\r\n")
    # An LF-only empty line ends the head only if it comes first: look before `crlf` alone.
    lf = data.find(b"\n\n", 0, len(data) if crlf < 0 else crlf)
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    if crlf >= 0:
        return data[:crlf], data[crlf + 4 :]
    return data, b""


def header_map(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
