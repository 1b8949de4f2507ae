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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.badrows import SOURCE_BAD_SCHEMA, SOURCE_FILE, unreadable
from p2c_etl.connectors.base import ChangeRead, Connector, PrintedRead
from p2c_etl.errors import ConnectorError
from p2c_etl.model.flow import Context, Flow, Input
from p2c_etl.model.rejects import LINE
from p2c_etl.stages.transform import filters_expr
from p2c_etl.warehouse.mirror import (
    Mirrored,
    apply_changes,
    mirror_digest,
    mirror_drift,
    printed_mirror,
    read_mirror,
    unchanged_mirror,
    update_mirror,
)
from p2c_etl.warehouse.store import (
    DeltaRead,
    KeptLink,
    Warehouse,
    delta_link,
    full_read_at,
    keep_delta_links,
    kept_columns,
)

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
        full: bool = False,
        full_every: timedelta = timedelta(days=7),
    ) -> None:
        """`full`: verify every mirror read through its changes with a full read
        (`p2c run --full`); otherwise when its last full read is `full_every` old."""
        self.connectors, self.namespace = connectors, namespace
        self.full, self.full_every = full, full_every
        self.columns: dict[Entity, list[str]] = {}
        for flow in flows:
            for entity, names in flow_entities(flow).items():
                held = self.columns.setdefault(entity, [])
                held.extend(c for c in names if c not in held)
        self._reads: dict[Entity, Read] = {}
        self._unread: set[Entity] = set()
        """Entity sets a flow wrote that were not read since."""
        self._records_written: Counter[Entity] = Counter()
        self._held: dict[Entity, int] = {}
        """The entity sets a flow wrote this run, and the records of each one's mirror
        before this run first wrote it."""
        self._pending: list[KeptLink] = []
        """Links read this run, kept only with the results of the flow that read them
        (`commit_links`): a run killed before reads the same changes again."""
        self._seq = 0
        self._read_in_full: set[Entity] = set()
        """Entity sets this run read in full already: verified, or need not be."""
        self.reading_for: str | None = None
        """The flow whose extract reads now (None: a read back at the end of the run)."""
        self._inputs: dict[tuple[Entity, tuple[str, ...]], tuple[int, pl.DataFrame]] = {}
        """The inputs read whole for the flow now extracting (`input`)."""

    def system(self, system: SystemName) -> str:
        """The mirror's system name (its namespace in front, for a reconciliation)."""
        return f"{self.namespace}.{system}" if self.namespace else system

    def written(self, system: SystemName, entity: str, records: int) -> None:
        """A flow wrote `records` records into the entity set (summed over the flows that
        write it, for `read_back`)."""
        done = self._reads.pop((system, entity), None)
        self._held.setdefault((system, entity), done.mirrored.rows if done else 0)
        self._unread.add((system, entity))
        self._records_written[(system, entity)] += records

    def was_written(self, entity: Entity) -> bool:
        """Whether a flow of this run wrote `entity`."""
        return entity in self._held

    def commit_links(self, wh: Warehouse) -> None:
        """Keep the links (and how each entity set was read) of the reads made since the
        last commit: call it with the results of the flow that made them."""
        keep_delta_links(wh, self._pending)
        self._pending = []

    def _pending_of(self, entity: Entity, listed: str) -> list[KeptLink]:
        """This run's reads of `listed` columns of `entity` not committed yet, latest first."""
        key = (*entity, listed)
        return [k for k in reversed(self._pending) if (k.system, k.entity, k.columns) == key]

    def _link(self, wh: Warehouse, entity: Entity, listed: str) -> str | None:
        """The link to read `entity`'s changes from: this run's latest, else the kept one."""
        pending = self._pending_of(entity, listed)
        return pending[0].read.link if pending else delta_link(wh, *entity, listed)

    def _full_read_at(self, wh: Warehouse, entity: Entity, listed: str) -> datetime | None:
        full = [k.at for k in self._pending_of(entity, listed) if k.read.kind == "full"]
        return full[0] if full else full_read_at(wh, *entity, listed)

    def read_back(self, wh: Warehouse, run_id: str, now: Callable[[], datetime]) -> list[Entity]:
        """Read again the entity sets this run wrote and did not read since, where that
        spares the next run work: through their links (the next run's delta does not
        hold this run's own writes), or files (the next run finds the bytes it read back
        and reads nothing). An entity set read in full every night is read back only when
        this run wrote more records into it than its mirror held (a first sync, a bulk
        load): the next run then finds them in the mirror instead of adding them all, and
        the cost of the change falls on the run that made it. Returns those read."""
        back = [entity for entity in sorted(self._unread) if self._read_back(entity)]
        self.reading_for, self._inputs = None, {}
        for entity in back:
            self.read(wh, run_id, entity, self.columns.get(entity, []), now, missing_ok=True)
        return back

    def _read_back(self, entity: Entity) -> bool:
        if self.namespace:  # an audit writes nothing
            return False
        connector = self.connectors[entity[0]]
        if isinstance(connector, PrintsContent) or self._tracked(connector, entity[1]):
            return True
        return self._records_written[entity] > self._held.get(entity, 0)

    def is_current(self, entity: Entity) -> bool:
        """Whether this run's read of `entity` was made after its last write in the run."""
        return entity in self._reads and entity not in self._unread

    def _tracked(self, connector: Connector, entity: str) -> bool:
        """Whether `entity` is read through its changes (never in an audit, which reads all
        and keeps no link)."""
        return (
            isinstance(connector, TracksChanges)
            and connector.can_read_changes(entity)
            and not self.namespace
        )

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
        self._unread.discard(entity)
        if isinstance(connector, TracksChanges) and self._tracked(connector, name):
            mirrored = self._read_changes(wh, run_id, connector, entity, columns, now, missing_ok)
            return self._made(entity, mirrored, _no_bad_rows(), columns, missing_ok)
        clean = _bad_digest(_no_bad_rows())
        prints = connector if isinstance(connector, PrintsContent) else None
        printed = prints.content_print(name, columns) if prints else None
        if printed is not None:  # the same bytes as the mirror was made from: not read again
            held = unchanged_mirror(wh, self.system(system), name, printed, clean)
            if held is not None:
                return self._made(entity, held, _no_bad_rows(), columns, missing_ok)
        bad: list[pl.DataFrame] = [pl.DataFrame(schema=SOURCE_BAD_SCHEMA)]
        if prints is None and isinstance(connector, PrintsReads):
            kept = printed_mirror(wh, self.system(system), name, clean)
            known = kept[0] if kept is not None else None
            read = connector.printed_snapshot(name, columns, known, missing_ok=missing_ok)
            if read.frame is None:  # the bytes the mirror was made from: kept as it is
                assert kept is not None  # a read is left unparsed only for the print it was given
                return self._made(entity, kept[1], _no_bad_rows(), columns, missing_ok)
            frame, printed = read.frame, read.printed
        else:
            frame = connector.snapshot(name, columns, missing_ok=missing_ok, on_bad=bad.append)
        if prints and printed is not None and prints.content_print(name, columns) != printed:
            printed = None  # the files changed while read: which bytes were read is not known
        bad_rows = pl.concat(bad).select(SOURCE_BAD_SCHEMA.names()).cast(SOURCE_BAD_SCHEMA)
        digest = _bad_digest(bad_rows)
        mirrored = update_mirror(
            wh, self.system(system), name, frame, digest, run_id, now(), printed
        )
        return self._made(entity, mirrored, bad_rows, columns, missing_ok)

    def _made(
        self,
        entity: Entity,
        mirrored: Mirrored,
        bad: pl.DataFrame,
        columns: Sequence[str],
        missing_ok: bool,
    ) -> Read:
        """The read of `entity` this run made, kept for the flows after."""
        done = Read(mirrored, bad, tuple(columns), missing_ok and mirrored.rows == 0)
        self._reads[entity] = done
        return done

    def _read_changes(
        self,
        wh: Warehouse,
        run_id: str,
        connector: TracksChanges,
        entity: Entity,
        columns: list[str],
        now: Callable[[], datetime],
        missing_ok: bool,
    ) -> Mirrored:
        """Read the changes since the last delta link or high-water mark into the mirror (or
        all of it, when there is none or it cannot be used), and keep the new one. With
        `missing_ok`, an entity set the system does not have reads as empty.

        A verifying read (`p2c run --full`, or a last full read `full_every` old) first
        brings the mirror up to date through the link, then reads in full and reports every
        record the mirror still has wrong (drift: a change tracking never reported), except
        those changed again since; the mirror is then made what the full read found."""
        system, name = entity
        listed = ",".join(columns)
        link = self._link(wh, entity, listed)
        verify = self._verify_why(wh, entity, listed, link, now())
        read = connector.read_changes(name, columns, link, missing_ok=missing_ok)
        if link is None and read.kind == "full":
            read = replace(read, reason=_joined(_other_columns(wh, entity, columns), read.reason))
        mark = link if read.kind == "since" else None
        mirrored = None
        if read.kind != "full":
            mirrored = apply_changes(
                wh, system, name, read.frame, read.deleted, run_id, now(), read.identity
            )
            if mirrored is None:  # the mirror cannot take it: read in full
                read, mark = connector.read_changes(name, columns, None), None
                held = (
                    f"the mirror of {system}.{name} holds other columns or types than the "
                    "changes read: read in full, with a new link"
                )
                read = replace(read, reason=_joined(held, read.reason))
        drift = None
        if verify is not None and mirrored is not None:
            full = connector.read_changes(name, columns, None)
            since = connector.read_changes(name, columns, read.link)  # changed meanwhile
            if since.kind == "full":  # the link just made was refused: no telling drift apart
                verify = (
                    f"{verify}; the changes since could not be read ({since.reason}), so "
                    "drift cannot be told from them and is not reported"
                )
            else:
                drift = mirror_drift(wh, system, name, full.frame, full.identity, _touched(since))
            read, mark, mirrored = replace(full, reason=_joined(verify, full.reason)), None, None
        if read.kind == "full":
            self._read_in_full.add(entity)
        if mirrored is None:
            digest = _bad_digest(_no_bad_rows())
            mirrored = update_mirror(wh, system, name, read.frame, digest, run_id, now())
        how = DeltaRead(
            read.kind,
            read.link,
            read.frame.height,
            read.deleted.len(),
            read.reason,
            mark=mark,
            verified=drift is not None,
            drift=DeltaRead.no_drift() if drift is None else drift,
        )
        self._seq += 1
        self._pending.append(
            KeptLink(system, name, listed, how, run_id, now(), self.reading_for, self._seq)
        )
        return mirrored

    def _verify_why(
        self, wh: Warehouse, entity: Entity, listed: str, link: str | None, at: datetime
    ) -> str | None:
        """Why this read of a mirror kept through a link verifies it in full (None: no
        need, or no link to verify against)."""
        if link is None or entity in self._read_in_full:
            return None
        if self.full:
            return "read in full to verify the mirror (p2c run --full)"
        last = self._full_read_at(wh, entity, listed)
        if last is None:
            return "read in full to verify the mirror: no full read of it is on record"
        if at - last < self.full_every:
            return None
        return (
            f"read in full to verify the mirror: the last full read was on "
            f"{last.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {span(at - last)} ago "
            f"([run] full_every = {span(self.full_every)!r})"
        )

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
        ordered: bool = True,
    ) -> pl.DataFrame:
        """`columns` of the entity set as this run read it (only the records at the places
        `ords`, when given; with `keep_ord`, their places as `__ord`; in the read's order
        unless not `ordered`)."""
        system, name = entity
        return read_mirror(wh, self.system(system), name, list(columns), ords, keep_ord, ordered)

    def input(self, wh: Warehouse, entity: Entity, columns: Sequence[str]) -> pl.DataFrame:
        """`columns` of every record of the entity set, as `frame` reads them, kept while
        the same flow asks and the mirror is as it was: settle's derivation pass and
        prepare read a flow's inputs (a million accounts' numbers) once, not twice. Only
        the inputs of the flow now extracting are kept (`extracting`)."""
        read = self._reads.get(entity)
        if read is None:
            return self.frame(wh, entity, columns)
        key = (entity, tuple(columns))
        held = self._inputs.get(key)
        if held is None or held[0] != read.mirrored.version:
            held = self._inputs[key] = (read.mirrored.version, self.frame(wh, entity, columns))
        return held[1]

    def extracting(self, flow: str) -> None:
        """`flow` extracts now: its reads are made for it, and the inputs kept for the one
        before are let go."""
        self.reading_for, self._inputs = flow, {}

    def digest(self, wh: Warehouse, entity: Entity, columns: Iterable[str]) -> str:
        system, name = entity
        return mirror_digest(wh, self.system(system), name, list(columns))

    def versions(self, entities: Iterable[Entity]) -> list[tuple[str, str, int]]:
        """(system, entity set, mirror version) of each entity set read this run."""
        return [(s, e, self._reads[(s, e)].mirrored.version) for s, e in entities]


@runtime_checkable
class TracksChanges(Protocol):
    """A connector that reads changes since a delta link (Dataverse's change tracking) or a
    high-water mark (an F&O entity with a modification-time column)."""

    def can_read_changes(self, entity: str) -> bool: ...

    def read_changes(
        self, entity: str, columns: Sequence[str], link: str | None, *, missing_ok: bool = False
    ) -> ChangeRead: ...


@runtime_checkable
class PrintsReads(Protocol):
    """A connector whose full read can tell, once the records' bytes are in, that they are
    the bytes of the read a mirror was made from, before parsing them (the Web APIs)."""

    def printed_snapshot(
        self, entity: str, columns: Sequence[str], known: str | None, *, missing_ok: bool = False
    ) -> PrintedRead: ...


@runtime_checkable
class PrintsContent(Protocol):
    """A connector that can tell, without reading its records, that an entity set holds
    what it held (the files connector: a digest of the files' bytes)."""

    def content_print(self, entity: str, columns: Sequence[str]) -> str | None: ...


def _touched(read: ChangeRead) -> pl.DataFrame:
    """The keys of the records a read of changes found changed or deleted."""
    names = list(read.identity)
    gone = pl.DataFrame({read.deleted.name: read.deleted})
    return pl.concat([read.frame.select(names), gone], how="diagonal_relaxed")


def _joined(first: str | None, then: str | None) -> str | None:
    return f"{first}; {then}" if first and then else first or then


def _other_columns(wh: Warehouse, entity: Entity, columns: Sequence[str]) -> str | None:
    """Why there is no link for `columns` where one is kept for other columns of `entity`
    (a column mapped in p2c.toml, or one no longer mapped)."""
    kept = kept_columns(wh, *entity)
    if not kept:
        return None
    before, now = set(kept[-1].split(",")), set(columns)
    changes = [
        f"{what}: {', '.join(sorted(names))}"
        for what, names in (("now read", now - before), ("no longer read", before - now))
        if names
    ]
    return (
        f"the columns read of {entity[1]} changed ({'; '.join(changes)}): read in full, "
        "with a new link"
    )


def span(length: timedelta) -> str:
    """A length of time as `[run] full_every` is written: "7d", "36h", "5m", "30s"."""
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
    reads.extracting(flow.name)
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
    keep_ord: bool = False,
) -> SourceFrames:
    """The source, references and inputs of `flow` as this run read them; with `ords`, only
    the source records at those places (with their places as `__ord`); with `keep_ord`, all
    of them with their places. (A mirror's places have gaps where a delta replaced records:
    a row's number in the frame is its place only in a mirror read in full.)"""
    source = (flow.source.system, flow.source.entity)
    src = reads.frame(wh, source, flow.source_columns, ords, keep_ord=keep_ord or ords is not None)
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
    if ords is None:
        return reads.input(wh, (item.system, item.entity), item.columns)
    return reads.frame(wh, (item.system, item.entity), item.columns, ords)


def target_name(flow: Flow) -> str:
    """The name of a migration's target snapshot (`snapshots`)."""
    return f"{flow.name}.target"
