"""Reading an entity set: `$select`, `$filter`, `$orderby`, `$top`, `$skip`, `$count` and
server-driven paging with `@odata.nextLink`; `<set>/$count`.

Without `$orderby`, pages follow insertion order and the `$skiptoken` names the last record
returned, so records written while a client pages are neither skipped nor repeated. With
`$orderby` the token is an offset into the sorted result. The token also carries how many
records were returned so far, so `$top` holds across pages. A service may cap `$count`
(Dataverse counts up to 5,000).

A Dataverse record also shows the columns the server keeps itself (`SYSTEM_COLUMNS`):
`createdon` (when the record was created, unless the record holds its own), `modifiedon`
(its last write) and `versionnumber` (the number its `@odata.etag` carries); they can be
selected, filtered and ordered by, but not written. So does the modification-time column an
F&O entity's contract declares (`modified`: an entity extended with one): its last write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import polars as pl

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.entitynames import type_name
from p2c_etl.sandbox.jsonout import DateText, dumps, encoder
from p2c_etl.sandbox.odata_filter import Predicate, compile_filter
from p2c_etl.sandbox.options import COLLECTION, COUNT, NONE, check_options
from p2c_etl.sandbox.protocol import BAD_QUERY, ApiRequest, ApiResponse, ODataError, json_response
from p2c_etl.sandbox.store import Row, Store, Table
from p2c_etl.sandbox.values import folded

__all__ = ["type_name"]

RowTest = Callable[[Row], bool]
Shape = Callable[[Row], dict[str, Any]]
_UTC = pl.Datetime("us", "UTC")
SYSTEM_COLUMNS: dict[str, ColumnSpec] = {
    "createdon": ColumnSpec("createdon", "datetime", _UTC),
    "modifiedon": ColumnSpec("modifiedon", "datetime", _UTC),
    "versionnumber": ColumnSpec("versionnumber", "int", pl.Int64()),
}


@dataclass(frozen=True)
class PagingRules:
    """How a service pages: its default and largest page, and whether `$skip` is allowed."""

    default_size: int
    max_size: int
    skip_allowed: bool
    always: tuple[str, ...] = ()
    count_limit: int | None = None
    custom: frozenset[str] = NONE
    """Query parameters of the service's own (F&O's `cross-company`)."""


@dataclass(frozen=True)
class Page:
    records: list[Any]
    """Each record as a dict, or as its JSON text (`read_page`'s `rendered`)."""
    next_link: str | None
    count: int | None
    preference: str | None
    count_exceeded: bool = False
    """Whether more records match than the service's `$count` limit counts."""


def columns_of(table: Table) -> dict[str, ColumnSpec | None]:
    """The columns a query may name: the contract's, the server's own (Dataverse), then the
    seed file's others (untyped)."""
    known: dict[str, ColumnSpec | None] = dict(table.contract.columns)
    if table.primary:
        known |= {n: s for n, s in SYSTEM_COLUMNS.items() if n not in known}
    return known | {c: None for c in table.extra_columns if c not in known}


def server_columns(table: Table) -> tuple[str, ...]:
    """The columns the server keeps itself: Dataverse's `SYSTEM_COLUMNS`, an F&O entity's
    declared modification time."""
    if table.primary:
        return tuple(SYSTEM_COLUMNS)
    return (table.contract.modified,) if table.contract.modified else ()


def system_values(table: Table, row: Row) -> dict[str, Any]:
    """The server-kept columns of a record."""
    if not table.primary:
        modified = table.contract.modified
        return {modified: row.modified} if modified else {}
    created = row.values.get("createdon") or row.created
    return {"createdon": created, "modifiedon": row.modified, "versionnumber": row.version}


def view(table: Table, row: Row) -> dict[str, Any]:
    """A record's values with the server-kept ones."""
    return row.values | system_values(table, row) if server_columns(table) else row.values


def etag(row: Row) -> str:
    return f'W/"{row.version}"'


def check_columns(table: Table, names: list[str]) -> None:
    """400 for a name that is not a property of `table`."""
    known = columns_of(table)
    for name in names:
        if name not in known:
            message = f"Could not find a property named '{name}' on type '{type_name(table)}'."
            raise ODataError(400, message, BAD_QUERY)


def select_columns(req: ApiRequest, table: Table, always: tuple[str, ...]) -> list[str] | None:
    """The `$select`ed columns (plus `always`), None for every column (`$select=*`); 400 for
    an unknown one."""
    raw = req.query.get("$select")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if names == ["*"]:
        return None
    check_columns(table, names)
    return list(dict.fromkeys([*always, *names]))


def project(table: Table, row: Row, select: list[str] | None) -> dict[str, Any]:
    """A record as a page shows it: its tag, then the `select`ed columns (all without)."""
    return projector(table, select)(row)


def projector(table: Table, select: list[str] | None) -> Shape:
    """`project` for many rows of one table (what can be decided once is)."""
    if select is None:
        return lambda row: {"@odata.etag": etag(row), **view(table, row)}
    if set(server_columns(table)).isdisjoint(select):
        return lambda row: {"@odata.etag": etag(row), **{c: row.values.get(c) for c in select}}

    def shown(row: Row) -> dict[str, Any]:
        values = view(table, row)
        return {"@odata.etag": etag(row), **{c: values.get(c) for c in select}}

    return shown


def read_page(
    req: ApiRequest,
    table: Table,
    rules: PagingRules,
    visible: Predicate | None = None,
    shape: Shape | None = None,
    rendered: tuple[str, DateText] | None = None,
) -> Page:
    """One page of `table` as `req`'s query options ask; each record as `shape` shows it
    (the `$select`ed columns by default). With `rendered` (a name for what `shape` does
    beyond the `$select`, and the service's date rule), each record is given as its JSON
    text, which the table keeps for the next page that shows it so (`Table.renders`)."""
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
    count, exceeded = _page_count(req, table, predicate, rules.count_limit)
    link = _next_link(req, table.name, f"{position}.{returned}") if more else None
    shown = shape or projector(table, select)
    if rendered is None:
        return Page([shown(row) for row in rows], link, count, preference, exceeded)
    name, date_text = rendered
    renders = table.renders((name, None if select is None else tuple(select)))
    encode = encoder(date_text)

    def render(row: Row) -> bytes:
        return encode(shown(row))

    texts = [renders.text(row, render) for row in rows]
    return Page(texts, link, count, preference, exceeded)


def count_response(
    req: ApiRequest, table: Table, rules: PagingRules, visible: Predicate | None = None
) -> ApiResponse:
    """`GET <set>/$count`: the number of records (that match `$filter`), as plain text."""
    check_options(req, COUNT, rules.custom)
    total = _count(table, _predicate(req, table, visible))
    if rules.count_limit is not None:
        total = min(total, rules.count_limit)
    return ApiResponse(200, {"Content-Type": "text/plain; charset=utf-8"}, str(total).encode())


def _page_count(
    req: ApiRequest, table: Table, predicate: RowTest | None, cap: int | None
) -> tuple[int | None, bool]:
    """`@odata.count` (None unless `$count=true`), capped at `cap`, and whether it was."""
    total = _counted(req, table, predicate)
    if total is None or cap is None:
        return total, False
    return min(total, cap), total > cap


def _counted(req: ApiRequest, table: Table, predicate: RowTest | None) -> int | None:
    raw = req.query.get("$count")
    if raw is None or raw == "false":
        return None
    if raw != "true":
        raise ODataError(400, f"$count must be true or false, not {raw!r}", BAD_QUERY)
    return _count(table, predicate)


def page_response(
    req: ApiRequest,
    table: Table,
    page: Page,
    date_text: DateText,
    notes: Mapping[str, Any] | None = None,
) -> ApiResponse:
    """A page's answer; `notes` are page annotations written after the count."""
    body: dict[str, Any] = {"@odata.context": f"{req.root}$metadata#{table.name}"}
    if page.count is not None:
        body["@odata.count"] = page.count
    body |= notes or {}
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
    if "$skip" in req.query and not rules.skip_allowed:
        raise ODataError(400, "The query parameter $skip is not supported", BAD_QUERY)
    check_options(req, COLLECTION, rules.custom)


def _predicate(req: ApiRequest, table: Table, visible: Predicate | None) -> RowTest | None:
    raw = req.query.get("$filter")
    chosen = compile_filter(raw, columns_of(table), type_name(table)) if raw else None
    if chosen is not None and visible is not None:
        both = chosen
        chosen = lambda record: visible(record) and both(record)  # noqa: E731
    test = chosen or visible
    if test is None:
        return None
    if raw and any(name in raw for name in server_columns(table)):
        return lambda row: test(view(table, row))
    return lambda row: test(row.values)


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
    table: Table, predicate: RowTest | None, after: int, skip: int, limit: int
) -> tuple[list[Row], bool, int]:
    found: list[Row] = []
    for row in table.rows_after(after):
        if predicate is None or predicate(row):
            if skip:
                skip -= 1
                continue
            if len(found) == limit:
                return found, True, found[-1].seq if found else after
            found.append(row)
    return found, False, found[-1].seq if found else after


def _sorted_page(
    req: ApiRequest, table: Table, predicate: RowTest | None, offset: int, limit: int
) -> tuple[list[Row], bool, int]:
    rows = [r for r in table.rows() if predicate is None or predicate(r)]
    for column, descending in reversed(_order(req, table)):
        rows.sort(key=_sort_key(table, column), reverse=descending)
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


def _sort_key(table: Table, column: str) -> Callable[[Row], tuple[bool, Any]]:
    system = column in server_columns(table)

    def key(row: Row) -> tuple[bool, Any]:
        value = view(table, row).get(column) if system else row.values.get(column)
        return (value is not None, folded(value) if value is not None else 0)

    return key


def _count(table: Table, predicate: RowTest | None) -> int:
    if predicate is None:
        return len(table)
    return sum(1 for row in table.rows() if predicate(row))


def _next_link(req: ApiRequest, name: str, token: str) -> str:
    kept: Mapping[str, str] = {
        k: v for k, v in req.query.items() if k not in ("$skiptoken", "$skip")
    }
    query = urlencode({**kept, "$skiptoken": token}, quote_via=quote, safe="$,'()")
    return f"{req.root}{name}?{query}"
