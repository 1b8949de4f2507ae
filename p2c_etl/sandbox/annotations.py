"""Instance annotations of Dataverse records, as `Prefer: odata.include-annotations` asks.

    Prefer: odata.include-annotations="*"
    Prefer: odata.include-annotations="OData.Community.Display.V1.FormattedValue"
    Prefer: odata.include-annotations="Microsoft.Dynamics.CRM.*"

`<column>@OData.Community.Display.V1.FormattedValue`, written just before the column: an
option set's label, Yes / No, money in the record's currency (`$1,234.50`), dates as an
en-US user sees them in UTC (`3/1/2026`, `3/1/2026 2:05 PM`), a lookup's primary name. A
lookup also gets `@Microsoft.Dynamics.CRM.lookuplogicalname` and
`@Microsoft.Dynamics.CRM.associatednavigationproperty`. With `$count=true` a page also gets
`@Microsoft.Dynamics.CRM.totalrecordcount` (the count, up to 5,000) and
`@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded` (whether more records match). The
answer says which preference it applied in `Preference-Applied`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.entitynames import logical_name
from p2c_etl.sandbox.optionsets import BOOLEAN_LABELS, option_set
from p2c_etl.sandbox.protocol import ApiRequest
from p2c_etl.sandbox.query import SYSTEM_COLUMNS
from p2c_etl.sandbox.store import Store, Table

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
TOTAL = "Microsoft.Dynamics.CRM.totalrecordcount"
EXCEEDED = "Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"
_KNOWN = (FORMATTED, LOOKUP_NAME, NAVIGATION, TOTAL, EXCEEDED)
_CURRENCY = "_transactioncurrencyid_value"


def wanted_annotations(req: ApiRequest) -> frozenset[str]:
    """The annotations the request's `odata.include-annotations` preference asks for."""
    raw = req.prefers("odata.include-annotations")
    if not raw:
        return frozenset()
    patterns = [p.strip() for p in raw.split(",") if p.strip()]
    wanted = {a for a in _KNOWN for p in patterns if not p.startswith("-") and _matches(p, a)}
    refused = {a for a in _KNOWN for p in patterns if p.startswith("-") and _matches(p[1:], a)}
    return frozenset(wanted - refused)


def applied(req: ApiRequest) -> str | None:
    """The `Preference-Applied` text for the annotations preference, if one was given."""
    raw = req.prefers("odata.include-annotations")
    return f'odata.include-annotations="{raw}"' if raw else None


def _matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def primary_name(table: Table) -> str | None:
    """The column that names a record: `name`, a contact's `fullname`, a currency's
    `currencyname`; None for the line tables, which the contracts give no name column."""
    if table.name == "contacts":
        return "fullname"
    if table.name == "transactioncurrencies":
        return "currencyname"
    return "name" if "name" in table.contract.columns else None


class Annotator:
    """Adds the wanted annotations to the records of one table."""

    def __init__(self, store: Store, table: Table, wanted: frozenset[str]) -> None:
        self.store, self.table, self.wanted = store, table, wanted
        self.entity = logical_name(table.name)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        if not self.wanted:
            return record
        shown: dict[str, Any] = {}
        for name, value in record.items():
            spec = self.table.contract.columns.get(name) or SYSTEM_COLUMNS.get(name)
            if spec is not None and value is not None:
                shown |= self._for(spec, value, record)
            shown[name] = value
        return shown

    def _for(self, spec: ColumnSpec, value: Any, record: dict[str, Any]) -> dict[str, Any]:
        notes: dict[str, Any] = {}
        if spec.bind:
            notes |= self._lookup(spec, str(value))
        else:
            text = self._formatted(spec, value, record)
            if text is not None and FORMATTED in self.wanted:
                notes[f"{spec.name}@{FORMATTED}"] = text
        return notes

    def _lookup(self, spec: ColumnSpec, value: str) -> dict[str, Any]:
        target = self._lookup_target(spec, value)
        if target is None:
            return {}
        table, values = target
        notes: dict[str, Any] = {}
        name = _record_name(table, values)
        if FORMATTED in self.wanted and name is not None:
            notes[f"{spec.name}@{FORMATTED}"] = name
        if NAVIGATION in self.wanted:
            nav = spec.name[1:-6]
            if len(spec.bind) > 1:
                nav = f"{nav}_{logical_name(table.name)}"
            notes[f"{spec.name}@{NAVIGATION}"] = nav
        if LOOKUP_NAME in self.wanted:
            notes[f"{spec.name}@{LOOKUP_NAME}"] = logical_name(table.name)
        return notes

    def _lookup_target(self, spec: ColumnSpec, value: str) -> tuple[Table, dict[str, Any]] | None:
        for name in spec.bind:
            table = self.store.table(name)
            row = table.get((value,)) if table is not None else None
            if table is not None and row is not None:
                return table, row.values
        return None

    def _formatted(self, spec: ColumnSpec, value: Any, record: dict[str, Any]) -> str | None:
        options = option_set(self.entity, spec.name)
        if options is not None:
            return options.labels.get(value)
        if isinstance(value, bool):
            return BOOLEAN_LABELS[value]
        if isinstance(value, datetime):
            return _datetime_text(value)
        if isinstance(value, date):
            return f"{value.month}/{value.day}/{value.year}"
        if spec.type.replace(" ", "") == "decimal(19,4)" and isinstance(value, Decimal):
            return _money(value, self._symbol(record))
        return None

    def _symbol(self, record: dict[str, Any]) -> str:
        currency = record.get(_CURRENCY)
        currencies = self.store.table("transactioncurrencies")
        row = currencies.get((currency,)) if currencies is not None and currency else None
        symbol = row.values.get("currencysymbol") if row is not None else None
        return str(symbol) if symbol else ""


def _record_name(table: Table, values: dict[str, Any]) -> str | None:
    column = primary_name(table)
    if column == "fullname":
        parts = [values.get("firstname"), values.get("lastname")]
        return " ".join(str(p) for p in parts if p) or None
    value = values.get(column) if column else None
    return str(value) if value is not None else None


def _money(value: Decimal, symbol: str) -> str:
    amount = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount):,.2f}"


def _datetime_text(value: datetime) -> str:
    hour = value.hour % 12 or 12
    half = "AM" if value.hour < 12 else "PM"
    return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d} {half}"


def count_annotations(wanted: frozenset[str], count: int | None, more: bool) -> dict[str, Any]:
    """The page annotations of a (capped) `$count`, as far as they are wanted."""
    if count is None:
        return {}
    notes: dict[str, Any] = {}
    if TOTAL in wanted:
        notes[f"@{TOTAL}"] = count
    if EXCEEDED in wanted:
        notes[f"@{EXCEEDED}"] = more
    return notes
