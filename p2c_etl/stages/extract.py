"""Extract: bring the mirrors of a flow's source, target, references and inputs up to date.

A run reads each entity set once (`EntityReads`), with every column any of its flows needs,
and updates the entity set's mirror in place (`warehouse.mirror`); the flows that need it
later in the run read the mirror. An entity set a flow writes is read again by the next flow
that needs it.

Source records that cannot be read exactly (a broken CSV line, text that is not UTF-8, a value
not of its type) are kept for the run as the entity set's bad rows, for prepare to turn into
rejects; a target, reference or input entity set with such records stops the flow."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.badrows import SOURCE_BAD_SCHEMA, SOURCE_FILE, unreadable
from p2c_etl.connectors.base import ChangeRead, Connector
from p2c_etl.errors import ConnectorError
from p2c_etl.model.flow import Context, Flow, Input
from p2c_etl.model.rejects import LINE
from p2c_etl.stages.transform import filters_expr
from p2c_etl.warehouse.mirror import (
    Mirrored,
    apply_changes,
    mirror_digest,
    mirror_rows,
    read_mirror,
    update_mirror,
)
from p2c_etl.warehouse.store import DeltaRead, Warehouse, delta_link, keep_delta_link

Entity = tuple[SystemName, str]


@dataclass(frozen=True)
class ExtractInfo:
    source_rows: int
    target_rows: int
    """Records of the target entity set (all of it: the flow's scope is applied later)."""
    bad_source_rows: int = 0
    """Bad rows of the source (a record with several bad values has several)."""


@dataclass(frozen=True)
class Read:
    """One read of an entity set in a run: its mirror, and its bad rows."""

    mirrored: Mirrored
    bad: pl.DataFrame
    columns: tuple[str, ...]
    maybe_missing: bool
    """Read with `missing_ok` and found empty: perhaps the entity set does not exist."""


def target_columns(flow: Flow) -> list[str]:
    names = [*flow.target_columns, *([flow.target_id] if flow.target_id else [])]
    return list(dict.fromkeys([*names, *(f.column for f in flow.target_filters)]))


def reference_columns(flow: Flow) -> dict[Entity, list[str]]:
    """Per reference entity set, the columns every lookup of `flow` on it needs."""
    columns: dict[Entity, list[str]] = {}
    for lookup in flow.lookups:
        names = columns.setdefault((lookup.system, lookup.entity), [])
        names.extend(c for c in lookup.columns if c not in names)
    return columns


def flow_entities(flow: Flow) -> dict[Entity, list[str]]:
    """Every entity set `flow` reads, with the columns it reads of each."""
    uses: list[tuple[Entity, Iterable[str]]] = [
        ((flow.source.system, flow.source.entity), flow.source_columns),
        ((flow.target.system, flow.target.entity), target_columns(flow)),
        *reference_columns(flow).items(),
        *(((i.system, i.entity), i.columns) for i in flow.inputs),
    ]
    found: dict[Entity, list[str]] = {}
    for entity, columns in uses:
        names = found.setdefault(entity, [])
        names.extend(c for c in columns if c not in names)
    return found


class EntityReads:
    """The reads of one run: each entity set once, with the columns of all `flows`, into its
    mirror; `written` marks an entity set a flow wrote, to be read again when next needed.

    `namespace` keeps the mirrors of a reconciliation (a read-only audit) apart from the
    nightly run's."""

    def __init__(
        self,
        connectors: Mapping[SystemName, Connector],
        flows: Iterable[Flow],
        namespace: str = "",
    ) -> None:
        self.connectors, self.namespace = connectors, namespace
        self.columns: dict[Entity, list[str]] = {}
        for flow in flows:
            for entity, names in flow_entities(flow).items():
                held = self.columns.setdefault(entity, [])
                held.extend(c for c in names if c not in held)
        self._reads: dict[Entity, Read] = {}

    def system(self, system: SystemName) -> str:
        """The mirror's system name (its namespace in front, for a reconciliation)."""
        return f"{self.namespace}.{system}" if self.namespace else system

    def written(self, system: SystemName, entity: str) -> None:
        self._reads.pop((system, entity), None)

    def read(
        self,
        wh: Warehouse,
        run_id: str,
        entity: Entity,
        needs: Iterable[str],
        now: Callable[[], datetime],
        missing_ok: bool,
    ) -> Read:
        """The entity set's read of this run: made now if it was not made yet, or was
        made when the entity set was missing and `missing_ok` is false (that read raises)."""
        columns = self.columns.setdefault(entity, [])
        columns.extend(c for c in needs if c not in columns)
        done = self._reads.get(entity)
        fits = done is not None and set(needs) <= set(done.columns)
        if done is not None and fits and (missing_ok or not done.maybe_missing):
            return done
        system, name = entity
        connector = self.connectors[system]
        if isinstance(connector, TracksChanges) and self._trackable(wh, entity, missing_ok):
            mirrored = self._read_changes(wh, run_id, connector, entity, columns, now)
            done = Read(mirrored, _no_bad_rows(), tuple(columns), False)
            self._reads[entity] = done
            return done
        bad: list[pl.DataFrame] = [pl.DataFrame(schema=SOURCE_BAD_SCHEMA)]
        frame = connector.snapshot(name, columns, missing_ok=missing_ok, on_bad=bad.append)
        bad_rows = pl.concat(bad).select(SOURCE_BAD_SCHEMA.names()).cast(SOURCE_BAD_SCHEMA)
        digest = _bad_digest(bad_rows)
        mirrored = update_mirror(wh, self.system(system), name, frame, digest, run_id, now())
        done = Read(mirrored, bad_rows, tuple(columns), missing_ok and frame.height == 0)
        self._reads[entity] = done
        return done

    def _trackable(self, wh: Warehouse, entity: Entity, missing_ok: bool) -> bool:
        """Read through change tracking: never for a reconciliation (an audit reads all, and
        keeps no link), and for an entity set that may not exist only once it was found."""
        if self.namespace:
            return False
        return not missing_ok or mirror_rows(wh, *entity) > 0

    def _read_changes(
        self,
        wh: Warehouse,
        run_id: str,
        connector: TracksChanges,
        entity: Entity,
        columns: list[str],
        now: Callable[[], datetime],
    ) -> Mirrored:
        """Read the changes since the last delta link into the mirror (or all of it, when
        there is no link or it cannot be used), and keep the new link."""
        system, name = entity
        listed = ",".join(columns)
        link = delta_link(wh, system, name, listed)
        read = connector.read_changes(name, columns, link)
        mirrored = None
        if read.kind == "delta":
            mirrored = apply_changes(wh, system, name, read.frame, read.deleted, run_id, now())
            if mirrored is None:  # the mirror cannot take it: read in full
                read = connector.read_changes(name, columns, None)
        if mirrored is None:
            digest = _bad_digest(_no_bad_rows())
            mirrored = update_mirror(wh, system, name, read.frame, digest, run_id, now())
        how = DeltaRead(read.kind, read.link, read.frame.height, read.deleted.len(), read.reason)
        keep_delta_link(wh, system, name, listed, how, run_id, now())
        return mirrored

    def bad(self, entity: Entity) -> pl.DataFrame:
        """The unreadable records of the entity set in this run's read (SOURCE_BAD_SCHEMA)."""
        return self._reads[entity].bad

    def frame(
        self,
        wh: Warehouse,
        entity: Entity,
        columns: Iterable[str],
        ords: pl.Series | None = None,
        keep_ord: bool = False,
    ) -> pl.DataFrame:
        """`columns` of the entity set as this run read it (only the records at the places
        `ords`, when given; with `keep_ord`, their places as `__ord`)."""
        system, name = entity
        return read_mirror(wh, self.system(system), name, list(columns), ords, keep_ord)

    def digest(self, wh: Warehouse, entity: Entity, columns: Iterable[str]) -> str:
        system, name = entity
        return mirror_digest(wh, self.system(system), name, list(columns))

    def versions(self, entities: Iterable[Entity]) -> list[tuple[str, str, int]]:
        """(system, entity set, mirror version) of each entity set read this run."""
        return [(s, e, self._reads[(s, e)].mirrored.version) for s, e in entities]


@runtime_checkable
class TracksChanges(Protocol):
    """A connector that reads changes since a delta link (Dataverse's change tracking)."""

    def read_changes(self, entity: str, columns: Sequence[str], link: str | None) -> ChangeRead: ...


def _no_bad_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=SOURCE_BAD_SCHEMA)


def _bad_digest(bad_rows: pl.DataFrame) -> str:
    return hashlib.sha256(bad_rows.write_csv().encode()).hexdigest()


def _refuse_bad(read: Read, system: str, entity: str, role: str) -> None:
    if read.bad.height == 0:
        return
    first = str(read.bad.sort(SOURCE_FILE, LINE, nulls_last=True)[SOURCE_FILE][0] or "")
    bad = read.bad.filter(pl.col(SOURCE_FILE) == first) if first else read.bad
    raise ConnectorError(f"{unreadable(Path(first or f'{system}.{entity}'), bad)} ({role})")


@dataclass(frozen=True)
class SourceFrames:
    """What prepare reads, from the mirrors: the source (and its unreadable records), the
    reference entity sets of its lookups and the inputs of its derivations."""

    source: pl.DataFrame
    bad: pl.DataFrame
    references: dict[tuple[str, str], pl.DataFrame]
    inputs: dict[str, pl.DataFrame]


def extract_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    reads: EntityReads,
    context: Context,
    now: Callable[[], datetime],
) -> ExtractInfo:
    """Bring the mirrors of every entity set `flow` reads up to date for this run."""
    source = (flow.source.system, flow.source.entity)
    target = (flow.target.system, flow.target.entity)
    src = reads.read(wh, run_id, source, flow.source_columns, now, missing_ok=False)
    tgt = reads.read(wh, run_id, target, target_columns(flow), now, missing_ok=True)
    if target != source:
        _refuse_bad(tgt, *target, "the flow's target")
    for entity, columns in reference_columns(flow).items():
        # The target system's entity sets may not exist yet: nothing has been written there.
        ref = reads.read(wh, run_id, entity, columns, now, missing_ok=entity[0] == target[0])
        if entity != source:
            _refuse_bad(ref, *entity, "a reference")
    for item in flow.inputs:
        entity = (item.system, item.entity)
        got = reads.read(wh, run_id, entity, item.columns, now, missing_ok=False)
        if entity != source:
            _refuse_bad(got, *entity, "an input")
    return ExtractInfo(
        source_rows=src.mirrored.rows,
        target_rows=tgt.mirrored.rows,
        bad_source_rows=src.bad.height,
    )


def source_frames(
    wh: Warehouse,
    flow: Flow,
    reads: EntityReads,
    context: Context,
    ords: pl.Series | None = None,
) -> SourceFrames:
    """The source, references and inputs of `flow` as this run read them; with `ords`, only
    the source records at those places (with their places as `__ord`)."""
    source = (flow.source.system, flow.source.entity)
    src = reads.frame(wh, source, flow.source_columns, ords, keep_ord=ords is not None)
    bad = reads.bad(source)
    # no row to compute: no reference or input is looked at (bad rows derive their keys)
    none = ords if ords is not None and ords.len() == 0 and bad.height == 0 else None
    refs: dict[tuple[str, str], pl.DataFrame] = {
        (system, entity): reads.frame(wh, (system, entity), columns, none)
        for (system, entity), columns in reference_columns(flow).items()
    }
    own = src if ords is None else None  # a part of the source is not all of its lines
    extra = input_frames(wh, flow, reads, context, own, none)
    return SourceFrames(source=src, bad=bad, references=refs, inputs=extra)


def input_frames(
    wh: Warehouse,
    flow: Flow,
    reads: EntityReads,
    context: Context,
    own: pl.DataFrame | None = None,
    ords: pl.Series | None = None,
) -> dict[str, pl.DataFrame]:
    """The inputs of `flow`'s derivations, in their scope (`own`: the whole source, when at
    hand, read again for an input that is the source itself; `ords`: only those records)."""
    source = (flow.source.system, flow.source.entity)
    return {
        item.name: _input(
            wh, reads, item, own if (item.system, item.entity) == source else None, ords
        ).filter(filters_expr(item.filters, context))
        for item in flow.inputs
    }


def target_frame(
    wh: Warehouse,
    flow: Flow,
    reads: EntityReads,
    context: Context,
    ords: pl.Series | None = None,
) -> pl.DataFrame:
    """The target of `flow` in its scope (its target filters), as this run read it (only the
    records at the places `ords`, when given)."""
    target = (flow.target.system, flow.target.entity)
    frame = reads.frame(wh, target, target_columns(flow), ords)
    return frame.filter(filters_expr(flow.target_filters, context))


def _input(
    wh: Warehouse,
    reads: EntityReads,
    item: Input,
    source: pl.DataFrame | None,
    ords: pl.Series | None,
) -> pl.DataFrame:
    if source is not None and set(item.columns) <= set(source.columns):
        return source.select(item.columns)  # the flow's own source: read once, not twice
    return reads.frame(wh, (item.system, item.entity), item.columns, ords)


def target_name(flow: Flow) -> str:
    """The name of a migration's target snapshot (`snapshots`)."""
    return f"{flow.name}.target"
