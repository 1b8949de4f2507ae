"""Dataverse metadata: `EntityDefinitions`, their `Keys` and `Attributes`.

    GET EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$expand=Keys
    GET EntityDefinitions(LogicalName='account')
    GET EntityDefinitions(LogicalName='account')/Attributes?$select=LogicalName,AttributeType

A lookup column `_x_value` is reported as attribute `x` of type Lookup, as Dataverse does.
The logical name of an entity set is its name singularised (accounts → account,
transactioncurrencies → transactioncurrency).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.odata_filter import compile_filter
from p2c_etl.sandbox.protocol import (
    BAD_QUERY,
    NOT_FOUND,
    ApiRequest,
    ApiResponse,
    ODataError,
    json_response,
)
from p2c_etl.sandbox.resource import Resource
from p2c_etl.sandbox.store import Store, Table

Definition = dict[str, Any]
_NAVIGATIONS = ("Keys", "Attributes")


def logical_name(entity_set: str) -> str:
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "y"
    return entity_set[:-1] if entity_set.endswith("s") else entity_set


def attribute_name(column: str) -> str:
    """`_parentcustomerid_value` → `parentcustomerid`; other columns keep their name."""
    if column.startswith("_") and column.endswith("_value"):
        return column[1:-6]
    return column


def definition(table: Table) -> Definition:
    logical = logical_name(table.name)
    return {
        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"p2c-sandbox:{logical}")),
        "LogicalName": logical,
        "SchemaName": logical,
        "EntitySetName": table.name,
        "LogicalCollectionName": table.name,
        "PrimaryIdAttribute": table.primary,
        "Keys": keys(table),
        "Attributes": attributes(table),
    }


def keys(table: Table) -> list[Definition]:
    if not table.alternate:
        return []
    logical = logical_name(table.name)
    return [
        {
            "LogicalName": f"{logical}_p2c_key",
            "EntityLogicalName": logical,
            "KeyAttributes": [attribute_name(c) for c in table.alternate],
        }
    ]


def attributes(table: Table) -> list[Definition]:
    return [_attribute(table, spec) for spec in table.contract.columns.values()]


def _attribute(table: Table, spec: ColumnSpec) -> Definition:
    name = attribute_name(spec.name)
    item: Definition = {
        "LogicalName": name,
        "AttributeType": _attribute_type(spec, name != spec.name),
        "IsPrimaryId": spec.name == table.primary,
    }
    if name != spec.name:
        item["Targets"] = [logical_name(s) for s in spec.bind]
    if spec.max_length is not None:
        item["MaxLength"] = spec.max_length
    return item


def _attribute_type(spec: ColumnSpec, lookup: bool) -> str:
    if lookup:
        return "Lookup"
    if spec.type.startswith("decimal"):
        return "Money" if spec.type.replace(" ", "") == "decimal(19,4)" else "Decimal"
    names = {"string": "String", "guid": "Uniqueidentifier", "int": "Integer", "bool": "Boolean"}
    return names.get(spec.type, "DateTime")


def entity_definitions(req: ApiRequest, resource: Resource, store: Store) -> ApiResponse:
    """Answer a GET below `EntityDefinitions`."""
    if req.method != "GET":
        raise ODataError(405, "EntityDefinitions are read-only here", BAD_QUERY)
    with store.lock:
        found = [definition(t) for t in store.tables.values()]
    context = f"{req.root}$metadata#EntityDefinitions"
    if resource.key is None:
        chosen = _filtered(req, found)
        return _answer({"@odata.context": context, "value": [_shaped(req, d) for d in chosen]})
    item = _one(resource, found)
    if not resource.rest:
        return _answer({"@odata.context": f"{context}/$entity", **_shaped(req, item)})
    if resource.rest not in _NAVIGATIONS:
        raise ODataError(404, f"Resource not found for the segment '{resource.rest}'.", NOT_FOUND)
    value = [_selected(req.query.get("$select"), x) for x in _filtered(req, item[resource.rest])]
    return _answer({"@odata.context": f"{context}/{resource.rest}", "value": value})


def _one(resource: Resource, found: list[Definition]) -> Definition:
    key = resource.key
    assert key is not None
    wanted = key.named.get("LogicalName") if key.named else None
    for item in found:
        if item["LogicalName"] == wanted or (key.single and item["MetadataId"] == key.single):
            return item
    raise ODataError(404, "Could not find an entity with the given key.", NOT_FOUND)


def _filtered(req: ApiRequest, items: list[Definition]) -> list[Definition]:
    raw = req.query.get("$filter")
    if not raw or not items:
        return items
    columns: dict[str, ColumnSpec | None] = dict.fromkeys(items[0])
    test = compile_filter(raw, columns, "Microsoft.Dynamics.CRM.EntityMetadata")
    return [item for item in items if test(item)]


def _shaped(req: ApiRequest, item: Definition) -> Definition:
    expand = _expansions(req.query.get("$expand", ""))
    base = {k: v for k, v in item.items() if k not in _NAVIGATIONS}
    shaped = _selected(req.query.get("$select"), base)
    for name, select in expand.items():
        shaped[name] = [_selected(select, x) for x in item[name]]
    return shaped


def _selected(select: str | None, item: Definition) -> Definition:
    if select is None:
        return dict(item)
    names = [n.strip() for n in select.split(",") if n.strip()]
    unknown = [n for n in names if n not in item]
    if unknown:
        raise ODataError(400, f"Could not find a property named '{unknown[0]}'.", BAD_QUERY)
    return {n: item[n] for n in names}


def _expansions(raw: str) -> dict[str, str | None]:
    """`Keys($select=KeyAttributes),Attributes` → {"Keys": "KeyAttributes", "Attributes": None}."""
    found: dict[str, str | None] = {}
    for part in _top_level_split(raw):
        name, _, options = part.partition("(")
        name = name.strip()
        if name not in _NAVIGATIONS:
            raise ODataError(400, f"Cannot $expand {name!r} here", BAD_QUERY)
        select = options.rstrip(")").partition("$select=")[2] if options else ""
        found[name] = select or None
    return found


def _top_level_split(raw: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in raw:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def _answer(body: dict[str, Any]) -> ApiResponse:
    return json_response(200, json.dumps(body).encode())
