"""In-memory entity sets: records by key, in insertion order, with an undo journal.

A `Table` holds one entity set as a dict from key to `Row`, in insertion order. Dataverse
tables are keyed by their primary id and index their alternate key; F&O tables are keyed by
their composite key. Text key parts compare as SQL Server compares them: case-insensitively,
trailing spaces ignored.

Every write goes through the store's `Journal`: inside `atomic()` each write is logged with
the row it replaced, and an exception rolls all of them back (a `$batch` change set,
`UpsertMultiple`). The journal's lock guards every read and write of the store's tables.

For change tracking, every write takes the next store-wide version (`Row.version`) and every
delete of a Dataverse record leaves a tombstone (its version and primary id), so the records
written or deleted after a version can be found (`changed_after`, `deleted_after`).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from p2c_etl.model.contracts import ColumnSpec, Contract
from p2c_etl.sandbox.values import folded

Key = tuple[Any, ...]


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current UTC time, to the second: the same as
    `datetime.now(UTC).replace(microsecond=0)`, made once a second (every record of a
    `$batch` of thousands is stamped, most of them within the same second)."""
    global _last_now
    second = time.time() // 1
    last = _last_now
    if last[0] == second:
        return last[1]
    now = datetime.fromtimestamp(second, UTC)
    _last_now = (second, now)
    return now


_last_now: tuple[float, datetime] = (-1.0, datetime.fromtimestamp(0, UTC))


@dataclass(frozen=True)
class Row:
    """One record: `seq` orders rows by insertion, `version` changes with every write;
    `created` and `modified` are when the server wrote it first and last (server-managed,
    kept apart from the values a client wrote)."""

    seq: int
    version: int
    values: dict[str, Any]
    created: datetime | None = None
    modified: datetime | None = None


class Journal:
    """The store's lock, its undo log while `atomic()` is open, and its committed writes."""

    def __init__(self, on_commit: Callable[[int], None], clock: Clock = utc_now) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.started = clock()
        """When the store was built: the write time of every seed record."""
        self._on_commit = on_commit
        self._undo: list[tuple[Table, Key, Row | None]] | None = None
        self._version = 0

    def next_version(self) -> int:
        self._version += 1
        return self._version

    @property
    def version(self) -> int:
        """The version of the latest write (0 before any)."""
        return self._version

    def wrote(self, table: Table, key: Key, previous: Row | None) -> None:
        if self._undo is None:
            self._on_commit(1)
        else:
            self._undo.append((table, key, previous))

    def atomic(self) -> _Atomic:
        """All writes inside happen, or (on an exception) none; blocks nest."""
        return _Atomic(self)


class _Atomic:
    """One `Journal.atomic()` block (a class, not a generator: a `$batch` opens two a record)."""

    __slots__ = ("_journal", "_mark", "_outer")

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._outer = False
        self._mark = 0

    def __enter__(self) -> None:
        journal = self._journal
        journal.lock.acquire()
        self._outer = journal._undo is None
        if journal._undo is None:
            journal._undo = []
        self._mark = len(journal._undo)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        journal = self._journal
        undo = journal._undo
        assert undo is not None
        try:
            if kind is not None:
                while len(undo) > self._mark:
                    table, key, previous = undo.pop()
                    table.restore(key, previous)
            if self._outer:
                journal._undo = None
                if kind is None:
                    journal._on_commit(len(undo))
        finally:
            journal.lock.release()


class Renders:
    """Each record's JSON text as one shape of page shows it, made at its first read after
    each write: a page of records unchanged since they were last read costs a lookup per
    record, not a dict and an encoding. A record's entry is its text only while the record
    is the very `Row` it was made from (a write, a restore or a `plant` makes a new one)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[int, tuple[Row, orjson.Fragment]] = {}

    def text(self, row: Row, render: Callable[[Row], bytes]) -> orjson.Fragment:
        held = self._held.get(row.seq)
        if held is not None and held[0] is row:
            return held[1]
        made = orjson.Fragment(render(row))
        self._held[row.seq] = (row, made)
        return made

    def forget(self, seq: int) -> None:
        self._held.pop(seq, None)


_RENDERS_KEPT = 2
"""How many shapes of page a table keeps the records' text for (a client reads a set with
one `$select`; a second is room for another reader)."""


class Table:
    """One entity set. `primary` names the Dataverse primary id column, None for F&O."""

    def __init__(self, contract: Contract, journal: Journal, primary: str | None) -> None:
        self.contract = contract
        self.name = contract.entity
        self.primary = primary
        self.key_columns: tuple[str, ...] = (primary,) if primary else contract.keys
        self.alternate: tuple[str, ...] = contract.keys if primary else ()
        self.extra_columns: list[str] = []
        self.temporal: tuple[ColumnSpec, ...] = tuple(
            s for s in contract.columns.values() if s.type in ("date", "datetime")
        )
        """The date and date-time columns of the contract (which a table keeps)."""
        self._journal = journal
        self._rows: dict[Key, Row] = {}
        self._alternates: dict[Key, list[Key]] = {}
        self._order: list[Key] | None = []
        self._seqs: list[int] = []
        self._next_seq = 0
        self._tombstones: list[tuple[int, Key, Any]] = []
        self._renders: dict[Any, Renders] = {}

    def renders(self, shape: Any) -> Renders:
        """The records' JSON as `shape` (a hashable name of how a page shows them) renders
        them; the table keeps the two shapes used last."""
        found = self._renders.pop(shape, None) or Renders()
        self._renders[shape] = found  # most recent last
        while len(self._renders) > _RENDERS_KEPT:
            del self._renders[next(iter(self._renders))]
        return found

    def __len__(self) -> int:
        return len(self._rows)

    def key_of(self, values: Mapping[str, Any]) -> Key:
        return tuple([folded(values.get(c)) for c in self.key_columns])

    def alternate_of(self, values: Mapping[str, Any]) -> Key | None:
        """The alternate key of a Dataverse record; None when it has none or a part is null."""
        if not self.alternate:
            return None
        parts = tuple([folded(values.get(c)) for c in self.alternate])
        return None if None in parts else parts

    def get(self, key: Key) -> Row | None:
        return self._rows.get(key)

    def find(self, alternate: Key) -> list[Key]:
        """The keys of the records with this alternate key (more than one only from a seed)."""
        return list(self._alternates.get(alternate, ()))

    def load(self, values: dict[str, Any]) -> None:
        """Add a seed record, outside the journal."""
        self._set(self.key_of(values), self._new_row(values, None, self._journal.started))

    def put(self, values: dict[str, Any], key: Key | None = None) -> Row:
        """Insert or replace the record with `values`' key (`key`, when the caller has
        already worked it out with `key_of`)."""
        key = self.key_of(values) if key is None else key
        previous = self._rows.get(key)
        self._journal.wrote(self, key, previous)
        row = self._new_row(values, previous)
        self._set(key, row)
        return row

    def delete(self, key: Key) -> Row | None:
        previous = self._rows.get(key)
        if previous is not None:
            self._journal.wrote(self, key, previous)
            self._set(key, None)
            if self.primary:
                version = self._journal.next_version()
                self._tombstones.append((version, key, previous.values.get(self.primary)))
        return previous

    def plant(self, values: dict[str, Any]) -> None:
        """Change or add a record behind change tracking's back: a changed row keeps its
        version and write time, an added one has version 0, so no delta reports it (as after
        a set-based update or a restore)."""
        key = self.key_of(values)
        previous = self._rows.get(key)
        if previous is not None:
            row = Row(previous.seq, previous.version, values, previous.created, previous.modified)
        else:
            self._next_seq += 1
            at = self._journal.started
            row = Row(self._next_seq, 0, values, at, at)
        self._set(key, row)

    def changed_after(self, version: int, upto: int) -> list[Row]:
        """The records written after `version` and at or before `upto`, oldest write first."""
        rows = [r for r in self._rows.values() if version < r.version <= upto]
        return sorted(rows, key=lambda r: r.version)

    def deleted_after(self, version: int, upto: int) -> list[tuple[int, Any]]:
        """(version, primary id) of the records deleted after `version` and at or before
        `upto`, oldest first: the last delete of each key, unless the key holds a record
        again that was written before `upto` (created anew, or the delete was rolled back)."""
        last: dict[Key, tuple[int, Any]] = {}
        for stamp, key, record_id in self._tombstones:
            if version < stamp <= upto:
                last[key] = (stamp, record_id)
        found = []
        for key, (stamp, record_id) in last.items():
            row = self._rows.get(key)
            if row is None or row.version > upto:
                found.append((stamp, record_id))
        return sorted(found, key=lambda t: t[0])

    def restore(self, key: Key, row: Row | None) -> None:
        """Undo a write: put back `row` (None: the record did not exist)."""
        self._set(key, row)

    def rows(self) -> list[Row]:
        """Every row in insertion order."""
        return [self._rows[key] for key in self._ordered()]

    def rows_after(self, seq: int) -> Iterator[Row]:
        """The rows inserted after the row numbered `seq`, in insertion order."""
        order = self._ordered()
        for key in order[bisect.bisect_right(self._seqs, seq) :]:
            yield self._rows[key]

    def _new_row(
        self, values: dict[str, Any], previous: Row | None, at: datetime | None = None
    ) -> Row:
        now = at or self._journal.clock()
        version = self._journal.next_version()
        if previous is not None:
            return Row(previous.seq, version, values, previous.created, now)
        self._next_seq += 1
        created = values.get("createdon")
        if not isinstance(created, datetime):
            created = now
        return Row(self._next_seq, version, values, created, now)

    def _set(self, key: Key, row: Row | None) -> None:
        previous = self._rows.pop(key, None) if row is None else self._rows.get(key)
        if previous is not None:
            self._unindex(key, previous)
        if row is None:
            self._order = None
            if previous is not None:
                for renders in self._renders.values():
                    renders.forget(previous.seq)
            return
        self._rows[key] = row
        self._index(key, row)
        if previous is None:
            self._append(key, row.seq)

    def _append(self, key: Key, seq: int) -> None:
        if self._order is not None and (not self._seqs or seq > self._seqs[-1]):
            self._order.append(key)
            self._seqs.append(seq)
        else:
            self._order = None

    def _ordered(self) -> list[Key]:
        if self._order is None:
            self._order = sorted(self._rows, key=lambda k: self._rows[k].seq)
            self._seqs = [self._rows[k].seq for k in self._order]
        return self._order

    def _index(self, key: Key, row: Row) -> None:
        alternate = self.alternate_of(row.values)
        if alternate is not None:
            self._alternates.setdefault(alternate, []).append(key)

    def _unindex(self, key: Key, row: Row) -> None:
        alternate = self.alternate_of(row.values)
        if alternate is None or key not in self._alternates.get(alternate, ()):
            return
        keys = self._alternates[alternate]
        keys.remove(key)
        if not keys:
            del self._alternates[alternate]


class Store:
    """The entity sets one server serves, by entity set name."""

    def __init__(self, system: str, tables: dict[str, Table], journal: Journal) -> None:
        self.system = system
        self.tables = tables
        self.journal = journal

    @property
    def lock(self) -> threading.RLock:
        return self.journal.lock

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def records(self, entity: str) -> list[dict[str, Any]]:
        """Copies of the current records of `entity`, in insertion order."""
        with self.lock:
            table = self.tables.get(entity)
            if table is None:
                raise KeyError(f"{self.system} serves no entity set {entity!r}")
            return [dict(row.values) for row in table.rows()]
