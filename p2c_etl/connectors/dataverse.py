"""The Dataverse (Dynamics 365 Sales) Web API connector: `/api/data/v9.2/`.

Reads: `$select` of the mapped columns, `Prefer: odata.maxpagesize`, `@odata.nextLink` paging
(never `$skip`), each page parsed straight into polars.

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
from p2c_etl.connectors.base import RESULT_SCHEMA, WriteBatch
from p2c_etl.connectors.odata import (
    BatchRequest,
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
        dtypes = self.contracts.get("crm", entity).dtypes(columns)
        headers = {**HEADERS, "Prefer": f"odata.maxpagesize={self.settings.page_size}"}
        url = self.root + entity
        if missing_ok and not self._exists(url):
            yield pl.DataFrame(schema=dtypes)
            return
        yield from self.odata.pages(url, dtypes, {"$select": ",".join(columns)}, headers)

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
