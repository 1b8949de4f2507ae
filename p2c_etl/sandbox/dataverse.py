"""The Dataverse Web API below `/api/data/v9.2/`, over one in-memory store.

    GET    accounts                         $select $filter $orderby $top $count; paging by
                                            Prefer: odata.maxpagesize (default and max 5000)
    POST   accounts                         create (204 + OData-EntityId, or 201 with
                                            Prefer: return=representation)
    GET / PATCH / DELETE accounts(<guid>)   also by alternate key accounts(accountnumber='A')
    POST   accounts/Microsoft.Dynamics.CRM.UpsertMultiple   (and CreateMultiple)
    POST   $batch                           up to 1000 requests; a failed change set is
                                            answered with its one error
    GET    EntityDefinitions...             see `entitydefs`; also GET $metadata (CSDL)

PATCH is an upsert; `If-Match: *` makes it update only (404 when missing), `If-None-Match: *`
create only (412 when present). `$skip` is refused, as Dataverse refuses it.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from p2c_etl.sandbox.batch import BatchRules, run_batch
from p2c_etl.sandbox.csdl import metadata_document
from p2c_etl.sandbox.dataverse_write import DataverseWriter, WriteMode
from p2c_etl.sandbox.entitydefs import entity_definitions, logical_name
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.jsonout import dataverse_date, dumps
from p2c_etl.sandbox.protocol import (
    NOT_FOUND,
    NOT_SUPPORTED,
    ApiRequest,
    ApiResponse,
    ODataError,
    json_response,
)
from p2c_etl.sandbox.query import (
    PagingRules,
    page_response,
    project,
    read_page,
    select_columns,
    service_document,
)
from p2c_etl.sandbox.resource import KeySpec, Resource, split_resource
from p2c_etl.sandbox.service import ODataService
from p2c_etl.sandbox.stats import Stats
from p2c_etl.sandbox.store import Row, Store, Table

SERVICE_PATH = "/api/data/v9.2/"
_ACTIONS = {"UpsertMultiple": False, "CreateMultiple": True}


class DataverseService(ODataService):
    """Answers Dataverse Web API requests from one store."""

    def __init__(self, store: Store, faults: Faults, stats: Stats) -> None:
        self.store = store
        self.stats = stats
        self.writer = DataverseWriter(store, faults)
        self.batch_rules = BatchRules(limit=1000, changeset_errors="single")

    def _route(self, req: ApiRequest) -> ApiResponse:
        if req.path == "":
            return service_document(req, self.store)
        if req.path == "$batch":
            return run_batch(req, self.batch_rules, self._inner, self.store.journal.atomic)
        if req.path == "$metadata":
            document = metadata_document(self.store.tables.values(), "Microsoft.Dynamics.CRM")
            return ApiResponse(200, {"Content-Type": "application/xml"}, document)
        resource = split_resource(req.path)
        if resource.name == "EntityDefinitions":
            return entity_definitions(req, resource, self.store)
        table = self.store.table(resource.name)
        if table is None:
            message = f"Resource not found for the segment '{resource.name}'."
            raise ODataError(404, message, NOT_FOUND)
        if resource.rest:
            return self._action(req, table, resource)
        if resource.key is None:
            return self._collection(req, table)
        return self._entity(req, table, resource.key)

    def _collection(self, req: ApiRequest, table: Table) -> ApiResponse:
        if req.method == "GET":
            rules = PagingRules(5000, 5000, skip_allowed=False, always=(table.primary or "",))
            with self.store.lock:
                page = read_page(req, table, rules)
            self.stats.read(len(page.records))
            return page_response(req, table, page, dataverse_date)
        if req.method == "POST":
            row = self.writer.create(table, req.json())
            return self._written(req, table, row, created=True)
        raise ODataError(405, f"{req.method} is not allowed on {table.name}", NOT_SUPPORTED)

    def _entity(self, req: ApiRequest, table: Table, key: KeySpec) -> ApiResponse:
        if req.method == "GET":
            return self._read_one(req, table, key)
        if req.method == "PATCH":
            row, created = self.writer.upsert(
                table, key, req.json(), _mode(req), req.header("if-match")
            )
            return self._written(req, table, row, created=created)
        if req.method == "DELETE":
            self.writer.delete(table, key)
            return ApiResponse(204, {})
        raise ODataError(405, f"{req.method} is not allowed on a record", NOT_SUPPORTED)

    def _action(self, req: ApiRequest, table: Table, resource: Resource) -> ApiResponse:
        action = resource.rest.removeprefix("Microsoft.Dynamics.CRM.")
        if resource.key is not None or action not in _ACTIONS or req.method != "POST":
            message = f"Resource not found for the segment '{resource.rest}'."
            raise ODataError(404, message, NOT_FOUND)
        ids = self.writer.multiple(table, req.json(), create_only=_ACTIONS[action])
        context = f"{req.root}$metadata#Microsoft.Dynamics.CRM.{action}Response"
        return json_response(200, json.dumps({"@odata.context": context, "Ids": ids}).encode())

    def _read_one(self, req: ApiRequest, table: Table, key: KeySpec) -> ApiResponse:
        with self.store.lock:
            select = select_columns(req, table, (table.primary or "",))
            found = self.writer.locate(table, key)
            row = table.get(found) if found is not None else None
        if row is None:
            message = f"{logical_name(table.name)} With Id = {_shown(key)} Does Not Exist"
            raise ODataError(404, message, NOT_FOUND)
        self.stats.read(1)
        return _record_response(req, table, project(row, select), 200)

    def _written(self, req: ApiRequest, table: Table, row: Row, *, created: bool) -> ApiResponse:
        entity_id = f"{req.root}{table.name}({row.values[table.primary or '']})"
        headers = {"OData-EntityId": entity_id, "ETag": f'W/"{row.version}"'}
        if req.prefers("return") != "representation":
            return ApiResponse(204, headers)
        status = 201 if created else 200
        response = _record_response(req, table, project(row, None), status)
        response.headers.update(headers)
        return response


def _record_response(
    req: ApiRequest, table: Table, values: dict[str, object], status: int
) -> ApiResponse:
    body = {"@odata.context": f"{req.root}$metadata#{table.name}/$entity", **values}
    return json_response(status, dumps(body, dataverse_date))


def _mode(req: ApiRequest) -> WriteMode:
    if req.header("if-none-match") == "*":
        return "create"
    return "update" if req.header("if-match") else "upsert"


def _shown(key: KeySpec) -> str:
    if not key.named:
        return str(key.single)
    return quote(",".join(f"{k}={v}" for k, v in key.named.items()), safe="=,'")
