"""Names derived from an entity set's name: its Dataverse logical name, its entity type name,
the attribute name of a lookup column, and the qualified type name errors cite."""

from __future__ import annotations

import re

from p2c_etl.sandbox.store import Table

DATAVERSE_NAMESPACE = "Microsoft.Dynamics.CRM"
FINOPS_NAMESPACE = "Microsoft.Dynamics.DataEntities"


def logical_name(entity_set: str) -> str:
    """accounts → account, transactioncurrencies → transactioncurrency."""
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "y"
    return entity_set[:-1] if entity_set.endswith("s") else entity_set


def entity_type_name(entity_set: str) -> str:
    """CustomersV2 → CustomerV2, SellableReleasedProducts → SellableReleasedProduct."""
    versioned = re.match(r"^(.*)s(V\d+)$", entity_set)
    if versioned:
        return versioned[1] + versioned[2]
    return logical_name(entity_set)


def attribute_name(column: str) -> str:
    """`_parentcustomerid_value` → `parentcustomerid`; other columns keep their name."""
    if column.startswith("_") and column.endswith("_value"):
        return column[1:-6]
    return column


def type_name(table: Table) -> str:
    """The qualified entity type of a table, as error messages name it:
    `Microsoft.Dynamics.CRM.account`, `Microsoft.Dynamics.DataEntities.CustomerV2`."""
    namespace = DATAVERSE_NAMESPACE if table.primary else FINOPS_NAMESPACE
    return f"{namespace}.{entity_type_name(table.name)}"
