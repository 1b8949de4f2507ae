"""Flows are declarations: source, target, keys, field maps, lookups, value maps, defaults, filters.

A stage never learns a flow's name: everything it needs is in the `Flow`. A rule that is more
than a rename, lookup, value map, default or filter belongs in the flow's module as one named
pure function (none are needed by the products and accounts flows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

from p2c_etl.config import SystemName

Scalar = str | int | bool | Decimal
FilterOp = Literal["eq", "ne"]
FILTER_OPS: tuple[FilterOp, ...] = get_args(FilterOp)
ContextName = Literal["company"]


@dataclass(frozen=True)
class FromContext:
    """A value taken from the run's settings (e.g. the ERP company → `dataAreaId`)."""

    name: ContextName


Value = Scalar | FromContext


@dataclass(frozen=True)
class EntityRef:
    system: SystemName
    entity: str

    def __str__(self) -> str:
        return f"{self.system}.{self.entity}"


@dataclass(frozen=True)
class ValueMap:
    """Source value → target value; keys match trimmed and case-insensitively.

    An entry whose key is "" applies when the source is empty or null.
    """

    name: str
    entries: Mapping[str, str]

    def normalized(self) -> dict[str, str]:
        return {normalize_key(k): v for k, v in self.entries.items()}


def normalize_key(value: str) -> str:
    return value.strip().casefold()


@dataclass(frozen=True)
class Lookup:
    """Resolve a value against a reference entity set: the row whose `match` equals it
    (trimmed, case-insensitive) gives `returns`."""

    system: SystemName
    entity: str
    match: str
    returns: str


@dataclass(frozen=True)
class Field:
    """One target column: source → value map → default (when empty) → lookup."""

    target: str
    source: str | None = None
    value_map: ValueMap | None = None
    default: Value | None = None
    lookup: Lookup | None = None

    @property
    def rule(self) -> str:
        parts = []
        if self.value_map:
            vm = self.value_map
            parts.append(f"value map {vm.name} ({len(vm.entries)} entries)")
        if self.default is not None:
            parts.append(f"default {_show(self.default)}")
        if self.lookup:
            lk = self.lookup
            parts.append(f"lookup {lk.system}.{lk.entity}({lk.match}) → {lk.returns}")
        return ", then ".join(parts) or ("copy" if self.source else "empty")


@dataclass(frozen=True)
class Filter:
    """Keep source rows where `column op value`; the rest are counted as filtered out."""

    column: str
    op: FilterOp
    value: Value

    def __str__(self) -> str:
        return f"{self.column} {self.op} {_show(self.value)}"


def _show(value: Value) -> str:
    return f"<{value.name}>" if isinstance(value, FromContext) else repr(value)


@dataclass(frozen=True)
class Flow:
    """One Data Integrator task: a source entity set mapped onto a target entity set."""

    name: str
    description: str
    source: EntityRef
    target: EntityRef
    source_keys: tuple[str, ...]
    keys: tuple[str, ...]
    fields: tuple[Field, ...]
    source_filters: tuple[Filter, ...] = ()
    target_filters: tuple[Filter, ...] = ()
    target_id: str | None = None
    depends_on: tuple[str, ...] = ()
    notes: str = ""
    """Where the rules come from ([R] read in Microsoft's sources, [I] inferred)."""

    @property
    def direction(self) -> str:
        return f"{self.source.system} → {self.target.system}"

    @property
    def target_columns(self) -> tuple[str, ...]:
        return tuple(f.target for f in self.fields)

    @property
    def compare_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.target_columns if c not in self.keys)

    @property
    def source_columns(self) -> tuple[str, ...]:
        names = [*self.source_keys, *(f.source for f in self.fields if f.source)]
        names += [flt.column for flt in self.source_filters]
        return tuple(dict.fromkeys(names))

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        return tuple(dict.fromkeys(f.lookup for f in self.fields if f.lookup))


def dependency_order(flows: Iterable[Flow]) -> list[Flow]:
    """Flows sorted so that each runs after the ones it depends on (stable by declaration)."""
    pending = {flow.name: flow for flow in flows}
    ordered: list[Flow] = []
    while pending:
        ready = [f for f in pending.values() if not any(d in pending for d in f.depends_on)]
        if not ready:
            raise ValueError(f"flows depend on each other in a cycle: {sorted(pending)}")
        for flow in ready:
            ordered.append(flow)
            del pending[flow.name]
    return ordered
