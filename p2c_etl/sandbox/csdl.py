"""`$metadata`: an OData CSDL XML document of the served entity sets.

One EntityType per entity set: its keys as `Key/PropertyRef`, every contract column as a
`Property` with its Edm type, nullability and (text) `MaxLength`, then its navigation
properties (see `navigation`), with the referential constraint of a single-valued one; a
Dataverse type also has the server-kept `createdon`, `modifiedon` and `versionnumber`, and the
Dataverse schema declares the `WhoAmI` function and its `WhoAmIResponse`. The
EntityContainer lists the sets and binds their navigation properties; asked with
`?annotations=true`, a Dataverse set that tracks changes carries the
`Org.OData.Capabilities.V1.ChangeTracking` annotation (`Supported` true).

A Finance and Operations enum field (a contract column with `allowed` texts) is typed by an
`EnumType` of the namespace, its members in the contract's order (valued 0, 1, ..., as CSDL
numbers members without values): `NoYes` for No / Yes, the
enum names the reference specification gives (`Gender`, `DirPersonMaritalStatus`,
`EcoResProductType`, `SalesQuotationStatus`), and otherwise an enum named after the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.sax.saxutils import quoteattr

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.entitynames import (
    DATAVERSE_NAMESPACE,
    FINOPS_NAMESPACE,
    entity_type_name,
)
from p2c_etl.sandbox.navigation import Navigation, navigations
from p2c_etl.sandbox.query import SYSTEM_COLUMNS
from p2c_etl.sandbox.store import Store, Table

__all__ = ["entity_type_name", "metadata_document"]

_EDM = {
    "string": "Edm.String",
    "guid": "Edm.Guid",
    "int": "Edm.Int32",
    "bool": "Edm.Boolean",
    "date": "Edm.DateTimeOffset",
    "datetime": "Edm.DateTimeOffset",
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")
_ENUM_NAMES = {
    ("No", "Yes"): "NoYes",
    ("Female", "Male", "NonSpecific", "Unknown"): "Gender",
    ("Divorced", "Married", "None", "Single", "Widowhood"): "DirPersonMaritalStatus",
    ("Item", "Service"): "EcoResProductType",
}
_WHO_AM_I = (
    '<ComplexType Name="WhoAmIResponse">'
    '<Property Name="BusinessUnitId" Type="Edm.Guid" Nullable="false"/>'
    '<Property Name="UserId" Type="Edm.Guid" Nullable="false"/>'
    '<Property Name="OrganizationId" Type="Edm.Guid" Nullable="false"/>'
    "</ComplexType>"
    '<Function Name="WhoAmI"><ReturnType Type="{ns}.WhoAmIResponse" Nullable="false"/>'
    "</Function>"
)
_EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
_EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"


def enum_name(spec: ColumnSpec) -> str | None:
    """The EnumType of an F&O enum field, None for other fields."""
    if spec.allowed is None or spec.type != "string":
        return None
    return _ENUM_NAMES.get(tuple(sorted(str(a) for a in spec.allowed)), spec.name)


_CHANGE_TRACKING = (
    '<Annotation Term="Org.OData.Capabilities.V1.ChangeTracking"><Record>'
    '<PropertyValue Property="Supported" Bool="true"/></Record></Annotation>'
)


def metadata_document(
    store: Store, namespace: str, tracked: Callable[[str], bool] | None = None
) -> bytes:
    """The CSDL document; with `tracked`, the sets it names carry the ChangeTracking
    annotation."""
    served = list(store.tables.values())
    enums = _enum_types(served) if namespace == FINOPS_NAMESPACE else {}
    types = "".join(_entity_type(t, store, namespace, enums) for t in served)
    members = "".join(
        f"<EnumType Name={quoteattr(name)}>"
        + "".join(f'<Member Name={quoteattr(m)} Value="{i}"/>' for i, m in enumerate(values))
        + "</EnumType>"
        for name, values in enums.items()
    )
    sets = "".join(_entity_set(t, store, namespace, tracked) for t in served)
    if namespace == DATAVERSE_NAMESPACE:
        types += _WHO_AM_I.format(ns=namespace)
        sets += f'<FunctionImport Name="WhoAmI" Function="{namespace}.WhoAmI"/>'
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<edmx:Edmx Version="4.0" xmlns:edmx="{_EDMX}">'
        "<edmx:DataServices>"
        f'<Schema Namespace="{namespace}" xmlns="{_EDM_NS}">'
        f"{members}{types}"
        f'<EntityContainer Name="Resources">{sets}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    ).encode()


def _enum_types(tables: list[Table]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for table in tables:
        for spec in table.contract.columns.values():
            name = enum_name(spec)
            if name is not None and spec.allowed is not None:
                found.setdefault(name, tuple(str(a) for a in spec.allowed))
    return found


def _entity_set(
    table: Table, store: Store, namespace: str, tracked: Callable[[str], bool] | None
) -> str:
    kind = quoteattr(f"{namespace}.{entity_type_name(table.name)}")
    bindings = "".join(
        f"<NavigationPropertyBinding Path={quoteattr(n.name)} Target={quoteattr(n.target)}/>"
        for n in navigations(table, store).values()
    )
    if tracked is not None and tracked(table.name):
        bindings += _CHANGE_TRACKING
    return f"<EntitySet Name={quoteattr(table.name)} EntityType={kind}>{bindings}</EntitySet>"


def _entity_type(
    table: Table, store: Store, namespace: str, enums: dict[str, tuple[str, ...]]
) -> str:
    refs = "".join(f"<PropertyRef Name={quoteattr(k)}/>" for k in table.key_columns)
    specs = list(table.contract.columns.values())
    if table.primary:
        specs += [s for n, s in SYSTEM_COLUMNS.items() if n not in table.contract.columns]
    properties = "".join(
        _property(spec, spec.name in table.key_columns, namespace, bool(enums)) for spec in specs
    )
    navs = "".join(_navigation(n, store, namespace) for n in navigations(table, store).values())
    name = quoteattr(entity_type_name(table.name))
    return f"<EntityType Name={name}><Key>{refs}</Key>{properties}{navs}</EntityType>"


def _property(spec: ColumnSpec, key: bool, namespace: str, with_enums: bool) -> str:
    nullable = "false" if key or not spec.nullable else "true"
    return (
        f"<Property Name={quoteattr(spec.name)} {_type(spec, namespace, with_enums)} "
        f'Nullable="{nullable}"/>'
    )


def _type(spec: ColumnSpec, namespace: str, with_enums: bool) -> str:
    match = _DECIMAL.fullmatch(spec.type)
    if match:
        return f'Type="Edm.Decimal" Precision="{match[1]}" Scale="{match[2]}"'
    enum = enum_name(spec) if with_enums else None
    if enum is not None:
        return f'Type="{namespace}.{enum}"'
    if spec is SYSTEM_COLUMNS["versionnumber"]:
        return 'Type="Edm.Int64"'
    if spec.type == "string" and spec.max_length is not None:
        return f'Type="Edm.String" MaxLength="{spec.max_length}"'
    return f'Type="{_EDM[spec.type]}"'


def _navigation(nav: Navigation, store: Store, namespace: str) -> str:
    target = f"{namespace}.{entity_type_name(nav.target)}"
    if nav.collection:
        return f'<NavigationProperty Name={quoteattr(nav.name)} Type="Collection({target})"/>'
    constraints = "".join(
        f"<ReferentialConstraint Property={quoteattr(a)} ReferencedProperty={quoteattr(b)}/>"
        for a, b in nav.pairs
    )
    return (
        f"<NavigationProperty Name={quoteattr(nav.name)} Type={quoteattr(target)}>"
        f"{constraints}</NavigationProperty>"
    )
