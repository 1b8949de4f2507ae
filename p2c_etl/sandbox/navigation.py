"""Navigation properties: what `$expand` follows and `$metadata` declares.

Dataverse: each lookup column `_x_value` is the single-valued navigation property `x` to the
entity set it points to (`_transactioncurrencyid_value` ↔ `transactioncurrencyid`); a lookup
to several sets has one property per target, `x_<logicalname>` (`_parentcustomerid_value` ↔
`parentcustomerid_account`, `parentcustomerid_contact`).

Finance and Operations: a header entity `<X>Headers` has the collection-valued property
`<X>Lines` to the lines that share its key (dataAreaId and the document number), and each
line has the single-valued property `<X>Header` back to its header.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2c_etl.sandbox.entitynames import entity_type_name, logical_name
from p2c_etl.sandbox.store import Store, Table


@dataclass(frozen=True)
class Navigation:
    """`name` leads from a record to the records of `target` whose `pairs[i][1]` equals the
    record's `pairs[i][0]`; one record, or (`collection`) every such record."""

    name: str
    target: str
    pairs: tuple[tuple[str, str], ...]
    collection: bool


def navigations(table: Table, store: Store) -> dict[str, Navigation]:
    """The navigation properties of `table`, by name."""
    found = _lookups(table, store) if table.primary else _document_lines(table, store)
    return {n.name: n for n in found}


def _lookups(table: Table, store: Store) -> list[Navigation]:
    found: list[Navigation] = []
    for spec in table.contract.columns.values():
        targets = [t for t in spec.bind if store.table(t) is not None]
        attribute = spec.name[1:-6]
        for target in targets:
            name = attribute if len(spec.bind) == 1 else f"{attribute}_{logical_name(target)}"
            primary = store.tables[target].primary or ""
            found.append(Navigation(name, target, ((spec.name, primary),), collection=False))
    return found


def _document_lines(table: Table, store: Store) -> list[Navigation]:
    if table.name.endswith("Headers"):
        lines = store.table(table.name.removesuffix("Headers") + "Lines")
        if lines is not None and set(table.key_columns) <= set(lines.key_columns):
            pairs = tuple((c, c) for c in table.key_columns)
            return [Navigation(lines.name, lines.name, pairs, collection=True)]
    if table.name.endswith("Lines"):
        header = store.table(table.name.removesuffix("Lines") + "Headers")
        if header is not None and set(header.key_columns) <= set(table.key_columns):
            pairs = tuple((c, c) for c in header.key_columns)
            name = entity_type_name(header.name)
            return [Navigation(name, header.name, pairs, collection=False)]
    return []
