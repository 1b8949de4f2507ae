"""The Finance and Operations OData connector: `/data/`.

Reads: `cross-company=true` (every company's records, as the files connector sees them; the
flows scope them by `dataAreaId`), `$select` of the mapped columns, server-driven paging with
`@odata.nextLink`, each page parsed straight into polars.

Reads by high-water mark (`read_changes`), for an entity whose contract declares the column
the system sets at every write (`modified`; standard entities have none): the first read takes
every record and keeps the latest modification time it saw as the mark; the next reads
`$filter=<column> ge <mark less [systems.erp] high_water_lag>` and moves the mark on. A mark
never sees a delete: that is what the scheduled full read (`[run] full_every`) is for.

Writes: `$batch` requests of up to 1,000 operations, one change set per record, so one record's
failure never rolls back another's: `POST EntitySet` for new records (with `Prefer:
return=minimal`: answered 204 with the record's address, not the record sent back), `PATCH
EntitySet(dataAreaId='usmf',Key='O''Brien')` with only the changed columns for updates. F&O has
no single-call upsert; p2c-etl knows from its snapshot which records exist.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Any, TypeVar
from xml.etree import ElementTree

import httpx
import polars as pl

from p2c_etl.config import SystemName, SystemSettings
from p2c_etl.connectors.badrows import BadSink
from p2c_etl.connectors.base import RESULT_SCHEMA, ChangeRead, PrintedRead, WriteBatch
from p2c_etl.connectors.odata import (
    BatchRequest,
    ODataClient,
    RetryPolicy,
    batch_body,
    batch_outcomes,
    collect,
    json_object,
    keyed_rows,
    parse_batch,
    quote_key,
)
from p2c_etl.connectors.session import http_client
from p2c_etl.model.contracts import ContractSet

BATCH_SIZE = 1000
T = TypeVar("T")
HEADERS = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}
CREATE_HEADERS = {"Prefer": "return=minimal"}
"""A create is answered with its status and address alone (OData 4.0, part 1, 8.2.8.7): the
record sent is not sent back, parsed and thrown away, a million times in a first sync. A
service that ignores the preference answers 201 with the record, which reads the same."""


class FinOpsConnector:
    system: SystemName = "erp"

    def __init__(
        self,
        settings: SystemSettings,
        contracts: ContractSet,
        client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        assert settings.url is not None
        self.settings, self.contracts = settings, contracts
        self.root = settings.url + "/data/"
        self.client = client or http_client(settings, default_scope=f"{settings.url}/.default")
        self.odata = ODataClient("erp", self.client, retry or RetryPolicy())
        self._metadata: dict[str, set[str]] | None = None

    def close(self) -> None:
        self.client.close()

    def pages(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,  # a page is typed whole: a bad value stops the read
        where: str | None = None,
    ) -> Iterator[pl.DataFrame]:
        """Every record of `entity` (those matching the `$filter` `where`, when given)."""
        url, dtypes, params, headers = self._query(entity, columns, where)
        if missing_ok and self._missing(url):
            yield pl.DataFrame(schema=dtypes)
            return
        for page in self.odata.pages(url, dtypes, params, headers):
            yield _no_empty_dates(page)

    def printed_snapshot(
        self, entity: str, columns: Sequence[str], known: str | None, *, missing_ok: bool = False
    ) -> PrintedRead:
        """`snapshot`, and its print; not parsed when the print is `known`."""
        url, dtypes, params, headers = self._query(entity, columns, None)
        if missing_ok and self._missing(url):
            return PrintedRead(pl.DataFrame(schema=dtypes), None)
        read = self.odata.printed_pages(url, dtypes, params, headers, known)
        if read.frames is None:
            return PrintedRead(None, read.printed)
        return PrintedRead(collect(_no_empty_dates(p) for p in read.frames), read.printed)

    def _query(
        self, entity: str, columns: Sequence[str], where: str | None
    ) -> tuple[str, dict[str, pl.DataType], dict[str, str], dict[str, str]]:
        """The URL, column types, query and headers of a paged read of `entity`."""
        dtypes = self.contracts.get("erp", entity).dtypes(columns)
        params = {"cross-company": "true", "$select": ",".join(columns)}
        if where is not None:
            params["$filter"] = where
        headers = {**HEADERS, "Prefer": f"odata.maxpagesize={self.settings.page_size}"}
        return self.root + entity, dtypes, params, headers

    def _missing(self, url: str) -> bool:
        """Whether the service has no entity set at `url` (404)."""
        probe = self.odata.send(
            "GET", url, params={"$top": "0", "cross-company": "true"}, headers=HEADERS
        )
        return probe.status_code == 404

    def live_columns(self, entity: str) -> set[str] | None:
        """The entity's properties from `$metadata` (read once)."""
        if self._metadata is None:
            response = self.odata.send("GET", self.root + "$metadata")
            self.odata.expect_ok(response, "GET $metadata")
            self._metadata = entity_properties(response.content)
        return self._metadata.get(entity)

    def snapshot(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> pl.DataFrame:
        return collect(self.pages(entity, columns, missing_ok=missing_ok))

    def can_read_changes(self, entity: str) -> bool:
        """Whether `entity`'s contract declares a modification-time column to read by."""
        return self.contracts.get("erp", entity).modified is not None

    def read_changes(
        self, entity: str, columns: Sequence[str], link: str | None, *, missing_ok: bool = False
    ) -> ChangeRead:
        """The records written since the high-water mark `link` (kind `since`), or every
        record when there is no mark (or it cannot be read). See `ChangeRead`. With
        `missing_ok`, an entity set the service does not have reads as empty.

        The next mark is the latest modification time seen, but never later than the
        service's time when the read began (its `Date`): a paged read is not a snapshot, so a
        record on an early page written while later pages were read has an earlier time than
        a record seen on a later page, and a mark past it would skip it."""
        contract = self.contracts.get("erp", entity)
        modified = contract.modified
        if modified is None:
            raise ValueError(f"erp {entity}: its contract declares no 'modified' column")
        keys = contract.keys
        wanted = list(dict.fromkeys([*columns, *keys, modified]))
        mark, reason = _mark(entity, link)
        where = None
        if mark is not None:
            start = mark - self.settings.high_water_lag
            where = f"{modified} ge {start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        url = self.root + entity
        probe = self.odata.send(
            "GET", url, params={"$top": "0", "cross-company": "true"}, headers=HEADERS
        )
        dtypes = contract.dtypes(wanted)
        empty = pl.Series(keys[0], [], dtype=dtypes[keys[0]])
        if probe.status_code == 404 and missing_ok and mark is None:
            return ChangeRead("full", pl.DataFrame(schema=dtypes), empty, None, keys=keys)
        began = _service_time(probe)
        frame = collect(self.pages(entity, wanted, where=where))
        latest = frame[modified].max() if frame.height else None
        if isinstance(latest, datetime):
            latest = min(latest, began)
        seen = [m for m in (mark, latest) if isinstance(m, datetime)]
        new = max(seen).isoformat() if seen else None
        return ChangeRead("full" if mark is None else "since", frame, empty, new, reason, keys=keys)

    def upsert(self, entity: str, batch: WriteBatch) -> pl.DataFrame:
        chunks = _chunks(self._requests(entity, batch), BATCH_SIZE)
        # `map` submits each chunk as it is made: the first `$batch` is on the wire while the
        # rest are built, instead of the service waiting for every request to be made first
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            results = list(pool.map(self._batch, chunks))
        return pl.concat([pl.DataFrame(schema=RESULT_SCHEMA), *results], how="vertical")

    def _requests(self, entity: str, batch: WriteBatch) -> Iterator[tuple[str, str, BatchRequest]]:
        """(record key, op, request) of each record: a POST per insert, a PATCH of the
        changed columns per update."""
        keys = list(batch.keys)
        for row in keyed_rows([batch.inserts], keys):
            body = {k: _fno(v) for k, v in row.items() if k != "__rk"}
            post = BatchRequest(
                "POST",
                self.root + entity,
                json_object(body),
                headers=CREATE_HEADERS,
                key_url=self.root + entity + entity_key(keys, row),
            )
            yield row["__rk"], "insert", post
        for row in keyed_rows(batch.updates, keys):
            changed = {k: _fno(v) for k, v in row.items() if k not in keys and k != "__rk"}
            patch = BatchRequest(
                "PATCH", self.root + entity + entity_key(keys, row), json_object(changed)
            )
            yield row["__rk"], "update", patch

    def _batch(self, requests: list[tuple[str, str, BatchRequest]]) -> pl.DataFrame:
        content_type, body = batch_body([r for _, _, r in requests])
        response = self.odata.send(
            "POST",
            self.root + "$batch",
            content=body,
            headers={**HEADERS, "Content-Type": content_type},
        )
        self.odata.expect_ok(response, "POST $batch")
        answers = parse_batch(response.headers["Content-Type"], response.content)
        statuses, messages = batch_outcomes(answers, len(requests))
        if self.odata.was_resent(response):
            self._confirm_inserts(requests, statuses, messages)
        return pl.DataFrame(
            {
                "record_key": [key for key, _, _ in requests],
                "op": [op for _, op, _ in requests],
                "status": statuses,
                "message": messages,
            },
            schema=RESULT_SCHEMA,
        )

    def _confirm_inserts(
        self,
        requests: list[tuple[str, str, BatchRequest]],
        statuses: list[str],
        messages: list[str | None],
    ) -> None:
        """After a resent batch, an insert refused because its record exists may have been
        written by the earlier try: if the record is there, the insert counts as done."""
        for i, (_, op, request) in enumerate(requests):
            if op != "insert" or statuses[i] != "failed" or request.key_url is None:
                continue
            found = self.odata.send(
                "GET", request.key_url, params={"cross-company": "true"}, headers=HEADERS
            )
            if found.status_code == 200:
                statuses[i], messages[i] = "ok", None


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter), each made as it is asked for."""
    while chunk := list(islice(items, size)):
        yield chunk


def _service_time(response: httpx.Response) -> datetime:
    """The service's time of `response` (its `Date` header; this machine's, without one)."""
    try:
        return parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _mark(entity: str, link: str | None) -> tuple[datetime | None, str | None]:
    """The high-water mark kept as `link` (an ISO time), and why a full read is made when
    it cannot be read."""
    if link is None:
        return None, None
    try:
        mark = datetime.fromisoformat(link)
    except ValueError:
        return None, f"the high-water mark of {entity} ({link!r}) is not a time: read in full"
    if mark.tzinfo is None:
        return None, f"the high-water mark of {entity} ({link!r}) has no time zone: read in full"
    return mark, None


EMPTY_DATE = date(1900, 1, 1)  # what F&O returns for an empty date


def _no_empty_dates(page: pl.DataFrame) -> pl.DataFrame:
    dates = [c for c, t in page.schema.items() if t == pl.Date]
    return page.with_columns(
        [pl.when(pl.col(c) == EMPTY_DATE).then(None).otherwise(pl.col(c)).alias(c) for c in dates]
    )


def _fno(value: Any) -> Any:
    """Dates go to F&O as the DateTimeOffset its date fields are: noon UTC of that day."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return f"{value.isoformat()}T12:00:00Z"
    return value


def entity_properties(metadata: bytes) -> dict[str, set[str]]:
    """Entity set → property names, from an OData CSDL `$metadata` document."""
    root = ElementTree.fromstring(metadata)
    types: dict[str, set[str]] = {}
    for element in root.iter():
        if element.tag.endswith("}EntityType"):
            types[element.get("Name", "")] = {
                p.get("Name", "") for p in element if p.tag.endswith("}Property")
            }
    sets: dict[str, set[str]] = {}
    for element in root.iter():
        if element.tag.endswith("}EntitySet"):
            type_name = element.get("EntityType", "").rsplit(".", 1)[-1]
            sets[element.get("Name", "")] = types.get(type_name, set())
    return sets


def entity_key(keys: Sequence[str], row: dict[str, Any]) -> str:
    """`(dataAreaId='usmf',CustomerAccount='O''Brien')`: every key field, quoted."""
    return "(" + ",".join(f"{k}={quote_key(row[k])}" for k in keys) + ")"
