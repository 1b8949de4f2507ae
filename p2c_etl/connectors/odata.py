"""What both Web APIs share: retries, error classes, paging straight into polars, `$batch`.

Errors are named by what the caller should do (`classify`):

    retry   429, 503, 502, 504, 500, timeouts, connection resets: wait `Retry-After` (else
            exponential backoff with jitter) and send again, a bounded number of times
    skip    any other 4xx on one record: that record fails with the server's message
    stop    401 / 403: the system refused the credentials (AuthError, exit 2)

Change tracking (`tracked_pages`): a read sent with `Prefer: odata.track-changes`, or the GET
of a delta link, gives pages whose `value` mixes new or changed records with deleted ones
(`@odata.context` ending in `$deletedEntity`, with `id`); the last page has the
`@odata.deltaLink`. A 4xx on such a read is a `LinkRefused`: the caller reads in full.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

import httpx
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from p2c_etl import __version__ as p2c_version
from p2c_etl.connectors import multipart
from p2c_etl.errors import AuthError, ConnectorError
from p2c_etl.model.casting import typed_frame
from p2c_etl.model.keys import record_key

Action = Literal["retry", "skip", "stop"]
_RETRY_STATUS = {429, 500, 502, 503, 504}
TRACK_CHANGES = "odata.track-changes"
DELETED_ENTITY = "$deletedEntity"


def classify(status: int) -> Action:
    """What a caller does about an HTTP status (2xx and 3xx never get here)."""
    if status in (401, 403):
        return "stop"
    if status in _RETRY_STATUS:
        return "retry"
    return "skip"


def error_message(response: httpx.Response) -> str:
    """The server's message from an OData error body, else the status line."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return f"HTTP {response.status_code}" + (f": {text[:300]}" if text else "")
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if isinstance(error, dict) and error.get("message"):
        return f"HTTP {response.status_code}: {error['message']}"
    return f"HTTP {response.status_code}: {str(body)[:300]}"


@dataclass
class RetryPolicy:
    """Bounded retries: `Retry-After` when given, else `base` x 2^attempt with full jitter."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            if retry_after is not None:
                try:
                    return min(max(float(retry_after), 0.0), 300.0)
                except ValueError:
                    pass
        return self.rng.uniform(0, min(self.cap, self.base * 2**attempt))


class ODataClient:
    """Sends requests to one system with retries; turns 401/403 into AuthError."""

    def __init__(self, system: str, client: httpx.Client, retry: RetryPolicy) -> None:
        self.system, self.client, self.retry = system, client, retry

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The response of the first attempt that is not to be retried (may be a 4xx)."""
        for attempt in range(self.retry.attempts):
            try:
                response = self.client.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if _untrusted_certificate(exc):
                    raise ConnectorError(
                        f"{self.system}: {httpx.URL(url).host} presented a TLS certificate this "
                        f"machine does not trust (set systems.{self.system}.ca_file)"
                    ) from None
                if attempt + 1 == self.retry.attempts:
                    raise ConnectorError(
                        f"{self.system}: {method} {_path(url)} failed after "
                        f"{self.retry.attempts} attempts: {type(exc).__name__}"
                    ) from None
                self.retry.sleep(self.retry.delay(attempt, None))
                continue
            action = classify(response.status_code) if response.is_error else None
            if action == "stop":
                raise AuthError(
                    f"{self.system}: {method} {_path(url)} refused ({error_message(response)}); "
                    "check the app registration, its secret and its security role"
                )
            if action != "retry" or attempt + 1 == self.retry.attempts:
                response.extensions["p2c_attempts"] = attempt + 1
                return response
            self.retry.sleep(self.retry.delay(attempt, response))
        raise AssertionError("unreachable")

    @staticmethod
    def was_resent(response: httpx.Response) -> bool:
        """Whether the request went out more than once (an earlier try may have been applied)."""
        return int(response.extensions.get("p2c_attempts", 1)) > 1

    def expect_ok(self, response: httpx.Response, what: str) -> httpx.Response:
        if response.is_error:
            raise ConnectorError(f"{self.system}: {what}: {error_message(response)}")
        return response

    def pages(
        self,
        url: str,
        dtypes: Mapping[str, pl.DataType],
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[pl.DataFrame]:
        """Every page of a collection, following `@odata.nextLink`, each parsed straight into
        a typed polars frame (no per-record Python objects)."""
        where = f"{self.system} {_path(url)}"

        def read(response: httpx.Response) -> tuple[pl.DataFrame, str | None]:
            self.expect_ok(response, f"GET {_path(url)}")
            return parse_page(response.content, dtypes, where)

        return self._paged(url, params, headers, read)

    def printed_pages(
        self,
        url: str,
        dtypes: Mapping[str, pl.DataType],
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        known: str | None,
    ) -> PrintedPages:
        """Every page of a collection, as `pages` reads them, and the read's print: a digest
        of each page's bytes with the query, the columns' types and the versions of the
        code that parses them. When the print is `known` (the bytes of an earlier read, page
        for page), no page is parsed and `frames` is None: the same bytes read by the same
        code are the same records.

        Pages are parsed as soon as one differs from `known`'s page at its place, those
        before it too (kept up to `_HELD_BYTES`, else read again); the links followed are
        cut from the pages' ends (`_tail_link`) and, once parsed, must be the links the
        pages hold. A read with a page whose link is elsewhere (unusual, but valid) is read
        again by `pages`, and has no print."""
        where = f"{self.system} {_path(url)}"
        head = json.dumps(
            [p2c_version, pl.__version__, pa.__version__, repr(dict(dtypes)), url, params]
        ).encode()
        wanted = known.split(",") if known else []

        def raw(response: httpx.Response) -> tuple[tuple[bytes, str | None, str], str | None]:
            """A page's bytes, its link and its digest (made on the fetching thread)."""
            self.expect_ok(response, f"GET {_path(url)}")
            link = _tail_link(response.content)
            digest = hashlib.sha256(head)
            digest.update(response.content)
            return (response.content, link, digest.hexdigest()[:24]), link

        def parse(content: bytes, link: str | None) -> pl.DataFrame:
            frame, parsed = parse_page(content, dtypes, where)
            if parsed != link:
                raise _LinkElsewhere
            return frame

        digests: list[str] = []
        held: list[tuple[bytes, str | None]] = []  # the pages alike so far, up to _HELD_BYTES
        size, dropped = 0, False
        parsing: list[Future[pl.DataFrame]] | None = None if wanted else []
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="p2c-parse") as pool:
            pages = self._paged(url, params, headers, raw)
            for content, link, digest in pages:
                digests.append(digest)
                at = len(digests) - 1
                if parsing is None and (at >= len(wanted) or wanted[at] != digests[-1]):
                    if dropped:  # the pages alike were not kept: read it all again, parsed
                        pages.close()
                        return self.printed_pages(url, dtypes, params, headers, None)
                    parsing = [pool.submit(parse, *page) for page in held]
                    held = []
                if parsing is not None:
                    parsing.append(pool.submit(parse, content, link))
                elif not dropped:
                    held.append((content, link))
                    size += len(content)
                    if size > _HELD_BYTES:
                        held, dropped = [], True
            printed = ",".join(digests)
            if parsing is None and printed == known:
                return PrintedPages(None, printed)
            if parsing is None:  # fewer pages than before, each alike: parse them now
                if dropped:
                    return self.printed_pages(url, dtypes, params, headers, None)
                parsing = [pool.submit(parse, *page) for page in held]
            try:
                frames = [f.result() for f in parsing]
            except _LinkElsewhere:
                return PrintedPages(list(self.pages(url, dtypes, params, headers)), None)
        return PrintedPages(frames, printed)

    def tracked_pages(
        self,
        url: str,
        dtypes: Mapping[str, pl.DataType],
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[TrackedPage]:
        """Every page of a tracked read or a delta, following `@odata.nextLink`; a 4xx (an
        expired or refused token, a refused query) is a LinkRefused."""
        where = f"{self.system} {_path(url)}"

        def read(response: httpx.Response) -> tuple[TrackedPage, str | None]:
            if response.is_error and classify(response.status_code) == "skip":
                raise LinkRefused(error_message(response))
            self.expect_ok(response, f"GET {_path(url)}")
            page = parse_tracked_page(response.content, dtypes, where)
            applied = response.headers.get("Preference-Applied", "")
            page = replace(page, applied=TRACK_CHANGES in applied.lower())
            return page, page.next_link

        return self._paged(url, params, headers, read)

    def _paged(
        self,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        read: Callable[[httpx.Response], tuple[_Page, str | None]],
    ) -> Generator[_Page, None, None]:
        """`read` of each page of a paged GET, in order, fetched and read ahead of the caller
        (`_ReadAhead`): the next page is on its way while this one is parsed, and two pages
        are parsed at once (Arrow's parser leaves the GIL)."""
        ahead = _ReadAhead(self, headers, read)
        try:
            task = ahead.start(url, params)
            while True:
                page, next_url, guessed = ahead.take(task)
                yield page
                if next_url is None:
                    return
                if guessed is not None and guessed.url == next_url:
                    task = guessed
                else:
                    task = ahead.start(next_url, None)
        finally:  # a read stopped early (an error, Ctrl-C) does not wait for pages unused
            ahead.stop()


_Page = TypeVar("_Page")

_HELD_BYTES = 64 << 20
"""How many bytes of pages alike (to the read a print was made from) `printed_pages` keeps
in case a later page differs and they must be parsed after all; past it, such a read is read
again from its start (a large entity set that changed late: rare, and bounded memory)."""

_AHEAD = 3
"""How many pages a paged read holds fetched, or on their way, and not yet taken by its
caller (a read into the warehouse page by page keeps its memory bounded by this)."""


class _Fetch(Generic[_Page]):
    """One page's GET and read, in the background; `next`: the fetch of the link cut from
    its bytes, started as soon as they arrived; `guess`: that link, while its fetch waits
    for room (`_AHEAD`)."""

    __slots__ = ("future", "guess", "next", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.next: _Fetch[_Page] | None = None
        self.guess: str | None = None
        self.future: Future[tuple[_Page, str | None]]


class _ReadAhead(Generic[_Page]):
    """The pages of one paged GET, fetched and read by two threads ahead of the caller.

    When a page's bytes arrive, the next link is cut from their end (`_tail_link`: OData
    writes it after `value`) and its fetch starts at once, while this page is read; when
    `_AHEAD` pages are already fetched and not taken, it starts when the caller takes one.
    The caller uses a fetch so started only when its link is the one `read` parsed from the
    page; otherwise it starts the parsed link, and the fetches started from the wrong guess
    (a GET changes nothing) are left to end unused. Fetches are started and chained under
    one lock."""

    def __init__(
        self,
        client: ODataClient,
        headers: Mapping[str, str] | None,
        read: Callable[[httpx.Response], tuple[_Page, str | None]],
    ) -> None:
        self._client, self._headers, self._read = client, headers, read
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="p2c-page")
        self._lock = threading.Lock()
        self._generation = 0
        """Bumped when the caller starts a fetch itself: earlier fetches start no more."""
        self._held = 0
        """Fetches of this generation started and not yet taken (at most `_AHEAD`)."""
        self._last: _Fetch[_Page] | None = None
        """The latest fetch of this generation: the one a fetch waiting for room follows."""
        self._stopped = False

    def start(self, url: str, params: Mapping[str, str] | None) -> _Fetch[_Page]:
        with self._lock:
            self._generation += 1
            self._held = 0
            return self._submit(url, params)

    def take(self, fetch: _Fetch[_Page]) -> tuple[_Page, str | None, _Fetch[_Page] | None]:
        """The page `fetch` read, its next link, and the fetch started from its bytes."""
        page, next_url = fetch.future.result()
        with self._lock:
            self._held -= 1
            last = self._last
            if last is not None and last.guess is not None and not self._stopped:
                last.next, last.guess = self._submit(last.guess, None), None
        return page, next_url, fetch.next

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, url: str, params: Mapping[str, str] | None) -> _Fetch[_Page]:
        """A fetch of `url` in this generation (the caller holds the lock)."""
        fetch: _Fetch[_Page] = _Fetch(url)
        self._held += 1
        self._last = fetch
        fetch.future = self._pool.submit(self._work, fetch, params, self._generation)
        return fetch

    def _work(
        self, fetch: _Fetch[_Page], params: Mapping[str, str] | None, generation: int
    ) -> tuple[_Page, str | None]:
        response = self._client.send("GET", fetch.url, params=params, headers=self._headers)
        guess = _tail_link(response.content) if response.is_success else None
        if guess is not None:
            with self._lock:
                if not self._stopped and generation == self._generation:
                    if self._held < _AHEAD:
                        fetch.next = self._submit(guess, None)
                    else:
                        fetch.guess = guess  # started by `take`, when a page is taken
        return self._read(response)


_TAIL = 16_384
"""How much of a page's end is searched for its next link (a link is a URL: short)."""
_NEXT_LINK_AT_END = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\]|\\.)*")\s*}\s*$')


def _tail_link(content: bytes) -> str | None:
    """The `@odata.nextLink` that ends a page's JSON object, if it is written last."""
    found = _NEXT_LINK_AT_END.search(content, max(0, len(content) - _TAIL))
    if found is None:
        return None
    try:
        link = json.loads(found.group(1))
    except ValueError:
        return None
    return link if isinstance(link, str) else None


class LinkRefused(ConnectorError):
    """The service refused a tracked read or a delta link (`message`: its own words)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PrintedPages:
    """A read's pages (None: not parsed, the same bytes as the read `known` printed) and
    its print (None: a read that cannot be told apart by one)."""

    frames: list[pl.DataFrame] | None
    printed: str | None


class _LinkElsewhere(Exception):
    """A page's next link is not at its end: the links cut from the ends were not its."""


@dataclass(frozen=True)
class TrackedPage:
    """One page of a tracked read: the new or changed records, the ids of deleted ones."""

    frame: pl.DataFrame
    deleted: list[str]
    next_link: str | None
    delta_link: str | None
    applied: bool = False
    """Whether the response said `Preference-Applied: odata.track-changes`."""


def _untrusted_certificate(exc: BaseException) -> bool:
    """A certificate failure is not transient: retrying cannot help."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _path(url: str) -> str:
    return httpx.URL(url).path


def parse_page(
    content: bytes, dtypes: Mapping[str, pl.DataType], where: str
) -> tuple[pl.DataFrame, str | None]:
    """An OData page's `value` as a frame typed by `dtypes`, and its next link."""
    frame, links = _read_page(content, _as_read(dtypes), ("@odata.nextLink",), where)
    return typed_frame(frame, dtypes, where), links["@odata.nextLink"]


def parse_tracked_page(
    content: bytes, dtypes: Mapping[str, pl.DataType], where: str
) -> TrackedPage:
    """A page of a tracked read or a delta: its records typed by `dtypes` (as `parse_page`),
    the ids of its `$deletedEntity` entries, its next link and its delta link."""
    fields = _as_read(dtypes)
    extra = {"@odata.context": pl.String(), "id": pl.String()}
    fields |= {k: t for k, t in extra.items() if k not in fields}
    tops = ("@odata.nextLink", "@odata.deltaLink")
    frame, links = _read_page(content, fields, tops, where)
    gone = pl.col("@odata.context").fill_null("").str.ends_with(DELETED_ENTITY)
    deleted = frame.filter(gone)["id"].cast(pl.String)
    if deleted.null_count():
        raise ConnectorError(f"{where}: a {DELETED_ENTITY} entry without its id")
    records = frame.filter(~gone).select(list(dtypes))
    return TrackedPage(
        typed_frame(records, dtypes, where),
        deleted.to_list(),
        links["@odata.nextLink"],
        links["@odata.deltaLink"],
    )


def _as_read(dtypes: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The types a page is read as: temporal values as text, cast afterwards."""
    return {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}


def _read_page(
    content: bytes, fields: Mapping[str, pl.DataType], tops: Sequence[str], where: str
) -> tuple[pl.DataFrame, dict[str, str | None]]:
    """A page's `value` records with `fields` (untyped beyond what JSON gives), and the
    page-level links named by `tops`, parsed straight into Arrow."""
    record = pl.DataFrame(schema=fields).to_arrow().schema
    schema = pa.schema(
        [("value", pa.list_(pa.struct(list(record)))), *[(t, pa.string()) for t in tops]]
    )
    options = pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=True
    )
    try:
        # The page is one JSON object: read it as one block, whatever its size.
        read = pajson.ReadOptions(block_size=max(len(content) + 1, 1 << 20))
        table = pajson.read_json(io.BytesIO(content), read_options=read, parse_options=options)
    except pa.ArrowException as exc:
        raise ConnectorError(f"{where}: the page is not the expected JSON: {exc}") from None
    records = table.column("value").combine_chunks().flatten()
    frame = pl.DataFrame(
        pl.from_arrow(pa.Table.from_batches([pa.RecordBatch.from_struct_array(records)]))
    )
    links = {t: table.column(t)[0].as_py() if table.num_rows else None for t in tops}
    return frame, links


def collect(pages: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """All pages of a snapshot as one frame."""
    frames = list(pages)
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def keyed_rows(frames: Iterable[pl.DataFrame], keys: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Every row of `frames` as a dict, with its record key under `__rk`."""
    for frame in frames:
        if frame.height:
            yield from frame.with_columns(record_key(keys).alias("__rk")).iter_rows(named=True)


# --- JSON bodies ----------------------------------------------------------------------------


def json_object(record: Mapping[str, Any]) -> str:
    """One record as a JSON object, encoded by orjson (a `$batch` of a thousand records is
    a thousand of these): decimals keep their digits (an `orjson.Fragment`, never through
    float), dates and date-times as ISO 8601 text."""
    return orjson.dumps(record, default=_json_default, option=_JSON_OPTIONS).decode()


# Dates and date-times go to `_json_default`, so they are written as `isoformat()` does.
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def quote_key(value: Any) -> str:
    """A key value as an OData URL literal: 'O''Brien', numbers bare, GUIDs bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    text = str(value).replace("'", "''")
    if _URL_PLAIN.fullmatch(text):
        return f"'{text}'"
    return "'" + urllib.parse.quote(text, safe="'") + "'"


_URL_PLAIN = re.compile(r"[A-Za-z0-9_.~'-]*")
"""What `quote(..., safe="'")` leaves as it is (most keys: `ACC-0000042`), seen in one match."""


# --- $batch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRequest:
    method: str
    url: str
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    key_url: str | None = None
    """For a create: the address of the record it creates (to confirm it after a resend)."""


@dataclass(frozen=True)
class BatchResponse:
    status: int
    body: str

    @property
    def message(self) -> str:
        try:
            error = json.loads(self.body).get("error", {})
            return f"HTTP {self.status}: {error.get('message') or self.body[:300]}"
        except (ValueError, AttributeError):
            return f"HTTP {self.status}" + (f": {self.body[:300]}" if self.body.strip() else "")


UNANSWERED = "not processed: the service stopped the $batch at an earlier failure"


def batch_outcomes(
    answers: Sequence[BatchResponse], count: int
) -> tuple[list[str], list[str | None]]:
    """(status, message) per request; a request the service did not answer has failed."""
    statuses = ["failed" if a.status >= 400 else "ok" for a in answers]
    messages = [a.message if a.status >= 400 else None for a in answers]
    missing = count - len(answers)
    return statuses[:count] + ["failed"] * missing, messages[:count] + [UNANSWERED] * missing


def batch_body(requests: Sequence[BatchRequest]) -> tuple[str, bytes]:
    """A multipart/mixed `$batch` body with one change set per request (each one atomic on
    its own, so one record's failure never rolls back another's)."""
    batch_id = uuid.uuid4()
    boundary = f"batch_{batch_id}"
    out: list[str] = []
    for i, request in enumerate(requests, start=1):
        changeset = f"changeset_{batch_id}_{i}"
        headers = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        body = request.body or ""
        content_type = "Content-Type: application/json\r\n" if request.body is not None else ""
        out.append(
            f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
            f"--{changeset}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {i}\r\n\r\n"
            f"{request.method} {request.url} HTTP/1.1\r\n{content_type}{headers}\r\n"
            f"{body}\r\n--{changeset}--\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "".join(out).encode("utf-8")


def parse_batch(content_type: str, content: bytes) -> list[BatchResponse]:
    """The responses of a `$batch`, in order, change sets flattened (a split on the
    boundaries: see `connectors.multipart`)."""
    responses: list[BatchResponse] = []
    try:
        for headers, body in multipart.parts(content_type, content):
            kind = headers.get("content-type", "").lower()
            if kind.startswith("multipart/mixed"):
                for inner, answer in multipart.parts(kind, body):
                    if inner.get("content-type", "").lower().startswith("application/http"):
                        responses.append(_http_response(answer))
            elif kind.startswith("application/http"):
                responses.append(_http_response(body))
    except multipart.MultipartError as exc:
        raise ConnectorError(f"unreadable $batch response: {exc}") from None
    return responses


def _http_response(data: bytes) -> BatchResponse:
    head, body = multipart.split_head(data)
    status_line = head.decode("utf-8", "replace").split("\n", 1)[0]
    parts = status_line.split(" ", 2)
    return BatchResponse(status=int(parts[1]), body=body.decode("utf-8").strip())
