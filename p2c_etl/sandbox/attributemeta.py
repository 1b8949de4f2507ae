"""Dataverse attribute metadata: what `EntityDefinitions(...)/Attributes` lists.

Each contract column is an attribute: a lookup column `_x_value` is the attribute `x`, of type
Lookup (Customer when it may point to an account or a contact) with its `Targets`; the
primary id is a Uniqueidentifier; `statecode` is a State, `statuscode` a Status, a column with
an option set (see `optionsets`) a Picklist; decimal(19,4) is Money, other decimals Decimal;
multi-line text of 2,000 characters or more is Memo, other text String with its `MaxLength`.
The server-kept `createdon`, `modifiedon` (DateTime) and `versionnumber` (BigInt) are listed
too. The type-cast segments (`Microsoft.Dynamics.CRM.PicklistAttributeMetadata`, ...) select
the attributes of one metadata type; `OptionSet` is the option set of a Picklist, State,
Status or Boolean attribute, and `GlobalOptionSet` null (every option set here is local).
"""

from __future__ import annotations

import uuid
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.annotations import primary_name
from p2c_etl.sandbox.entitynames import attribute_name, logical_name
from p2c_etl.sandbox.optionsets import BOOLEAN_LABELS, OptionSet, option_set
from p2c_etl.sandbox.query import SYSTEM_COLUMNS
from p2c_etl.sandbox.store import Table

Definition = dict[str, Any]
METADATA_TYPES = {
    "String": "StringAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
}
CASTS = {f"Microsoft.Dynamics.CRM.{name}" for name in METADATA_TYPES.values()}
WITH_OPTIONS = {"Picklist", "State", "Status", "Boolean"}
_MEMO_LENGTH = 2000


def metadata_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "p2c-sandbox:" + "/".join(parts)))


def attributes(table: Table) -> list[Definition]:
    """Every attribute of `table`: its contract columns, then the server-kept ones."""
    specs = list(table.contract.columns.values())
    specs += [s for n, s in SYSTEM_COLUMNS.items() if n not in table.contract.columns]
    return [attribute(table, spec) for spec in specs]


def attribute(table: Table, spec: ColumnSpec) -> Definition:
    entity, name = logical_name(table.name), attribute_name(spec.name)
    kind = attribute_type(table, spec)
    item: Definition = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{METADATA_TYPES[kind]}",
        "MetadataId": metadata_id(entity, name),
        "LogicalName": name,
        "SchemaName": name,
        "EntityLogicalName": entity,
        "AttributeType": kind,
        "AttributeTypeName": {"Value": f"{kind}Type"},
        "IsPrimaryId": spec.name == table.primary,
        "IsPrimaryName": name == primary_name(table),
    }
    return item | _details(kind, spec)


def _details(kind: str, spec: ColumnSpec) -> Definition:
    if kind in ("String", "Memo"):
        return {"MaxLength": spec.max_length}
    if kind in ("Lookup", "Customer"):
        return {"Targets": [logical_name(s) for s in spec.bind]}
    if kind in ("Money", "Decimal"):
        return {"Precision": int(spec.type.replace(" ", "").split(",")[1].rstrip(")"))}
    return {}


def attribute_type(table: Table, spec: ColumnSpec) -> str:
    if spec.bind:
        return "Customer" if set(spec.bind) == {"accounts", "contacts"} else "Lookup"
    if spec.name == table.primary:
        return "Uniqueidentifier"
    if spec.name == "versionnumber":
        return "BigInt"
    options = option_set(logical_name(table.name), spec.name)
    if options is not None or spec.name in ("statecode", "statuscode"):
        return options.kind if options else ("State" if spec.name == "statecode" else "Status")
    return _plain_type(spec)


def _plain_type(spec: ColumnSpec) -> str:
    if spec.type.startswith("decimal"):
        return "Money" if spec.type.replace(" ", "") == "decimal(19,4)" else "Decimal"
    if spec.type == "string":
        long_text = spec.multiline and (spec.max_length or 0) >= _MEMO_LENGTH
        return "Memo" if long_text else "String"
    names = {"guid": "Uniqueidentifier", "int": "Integer", "bool": "Boolean"}
    return names.get(spec.type, "DateTime")


def option_set_of(table: Table, item: Definition) -> Definition | None:
    """The `OptionSet` of an attribute with options, as `$expand=OptionSet` shows it."""
    kind, entity, name = item["AttributeType"], item["EntityLogicalName"], item["LogicalName"]
    if kind not in WITH_OPTIONS:
        return None
    base: Definition = {
        "MetadataId": metadata_id(entity, name, "optionset"),
        "Name": f"{entity}_{name}",
        "IsGlobal": False,
        "OptionSetType": kind,
    }
    if kind == "Boolean":
        true, false = (_option(v, BOOLEAN_LABELS[v]) for v in (True, False))
        return base | {"TrueOption": true, "FalseOption": false}
    options = option_set(entity, name)
    return base | {"Options": _options(options) if options else []}


def _options(options: OptionSet) -> list[Definition]:
    found = []
    for value, label in options.labels.items():
        option = _option(value, label)
        if options.states is not None and value in options.states:
            option["State"] = options.states[value]
        found.append(option)
    return found


def _option(value: int | bool, label: str) -> Definition:
    text = {"Label": label, "LanguageCode": 1033}
    return {
        "Value": int(value),
        "Label": {"LocalizedLabels": [text], "UserLocalizedLabel": text},
    }
