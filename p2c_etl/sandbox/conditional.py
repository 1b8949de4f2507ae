"""Conditional requests by ETag (`W/"<version>"`): `If-None-Match` on a read (304 when the
record still has a listed tag, or any tag for `*`) and on a change (412 when it lists the
record's tag), `If-Match` on a change or a delete (412 when the record's tag is not listed;
`*` matches any record)."""

from __future__ import annotations

from p2c_etl.sandbox.protocol import DUPLICATE, ApiRequest, ApiResponse, ODataError
from p2c_etl.sandbox.query import etag
from p2c_etl.sandbox.store import Row


def _tags(header: str) -> set[str]:
    return {t.strip() for t in header.split(",") if t.strip()}


def not_modified(req: ApiRequest, row: Row) -> ApiResponse | None:
    """The 304 answering a read whose `If-None-Match` lists the record's tag, else None."""
    header = req.header("if-none-match")
    if header is None:
        return None
    tags = _tags(header)
    if "*" in tags or etag(row) in tags:
        return ApiResponse(304, {"ETag": etag(row)})
    return None


def check_if_match(header: str | None, row: Row | None) -> None:
    """412 when `If-Match` names tags and the record has none of them."""
    if header is None or row is None:
        return
    tags = _tags(header)
    if "*" not in tags and etag(row) not in tags:
        raise ODataError(412, "The version of the record does not match If-Match.", DUPLICATE)


def check_if_none_match(header: str | None, row: Row | None) -> None:
    """412 when a change's `If-None-Match` lists the record's tag (`*` is the create-only
    mode of an upsert, handled by its caller)."""
    if header is None or row is None or header.strip() == "*":
        return
    if etag(row) in _tags(header):
        raise ODataError(412, "The record matches If-None-Match.", DUPLICATE)
