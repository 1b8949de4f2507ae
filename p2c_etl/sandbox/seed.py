"""Seeding: a folder in the files-connector layout → the tables of one server.

Every entity set with a contract is served; those with a file start with its records. The
contract's columns are read exactly by the files connector (decimals as `Decimal`, dates as
`date`); other columns of the file are kept as plain JSON values. Contract columns the file
lacks are null. A Dataverse record without a primary id gets a new GUID. A file that cannot
be read exactly, or that holds one key twice, is a `ConnectorError` naming the file. So is a
Dataverse file that holds one alternate key value twice, as a tenant with that key could not
(unless `unique_alternate_keys` is off), naming the key and both records. A seed that holds
such records is served as a tenant without that key: `alternate_keys={"accounts": ()}`, as
`DEMO_ALTERNATE_KEYS` declares for the demo company (which plants one account number twice).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.errors import ConnectorError, ContractError
from p2c_etl.model.contracts import Contract, ContractSet
from p2c_etl.sandbox.store import Clock, Journal, Key, Store, Table, utc_now

DEMO_ALTERNATE_KEYS: Mapping[str, tuple[str, ...]] = {"accounts": ()}
"""The alternate keys of the demo company's Dataverse tenant where they differ from the
contracts' `keys`: none on accounts, whose data plants account number ACC-01006-CONTOS on two
accounts (a reject case of the demo), as only a tenant without that key can hold them."""


def build_store(
    system: SystemName,
    folder: Path | None,
    contracts: ContractSet,
    on_commit: Callable[[int], None],
    *,
    unique_alternate_keys: bool = True,
    alternate_keys: Mapping[str, tuple[str, ...]] | None = None,
    clock: Clock = utc_now,
) -> Store:
    """A store with one table per contract of `system`, seeded from `folder` (if given).
    A Dataverse table's alternate key is its contract's `keys`, unless `alternate_keys`
    names the entity set (an empty tuple: the tenant declares no alternate key there).
    `clock` gives the time of every write (the seed's is its first reading)."""
    journal = Journal(on_commit, clock)
    connector = FilesConnector(system, folder, contracts) if folder is not None else None
    served = {c.entity for c in contracts if c.system == system and c.primary_id is not None}
    unknown = sorted(set(alternate_keys or {}) - served)
    if unknown:
        raise ContractError(f"{system}: no Dataverse entity set {', '.join(unknown)} to key")
    tables: dict[str, Table] = {}
    for contract in contracts:
        if contract.system != system:
            continue
        table = _table(contract, journal)
        if table.primary and alternate_keys and contract.entity in alternate_keys:
            table.alternate = _alternate(contract, alternate_keys[contract.entity])
        if connector is not None:
            _seed(table, connector, unique_alternate_keys)
        tables[contract.entity] = table
    return Store(system, tables, journal)


def _table(contract: Contract, journal: Journal) -> Table:
    if contract.system == "crm" and contract.primary_id is None:
        raise ContractError(f"{contract.source}: a Dataverse entity set needs primary_id")
    return Table(contract, journal, contract.primary_id if contract.system == "crm" else None)


def _alternate(contract: Contract, columns: tuple[str, ...]) -> tuple[str, ...]:
    for name in columns:
        contract.column(name)
    return tuple(columns)


def _seed(table: Table, connector: FilesConnector, unique_alternate: bool) -> None:
    path = connector.path(table.name)
    if path is None:
        return
    records, extras = read_records(connector, table.contract, path)
    table.extra_columns = extras
    guids = [c.name for c in table.contract.columns.values() if c.type == "guid"]
    places: dict[Key, int] = {}
    for place, values in enumerate(records, start=1):
        for name in guids:
            if isinstance(values.get(name), str):
                values[name] = values[name].lower()
        if table.primary is not None and values.get(table.primary) is None:
            values[table.primary] = str(uuid.uuid4())
        if table.get(table.key_of(values)) is not None:
            raise ConnectorError(f"{path}: key {table.key_of(values)} occurs more than once")
        if unique_alternate:
            _check_alternate(table, values, path, places, place)
        table.load(values)
        places[table.key_of(values)] = place


def _check_alternate(
    table: Table, values: dict[str, Any], path: Path, places: Mapping[Key, int], place: int
) -> None:
    """Refuse record `place` when one already seeded has its alternate key, naming both
    (their place in the file, counted from 1, and their primary id) and the key."""
    alternate = table.alternate_of(values)
    found = table.find(alternate) if alternate is not None else []
    if not found:
        return
    held = table.get(found[0])
    assert held is not None
    primary = table.primary or ""
    shown = ", ".join(f"{c} = {held.values[c]!r}" for c in table.alternate)
    first = f"record {places[found[0]]} ({primary} {held.values[primary]})"
    again = ", ".join(repr(values[c]) for c in table.alternate)
    second = f"record {place} ({primary} {values[primary]}, as {again})"
    raise ConnectorError(
        f"{path}: {first} and {second} have the same alternate key {shown}; an alternate "
        f"key is unique (a tenant that holds both declares no such key on {table.name})"
    )


def read_records(
    connector: FilesConnector, contract: Contract, path: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of `path` and the names of its columns the contract does not know."""
    columns = _columns(path)
    present = [c for c in contract.columns if c in columns]
    typed = connector.snapshot(contract.entity, present).to_dicts() if present else []
    extras = [c for c in columns if c not in contract.columns]
    loose = _extra_values(path, extras)
    if typed and loose and len(typed) != len(loose):
        message = f"{path}: {len(typed)} typed rows but {len(loose)} rows of other columns"
        raise ConnectorError(message)
    height = max(len(typed), len(loose))
    blank = dict.fromkeys(contract.columns)
    pairs = zip(typed or [{}] * height, loose or [{}] * height, strict=True)
    return [blank | row | extra for row, extra in pairs], extras


def _columns(path: Path) -> list[str]:
    if path.stat().st_size == 0:
        return []
    if path.suffix == ".jsonl":
        try:
            return pl.scan_ndjson(path, infer_schema_length=None).collect_schema().names()
        except pl.exceptions.PolarsError:
            return list(dict.fromkeys(name for record in _json_lines(path) for name in record))
    if path.suffix == ".parquet":
        return list(pl.read_parquet_schema(path))
    return pl.read_csv(path, n_rows=0, infer_schema=False).columns


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]


def _extra_values(path: Path, extras: list[str]) -> list[dict[str, Any]]:
    """The columns the contract does not know, as plain JSON values (decimals exact)."""
    if not extras:
        return []
    if path.suffix == ".jsonl":
        return [{c: record.get(c) for c in extras} for record in _json_lines(path)]
    if path.suffix == ".parquet":
        return pl.read_parquet(path, columns=extras).to_dicts()
    return pl.read_csv(path, columns=extras, infer_schema=False).to_dicts()
