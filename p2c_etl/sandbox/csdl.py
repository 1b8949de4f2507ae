"""`$metadata`: an OData CSDL document of the served entity sets.

One EntityType per entity set (its keys as `Key/PropertyRef`, every contract column as a
`Property` with its Edm type and nullability) and an EntityContainer listing the sets.
Enum-valued columns (contract `allowed` texts such as No/Yes) are written as Edm.String;
like F&O's own document, it carries no MaxLength.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.store import Table

_EDM = {
    "string": "Edm.String",
    "guid": "Edm.Guid",
    "int": "Edm.Int32",
    "bool": "Edm.Boolean",
    "date": "Edm.DateTimeOffset",
    "datetime": "Edm.DateTimeOffset",
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")


def entity_type_name(entity_set: str) -> str:
    """CustomersV2 → CustomerV2, SellableReleasedProducts → SellableReleasedProduct."""
    versioned = re.match(r"^(.*)s(V\d+)$", entity_set)
    if versioned:
        return versioned[1] + versioned[2]
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "y"
    return entity_set[:-1] if entity_set.endswith("s") else entity_set


def metadata_document(tables: Iterable[Table], namespace: str) -> bytes:
    served = list(tables)
    types = "".join(_entity_type(t) for t in served)
    sets = "".join(
        f"<EntitySet Name={quoteattr(t.name)} EntityType="
        f"{quoteattr(namespace + '.' + entity_type_name(t.name))}/>"
        for t in served
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">'
        "<edmx:DataServices>"
        f'<Schema Namespace="{namespace}" xmlns="http://docs.oasis-open.org/odata/ns/edm">'
        f"{types}"
        f'<EntityContainer Name="Resources">{sets}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    ).encode()


def _entity_type(table: Table) -> str:
    refs = "".join(f"<PropertyRef Name={quoteattr(k)}/>" for k in table.key_columns)
    properties = "".join(
        _property(spec, spec.name in table.key_columns) for spec in table.contract.columns.values()
    )
    name = quoteattr(entity_type_name(table.name))
    return f"<EntityType Name={name}><Key>{refs}</Key>{properties}</EntityType>"


def _property(spec: ColumnSpec, key: bool) -> str:
    match = _DECIMAL.fullmatch(spec.type)
    if match:
        edm = f'"Edm.Decimal" Precision="{match[1]}" Scale="{match[2]}"'
    else:
        edm = f'"{_EDM[spec.type]}"'
    nullable = "false" if key or not spec.nullable else "true"
    return f'<Property Name={quoteattr(spec.name)} Type={edm} Nullable="{nullable}"/>'
