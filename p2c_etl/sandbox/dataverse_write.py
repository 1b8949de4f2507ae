"""Writing Dataverse records: payloads, `@odata.bind` lookups, upserts and `*Multiple`.

A payload names contract columns and lookups; a lookup is written as
`"<nav>@odata.bind": "/accounts(<guid>)"` (or an absolute URL, or an alternate key) and
stored as the GUID in `_<nav>_value`, or for a polymorphic lookup such as
`customerid_account` in `_customerid_value`. The record it points to must exist. Writing
`_x_value` itself, or any column the contract does not have, is refused as Dataverse does.

Records are addressed by primary id (`accounts(<guid>)`) or by the alternate key, which is
the contract's `keys` unless the tenant declares another or none (`Sandbox(alternate_keys=)`)
(`accounts(accountnumber='A-1')`; a lookup key part may be named `quoteid` or
`_quoteid_value`). Where a table has no alternate key, a key predicate other than the primary
id is refused (400), as is a `*Multiple` target named by neither `@odata.id` nor its id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from p2c_etl.model.contracts import GUID_PATTERN
from p2c_etl.sandbox.conditional import check_if_match, check_if_none_match
from p2c_etl.sandbox.entitynames import logical_name, type_name
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.protocol import (
    BAD_PAYLOAD,
    BAD_QUERY,
    DUPLICATE,
    DUPLICATE_KEY,
    NOT_FOUND,
    REFUSED,
    ODataError,
)
from p2c_etl.sandbox.query import SYSTEM_COLUMNS
from p2c_etl.sandbox.resource import KeySpec, relative_path, split_resource
from p2c_etl.sandbox.store import Key, Row, Store, Table
from p2c_etl.sandbox.values import Reader, folded, literal_for, reader, text

WriteMode = Literal["upsert", "update", "create"]
Binds = dict[tuple[str, str], tuple[str, str]]
"""Lookups already resolved in one request: (navigation property, bind URL) → (the `_x_value`
column, the target's id)."""
BASE_PATH = "/api/data/v9.2/"
_GUID = re.compile(GUID_PATTERN)


class DataverseWriter:
    """Creates, updates and deletes the records of one Dataverse store."""

    def __init__(self, store: Store, faults: Faults) -> None:
        self.store = store
        self.faults = faults
        self._readers: dict[Table, dict[str, Reader]] = {}

    def locate(self, table: Table, key: KeySpec) -> Key | None:
        """The key of the record `key` addresses, or None when there is none."""
        return self._find(table, self._address(table, key))

    def create(self, table: Table, body: object) -> Row:
        with self.store.journal.atomic():
            return self._insert(table, self.payload(table, body))

    def upsert(
        self,
        table: Table,
        key: KeySpec,
        body: object,
        mode: WriteMode,
        etag: str | None = None,
        none_match: str | None = None,
    ) -> tuple[Row, bool]:
        """Update the addressed record, or create it (`mode` may forbid either); the row
        and whether it was created."""
        with self.store.journal.atomic():
            values = self.payload(table, body)
            address = self._address(table, key)
            _check_matches(values, address)
            found = self._find(table, address)
            if found is None:
                if mode == "update":
                    raise _not_found(table, key)
                return self._insert(table, address | values), True
            if mode == "create":
                raise ODataError(
                    412, "A record with matching key values already exists.", DUPLICATE
                )
            check_if_match(etag, table.get(found))
            check_if_none_match(none_match, table.get(found))
            return self._update(table, found, values), False

    def delete(self, table: Table, key: KeySpec, etag: str | None = None) -> None:
        with self.store.journal.atomic():
            found = self.locate(table, key)
            if found is None:
                raise _not_found(table, key)
            check_if_match(etag, table.get(found))
            table.delete(found)

    def multiple(self, table: Table, body: object, mode: WriteMode) -> list[str]:
        """`CreateMultiple` / `UpdateMultiple` / `UpsertMultiple`: every target is written,
        or none; the ids written."""
        targets = body.get("Targets") if isinstance(body, dict) else None
        if not isinstance(targets, list) or not targets:
            raise ODataError(400, "The request needs a non-empty Targets array", BAD_PAYLOAD)
        ids: list[str] = []
        binds: Binds = {}
        with self.store.journal.atomic():
            for index, target in enumerate(targets, start=1):
                try:
                    row = self._target(table, target, mode, binds)
                except ODataError as error:
                    where = f"Target {index} ({_describe(table, target)})"
                    raise ODataError(400, f"{where}: {error.message}", error.code) from None
                ids.append(str(row.values[table.primary or ""]))
        return ids

    def payload(self, table: Table, body: object, binds: Binds | None = None) -> dict[str, Any]:
        """The typed column values a request body writes; 400 for anything Dataverse refuses.
        `binds` keeps the lookups resolved for earlier targets of the same request."""
        if not isinstance(body, dict):
            raise ODataError(400, "The request body must be a JSON object", BAD_PAYLOAD)
        readers = self._readers_of(table)
        values: dict[str, Any] = {}
        for name, raw in body.items():
            read = readers.get(name)
            if read is not None:
                values[name] = _typed(table, name, read, raw)
            elif name.endswith("@odata.bind"):
                nav = name.removesuffix("@odata.bind")
                column, target = self._bound(table, nav, raw, {} if binds is None else binds)
                values[column] = target
            elif name in SYSTEM_COLUMNS and name not in table.contract.columns:
                _check_server_kept(table, name, raw)
            elif "@" not in name:
                raise _not_writable(table, name)
        return values

    def _readers_of(self, table: Table) -> dict[str, Reader]:
        """The reader of each column a payload may name as it is (not a lookup), made once
        per table rather than for every record of an `UpsertMultiple`."""
        found = self._readers.get(table)
        if found is None:
            specs = table.contract.columns.values()
            found = {s.name: reader(s) for s in specs if not _is_lookup(s.name, s.bind)}
            self._readers[table] = found
        return found

    def _target(self, table: Table, target: object, mode: WriteMode, binds: Binds) -> Row:
        if not isinstance(target, dict):
            raise ODataError(400, "A target must be a JSON object", BAD_PAYLOAD)
        expected = f"Microsoft.Dynamics.CRM.{logical_name(table.name)}"
        if str(target.get("@odata.type", "")).lstrip("#") != expected:
            raise ODataError(400, f'A target needs "@odata.type": "{expected}"', BAD_PAYLOAD)
        values = self.payload(table, target, binds)
        if mode == "create" and "@odata.id" not in target:
            return self._insert(table, values)
        address = self._target_address(table, target, values)
        _check_matches(values, address)
        found = self._find(table, address)
        if found is None and mode == "update":
            shown = ",".join(f"{k}={text(v)}" for k, v in address.items())
            message = f"{logical_name(table.name)} With Id = {shown} Does Not Exist"
            raise ODataError(404, message, NOT_FOUND)
        if found is None or mode == "create":
            return self._insert(table, address | values)
        return self._update(table, found, values)

    def _target_address(
        self, table: Table, target: dict[str, Any], values: dict[str, Any]
    ) -> dict[str, Any]:
        """What names a target's record: `@odata.id` (`accounts(accountnumber='A-1')`), its
        primary id, or its alternate key values."""
        reference = target.get("@odata.id")
        if reference is not None:
            address = split_resource(relative_path(str(reference), BASE_PATH)[0])
            if address.name != table.name or address.key is None or address.rest:
                message = f"@odata.id {reference!r} does not name a record of {table.name}"
                raise ODataError(400, message, BAD_PAYLOAD)
            return self._address(table, address.key)
        primary = table.primary or ""
        if values.get(primary) is not None:
            return {primary: values[primary]}
        if table.alternate_of(values) is not None:
            return {c: values[c] for c in table.alternate}
        if not table.alternate:
            message = f"A target needs @odata.id or {primary} ({type_name(table)} has no "
            raise ODataError(400, message + "alternate key)", BAD_PAYLOAD)
        names = ", ".join(table.alternate)
        message = f"A target needs @odata.id, {primary} or the alternate key ({names})"
        raise ODataError(400, message, BAD_PAYLOAD)

    def _insert(self, table: Table, values: dict[str, Any]) -> Row:
        primary = table.primary or ""
        record = dict.fromkeys(table.contract.columns) | values
        record[primary] = record.get(primary) or str(uuid.uuid4())
        if table.get(table.key_of(record)) is not None:
            raise ODataError(412, f"A record with id {record[primary]} already exists.", DUPLICATE)
        missing = [
            spec.name
            for spec in table.contract.columns.values()
            if not spec.nullable and record.get(spec.name) is None
        ]
        if missing:
            raise ODataError(400, f"{missing[0]} is required and cannot be null", BAD_PAYLOAD)
        self._check_record(table, record, None)
        return table.put(record)

    def _update(self, table: Table, key: Key, values: dict[str, Any]) -> Row:
        row = table.get(key)
        assert row is not None
        primary = table.primary or ""
        if primary in values and folded(values[primary]) != key[0]:
            raise ODataError(400, f"{primary} cannot be changed", BAD_PAYLOAD)
        for name, value in values.items():
            if value is None and not table.contract.columns[name].nullable:
                raise ODataError(400, f"{name} is required and cannot be null", BAD_PAYLOAD)
        record = row.values | values
        self._check_record(table, record, row.values)
        return table.put(record)

    def _check_record(
        self, table: Table, record: dict[str, Any], before: Mapping[str, Any] | None
    ) -> None:
        refused = self.faults.rejection(record)
        if refused is not None:
            raise ODataError(400, refused, REFUSED)
        alternate = table.alternate_of(record)
        if alternate is None or (before is not None and table.alternate_of(before) == alternate):
            return
        if any(k != table.key_of(record) for k in table.find(alternate)):
            shown = ", ".join(f"{c} = {text(record[c])}" for c in table.alternate)
            message = f"A record that has the attribute values {shown} already exists."
            raise ODataError(412, message, DUPLICATE_KEY)

    def _address(self, table: Table, key: KeySpec) -> dict[str, Any]:
        """The column values a key predicate names, typed."""
        primary = table.primary or ""
        if not key.named:
            return {primary: _guid(key.single)}
        named = {_key_column(table, n): v for n, v in key.named.items()}
        if set(named) == {primary}:
            return {primary: _guid(named[primary])}
        if set(named) != set(table.alternate):
            message = f"The key ({', '.join(key.named)}) is not a key of {type_name(table)}."
            raise ODataError(400, message, BAD_QUERY)
        try:
            return {c: literal_for(table.contract.columns[c], v) for c, v in named.items()}
        except ValueError as exc:
            raise ODataError(400, f"Invalid key value: {exc}", BAD_QUERY) from None

    def _find(self, table: Table, address: Mapping[str, Any]) -> Key | None:
        primary = table.primary or ""
        if primary in address:
            key = (folded(address[primary]),)
            return key if table.get(key) is not None else None
        alternate = table.alternate_of(address)
        found = table.find(alternate) if alternate is not None else []
        if len(found) > 1:
            message = f"{len(found)} records of {type_name(table)} have the key {alternate}."
            raise ODataError(400, message, DUPLICATE_KEY)
        return found[0] if found else None

    def _bound(self, table: Table, nav: str, raw: Any, binds: Binds) -> tuple[str, str | None]:
        """`_bind`, once per lookup of a request: a thousand products of an `UpsertMultiple`
        bound to one unit are one look-up. A lookup into `table` itself is resolved every
        time (an earlier target of the request may have written the record it points to)."""
        if not isinstance(raw, str):
            return self._bind(table, nav, raw)[:2]
        known = binds.get((nav, raw))
        if known is not None:
            return known
        column, target, pointed = self._bind(table, nav, raw)
        if target is not None and pointed != table.name:
            binds[nav, raw] = (column, target)
        return column, target

    def _bind(self, table: Table, nav: str, raw: Any) -> tuple[str, str | None, str | None]:
        """The `_x_value` column a lookup writes, the id of the record it points to and the
        entity set of that record (None when the lookup is emptied)."""
        column, logical = _lookup_column(table, nav)
        if raw is None:
            return column, None, None
        if not isinstance(raw, str):
            raise ODataError(400, f"{nav}@odata.bind must be a URL text", BAD_PAYLOAD)
        path, _ = relative_path(raw, BASE_PATH)
        address = split_resource(path)
        target = self.store.table(address.name)
        spec = table.contract.columns[column]
        allowed = target is not None and (not spec.bind or address.name in spec.bind)
        if target is None or not allowed or address.key is None or address.rest:
            raise ODataError(400, f"{nav}@odata.bind cannot point to {raw!r}", BAD_PAYLOAD)
        if logical is not None and logical_name(address.name) != logical:
            raise ODataError(400, f"{nav} points to {logical}, not to {address.name}", BAD_PAYLOAD)
        found = self.locate(target, address.key)
        row = target.get(found) if found is not None else None
        if row is None:
            message = f"Entity '{logical_name(address.name)}' With Id = {raw} Does Not Exist"
            raise ODataError(400, message, NOT_FOUND)
        return column, str(row.values[target.primary or ""]), address.name


def _is_lookup(name: str, bind: tuple[str, ...]) -> bool:
    """A lookup column (`_x_value`): written only as `x@odata.bind`."""
    return bool(bind) or (name.startswith("_") and name.endswith("_value"))


def _typed(table: Table, name: str, read: Reader, raw: Any) -> Any:
    try:
        return read(raw)
    except ValueError as exc:
        logical = logical_name(table.name)
        message = f"A validation error occurred for attribute '{name}' of entity '{logical}': {exc}"
        raise ODataError(400, message, BAD_PAYLOAD) from None


def _not_writable(table: Table, name: str) -> ODataError:
    """Why a payload cannot name `name`: not a column, or a lookup written as its value."""
    logical = logical_name(table.name)
    if name not in table.contract.columns:
        message = (
            f"Invalid property '{name}' was found in entity 'Microsoft.Dynamics.CRM.{logical}'."
        )
        return ODataError(400, message, BAD_PAYLOAD)
    message = (
        f"Invalid property '{name}' was found in entity 'Microsoft.Dynamics.CRM.{logical}': "
        f"write the lookup as '{name[1:-6]}@odata.bind'."
    )
    return ODataError(400, message, BAD_PAYLOAD)


def _check_server_kept(table: Table, name: str, raw: Any) -> None:
    """A server-kept column may be sent empty (as clients that send every property do), and
    is then left as the server keeps it; a value for it is refused."""
    if raw is not None:
        logical = logical_name(table.name)
        message = (
            f"The attribute '{name}' of '{logical}' is set by the server; it cannot be written."
        )
        raise ODataError(400, message, BAD_PAYLOAD)


def _lookup_column(table: Table, nav: str) -> tuple[str, str | None]:
    """The `_x_value` column a navigation property writes, and the logical name a
    polymorphic one (`customerid_account`) requires of its target."""
    columns = table.contract.columns
    direct = f"_{nav}_value"
    if direct in columns and len(columns[direct].bind) <= 1:
        return direct, None
    base, sep, logical = nav.rpartition("_")
    if sep and f"_{base}_value" in columns:
        return f"_{base}_value", logical
    entity = f"Microsoft.Dynamics.CRM.{logical_name(table.name)}"
    message = (
        f"An undeclared property '{nav}' which only has property annotations was found "
        f"in entity '{entity}'."
    )
    raise ODataError(400, message, BAD_PAYLOAD)


def _key_column(table: Table, name: str) -> str:
    lookup = f"_{name}_value"
    return (
        lookup if name not in table.contract.columns and lookup in table.contract.columns else name
    )


def _guid(value: Any) -> str:
    if not isinstance(value, str) or not _GUID.match(value):
        raise ODataError(400, f"{text(value)!r} is not a valid record id (a GUID)", BAD_QUERY)
    return value.lower()


def _check_matches(values: Mapping[str, Any], address: Mapping[str, Any]) -> None:
    for column, value in address.items():
        if column in values and folded(values[column]) != folded(value):
            shown = f"({text(values[column])}) differs from the URL ({text(value)})"
            message = f"{column} in the body {shown}"
            raise ODataError(400, message, BAD_PAYLOAD)


def _not_found(table: Table, key: KeySpec) -> ODataError:
    shown = (
        key.single if not key.named else ",".join(f"{k}={text(v)}" for k, v in key.named.items())
    )
    message = f"{logical_name(table.name)} With Id = {shown} Does Not Exist"
    return ODataError(404, message, NOT_FOUND)


def _describe(table: Table, target: object) -> str:
    values = target if isinstance(target, dict) else {}
    primary = table.primary or ""
    if values.get("@odata.id") is not None:
        return str(values["@odata.id"])
    if values.get(primary) is not None:
        return f"{primary}={values[primary]}"
    return ",".join(f"{c}={text(values.get(c))!r}" for c in table.alternate) or "no key"
