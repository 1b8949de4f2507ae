"""Contracts: what an entity set of a system *is* (columns, types, lengths, keys, codes).

One TOML file per entity set, `contracts/<system>/<EntitySet>.toml`:

    entity = "CustomersV2"
    system = "erp"
    keys = ["dataAreaId", "CustomerAccount"]
    primary_id = "accountid"          # optional: the GUID column of a Dataverse table

    [columns]
    CustomerAccount = { type = "string", max_length = 20, nullable = false }
    CreditLimit = { type = "decimal(28,6)" }
    PartyType = { type = "string", allowed = ["Organization", "Person"] }

Types: string, guid, int, bool, date, datetime, decimal(P,S). A Dataverse lookup column names
the entity sets it points to: `_transactioncurrencyid_value = { type = "guid", bind =
"transactioncurrencies" }`, `_customerid_value = { type = "guid", bind = ["accounts",
"contacts"] }`. How a contract is *checked*
lives in `p2c_etl.stages.validate`; this module only reads contracts and builds schemas.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandera.polars as pa
import polars as pl

from p2c_etl.errors import ContractError

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_SIMPLE_TYPES: Mapping[str, pl.DataType] = MappingProxyType(
    {
        "string": pl.String(),
        "guid": pl.String(),
        "int": pl.Int64(),
        "bool": pl.Boolean(),
        "date": pl.Date(),
        "datetime": pl.Datetime("us", "UTC"),
    }
)
_COLUMN_KEYS = {"type", "nullable", "max_length", "allowed", "bind"}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an entity set."""

    name: str
    type: str
    dtype: pl.DataType
    nullable: bool = True
    max_length: int | None = None
    allowed: tuple[Any, ...] | None = None
    bind: tuple[str, ...] = ()
    """For a Dataverse lookup column (`_x_value`): the entity sets it may point to; written
    as `x@odata.bind` (one set) or `x_<logicalname>@odata.bind` (several: polymorphic)."""


@dataclass(frozen=True)
class Contract:
    """An entity set of one system, as read from its contract file."""

    system: str
    entity: str
    keys: tuple[str, ...]
    columns: Mapping[str, ColumnSpec]
    source: Path
    primary_id: str | None = None

    def column(self, name: str) -> ColumnSpec:
        try:
            return self.columns[name]
        except KeyError:
            raise ContractError(
                f"{self.source}: {self.system} {self.entity} has no column {name!r}"
            ) from None

    def dtypes(self, names: Iterable[str]) -> dict[str, pl.DataType]:
        """The polars types of `names`, in that order."""
        return {name: self.column(name).dtype for name in names}

    def pandera_schema(self, names: Sequence[str]) -> pa.DataFrameSchema:
        """A pandera.polars schema over `names` (keys must be among them)."""
        missing = [key for key in self.keys if key not in names]
        if missing:
            raise ContractError(f"{self.source}: key columns {missing} are not mapped")
        return pa.DataFrameSchema(
            {name: _pandera_column(self.column(name)) for name in names},
            unique=list(self.keys),
            report_duplicates="all",
            name=f"{self.system}.{self.entity}",
        )


def _pandera_column(spec: ColumnSpec) -> pa.Column:
    checks: list[pa.Check] = []
    if spec.max_length is not None:
        checks.append(pa.Check.str_length(max_value=spec.max_length))
    if spec.allowed is not None:
        checks.append(pa.Check.isin(list(spec.allowed)))
    if spec.type == "guid":
        checks.append(pa.Check.str_matches(GUID_PATTERN))
    return pa.Column(spec.dtype, checks=checks, nullable=spec.nullable)


def parse_type(text: str) -> pl.DataType:
    """`"decimal(19,4)"` → `pl.Decimal(19, 4)`; raises ValueError for unknown types."""
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    match = _DECIMAL.match(text)
    if match and 0 < int(match[1]) <= 38 and int(match[2]) <= int(match[1]):
        return pl.Decimal(int(match[1]), int(match[2]))
    raise ValueError(
        f"unknown type {text!r} (string, guid, int, bool, date, datetime, decimal(P,S))"
    )


def load_contract(path: Path) -> Contract:
    """Read one contract file; every problem is a ContractError naming the file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from None
    try:
        columns = {name: _column(name, spec) for name, spec in raw["columns"].items()}
        contract = Contract(
            system=str(raw["system"]),
            entity=str(raw["entity"]),
            keys=tuple(raw["keys"]),
            columns=MappingProxyType(columns),
            source=path,
            primary_id=raw.get("primary_id"),
        )
    except KeyError as exc:
        raise ContractError(f"{path}: missing {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise ContractError(f"{path}: {exc}") from None
    for name in (*contract.keys, *([contract.primary_id] if contract.primary_id else [])):
        contract.column(name)
    return contract


def _column(name: str, spec: Mapping[str, Any]) -> ColumnSpec:
    unknown = set(spec) - _COLUMN_KEYS
    if unknown:
        raise ValueError(f"column {name!r}: unknown keys {sorted(unknown)}")
    allowed = spec.get("allowed")
    bind = spec.get("bind", ())
    return ColumnSpec(
        name=name,
        type=spec["type"],
        dtype=parse_type(spec["type"]),
        nullable=bool(spec.get("nullable", True)),
        max_length=spec.get("max_length"),
        allowed=tuple(allowed) if allowed is not None else None,
        bind=(bind,) if isinstance(bind, str) else tuple(bind),
    )


class ContractSet:
    """Every contract under a folder, by (system, entity set)."""

    def __init__(self, contracts: Iterable[Contract]) -> None:
        self._by_key = {(c.system, c.entity): c for c in contracts}

    @classmethod
    def load(cls, folder: Path) -> ContractSet:
        return cls(load_contract(path) for path in sorted(folder.glob("*/*.toml")))

    def get(self, system: str, entity: str) -> Contract:
        try:
            return self._by_key[(system, entity)]
        except KeyError:
            raise ContractError(f"no contract for {system} entity set {entity!r}") from None

    def __iter__(self) -> Any:
        return iter(self._by_key.values())
