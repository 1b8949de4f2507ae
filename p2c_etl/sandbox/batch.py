"""`$batch`: multipart/mixed requests with change sets, answered in kind.

A batch body holds `application/http` parts (one HTTP request each: request line with a
relative or absolute URL, headers, JSON body) and change sets (nested multipart/mixed parts
whose requests carry a `Content-ID`, which Dataverse requires and F&O does not; a later
request may address `$<id>`). Requests outside change sets run independently. A change set
runs in one `atomic()` block: the first request that fails rolls the whole change set back.
Dataverse then answers the change set with that one error response; F&O answers every
request of it, the failed one with its error and the others with 424 Failed Dependency.

Dataverse stops at the first failed request (or change set): the answer holds the responses
up to and including the failure and nothing after it, unless the batch asks
`Prefer: odata.continue-on-error`, which it then names in `Preference-Applied`. Every request
inside a batch runs as the batch's caller (its `Authorization`).

Both services speak OData 4.0, whose only batch format is multipart/mixed: Dataverse's
"Execute batch operations using the Web API" requires it, and neither documents the JSON batch
format of OData 4.01 (`Content-Type: application/json`, a body with `"requests"`). A batch
in that format, or in any type but multipart/mixed, is refused with 415 and an OData error
before any of its requests runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal
from urllib.parse import parse_qsl

from p2c_etl.sandbox.multipart import Operation, parse_batch
from p2c_etl.sandbox.protocol import (
    BAD_QUERY,
    NOT_SUPPORTED,
    ApiRequest,
    ApiResponse,
    ODataError,
    error_response,
)
from p2c_etl.sandbox.resource import relative_path

ChangesetErrors = Literal["single", "each"]
Handler = Callable[[ApiRequest], ApiResponse]
Atomic = Callable[[], AbstractContextManager[None]]
CRLF = b"\r\n"


@dataclass(frozen=True)
class BatchRules:
    """The most requests a batch may hold, and how a failed change set is answered."""

    limit: int
    changeset_errors: ChangesetErrors
    stop_on_error: bool = False
    content_id_required: bool = True


@dataclass(frozen=True)
class _Answer:
    response: ApiResponse
    content_id: str | None


class _ChangesetFailed(Exception):
    def __init__(self, index: int, response: ApiResponse) -> None:
        super().__init__(index)
        self.index, self.response = index, response


def run_batch(req: ApiRequest, rules: BatchRules, handle: Handler, atomic: Atomic) -> ApiResponse:
    """Run every request of a `$batch` request and answer them in one multipart response."""
    if req.method != "POST":
        raise ODataError(405, "$batch takes POST", NOT_SUPPORTED)
    _check_format(req.header("content-type") or "")
    items = parse_batch(
        req.header("content-type") or "", req.body, content_id_required=rules.content_id_required
    )
    total = sum(len(item) if isinstance(item, list) else 1 for item in items)
    if total > rules.limit:
        message = f"The batch holds {total} requests; at most {rules.limit} are allowed."
        raise ODataError(400, message, BAD_QUERY)
    go_on = _continues(req)
    batch_id = uuid.uuid4()
    parts: list[bytes] = []
    changesets = f"changesetresponse_{batch_id}_"
    for number, item in enumerate(items):
        if isinstance(item, list):
            changeset = f"{changesets}{number}"
            part, failed = _changeset(req, item, rules, handle, atomic, changeset)
        else:
            answer = _run(req, item, {}, handle)
            part, failed = _http_part(_Answer(answer, item.content_id)), answer.status >= 400
        parts.append(part)
        if failed and rules.stop_on_error and not go_on:
            break
    boundary = f"batchresponse_{batch_id}"
    headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
    if go_on and rules.stop_on_error:
        headers["Preference-Applied"] = "odata.continue-on-error"
    return ApiResponse(200, headers, _multipart(parts, boundary))


def _check_format(content_type: str) -> None:
    """Refuse (415) a batch body that is not multipart/mixed, naming the JSON format."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "multipart/mixed":
        return
    if kind == "application/json":
        message = (
            "The JSON batch format (OData 4.01) is not supported: send $batch as "
            "multipart/mixed with a boundary (OData 4.0)."
        )
    else:
        shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
        message = f"A batch is multipart/mixed with a boundary, not {shown}."
    raise ODataError(415, message, NOT_SUPPORTED)


def _continues(req: ApiRequest) -> bool:
    value = req.prefers("odata.continue-on-error")
    return value is not None and value.lower() != "false"


def _changeset(
    req: ApiRequest,
    operations: list[Operation],
    rules: BatchRules,
    handle: Handler,
    atomic: Atomic,
    boundary: str,
) -> tuple[bytes, bool]:
    """The answer part of a change set (delimited by `boundary`), and whether it failed."""
    answers: list[_Answer] = []
    ids: dict[str, str] = {}
    try:
        with atomic():
            for index, operation in enumerate(operations):
                response = _run(req, operation, ids, handle)
                if response.status >= 400:
                    raise _ChangesetFailed(index, response)
                answers.append(_Answer(response, operation.content_id))
                _remember(ids, operation, response)
    except _ChangesetFailed as failed:
        failing = operations[failed.index]
        if rules.changeset_errors == "single":
            return _http_part(_Answer(failed.response, failing.content_id)), True
        answers = [
            _Answer(_rolled_back(i, failed), op.content_id) for i, op in enumerate(operations)
        ]
        return _changeset_part(answers, boundary), True
    return _changeset_part(answers, boundary), False


def _changeset_part(answers: list[_Answer], boundary: str) -> bytes:
    nested = _multipart([_http_part(a) for a in answers], boundary)
    head = f"Content-Type: multipart/mixed; boundary={boundary}".encode()
    return head + CRLF + CRLF + nested


def _rolled_back(index: int, failed: _ChangesetFailed) -> ApiResponse:
    if index == failed.index:
        return failed.response
    message = f"Not applied: request {failed.index + 1} of the change set failed."
    return error_response(424, message, BAD_QUERY)


def _remember(ids: dict[str, str], operation: Operation, response: ApiResponse) -> None:
    entity = response.headers.get("OData-EntityId") or response.headers.get("Location")
    if operation.content_id and entity:
        ids[operation.content_id] = entity


def _run(
    outer: ApiRequest, operation: Operation, ids: dict[str, str], handle: Handler
) -> ApiResponse:
    try:
        return handle(_request(outer, operation, ids))
    except ODataError as error:
        return error_response(error.status, error.message, error.code)


def _request(outer: ApiRequest, operation: Operation, ids: dict[str, str]) -> ApiRequest:
    url = operation.url
    if url.startswith("$"):
        ref, _, rest = url[1:].partition("/")
        if ref not in ids:
            raise ODataError(400, f"No request with Content-ID {ref} precedes {url!r}", BAD_QUERY)
        url = ids[ref] + ("/" + rest if rest else "")
    path, query = relative_path(url, outer.root)
    if path.split("?")[0] == "$batch":
        raise ODataError(400, "A $batch cannot contain another $batch", BAD_QUERY)
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    caller = {"authorization": outer.header("authorization") or ""}
    headers = caller | operation.headers
    return ApiRequest(operation.method, path, params, headers, operation.body, outer.root)


def _http_part(answer: _Answer) -> bytes:
    response = answer.response
    content_id = f"Content-ID: {answer.content_id}\r\n" if answer.content_id else ""
    fields = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
    head = (
        f"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n{content_id}"
        f"\r\nHTTP/1.1 {response.status} {_PHRASES[response.status]}\r\n{fields}\r\n"
    )
    return head.encode() + response.body


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def _multipart(parts: list[bytes], boundary: str) -> bytes:
    mark = b"--" + boundary.encode()
    body = b"".join(mark + CRLF + part + CRLF for part in parts)
    return body + mark + b"--" + CRLF
