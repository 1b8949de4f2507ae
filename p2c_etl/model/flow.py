"""Flows are declarations: source, target, keys, field maps, lookups, value maps, defaults, filters.

A stage never learns a flow's name: everything it needs is in the `Flow`. A rule that is more
than a rename, lookup, value map, default or filter belongs in the flow's module as one named
pure function, declared as a `Derive` with the columns it reads and adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal, get_args

import polars as pl

from p2c_etl.config import SystemName

Scalar = str | int | bool | Decimal
FilterOp = Literal["eq", "ne"]
FILTER_OPS: tuple[FilterOp, ...] = get_args(FilterOp)
ContextName = Literal["company", "rounding"]
UnmappedPolicy = Literal["reject", "default", "pass"]
UNMAPPED_POLICIES: tuple[UnmappedPolicy, ...] = get_args(UnmappedPolicy)


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

    @property
    def empty_date(self) -> date | None:
        """The date the system holds for "no date" and returns as empty: Finance and
        Operations' dateNull, 1900-01-01, a date-time on that day included. A diff counts
        it as null, so that a value the target cannot hold settles after one write."""
        return date(1900, 1, 1) if self.system == "erp" else None


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
    """Trimmed and lower-cased, exactly as `transform` normalises values in polars."""
    return value.strip().lower()


@dataclass(frozen=True)
class Filter:
    """Keep rows where `column op value`; source rows that fail are counted as filtered out."""

    column: str
    op: FilterOp
    value: Value | None

    def __str__(self) -> str:
        return f"{self.column} {self.op} {_show(self.value)}"


@dataclass(frozen=True)
class Lookup:
    """Resolve a value against a reference entity set: the row whose `match` equals it
    (trimmed, case-insensitive) gives `returns`. `filters` scope the reference (a company);
    `label` names the reference in reject messages (`missing_reference: product D0001`)."""

    system: SystemName
    entity: str
    match: str
    returns: str
    filters: tuple[Filter, ...] = ()
    label: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.match, self.returns, *(f.column for f in self.filters)]))

    def __str__(self) -> str:
        return f"{self.system}.{self.entity}({self.match}) → {self.returns}"


@dataclass(frozen=True)
class Field:
    """One target column: source → value map → default (when empty) → lookup.

    `lookup` may be several lookups tried in order (a polymorphic customer: an account,
    else a contact); the value is a reject only when none resolves it.
    """

    target: str
    source: str | None = None
    value_map: ValueMap | None = None
    default: Value | None = None
    lookup: Lookup | tuple[Lookup, ...] | None = None

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        if self.lookup is None:
            return ()
        return self.lookup if isinstance(self.lookup, tuple) else (self.lookup,)

    @property
    def rule(self) -> str:
        parts = []
        if self.value_map:
            vm = self.value_map
            parts.append(f"value map {vm.name} ({len(vm.entries)} entries)")
        if self.default is not None:
            parts.append(f"default {_show(self.default)}")
        if self.lookups:
            parts.append("lookup " + " else ".join(map(str, self.lookups)))
        return ", then ".join(parts) or ("copy" if self.source else "empty")


def _show(value: Value | None) -> str:
    if isinstance(value, FromContext):
        return f"<{value.name}>"
    return "null" if value is None else repr(value)


@dataclass(frozen=True)
class Input:
    """An entity set a derivation reads besides the flow's source."""

    system: SystemName
    entity: str
    columns: tuple[str, ...]
    filters: tuple[Filter, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.system}.{self.entity}"


Inputs = Mapping[str, pl.DataFrame]
Context = Mapping[str, Scalar]
DeriveFunction = Callable[[pl.DataFrame, Inputs, Context], pl.DataFrame]


@dataclass(frozen=True)
class Derive:
    """A named pure function of the flow's module: it adds columns (`adds`) to the source
    frame, reading `reads` of the source and the `inputs`; it may also add rows (a
    write-in line derived from a header)."""

    name: str
    function: DeriveFunction
    reads: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    inputs: tuple[Input, ...] = ()


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
    derive: tuple[Derive, ...] = ()
    unmapped: UnmappedPolicy = "reject"
    dated_by: str | None = None
    """The source column `p2c migrate --since/--until` selects records by (None: every
    record of the source is migrated, whatever the window)."""
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
        """Columns read from the source entity set (derived ones excluded)."""
        derived = {c for d in self.derive for c in d.adds}
        names = [*self.source_keys, *(f.source for f in self.fields if f.source)]
        names += [flt.column for flt in self.source_filters]
        names += [c for d in self.derive for c in d.reads]
        return tuple(n for n in dict.fromkeys(names) if n not in derived)

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        return tuple(dict.fromkeys(lk for f in self.fields for lk in f.lookups))

    @property
    def inputs(self) -> tuple[Input, ...]:
        return tuple(dict.fromkeys(i for d in self.derive for i in d.inputs))


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
