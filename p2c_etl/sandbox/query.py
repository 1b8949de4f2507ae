"""Reading an entity set: `$select`, `$filter`, `$orderby`, `$top`, `$skip`, `$count` and
server-driven paging with `@odata.nextLink`.

Without `$orderby`, pages follow insertion order and the `$skiptoken` names the last record
returned, so records written while a client pages are neither skipped nor repeated. With
`$orderby` the token is an offset into the sorted result. The token also carries how many
records were returned so far, so `$top` holds across pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.jsonout import DateText, dumps
from p2c_etl.sandbox.odata_filter import Predicate, compile_filter
from p2c_etl.sandbox.protocol import BAD_QUERY, ApiRequest, ApiResponse, ODataError, json_response
from p2c_etl.sandbox.store import Row, Store, Table
from p2c_etl.sandbox.values import folded

_OPTIONS = {"$select", "$filter", "$top", "$skip", "$orderby", "$count", "$skiptoken"}


@dataclass(frozen=True)
class PagingRules:
    """How a service pages: its default and largest page, and whether `$skip` is allowed."""

    default_size: int
    max_size: int
    skip_allowed: bool
    always: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    next_link: str | None
    count: int | None
    preference: str | None


def columns_of(table: Table) -> dict[str, ColumnSpec | None]:
    """The columns a query may name: the contract's, then the seed file's others (untyped)."""
    known: dict[str, ColumnSpec | None] = dict(table.contract.columns)
    return known | {c: None for c in table.extra_columns if c not in known}


def type_name(table: Table) -> str:
    namespace = "Microsoft.Dynamics.CRM" if table.primary else "Microsoft.Dynamics.DataEntities"
    return f"{namespace}.{table.name}"


def select_columns(req: ApiRequest, table: Table, always: tuple[str, ...]) -> list[str] | None:
    """The `$select`ed columns (plus `always`), None for every column; 400 for an unknown one."""
    raw = req.query.get("$select")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    known = columns_of(table)
    for name in names:
        if name not in known:
            message = f"Could not find a property named '{name}' on type '{type_name(table)}'."
            raise ODataError(400, message, BAD_QUERY)
    return list(dict.fromkeys([*always, *names]))


def project(row: Row, select: list[str] | None) -> dict[str, Any]:
    values = row.values if select is None else {c: row.values.get(c) for c in select}
    return {"@odata.etag": f'W/"{row.version}"', **values}


def read_page(
    req: ApiRequest, table: Table, rules: PagingRules, visible: Predicate | None = None
) -> Page:
    """One page of `table` as `req`'s query options ask."""
    _check_options(req, rules)
    select = select_columns(req, table, rules.always)
    predicate = _predicate(req, table, visible)
    size, preference = _page_size(req, rules)
    top = _number(req, "$top")
    position, returned = _token(req)
    first_skip = (_number(req, "$skip") or 0) if req.query.get("$skiptoken") is None else 0
    limit = size if top is None else max(0, min(size, top - returned))
    if "$orderby" in req.query:
        rows, more, position = _sorted_page(req, table, predicate, position + first_skip, limit)
    else:
        rows, more, position = _natural_page(table, predicate, position, first_skip, limit)
    returned += len(rows)
    more = more and (top is None or returned < top)
    count = _count(table, predicate) if req.query.get("$count") == "true" else None
    link = _next_link(req, table.name, f"{position}.{returned}") if more else None
    return Page([project(row, select) for row in rows], link, count, preference)


def page_response(req: ApiRequest, table: Table, page: Page, date_text: DateText) -> ApiResponse:
    body: dict[str, Any] = {"@odata.context": f"{req.root}$metadata#{table.name}"}
    if page.count is not None:
        body["@odata.count"] = page.count
    body["value"] = page.records
    if page.next_link is not None:
        body["@odata.nextLink"] = page.next_link
    headers = {"Preference-Applied": page.preference} if page.preference else {}
    return json_response(200, dumps(body, date_text), headers)


def service_document(req: ApiRequest, store: Store) -> ApiResponse:
    """The OData service document: every entity set served."""
    value = [{"name": name, "kind": "EntitySet", "url": name} for name in store.tables]
    body = {"@odata.context": f"{req.root}$metadata", "value": value}
    return json_response(200, json.dumps(body).encode())


def _check_options(req: ApiRequest, rules: PagingRules) -> None:
    for name in req.query:
        if name.startswith("$") and name not in _OPTIONS:
            raise ODataError(400, f"The query option {name} is not supported", BAD_QUERY)
    if "$skip" in req.query and not rules.skip_allowed:
        raise ODataError(400, "The query parameter $skip is not supported", BAD_QUERY)


def _predicate(req: ApiRequest, table: Table, visible: Predicate | None) -> Predicate | None:
    raw = req.query.get("$filter")
    chosen = compile_filter(raw, columns_of(table), type_name(table)) if raw else None
    if chosen is None or visible is None:
        return chosen or visible
    return lambda record: visible(record) and chosen(record)


def _page_size(req: ApiRequest, rules: PagingRules) -> tuple[int, str | None]:
    raw = req.prefers("odata.maxpagesize")
    if raw is None or not raw.isdigit() or int(raw) == 0:
        return rules.default_size, None
    size = min(int(raw), rules.max_size)
    return size, f"odata.maxpagesize={size}"


def _number(req: ApiRequest, name: str) -> int | None:
    raw = req.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ODataError(400, f"{name} must be a whole number, not {raw!r}", BAD_QUERY)
    return int(raw)


def _token(req: ApiRequest) -> tuple[int, int]:
    raw = req.query.get("$skiptoken")
    if raw is None:
        return 0, 0
    position, _, returned = raw.partition(".")
    if not (position.isdigit() and returned.isdigit()):
        raise ODataError(400, f"Invalid $skiptoken {raw!r}", BAD_QUERY)
    return int(position), int(returned)


def _natural_page(
    table: Table, predicate: Predicate | None, after: int, skip: int, limit: int
) -> tuple[list[Row], bool, int]:
    found: list[Row] = []
    for row in table.rows_after(after):
        if predicate is None or predicate(row.values):
            if skip:
                skip -= 1
                continue
            if len(found) == limit:
                return found, True, found[-1].seq if found else after
            found.append(row)
    return found, False, found[-1].seq if found else after


def _sorted_page(
    req: ApiRequest, table: Table, predicate: Predicate | None, offset: int, limit: int
) -> tuple[list[Row], bool, int]:
    rows = [r for r in table.rows() if predicate is None or predicate(r.values)]
    for column, descending in reversed(_order(req, table)):
        rows.sort(key=_sort_key(column), reverse=descending)
    page = rows[offset : offset + limit]
    return page, offset + limit < len(rows), offset + len(page)


def _order(req: ApiRequest, table: Table) -> list[tuple[str, bool]]:
    known = columns_of(table)
    order: list[tuple[str, bool]] = []
    for part in req.query["$orderby"].split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0] not in known:
            raise ODataError(400, f"Invalid $orderby item {part.strip()!r}", BAD_QUERY)
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise ODataError(400, f"Invalid $orderby direction {words[1]!r}", BAD_QUERY)
        order.append((words[0], direction == "desc"))
    return order


def _sort_key(column: str) -> Callable[[Row], tuple[bool, Any]]:
    def key(row: Row) -> tuple[bool, Any]:
        value = row.values.get(column)
        return (value is not None, folded(value) if value is not None else 0)

    return key


def _count(table: Table, predicate: Predicate | None) -> int:
    if predicate is None:
        return len(table)
    return sum(1 for row in table.rows() if predicate(row.values))


def _next_link(req: ApiRequest, name: str, token: str) -> str:
    kept: Mapping[str, str] = {
        k: v for k, v in req.query.items() if k not in ("$skiptoken", "$skip")
    }
    query = urlencode({**kept, "$skiptoken": token}, quote_via=quote, safe="$,'()")
    return f"{req.root}{name}?{query}"
