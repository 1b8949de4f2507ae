"""The one interface every connector implements, and the write batch it receives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.badrows import BadSink

ReadKind = Literal["full", "delta", "since"]
WriteOp = Literal["insert", "update"]
WriteStatus = Literal["ok", "failed"]
RESULT_SCHEMA: dict[str, pl.DataType] = {
    "record_key": pl.String(),
    "op": pl.String(),
    "status": pl.String(),
    "message": pl.String(),
}


@dataclass(frozen=True)
class WriteBatch:
    """What to write to one entity set.

    `inserts` hold every column of new records; each frame in `updates` holds the key
    columns plus only the columns that changed for those records (and, for a Dataverse
    target, the record's primary id).
    """

    keys: tuple[str, ...]
    inserts: pl.DataFrame
    updates: tuple[pl.DataFrame, ...] = ()

    @property
    def size(self) -> int:
        return self.inserts.height + sum(u.height for u in self.updates)


@dataclass(frozen=True)
class ChangeRead:
    """What one read of an entity set found, from a connector that can read changes
    (`read_changes(entity, columns, link)`; a caller uses `snapshot` where there is none).

    - `full`: `frame` holds every record, `deleted` is empty;
    - `delta`: `frame` holds the records created or changed since `link`, `deleted` the
      primary ids of the records deleted since (apply the frame, then the deletes);
    - `since`: `frame` holds the records written at or after a high-water mark (`link`, less
      a safety lag); no delete is ever seen, `deleted` is empty.

    `frame` has the columns and types `snapshot(entity, columns)` gives, plus the columns
    that name a record (`keys`: the table's primary id, or an F&O entity's keys) and the
    modification-time column a high-water mark is taken from. `link` is what to pass to the
    next read (None: the entity set does not track changes); keep it only together with
    what was done with this read. `reason` says, in one line a user can act on, why a read is
    full when a link was given or change tracking was wanted."""

    kind: ReadKind
    frame: pl.DataFrame
    deleted: pl.Series
    link: str | None
    reason: str | None = None
    keys: tuple[str, ...] = ()
    """The columns that name a record; empty: the primary id, `deleted`'s name."""

    @property
    def identity(self) -> tuple[str, ...]:
        return self.keys or (self.deleted.name,)


@dataclass(frozen=True)
class PrintedRead:
    """A full read and its print (see `odata.ODataClient.printed_pages`): `frame` is None
    when the print was the one the caller knew, so the records were not parsed again;
    `printed` is None for a read no print tells apart."""

    frame: pl.DataFrame | None
    printed: str | None


class Connector(Protocol):
    """A system p2c-etl reads snapshots from and writes upserts to."""

    system: SystemName

    def pages(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> Iterator[pl.DataFrame]:
        """Every record of `entity`, a page at a time, typed as the system's contract says.

        A record that cannot be read exactly goes to `on_bad` as a bad row
        (`badrows.SOURCE_BAD_SCHEMA`: file, line, column, reason) and reading goes on; with
        no sink, or from a connector that reads a page as a whole (the Web APIs), it stops
        the read with a ConnectorError naming it. A column the contract needs and the
        system lacks is a ContractError (contract drift)."""
        ...

    def snapshot(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> pl.DataFrame:
        """Every record of `entity`, with `columns` typed as the system's contract says
        (bad records as in `pages`)."""
        ...

    def upsert(self, entity: str, batch: WriteBatch) -> pl.DataFrame:
        """Write `batch`; one result row per record (`RESULT_SCHEMA`)."""
        ...

    def live_columns(self, entity: str) -> set[str] | None:
        """The columns the system holds for `entity` now (None: the entity set is missing)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
