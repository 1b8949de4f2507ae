"""Dataverse table definitions: `EntityDefinitions`, their `Keys` and `Attributes`.

    GET EntityDefinitions?$select=LogicalName,EntitySetName&$filter=IsPrivate eq false
    GET EntityDefinitions?$select=LogicalName&$expand=Keys($select=KeyAttributes)
    GET EntityDefinitions(LogicalName='account')            (or by MetadataId)
    GET EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName,AttributeType
    GET EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')
    GET EntityDefinitions(LogicalName='account')/Attributes/
        Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet($select=Options)
    GET EntityDefinitions(LogicalName='account')/Keys

Entity definitions take `$select`, `$filter` and `$expand` (of Keys and Attributes);
attributes `$select`, `$filter`, and `$expand` of `OptionSet` / `GlobalOptionSet` behind a
type-cast segment. The relationship and privilege navigation properties are not implemented
(501). The logical name of an entity set is its name singularised (accounts → account).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.annotations import primary_name
from p2c_etl.sandbox.attributemeta import CASTS, attributes, metadata_id, option_set_of
from p2c_etl.sandbox.entitynames import attribute_name, logical_name
from p2c_etl.sandbox.expand import split_top_level
from p2c_etl.sandbox.odata_filter import compile_filter
from p2c_etl.sandbox.options import check_options
from p2c_etl.sandbox.protocol import (
    BAD_QUERY,
    NOT_FOUND,
    ApiRequest,
    ApiResponse,
    ODataError,
    json_response,
    not_implemented,
)
from p2c_etl.sandbox.resource import KeySpec, Resource, split_resource
from p2c_etl.sandbox.store import Store, Table

Definition = dict[str, Any]
_NAVIGATIONS = ("Keys", "Attributes")
_NOT_IMPLEMENTED = (
    "OneToManyRelationships",
    "ManyToOneRelationships",
    "ManyToManyRelationships",
    "Privileges",
)
_READ = frozenset({"$select", "$filter", "$expand"})
_ONE = frozenset({"$select", "$expand"})
OBJECT_TYPE_CODES = {
    "account": 1, "contact": 2, "transactioncurrency": 9105, "pricelevel": 1022,
    "product": 1024, "uom": 1055, "uomschedule": 1056, "quote": 1084, "quotedetail": 1085,
    "salesorder": 1088, "salesorderdetail": 1089, "invoice": 1090, "invoicedetail": 1091,
}  # fmt: skip


def definition(table: Table, tracked: bool = True) -> Definition:
    logical = logical_name(table.name)
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.EntityMetadata",
        "MetadataId": metadata_id(logical),
        "LogicalName": logical,
        "SchemaName": logical,
        "EntitySetName": table.name,
        "LogicalCollectionName": table.name,
        "PrimaryIdAttribute": table.primary,
        "PrimaryNameAttribute": primary_name(table),
        "ObjectTypeCode": OBJECT_TYPE_CODES.get(logical),
        "IsPrivate": False,
        "ChangeTrackingEnabled": tracked,
        "Keys": keys(table),
        "Attributes": attributes(table),
    }


def keys(table: Table) -> list[Definition]:
    if not table.alternate:
        return []
    logical = logical_name(table.name)
    name = f"{logical}_p2c_key"
    return [
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.EntityKeyMetadata",
            "MetadataId": metadata_id(logical, "key", name),
            "LogicalName": name,
            "SchemaName": name,
            "EntityLogicalName": logical,
            "KeyAttributes": [attribute_name(c) for c in table.alternate],
            "EntityKeyIndexStatus": "Active",
        }
    ]


def entity_definitions(
    req: ApiRequest,
    resource: Resource,
    store: Store,
    tracked: Callable[[str], bool] = lambda _: True,
) -> ApiResponse:
    """Answer a GET below `EntityDefinitions`; `tracked` tells whether an entity set tracks
    changes (`ChangeTrackingEnabled`)."""
    if req.method != "GET":
        raise ODataError(405, "EntityDefinitions are read-only here", BAD_QUERY)
    with store.lock:
        tables = {logical_name(t.name): t for t in store.tables.values()}
        found = [definition(t, tracked(t.name)) for t in tables.values()]
    context = f"{req.root}$metadata#EntityDefinitions"
    if resource.key is None:
        if resource.rest:
            raise not_implemented(f"The path EntityDefinitions/{resource.rest}")
        check_options(req, _READ)
        chosen = _filtered(req, found, "EntityMetadata")
        return _answer({"@odata.context": context, "value": [_shaped(req, d) for d in chosen]})
    item = _one(resource.key, found)
    if not resource.rest:
        check_options(req, _ONE)
        return _answer({"@odata.context": f"{context}/$entity", **_shaped(req, item)})
    table = tables[item["LogicalName"]]
    return _below(
        req, table, item, split_resource(resource.rest), f"{context}({item['MetadataId']})"
    )


def _below(
    req: ApiRequest, table: Table, item: Definition, part: Resource, context: str
) -> ApiResponse:
    """`Attributes`, `Attributes/<cast>`, `Attributes(LogicalName='x')[/<cast>]`, `Keys`."""
    if part.name in _NOT_IMPLEMENTED:
        raise not_implemented(f"EntityDefinitions/{part.name}")
    if part.name not in _NAVIGATIONS:
        raise ODataError(404, f"Resource not found for the segment '{part.name}'.", NOT_FOUND)
    items: list[Definition] = item[part.name]
    cast = _cast(part.rest if part.key is None else split_resource(part.rest).name)
    if part.key is not None:
        items = [_one(part.key, items)]
        if part.rest and cast is None:
            raise ODataError(404, f"Resource not found for the segment '{part.rest}'.")
    if cast is not None:
        items = [a for a in items if a["@odata.type"] == f"#{cast}"]
    check_options(req, _READ if part.key is None else _ONE)
    shown = [_attribute_shaped(req, table, a, cast) for a in _filtered(req, items, part.name)]
    if part.key is not None:
        if not shown:
            raise ODataError(404, f"The attribute is not a {cast}.", NOT_FOUND)
        return _answer({"@odata.context": f"{context}/{part.name}/$entity", **shown[0]})
    return _answer({"@odata.context": f"{context}/{part.name}", "value": shown})


def _cast(segment: str) -> str | None:
    if not segment:
        return None
    if segment not in CASTS:
        raise ODataError(404, f"Resource not found for the segment '{segment}'.", NOT_FOUND)
    return segment


def _one(key: KeySpec, found: list[Definition]) -> Definition:
    wanted = key.named.get("LogicalName") if key.named else None
    for item in found:
        if item["LogicalName"] == wanted or (key.single and item["MetadataId"] == key.single):
            return item
    raise ODataError(404, "Could not find an item with the given key.", NOT_FOUND)


def _filtered(req: ApiRequest, items: list[Definition], kind: str) -> list[Definition]:
    raw = req.query.get("$filter")
    if not raw or not items:
        return items
    columns: dict[str, ColumnSpec | None] = dict.fromkeys(items[0])
    test = compile_filter(raw, columns, f"Microsoft.Dynamics.CRM.{kind}")
    return [item for item in items if test(item)]


def _shaped(req: ApiRequest, item: Definition) -> Definition:
    expand = _expansions(req.query.get("$expand", ""), _NAVIGATIONS)
    base = {k: v for k, v in item.items() if k not in _NAVIGATIONS}
    shaped = _selected(req.query.get("$select"), base)
    for name, select in expand.items():
        shaped[name] = [_selected(select, x) for x in item[name]]
    return shaped


def _attribute_shaped(
    req: ApiRequest, table: Table, item: Definition, cast: str | None
) -> Definition:
    raw = req.query.get("$expand", "")
    if raw and cast is None:
        raise ODataError(400, "Expand OptionSet behind a type-cast segment.", BAD_QUERY)
    shaped = _selected(req.query.get("$select"), item)
    for name, select in _expansions(raw, ("OptionSet", "GlobalOptionSet")).items():
        options = option_set_of(table, item) if name == "OptionSet" else None
        shaped[name] = _selected(select, options) if options is not None else None
    return shaped


def _selected(select: str | None, item: Definition) -> Definition:
    if select is None:
        return dict(item)
    names = [n.strip() for n in select.split(",") if n.strip()]
    unknown = [n for n in names if n not in item]
    if unknown:
        raise ODataError(400, f"Could not find a property named '{unknown[0]}'.", BAD_QUERY)
    kept = {n: item[n] for n in names}
    return {"@odata.type": item["@odata.type"], **kept} if "@odata.type" in item else kept


def _expansions(raw: str, allowed: tuple[str, ...]) -> dict[str, str | None]:
    """`Keys($select=KeyAttributes),Attributes` → {"Keys": "KeyAttributes", "Attributes": None}."""
    found: dict[str, str | None] = {}
    for part in split_top_level(raw):
        name, _, options = part.partition("(")
        name = name.strip()
        if name not in allowed:
            raise ODataError(400, f"Cannot $expand {name!r} here", BAD_QUERY)
        inner = options[:-1] if options.endswith(")") else options
        select: str | None = None
        for option in split_top_level(inner, ";"):
            key, _, value = option.partition("=")
            if key.strip() != "$select":
                raise not_implemented(f"The option {key.strip()} inside $expand")
            select = value
        found[name] = select
    return found


def _answer(body: dict[str, Any]) -> ApiResponse:
    return json_response(200, json.dumps(body).encode())
