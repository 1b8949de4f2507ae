"""The Finance and Operations OData service below `/data/`, over one in-memory store.

    GET    CustomersV2                      $select $filter $orderby $top $skip $count
                                            $expand; paging of 10,000 (or a smaller
                                            Prefer: odata.maxpagesize), $top of more than
                                            10,000 paged too; cross-company=true to see every
                                            company
    GET    CustomersV2/$count               the number of records (with $filter), plain text
    POST   CustomersV2                      create (201 with the record; 204 with its address
                                            alone under Prefer: return=minimal; 400 if the
                                            key exists)
    GET / PATCH / PUT / DELETE CustomersV2(dataAreaId='usmf',CustomerAccount='C-1')
                                            If-None-Match (304) and If-Match (412)
    POST   $batch                           up to 5000 requests; every request of a failed
                                            change set is answered (424 for the rolled back);
                                            Content-ID is optional in a change set
    GET    $metadata                        CSDL of the served entity sets

Dates are written as DateTimeOffsets at noon UTC (`2026-03-01T12:00:00Z`), as F&O writes a
date field; an empty one as F&O's dateNull, `1900-01-01T12:00:00Z` (an empty date-time
`1900-01-01T00:00:00Z`), and a date written as 1900-01-01 is held as empty.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.batch import BatchRules, run_batch
from p2c_etl.sandbox.conditional import not_modified
from p2c_etl.sandbox.expand import Expander, parse_expand
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.finops_write import FinOpsWriter
from p2c_etl.sandbox.jsonout import dumps, finops_date
from p2c_etl.sandbox.literals import literal_url_text
from p2c_etl.sandbox.options import ENTITY, NONE, check_options
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
    Shape,
    count_response,
    etag,
    page_response,
    project,
    projector,
    read_page,
    select_columns,
)
from p2c_etl.sandbox.resource import KeySpec, split_resource
from p2c_etl.sandbox.service import ODataService
from p2c_etl.sandbox.stats import Stats
from p2c_etl.sandbox.store import Row, Store, Table
from p2c_etl.sandbox.values import finops_shown

SERVICE_PATH = "/data/"
NAMESPACE = "Microsoft.Dynamics.DataEntities"
PAGE_SIZE = 10_000
_CUSTOM = frozenset({"cross-company"})
PAGING = PagingRules(PAGE_SIZE, PAGE_SIZE, skip_allowed=True, custom=_CUSTOM)


class FinOpsService(ODataService):
    """Answers F&O OData requests from one store, for a default company."""

    def __init__(self, store: Store, faults: Faults, stats: Stats, company: str) -> None:
        self.store = store
        self.stats = stats
        self.writer = FinOpsWriter(store, faults, company)
        self.batch_rules = BatchRules(
            limit=5000, changeset_errors="each", content_id_required=False
        )

    def _route(self, req: ApiRequest) -> ApiResponse:
        document = self.documents(req, NAMESPACE)
        if document is not None:
            return document
        if req.path == "$batch":
            return run_batch(req, self.batch_rules, self._inner, self.store.journal.atomic)
        resource = split_resource(req.path)
        table = self.store.table(resource.name)
        if table is not None and resource.rest == "$count" and resource.key is None:
            if req.method != "GET":
                raise ODataError(405, "$count takes GET", NOT_SUPPORTED)
            visible = self.writer.visible(table, _cross_company(req))
            with self.store.lock:
                return count_response(req, table, PAGING, visible)
        if table is None or resource.rest:
            missing = resource.name if table is None else resource.rest
            raise ODataError(404, f"Resource not found for the segment '{missing}'.", NOT_FOUND)
        if resource.key is None:
            return self._collection(req, table)
        return self._entity(req, table, resource.key)

    def _collection(self, req: ApiRequest, table: Table) -> ApiResponse:
        if req.method == "GET":
            visible = self.writer.visible(table, _cross_company(req))
            with self.store.lock:
                select = select_columns(req, table, ())
                shape = self._shape(req, table, select)
                plain = "$expand" not in req.query  # an expansion shows other records too
                rendered = ("finops", finops_date) if plain else None
                page = read_page(req, table, PAGING, visible, shape, rendered)
            self.stats.read(len(page.records), table.name)
            return page_response(req, table, page, finops_date)
        if req.method == "POST":
            check_options(req, NONE, _CUSTOM)
            row = self.writer.create(table, req.json())
            url = _entity_url(req, table, row)
            headers = {"Location": url, "OData-EntityId": url, "ETag": etag(row)}
            if req.prefers("return") == "minimal":  # OData 4.0 part 1, 8.2.8.7 and 11.4.2
                return ApiResponse(204, headers | {"Preference-Applied": "return=minimal"})
            shown = _empty_dates_shown(table.temporal, project(table, row, None))
            return _record_response(req, table, shown, 201, headers)
        raise ODataError(405, f"{req.method} is not allowed on {table.name}", NOT_SUPPORTED)

    def _entity(self, req: ApiRequest, table: Table, key: KeySpec) -> ApiResponse:
        cross = _cross_company(req)
        if req.method == "GET":
            return self._read_one(req, table, key, cross)
        check_options(req, NONE, _CUSTOM)
        if req.method in ("PATCH", "PUT"):
            row = self.writer.update(
                table,
                key,
                req.json(),
                cross_company=cross,
                etag=req.header("if-match"),
                replace=req.method == "PUT",
            )
            return ApiResponse(204, {"ETag": etag(row)})
        if req.method == "DELETE":
            self.writer.delete(table, key, cross, req.header("if-match"))
            return ApiResponse(204, {})
        raise ODataError(405, f"{req.method} is not allowed on a record", NOT_SUPPORTED)

    def _read_one(self, req: ApiRequest, table: Table, key: KeySpec, cross: bool) -> ApiResponse:
        check_options(req, ENTITY, _CUSTOM)
        with self.store.lock:
            select = select_columns(req, table, ())
            found = self.writer.locate(table, key, cross)
            row = table.get(found) if found is not None else None
            if row is None:
                shown = ",".join(f"{k}={v}" for k, v in key.named.items())
                raise ODataError(404, f"No {table.name} record with key ({shown}).", NOT_FOUND)
            unchanged = not_modified(req, row)
            if unchanged is not None:
                return unchanged
            values = self._shape(req, table, select)(row)
        self.stats.read(1, table.name)
        return _record_response(req, table, values, 200, {"ETag": etag(row)})

    def _shape(self, req: ApiRequest, table: Table, select: list[str] | None) -> Shape:
        """A record as `req` shows it: selected, expanded, empty dates as F&O shows them."""

        def shown(target: Table, row: Row, columns: list[str] | None) -> dict[str, Any]:
            return _empty_dates_shown(target.temporal, project(target, row, columns))

        expansions = parse_expand(req.query.get("$expand"), table, self.store)
        plain = projector(table, select)
        dated = table.temporal
        if not expansions and not dated:
            return plain
        expander = Expander(expansions, shown)
        return lambda row: expander.add(row, _empty_dates_shown(dated, plain(row)))


def _record_response(
    req: ApiRequest, table: Table, values: dict[str, object], status: int, headers: dict[str, str]
) -> ApiResponse:
    body = {"@odata.context": f"{req.root}$metadata#{table.name}/$entity", **values}
    return json_response(status, dumps(body, finops_date), headers)


def _empty_dates_shown(dated: tuple[ColumnSpec, ...], record: dict[str, Any]) -> dict[str, Any]:
    """The record (changed in place) with each empty date shown as F&O shows it."""
    for spec in dated:
        if spec.name in record:
            record[spec.name] = finops_shown(spec, record[spec.name])
    return record


def _cross_company(req: ApiRequest) -> bool:
    return req.query.get("cross-company", "").lower() == "true"


def _entity_url(req: ApiRequest, table: Table, row: Row) -> str:
    key = ",".join(f"{c}={literal_url_text(row.values[c])}" for c in table.key_columns)
    if not _URL_PLAIN.fullmatch(key):  # most keys need no quoting: `dataAreaId='usmf',...`
        key = quote(key, safe=chr(39) + "=,:")
    return f"{req.root}{table.name}({key})"


_URL_PLAIN = re.compile(r"[A-Za-z0-9_.~'=,:-]*")
"""What `quote(..., safe="'=,:")` leaves as it is, seen in one match."""
