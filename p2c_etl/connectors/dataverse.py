"""The Dataverse (Dynamics 365 Sales) Web API connector: `/api/data/v9.2/`.

Reads: `$select` of the mapped columns, `Prefer: odata.maxpagesize`, `@odata.nextLink` paging
(never `$skip`), each page parsed straight into polars.

Change tracking (`read_changes`): a table whose `EntityDefinitions` say
`ChangeTrackingEnabled` is read with `Prefer: odata.track-changes` (no `$filter`, `$orderby`,
`$top` or `$expand`, which change tracking refuses), and the `@odata.deltaLink` of the last
page is kept; the next read GETs that link and receives the new and changed records and the
ids of the deleted ones. An expired or refused link, a link for other columns, or a table
without change tracking is read in full, with the reason.

Writes: new records go in bulk through `UpsertMultiple`, addressed by their primary id (p2c-etl
derives it from the natural key, so re-sending is harmless); a chunk the service refuses is
split in halves until the failing records stand alone, and each fails with the server's
message while the rest are written. Updates go through `$batch`, one change set per record:
`PATCH entityset(id)` with `If-Match: *` (update only) and only the changed columns. Lookup
columns (`_x_value`) are written as `x@odata.bind` (or `x_<logicalname>@odata.bind` for a
polymorphic lookup, the type found among the contract's `bind` entity sets).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import polars as pl

from p2c_etl.config import SystemName, SystemSettings
from p2c_etl.connectors.badrows import BadSink
from p2c_etl.connectors.base import RESULT_SCHEMA, ChangeRead, PrintedRead, WriteBatch
from p2c_etl.connectors.odata import (
    TRACK_CHANGES,
    BatchRequest,
    LinkRefused,
    ODataClient,
    RetryPolicy,
    batch_body,
    batch_outcomes,
    classify,
    collect,
    error_message,
    json_object,
    keyed_rows,
    parse_batch,
)
from p2c_etl.connectors.session import http_client
from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import Contract, ContractSet
from p2c_etl.model.keys import record_key

API = "/api/data/v9.2/"
BULK_SIZE = 1000
HEADERS = {
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Accept": "application/json",
    "MSCRM.SuppressDuplicateDetection": "true",
}


class RecordFailure(Exception):
    """One record cannot be written as asked; it fails alone with this message."""


def logical_name(entity_set: str) -> str:
    """accounts → account, transactioncurrencies → transactioncurrency."""
    return entity_set[:-3] + "y" if entity_set.endswith("ies") else entity_set.removesuffix("s")


class DataverseConnector:
    system: SystemName = "crm"

    def __init__(
        self,
        settings: SystemSettings,
        contracts: ContractSet,
        client: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        assert settings.url is not None
        self.settings, self.contracts = settings, contracts
        self.root = settings.url + API
        self.client = client or http_client(settings, default_scope=f"{settings.url}/.default")
        self.odata = ODataClient("crm", self.client, retry or RetryPolicy())
        self._ids: dict[str, set[str]] = {}
        self._tracked: dict[str, bool] = {}

    def close(self) -> None:
        self.client.close()

    # --- reads ------------------------------------------------------------------------

    def pages(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,  # a page is typed whole: a bad value stops the read
    ) -> Iterator[pl.DataFrame]:
        url, dtypes, params, headers = self._query(entity, columns)
        if missing_ok and not self._exists(url):
            yield pl.DataFrame(schema=dtypes)
            return
        yield from self.odata.pages(url, dtypes, params, headers)

    def printed_snapshot(
        self, entity: str, columns: Sequence[str], known: str | None, *, missing_ok: bool = False
    ) -> PrintedRead:
        """`snapshot`, and its print; not parsed when the print is `known`."""
        url, dtypes, params, headers = self._query(entity, columns)
        if missing_ok and not self._exists(url):
            return PrintedRead(pl.DataFrame(schema=dtypes), None)
        read = self.odata.printed_pages(url, dtypes, params, headers, known)
        if read.frames is None:
            return PrintedRead(None, read.printed)
        return PrintedRead(collect(read.frames), read.printed)

    def _query(
        self, entity: str, columns: Sequence[str]
    ) -> tuple[str, dict[str, pl.DataType], dict[str, str], dict[str, str]]:
        """The URL, column types, query and headers of a paged read of `entity`."""
        dtypes = self.contracts.get("crm", entity).dtypes(columns)
        headers = {**HEADERS, "Prefer": f"odata.maxpagesize={self.settings.page_size}"}
        return self.root + entity, dtypes, {"$select": ",".join(columns)}, headers

    def snapshot(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> pl.DataFrame:
        return collect(self.pages(entity, columns, missing_ok=missing_ok))

    def live_columns(self, entity: str) -> set[str] | None:
        """The entity's attributes from `EntityDefinitions`, lookups as `_x_value` columns."""
        url = f"{self.root}EntityDefinitions(LogicalName='{logical_name(entity)}')/Attributes"
        response = self.odata.send(
            "GET", url, params={"$select": "LogicalName,AttributeType"}, headers=HEADERS
        )
        if response.status_code == 404:
            return None
        self.odata.expect_ok(response, f"GET EntityDefinitions of {entity}")
        columns = set()
        for attribute in response.json().get("value", []):
            name = str(attribute["LogicalName"])
            lookup = attribute.get("AttributeType") in ("Lookup", "Customer", "Owner")
            columns.add(f"_{name}_value" if lookup else name)
        return columns

    # --- change tracking ----------------------------------------------------------------

    def read_changes(
        self,
        entity: str,
        columns: Sequence[str],
        link: str | None,
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,  # a page is typed whole, as in `pages`
    ) -> ChangeRead:
        """The changes since `link` (a delta), or every record (a full read) when there is
        no link, or it cannot be used; see `ChangeRead`. With `missing_ok`, an entity set
        the service does not have reads as empty, with no link."""
        primary = self._primary(entity)
        wanted = list(dict.fromkeys([*columns, primary]))
        dtypes = self.contracts.get("crm", entity).dtypes(wanted)
        if missing_ok and link is None and not self._exists(self.root + entity):
            return ChangeRead("full", pl.DataFrame(schema=dtypes), _no_ids(primary), None)
        reason = None if link is None else _other_columns(entity, link, wanted)
        if link is not None and reason is None:
            try:
                return self._delta(entity, dtypes, primary, link)
            except LinkRefused as exc:
                reason = (
                    f"the delta link of {entity} was refused ({exc.message}): read in full, "
                    "with a new link"
                )
        return self._full(entity, dtypes, primary, reason)

    def can_read_changes(self, entity: str) -> bool:
        """Every table is read through change tracking (`read_changes` reads in full, and
        says why, where it is off)."""
        return True

    def tracks_changes(self, entity: str) -> bool:
        """`ChangeTrackingEnabled` of the table behind `entity` (asked once per connector)."""
        if entity not in self._tracked:
            url = f"{self.root}EntityDefinitions(LogicalName='{logical_name(entity)}')"
            response = self.odata.send(
                "GET", url, params={"$select": "ChangeTrackingEnabled"}, headers=HEADERS
            )
            if response.status_code == 404:
                raise ConnectorError(f"crm: there is no table {logical_name(entity)} ({entity})")
            self.odata.expect_ok(response, f"GET EntityDefinitions of {entity}")
            self._tracked[entity] = response.json().get("ChangeTrackingEnabled") is True
        return self._tracked[entity]

    def _delta(
        self, entity: str, dtypes: dict[str, pl.DataType], primary: str, link: str
    ) -> ChangeRead:
        headers = {**HEADERS, "Prefer": f"odata.maxpagesize={self.settings.page_size}"}
        pages = list(self.odata.tracked_pages(link, dtypes, None, headers))
        if pages[-1].delta_link is None:
            raise LinkRefused("the last page of the delta carries no @odata.deltaLink")
        frame = _latest(collect(p.frame for p in pages), primary)
        deleted = pl.Series(primary, [i for p in pages for i in p.deleted], dtype=pl.String)
        return ChangeRead("delta", frame, deleted.unique(maintain_order=True), pages[-1].delta_link)

    def _full(
        self, entity: str, dtypes: dict[str, pl.DataType], primary: str, reason: str | None
    ) -> ChangeRead:
        """Every record, with a delta link where the table tracks changes."""
        if not self.tracks_changes(entity):
            off = (
                f"change tracking is off for the table {logical_name(entity)} ({entity}): "
                "every run reads it in full (turn on Track changes for the table in Power Apps)"
            )
            return self._plain(entity, dtypes, primary, _joined(reason, off))
        prefer = f"{TRACK_CHANGES},odata.maxpagesize={self.settings.page_size}"
        params = {"$select": ",".join(dtypes)}
        try:
            pages = list(
                self.odata.tracked_pages(
                    self.root + entity, dtypes, params, {**HEADERS, "Prefer": prefer}
                )
            )
        except LinkRefused as exc:
            refused = f"the service refused change tracking for {entity} ({exc.message})"
            return self._plain(entity, dtypes, primary, _joined(reason, refused))
        frame = _latest(collect(p.frame for p in pages), primary)
        link = pages[-1].delta_link if pages[0].applied else None
        if link is None:
            missing = f"the service did not apply change tracking to {entity}: no delta link"
            reason = _joined(reason, missing)
        return ChangeRead("full", frame, _no_ids(primary), link, reason)

    def _plain(
        self, entity: str, dtypes: dict[str, pl.DataType], primary: str, reason: str
    ) -> ChangeRead:
        frame = self.snapshot(entity, list(dtypes))
        return ChangeRead("full", frame, _no_ids(primary), None, reason)

    def _primary(self, entity: str) -> str:
        primary = self.contracts.get("crm", entity).primary_id
        if primary is None:
            raise ConnectorError(f"crm: {entity} has no primary id in its contract")
        return primary

    def _exists(self, url: str) -> bool:
        response = self.odata.send("GET", url, params={"$top": "0"}, headers=HEADERS)
        return response.status_code != 404

    # --- writes -----------------------------------------------------------------------

    def upsert(self, entity: str, batch: WriteBatch) -> pl.DataFrame:
        contract = self.contracts.get("crm", entity)
        if contract.primary_id is None:
            raise ConnectorError(f"crm: {entity} has no primary id in its contract")
        keys = list(batch.keys)
        inserts = (
            batch.inserts.with_columns(record_key(keys).alias("__rk"))
            if batch.inserts.height
            else pl.DataFrame(schema={"__rk": pl.String})
        )
        chunks = [inserts.slice(i, BULK_SIZE) for i in range(0, inserts.height, BULK_SIZE)]
        requests: list[tuple[str, BatchRequest]] = []
        refused: list[tuple[str, str]] = []
        for row in keyed_rows(batch.updates, keys):
            try:
                requests.append((row["__rk"], self._update_request(entity, contract, row)))
            except RecordFailure as exc:
                refused.append((row["__rk"], str(exc)))
        batches = [requests[i : i + BULK_SIZE] for i in range(0, len(requests), BULK_SIZE)]
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            inserted = list(pool.map(lambda c: self._upsert_multiple(entity, contract, c), chunks))
            updated = list(pool.map(lambda b: self._batch(b), batches))
        failed = pl.DataFrame(
            {
                "record_key": [k for k, _ in refused],
                "op": ["update"] * len(refused),
                "status": ["failed"] * len(refused),
                "message": [m for _, m in refused],
            },
            schema=RESULT_SCHEMA,
        )
        return pl.concat(
            [pl.DataFrame(schema=RESULT_SCHEMA), *inserted, *updated, failed], how="vertical"
        )

    def _upsert_multiple(self, entity: str, contract: Contract, rows: pl.DataFrame) -> pl.DataFrame:
        """Send `rows` in one UpsertMultiple; on a 4xx, halve until the culprits stand alone."""
        targets = [self._body(contract, row, entity) for row in rows.iter_rows(named=True)]
        body = '{"Targets":[' + ",".join(targets) + "]}"
        url = f"{self.root}{entity}/Microsoft.Dynamics.CRM.UpsertMultiple"
        response = self.odata.send(
            "POST",
            url,
            content=body.encode(),
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        if not response.is_error:
            return _results(rows["__rk"], "insert", None)
        if (
            classify(response.status_code) == "retry"
        ):  # still throttled or down: not a record's fault
            self.odata.expect_ok(response, "POST UpsertMultiple")
        if rows.height == 1:
            return _results(rows["__rk"], "insert", error_message(response))
        half = rows.height // 2
        return pl.concat(
            [
                self._upsert_multiple(entity, contract, rows.slice(0, half)),
                self._upsert_multiple(entity, contract, rows.slice(half)),
            ]
        )

    def _update_request(self, entity: str, contract: Contract, row: dict[str, Any]) -> BatchRequest:
        record_id = row[contract.primary_id or ""]
        if record_id is None:
            raise ConnectorError(f"crm: update of {entity} {row['__rk']} without its id")
        changed = {k: v for k, v in row.items() if k not in (contract.primary_id, "__rk")}
        changed = {k: v for k, v in changed.items() if k not in _key_columns(contract, row)}
        return BatchRequest(
            "PATCH",
            f"{self.root}{entity}({record_id})",
            self._body(contract, changed, entity, with_type=False),
            {"If-Match": "*"},
        )

    def _batch(self, requests: list[tuple[str, BatchRequest]]) -> pl.DataFrame:
        content_type, body = batch_body([r for _, r in requests])
        response = self.odata.send(
            "POST",
            self.root + "$batch",
            content=body,
            # Without this, Dataverse stops at the first failing change set.
            headers={**HEADERS, "Content-Type": content_type, "Prefer": "odata.continue-on-error"},
        )
        self.odata.expect_ok(response, "POST $batch")
        answers = parse_batch(response.headers["Content-Type"], response.content)
        statuses, messages = batch_outcomes(answers, len(requests))
        return pl.DataFrame(
            {
                "record_key": [key for key, _ in requests],
                "op": ["update"] * len(requests),
                "status": statuses,
                "message": messages,
            },
            schema=RESULT_SCHEMA,
        )

    def _body(
        self, contract: Contract, row: dict[str, Any], entity: str, with_type: bool = True
    ) -> str:
        record: dict[str, Any] = {}
        if with_type:
            record["@odata.type"] = f"Microsoft.Dynamics.CRM.{logical_name(entity)}"
        for name, value in row.items():
            if name == "__rk":
                continue
            spec = contract.column(name)
            if spec.bind:
                if value is not None or not with_type:  # a new record has nothing to clear
                    record.update(self._bind(name, spec.bind, value))
            else:
                record[name] = value
        return json_object(record)

    def _bind(self, column: str, targets: tuple[str, ...], value: Any) -> dict[str, Any]:
        nav = column.removeprefix("_").removesuffix("_value")
        if value is None and len(targets) > 1:
            raise RecordFailure(
                f"clearing {column} (a lookup to {' or '.join(targets)}) is not supported; "
                "clear it in Sales"
            )
        if value is None:
            return {f"{nav}@odata.bind": None}
        if len(targets) == 1:
            return {f"{nav}@odata.bind": f"/{targets[0]}({value})"}
        for target in targets:
            if str(value) in self._known_ids(target):
                return {f"{nav}_{logical_name(target)}@odata.bind": f"/{target}({value})"}
        raise ConnectorError(f"crm: {column} {value} is in none of {', '.join(targets)}")

    def _known_ids(self, entity: str) -> set[str]:
        """The primary ids of `entity` (read once per run, for polymorphic lookups)."""
        if entity not in self._ids:
            primary = self.contracts.get("crm", entity).primary_id or ""
            self._ids[entity] = set(self.snapshot(entity, [primary])[primary].to_list())
        return self._ids[entity]


def _other_columns(entity: str, link: str, wanted: Sequence[str]) -> str | None:
    """Why `link` cannot give the columns `wanted` (it was made for others), else None."""
    raw = httpx.URL(link).params.get("$select")
    if raw is None:
        return None
    had = {c.strip() for c in raw.split(",") if c.strip()}
    added, dropped = sorted(set(wanted) - had), sorted(had - set(wanted))
    if not added and not dropped:
        return None
    change = "; ".join(
        f"{what} {', '.join(names)}"
        for what, names in (("added", added), ("dropped", dropped))
        if names
    )
    return f"the columns read from {entity} changed since its delta link ({change}): read in full"


def _joined(first: str | None, then: str) -> str:
    return then if first is None else f"{first}; {then}"


def _latest(frame: pl.DataFrame, primary: str) -> pl.DataFrame:
    """One row per record: the last one read (a record changed while pages were read may
    come twice)."""
    if frame.height == frame[primary].n_unique():
        return frame
    return frame.unique(subset=[primary], keep="last", maintain_order=True)


def _no_ids(primary: str) -> pl.Series:
    return pl.Series(primary, [], dtype=pl.String)


def _key_columns(contract: Contract, row: dict[str, Any]) -> set[str]:
    return {k for k in contract.keys if k in row}


def _results(keys: pl.Series, op: str, failure: str | None) -> pl.DataFrame:
    n = len(keys)
    return pl.DataFrame(
        {
            "record_key": keys,
            "op": [op] * n,
            "status": ["failed" if failure else "ok"] * n,
            "message": [failure] * n,
        },
        schema=RESULT_SCHEMA,
    )
