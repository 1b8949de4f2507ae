"""The Dataverse Web API below `/api/data/v9.2/`, over one in-memory store.

    GET    accounts                         $select $filter $orderby $top $count $expand;
                                            paging by Prefer: odata.maxpagesize (default and
                                            max 5000); $count counts up to 5000
    GET    accounts/$count                  the number of records (with $filter), plain text
    GET    accounts?$apply=groupby(...)     filter / groupby / aggregate, see `aggregate`
    POST   accounts                         create (204 + OData-EntityId, or 201 with
                                            Prefer: return=representation)
    GET / PATCH / DELETE accounts(<guid>)   also by alternate key accounts(accountnumber='A');
                                            If-None-Match (304) and If-Match (412)
    POST   accounts/Microsoft.Dynamics.CRM.CreateMultiple   200 with the Ids
    POST   accounts/Microsoft.Dynamics.CRM.UpdateMultiple   204
    POST   accounts/Microsoft.Dynamics.CRM.UpsertMultiple   204
    POST   $batch                           up to 1000 requests; stops at the first failure
                                            unless Prefer: odata.continue-on-error
    GET    WhoAmI, WhoAmI()                 the caller's UserId, BusinessUnitId, OrganizationId
    GET    EntityDefinitions...             see `entitydefs`; also GET $metadata (CSDL)
    GET    accounts  Prefer: odata.track-changes, and the delta links it gives
                                            ($deltatoken): see `changetracking`

PATCH is an upsert; `If-Match: *` makes it update only (404 when missing), `If-None-Match: *`
create only (412 when present). `$skip` is refused, as Dataverse refuses it. Documented
messages and resources the sandbox does not implement (`BulkDelete`, `RetrieveTotalRecordCount`,
property and navigation paths, ...) are answered 501.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from urllib.parse import quote

from p2c_etl.sandbox.aggregate import apply
from p2c_etl.sandbox.annotations import (
    Annotator,
    applied,
    count_annotations,
    wanted_annotations,
)
from p2c_etl.sandbox.batch import BatchRules, run_batch
from p2c_etl.sandbox.changetracking import (
    ChangeTracking,
    applies,
    check_request,
    preferences,
    tracked_page,
)
from p2c_etl.sandbox.conditional import not_modified
from p2c_etl.sandbox.dataverse_write import DataverseWriter, WriteMode
from p2c_etl.sandbox.entitydefs import entity_definitions
from p2c_etl.sandbox.entitynames import logical_name
from p2c_etl.sandbox.expand import Expander, parse_expand
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.jsonout import dataverse_date, dumps
from p2c_etl.sandbox.navigation import navigations
from p2c_etl.sandbox.options import ENTITY, WRITE, check_options
from p2c_etl.sandbox.protocol import (
    NOT_FOUND,
    NOT_SUPPORTED,
    ApiRequest,
    ApiResponse,
    ODataError,
    json_response,
    not_implemented,
)
from p2c_etl.sandbox.query import (
    PagingRules,
    Shape,
    columns_of,
    count_response,
    etag,
    page_response,
    project,
    projector,
    read_page,
    select_columns,
)
from p2c_etl.sandbox.resource import KeySpec, Resource, split_resource
from p2c_etl.sandbox.service import ODataService
from p2c_etl.sandbox.stats import Stats
from p2c_etl.sandbox.store import Row, Store, Table
from p2c_etl.sandbox.whoami import Identity, who_am_i

SERVICE_PATH = "/api/data/v9.2/"
_ACTIONS: dict[str, WriteMode] = {
    "UpsertMultiple": "upsert",
    "CreateMultiple": "create",
    "UpdateMultiple": "update",
}
_UNBOUND_501 = {
    "BulkDelete", "RetrieveTotalRecordCount", "RetrieveVersion", "RetrieveCurrentOrganization",
    "Merge", "ExecuteWorkflow", "CalculateRollupField", "InitializeFrom", "GrantAccess",
    "RevokeAccess", "RetrievePrincipalAccess", "RetrieveUserPrivileges", "SetState",
    "GlobalOptionSetDefinitions", "RelationshipDefinitions", "ManagedPropertyDefinitions",
    "ExecuteMultiple", "ExecuteTransaction", "RetrieveEntityChanges", "Associate",
}  # fmt: skip
_BOUND_501 = {"DeleteMultiple", "RetrieveTotalRecordCount"}
PAGING = PagingRules(5000, 5000, skip_allowed=False, count_limit=5000)


class DataverseService(ODataService):
    """Answers Dataverse Web API requests from one store."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        stats: Stats,
        identity: Identity | None = None,
        tracking: ChangeTracking | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.tracking = tracking or ChangeTracking()
        self.writer = DataverseWriter(store, faults)
        self.batch_rules = BatchRules(limit=1000, changeset_errors="single", stop_on_error=True)
        self.identity = identity or Identity("p2c-sandbox", "sandbox", lambda _: None)

    def _route(self, req: ApiRequest) -> ApiResponse:
        document = self.documents(req, "Microsoft.Dynamics.CRM", self.tracking.enabled)
        if document is not None:
            return document
        if req.path == "$batch":
            return run_batch(req, self.batch_rules, self._inner, self.store.journal.atomic)
        if req.path.removesuffix("()") == "WhoAmI":
            return who_am_i(req, self.identity)
        head = re.split(r"[(/]", req.path, maxsplit=1)[0]
        if head.removeprefix("Microsoft.Dynamics.CRM.") in _UNBOUND_501:
            raise not_implemented(f"The message or resource {head}")
        resource = split_resource(req.path)
        if resource.name == "EntityDefinitions":
            return entity_definitions(req, resource, self.store, self.tracking.enabled)
        table = self.store.table(resource.name)
        if table is None:
            message = f"Resource not found for the segment '{resource.name}'."
            raise ODataError(404, message, NOT_FOUND)
        if resource.rest:
            return self._segment(req, table, resource)
        if resource.key is None:
            return self._collection(req, table)
        return self._entity(req, table, resource.key)

    def _collection(self, req: ApiRequest, table: Table) -> ApiResponse:
        if req.method == "GET" and applies(req, table, self.tracking):
            return self._tracked(req, table)
        if req.method == "GET" and "$apply" in req.query:
            return self._aggregate(req, table)
        if req.method == "GET":
            rules = replace(PAGING, always=(table.primary or "",))
            with self.store.lock:
                select = select_columns(req, table, rules.always)
                page = read_page(req, table, rules, shape=self._shape(req, table, select))
            self.stats.read(len(page.records), table.name)
            notes = count_annotations(wanted_annotations(req), page.count, page.count_exceeded)
            response = page_response(req, table, page, dataverse_date, notes)
            _applied(req, response, page.preference)
            return response
        if req.method == "POST":
            check_options(req, WRITE)
            row = self.writer.create(table, req.json())
            return self._written(req, table, row, created=True)
        raise ODataError(405, f"{req.method} is not allowed on {table.name}", NOT_SUPPORTED)

    def _tracked(self, req: ApiRequest, table: Table) -> ApiResponse:
        """A read with change tracking: the first one, or a delta (see `changetracking`)."""
        check_request(req, table, self.tracking)
        with self.store.lock:
            select = select_columns(req, table, (table.primary or "",))
            shape = self._shape(req, table, select)
            current = self.store.journal.version
            response, count = tracked_page(req, table, self.tracking, shape, current)
        self.stats.read(count, table.name)
        _applied(req, response, preferences(req))
        return response

    def _aggregate(self, req: ApiRequest, table: Table) -> ApiResponse:
        """`$apply` (see `aggregate`): the only query option of its request."""
        others = sorted(set(req.query) - {"$apply"})
        if others:
            raise not_implemented(f"{others[0]} together with $apply")
        with self.store.lock:
            value = apply(req.query["$apply"], table, table.rows())
        body = {"@odata.context": f"{req.root}$metadata#{table.name}", "value": value}
        return json_response(200, dumps(body, dataverse_date))

    def _entity(self, req: ApiRequest, table: Table, key: KeySpec) -> ApiResponse:
        if req.method == "GET":
            return self._read_one(req, table, key)
        check_options(req, WRITE)
        if req.method == "PATCH":
            row, created = self.writer.upsert(
                table,
                key,
                req.json(),
                _mode(req),
                req.header("if-match"),
                req.header("if-none-match"),
            )
            return self._written(req, table, row, created=created)
        if req.method == "DELETE":
            self.writer.delete(table, key, req.header("if-match"))
            return ApiResponse(204, {})
        raise ODataError(405, f"{req.method} is not allowed on a record", NOT_SUPPORTED)

    def _segment(self, req: ApiRequest, table: Table, resource: Resource) -> ApiResponse:
        """What follows `accounts/` or `accounts(<id>)/`: `$count`, a bound action, or a
        property or navigation path (not implemented)."""
        if resource.key is None and resource.rest == "$count" and req.method == "GET":
            with self.store.lock:
                return count_response(req, table, PAGING)
        action = resource.rest.removeprefix("Microsoft.Dynamics.CRM.")
        if resource.key is None and action in _ACTIONS and req.method == "POST":
            return self._multiple(req, table, action)
        first = resource.rest.split("/", 1)[0]
        if action in _BOUND_501 or first in columns_of(table) or first == "$ref":
            raise not_implemented(f"The path segment '{resource.rest}'")
        if first in navigations(table, self.store):
            raise not_implemented(f"The navigation path '{resource.rest}'")
        raise ODataError(404, f"Resource not found for the segment '{resource.rest}'.", NOT_FOUND)

    def _multiple(self, req: ApiRequest, table: Table, action: str) -> ApiResponse:
        ids = self.writer.multiple(table, req.json(), _ACTIONS[action])
        if action != "CreateMultiple":
            return ApiResponse(204, {})
        context = f"{req.root}$metadata#Microsoft.Dynamics.CRM.{action}Response"
        return json_response(200, json.dumps({"@odata.context": context, "Ids": ids}).encode())

    def _read_one(self, req: ApiRequest, table: Table, key: KeySpec) -> ApiResponse:
        check_options(req, ENTITY)
        with self.store.lock:
            select = select_columns(req, table, (table.primary or "",))
            found = self.writer.locate(table, key)
            row = table.get(found) if found is not None else None
            if row is None:
                message = f"{logical_name(table.name)} With Id = {_shown(key)} Does Not Exist"
                raise ODataError(404, message, NOT_FOUND)
            unchanged = not_modified(req, row)
            if unchanged is not None:
                return unchanged
            values = self._shape(req, table, select)(row)
        self.stats.read(1, table.name)
        response = _record_response(req, table, values, 200)
        response.headers["ETag"] = etag(row)
        _applied(req, response, None)
        return response

    def _shape(self, req: ApiRequest, table: Table, select: list[str] | None) -> Shape:
        """How `req` shows a record of `table`: selected, expanded, annotated."""
        wanted = wanted_annotations(req)

        def nested(target: Table, row: Row, columns: list[str] | None) -> dict[str, object]:
            return Annotator(self.store, target, wanted).add(project(target, row, columns))

        expansions = parse_expand(req.query.get("$expand"), table, self.store)
        plain = projector(table, select)
        if not expansions and not wanted:
            return plain
        expander = Expander(expansions, nested)
        annotator = Annotator(self.store, table, wanted)
        return lambda row: annotator.add(expander.add(row, plain(row)))

    def _written(self, req: ApiRequest, table: Table, row: Row, *, created: bool) -> ApiResponse:
        entity_id = f"{req.root}{table.name}({row.values[table.primary or '']})"
        headers = {"OData-EntityId": entity_id, "ETag": etag(row)}
        if req.prefers("return") != "representation":
            return ApiResponse(204, headers)
        status = 201 if created else 200
        select = select_columns(req, table, (table.primary or "",))
        with self.store.lock:
            values = self._shape(req, table, select)(row)
        response = _record_response(req, table, values, status)
        response.headers.update(headers)
        _applied(req, response, "return=representation")
        return response


def _applied(req: ApiRequest, response: ApiResponse, other: str | None) -> None:
    given = [p for p in (other, applied(req)) if p]
    if given:
        response.headers["Preference-Applied"] = ",".join(given)


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
