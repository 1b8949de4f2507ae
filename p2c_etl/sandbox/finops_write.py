"""Writing F&O records: payloads, composite keys, the default company.

A record is addressed with all its key fields, `dataAreaId` included:
`CustomersV2(dataAreaId='usmf',CustomerAccount='O''Brien')`. Without `cross-company=true`
only records of the default company can be seen, changed or deleted. A created record
without `dataAreaId` belongs to the default company. Key fields cannot be changed; text keys
compare as SQL Server compares them (case-insensitively, trailing spaces ignored), so
`CustomersV2(dataAreaId='USMF',CustomerAccount='acc-1 ')` is the record `usmf`, `ACC-1`.
A date written as 1900-01-01 (dateNull) is held as no date. An entity's declared modification
time (`modified` in its contract) is the system's: a value for it is refused, an empty one left
as the system keeps it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from p2c_etl.sandbox.conditional import check_if_match
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.odata_filter import Predicate
from p2c_etl.sandbox.protocol import (
    BAD_PAYLOAD,
    BAD_QUERY,
    DUPLICATE,
    NOT_FOUND,
    REFUSED,
    ODataError,
)
from p2c_etl.sandbox.query import type_name
from p2c_etl.sandbox.resource import KeySpec
from p2c_etl.sandbox.store import Key, Row, Store, Table
from p2c_etl.sandbox.values import Reader, finops_held, folded, literal_for, reader, text

COMPANY = "dataAreaId"


@dataclass(frozen=True)
class _Columns:
    """What writing needs of a table's contract, found once per table rather than for
    every record of a `$batch`: each column's reader (a date on dateNull read as no date),
    the columns that must be filled in (in contract order), and a record with every column
    empty."""

    readers: dict[str, Reader]
    required: tuple[str, ...]
    empty: dict[str, None]

    def required_of(self, written: Mapping[str, Any]) -> list[str]:
        """The columns among `written` that must be filled in, in its order."""
        return [name for name in written if name in self.required]

    @classmethod
    def of(cls, table: Table) -> _Columns:
        specs = table.contract.columns.values()
        readers = {
            s.name: _held(reader(s)) if s.type in ("date", "datetime") else reader(s) for s in specs
        }
        required = tuple(s.name for s in specs if not s.nullable)
        return cls(readers, required, dict.fromkeys(table.contract.columns))


def _held(read: Reader) -> Reader:
    """`read`, then a date on F&O's dateNull held as no date."""
    return lambda value: finops_held(read(value))


class FinOpsWriter:
    """Creates, updates and deletes the records of one F&O store."""

    def __init__(self, store: Store, faults: Faults, company: str) -> None:
        self.store = store
        self.faults = faults
        self.company = company
        self._columns: dict[Table, _Columns] = {}

    def visible(self, table: Table, cross_company: bool) -> Predicate | None:
        """Which records a request sees: the default company's, or all with cross-company."""
        if cross_company or COMPANY not in table.contract.columns:
            return None
        company = folded(self.company)
        return lambda record: folded(record.get(COMPANY)) == company

    def locate(self, table: Table, key: KeySpec, cross_company: bool) -> Key | None:
        found = table.key_of(self._address(table, key))
        row = table.get(found)
        visible = self.visible(table, cross_company)
        if row is None or (visible is not None and not visible(row.values)):
            return None
        return found

    def create(self, table: Table, body: object) -> Row:
        columns = self._columns_of(table)
        values = self.payload(table, body)
        if COMPANY in columns.empty and values.get(COMPANY) is None:
            values[COMPANY] = self.company
        record = columns.empty | values
        key = table.key_of(record)
        with self.store.journal.atomic():
            if table.get(key) is not None:
                shown = ", ".join(f"{c}: {text(record[c])}" for c in table.key_columns)
                message = (
                    f"Cannot create a record in {table.name} ({shown}). The record already exists."
                )
                raise ODataError(400, message, DUPLICATE)
            _check_required(table, columns.required, record)
            self._check_refused(record)
            return table.put(record, key)

    def update(
        self,
        table: Table,
        key: KeySpec,
        body: object,
        *,
        cross_company: bool,
        etag: str | None = None,
        replace: bool = False,
    ) -> Row:
        """PATCH (the given fields) or PUT (`replace`: every field) of an existing record."""
        values = self.payload(table, body)
        with self.store.journal.atomic():
            found = self.locate(table, key, cross_company)
            row = table.get(found) if found is not None else None
            if row is None:
                raise _not_found(table, key)
            _check_keys(table, values, row.values)
            check_if_match(etag, row)
            columns = self._columns_of(table)
            base = columns.empty if replace else row.values
            record = base | values | {c: row.values[c] for c in table.key_columns}
            written = columns.required if replace else columns.required_of(values)
            _check_required(table, written, record)
            self._check_refused(record)
            return table.put(record)

    def delete(
        self, table: Table, key: KeySpec, cross_company: bool, etag: str | None = None
    ) -> None:
        with self.store.journal.atomic():
            found = self.locate(table, key, cross_company)
            if found is None:
                raise _not_found(table, key)
            check_if_match(etag, table.get(found))
            table.delete(found)

    def payload(self, table: Table, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ODataError(400, "The request body must be a JSON object", BAD_PAYLOAD)
        modified = table.contract.modified
        if modified is not None and modified in body:  # the system sets it at every write
            if body[modified] is not None:
                message = (
                    f"Field {modified} of {table.name} is set by the system at every write; "
                    "it cannot be written."
                )
                raise ODataError(400, message, BAD_PAYLOAD)
            body = {k: v for k, v in body.items() if k != modified}  # sent empty: left as kept
        readers = self._columns_of(table).readers
        if readers.keys() >= body.keys():  # no annotations, no unknown names: the usual body
            try:
                return {k: None if v is None else readers[k](v) for k, v in body.items()}
            except ValueError:
                pass  # read again one field at a time, to name the first that does not fit
        values: dict[str, Any] = {}
        for name, raw in body.items():
            read = readers.get(name)
            if read is None:
                if "@" in name:
                    continue
                message = f"The property '{name}' does not exist on type '{type_name(table)}'."
                raise ODataError(400, message, BAD_PAYLOAD)
            try:
                values[name] = read(raw)
            except ValueError as exc:
                raise ODataError(400, f"Field {name} of {table.name}: {exc}", BAD_PAYLOAD) from None
        return values

    def _columns_of(self, table: Table) -> _Columns:
        """`table`'s `_Columns`, made on its first write."""
        found = self._columns.get(table)
        if found is None:
            found = self._columns[table] = _Columns.of(table)
        return found

    def _address(self, table: Table, key: KeySpec) -> dict[str, Any]:
        columns = table.key_columns
        named = dict(key.named) if key.named else {}
        if not key.named and len(columns) == 1:
            named = {columns[0]: key.single}
        if set(named) != set(columns):
            message = f"The key of {table.name} needs all its fields: {', '.join(columns)}"
            raise ODataError(400, message, BAD_QUERY)
        try:
            return {c: literal_for(table.contract.columns[c], named[c]) for c in columns}
        except ValueError as exc:
            raise ODataError(400, f"Invalid key value: {exc}", BAD_QUERY) from None

    def _check_refused(self, record: Mapping[str, Any]) -> None:
        refused = self.faults.rejection(record)
        if refused is not None:
            raise ODataError(400, refused, REFUSED)


def _check_keys(table: Table, values: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    for column in table.key_columns:
        if column in values and folded(values[column]) != folded(current[column]):
            raise ODataError(400, f"The key field {column} cannot be changed", BAD_PAYLOAD)


def _check_required(table: Table, required: Collection[str], record: Mapping[str, Any]) -> None:
    """Each of the `required` columns (those a request writes) must be filled in."""
    for name in required:
        if record.get(name) is None:
            raise ODataError(400, f"Field {name} of {table.name} must be filled in", BAD_PAYLOAD)


def _not_found(table: Table, key: KeySpec) -> ODataError:
    shown = ",".join(f"{k}={text(v)}" for k, v in key.named.items()) or text(key.single)
    return ODataError(404, f"No {table.name} record with key ({shown}).", NOT_FOUND)
