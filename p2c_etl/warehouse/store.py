"""The DuckDB warehouse: where stages hand over, and what every run leaves behind.

    runs            the ledger: run id, mode, start, end, status, report paths (and, for
                    a retry, the run whose failed writes it sent again)
    run_flows       per-flow counts of each run (and, for a flow that found nothing changed
                    since an earlier run, `details_run`: the run whose rejects, changes and
                    unmapped values are its own, unchanged)
    mirrors         catalog of the mirrors: per system and entity set, what p2c-etl last
                    read of it, a row hash per record, updated in place (`mirror`)
    delta_links     per system, entity set and column list, the delta link (Dataverse) or
                    high-water mark (F&O) the next run reads the changes through, how the
                    last read was made, and when the last full read was (`full_at`)
    run_reads       per run and entity set read through its changes: how (full, delta,
                    since a mark), what it found, why a read was full, and whether it was
                    a full read that verified the mirror (with the records that had drifted)
    drift           per run, each record a verifying full read found the mirror had wrong
                    (changed, added or deleted behind change tracking's back)
    settled_flows   per flow, the fingerprint of its inputs when it last found nothing to
                    do, and that run; the context print its settled rows hold under
    settled_rows    per flow, the source rows its last computation found unchanged or
                    filtered out, by hash, with hashes of the target key and record
                    (`stages.settle`)
    settled_lookups per flow and lookup, the digest of the reference it last mapped with, and
    (…_keys)        per key a hash of what it resolved to: a changed reference recomputes
                    only the settled rows that look up a key whose entry changed
    derived_hashes  per flow, each source row's hash with what its derivations add, and
    (…_prints)      the versions of the source and inputs it was made from
    target_folds    per flow, each target record (place and hash) with the hash of its
                    folded key and whether it is in the flow's scope, and the print of the
                    keys, filters and code they were made with
    snapshots       catalog of snapshot tables (source, target and reference data per run)
    staged          catalog of validated, mapped rows per run and flow
    rejects         flow, record key, reason code, value, message, the source row as JSON
                    (and, for a migration, the export file and the line the record starts on)
    unmapped_values per flow and field, each value no value map knew, with its count
    changes         flow, record key, kind, changed fields, before / after as JSON
    load_results    per record: op, status, message
    last_written    per flow and record: the values p2c-etl last wrote (for drift detection)
    reconciliations every reconciliation: when, verdict, counts, where its evidence is
    migrations      per migration: the export folder, chunk size and date window
    migrate_chunks  per migration, flow and chunk: counts and timings; a chunk's row commits
                    with its rejects, changes and load results, so it is the checkpoint

What a run reads lives in the mirrors (`mirror_<system>_<entity>`), one per entity set, not
copied per run. Per run there are only what the run found or did: its staged rows while it
runs (`stage_<run>_<flow>`, cut down to the records it wrote once it has loaded them), the
unreadable records of its sources (`snap_<run>_<system>.<entity>.bad`), and the ledger rows.
Each stage's writes are committed together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from p2c_etl.errors import ConnectorError, LockedError
from p2c_etl.model.summary import FlowCounts, RunMode, RunStatus
from p2c_etl.warehouse.lock import held_by, reconcile_lock_path
from p2c_etl.warehouse.private import PRIVATE_UMASK, private_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, mode VARCHAR NOT NULL, dry_run BOOLEAN NOT NULL,
    flows VARCHAR[] NOT NULL, started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ,
    status VARCHAR NOT NULL, report_html VARCHAR, report_json VARCHAR, error VARCHAR);
CREATE TABLE IF NOT EXISTS run_flows (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, source_rows BIGINT, filtered_out BIGINT,
    rejected BIGINT, inserted BIGINT, updated BIGINT, unchanged BIGINT, target_only BIGINT,
    failed BIGINT, PRIMARY KEY (run_id, flow));
CREATE TABLE IF NOT EXISTS snapshots (
    run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, system VARCHAR NOT NULL,
    entity VARCHAR NOT NULL, table_name VARCHAR NOT NULL, row_count BIGINT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS rejects (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, record_key VARCHAR, source_row BIGINT,
    field VARCHAR, reason VARCHAR NOT NULL, value VARCHAR, message VARCHAR NOT NULL,
    row_json VARCHAR USING COMPRESSION zstd);
CREATE TABLE IF NOT EXISTS unmapped_values (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, field VARCHAR NOT NULL, value VARCHAR,
    count BIGINT NOT NULL, policy VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, record_key VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, changed_fields VARCHAR[],
    before_json VARCHAR USING COMPRESSION zstd, after_json VARCHAR USING COMPRESSION zstd);
CREATE TABLE IF NOT EXISTS load_results (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, record_key VARCHAR NOT NULL,
    op VARCHAR NOT NULL, status VARCHAR NOT NULL, message VARCHAR);
CREATE TABLE IF NOT EXISTS reconciliations (
    reconciliation_id VARCHAR PRIMARY KEY, made_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL,
    agree BIGINT NOT NULL, total BIGINT NOT NULL, verdicts VARCHAR[] NOT NULL,
    report_html VARCHAR, report_json VARCHAR);
ALTER TABLE rejects ADD COLUMN IF NOT EXISTS source_file VARCHAR;
ALTER TABLE rejects ADD COLUMN IF NOT EXISTS source_line BIGINT;
CREATE TABLE IF NOT EXISTS migrations (
    run_id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, chunk_rows BIGINT NOT NULL,
    since DATE, until DATE);
ALTER TABLE migrations ADD COLUMN IF NOT EXISTS exports VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS retry_of VARCHAR;
CREATE TABLE IF NOT EXISTS migrate_chunks (
    run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, chunk BIGINT NOT NULL,
    first_record BIGINT NOT NULL, records BIGINT NOT NULL, first_line BIGINT, last_line BIGINT,
    filtered_out BIGINT NOT NULL, rejected BIGINT NOT NULL, inserted BIGINT NOT NULL,
    updated BIGINT NOT NULL, unchanged BIGINT NOT NULL, failed BIGINT NOT NULL,
    read_seconds DOUBLE NOT NULL, prepare_seconds DOUBLE NOT NULL,
    compare_seconds DOUBLE NOT NULL, load_seconds DOUBLE NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (run_id, flow, chunk));
CREATE TABLE IF NOT EXISTS last_written (
    flow VARCHAR NOT NULL, record_key VARCHAR NOT NULL,
    values_json VARCHAR NOT NULL USING COMPRESSION zstd,
    run_id VARCHAR NOT NULL, written_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS mirrors (
    system VARCHAR NOT NULL, entity VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
    schema_text VARCHAR NOT NULL, version BIGINT NOT NULL, row_count BIGINT NOT NULL,
    bad_digest VARCHAR NOT NULL, run_id VARCHAR NOT NULL, changed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (system, entity));
ALTER TABLE mirrors ADD COLUMN IF NOT EXISTS pairs_digest VARCHAR;
ALTER TABLE mirrors ADD COLUMN IF NOT EXISTS content_print VARCHAR;
CREATE TABLE IF NOT EXISTS delta_links (
    system VARCHAR NOT NULL, entity VARCHAR NOT NULL, columns VARCHAR NOT NULL,
    link VARCHAR, kind VARCHAR NOT NULL, changes BIGINT NOT NULL, deletes BIGINT NOT NULL,
    reason VARCHAR, run_id VARCHAR NOT NULL, read_at TIMESTAMPTZ NOT NULL);
ALTER TABLE delta_links ADD COLUMN IF NOT EXISTS full_at TIMESTAMPTZ;
CREATE TABLE IF NOT EXISTS run_reads (
    run_id VARCHAR NOT NULL, system VARCHAR NOT NULL, entity VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, records BIGINT NOT NULL, deletes BIGINT NOT NULL, mark VARCHAR,
    reason VARCHAR, verified BOOLEAN NOT NULL, drifted BIGINT NOT NULL,
    read_at TIMESTAMPTZ NOT NULL, flow VARCHAR, seq BIGINT NOT NULL, link_kept BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS drift (
    run_id VARCHAR NOT NULL, system VARCHAR NOT NULL, entity VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL, kind VARCHAR NOT NULL, fields VARCHAR[]);
CREATE TABLE IF NOT EXISTS settled_flows (
    flow VARCHAR PRIMARY KEY, fingerprint VARCHAR, run_id VARCHAR NOT NULL,
    context_print VARCHAR);
CREATE TABLE IF NOT EXISTS settled_rows (
    flow VARCHAR NOT NULL, source_hash UBIGINT NOT NULL, target_fold UBIGINT,
    target_hash UBIGINT, filtered BOOLEAN NOT NULL, values_hash UBIGINT);
CREATE TABLE IF NOT EXISTS derived_prints (flow VARCHAR NOT NULL, made_from VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS derived_hashes (
    flow VARCHAR NOT NULL, __ord BIGINT NOT NULL, __hash UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS target_folds (
    flow VARCHAR NOT NULL, made_with VARCHAR NOT NULL, __ord BIGINT NOT NULL,
    __hash UBIGINT NOT NULL, __fold UBIGINT, in_scope BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS settled_lookups (
    flow VARCHAR NOT NULL, lookup VARCHAR NOT NULL, digest VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS settled_lookup_keys (
    flow VARCHAR NOT NULL, lookup VARCHAR NOT NULL, k UBIGINT NOT NULL, h UBIGINT NOT NULL);
ALTER TABLE run_flows ADD COLUMN IF NOT EXISTS details_run VARCHAR;
CREATE TABLE IF NOT EXISTS warehouse_format (version INTEGER NOT NULL);
"""
FORMAT = 3
"""1: a copy of every entity set a flow read, per run and flow (`snap_<run>_<flow>_<role>`);
2: mirrors; 3: the JSON columns (`_JSON_TABLES`) compressed with zstd. An older warehouse is
migrated when first opened (`_migrate_format`)."""
_SCHEMA_PRINT_TABLE = "CREATE TABLE IF NOT EXISTS schema_print (print VARCHAR NOT NULL)"
_SCHEMA_PRINT = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
"""Of this module's text, which holds the schema and every migration: a warehouse opened by
another release's (a changed table, a new migration) is brought up to this one's on open."""
_JSON_TABLES = ("last_written", "changes", "rejects")
"""Tables with a JSON column of every record written or changed (millions on a first sync):
zstd makes it several times smaller than DuckDB's string compression, and far cheaper to
write."""
# last_written once had PRIMARY KEY (flow, record_key): DuckDB keeps such an index in memory
# whole, so an upsert of a large night ran out of memory; it is now kept unique by
# `remember_written` (delete, then insert: joins that spill). Warehouses made before are
# rebuilt without it on first open, their rows kept.
_UNINDEX_LAST_WRITTEN = """
CREATE TABLE last_written_new AS SELECT * FROM last_written;
DROP TABLE last_written;
ALTER TABLE last_written_new RENAME TO last_written;
"""
MEMORY_LIMIT = "512MB"
"""DuckDB's own memory (its default is 80% of the machine): beyond it, it spills to disk
beside the warehouse. Runs hand frames to polars, so DuckDB needs little."""
_STALE = "interrupted: its process ended before the run finished"
_COUNT_COLUMNS = [f.name for f in fields(FlowCounts) if f.name != "flow"]


def _config() -> dict[str, str | bool | int | float | list[str]]:
    return {"memory_limit": MEMORY_LIMIT}  # read when connecting: tests lower it


def _reconcile_alive(warehouse: Path, rec_id: str) -> bool:
    return held_by(reconcile_lock_path(warehouse, rec_id)) is not None


def audit_namespace(run_id: str) -> str:
    """The namespace of a reconciliation's own mirrors (`jobs.reconcile.records`)."""
    return f"audit {run_id}"


def delta_link(wh: Warehouse, system: str, entity: str, columns: str) -> str | None:
    """The delta link (or high-water mark) the last read of `columns` of (`system`,
    `entity`) left, if any."""
    rows = wh.con.execute(
        "SELECT link FROM delta_links WHERE system = ? AND entity = ? AND columns = ?",
        [system, entity, columns],
    ).fetchall()
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def kept_columns(wh: Warehouse, system: str, entity: str) -> list[str]:
    """The column lists (comma-separated) a link of (`system`, `entity`) is kept for."""
    rows = wh.con.execute(
        "SELECT columns FROM delta_links WHERE system = ? AND entity = ? ORDER BY read_at",
        [system, entity],
    ).fetchall()
    return [str(r[0]) for r in rows]


def full_read_at(wh: Warehouse, system: str, entity: str, columns: str) -> datetime | None:
    """When `columns` of (`system`, `entity`) were last read in full (None: not on record;
    a warehouse made before this was kept knows only of a last read that was full)."""
    rows = wh.con.execute(
        "SELECT coalesce(full_at, CASE WHEN kind = 'full' THEN read_at END) FROM delta_links "
        "WHERE system = ? AND entity = ? AND columns = ?",
        [system, entity, columns],
    ).fetchall()
    found = rows[0][0] if rows else None
    return found if isinstance(found, datetime) else None


DRIFT_SCHEMA = pl.Schema(
    [("record_key", pl.String()), ("kind", pl.String()), ("fields", pl.List(pl.String()))]
)
"""A record a verifying full read found the mirror had wrong: `kind` changed (with the
`fields` that differ), added or deleted (behind change tracking's back)."""


@dataclass(frozen=True)
class DeltaRead:
    """How an entity set was read through its changes: `kind` full, delta (since a delta
    link) or since (a high-water mark, `mark`), the link or mark for the next read, the
    records read and deleted, why a full read was made, and for a full read that verified
    the mirror (`verified`), the records that had drifted (DRIFT_SCHEMA)."""

    kind: str
    link: str | None
    changes: int
    deletes: int
    reason: str | None
    mark: str | None = None
    verified: bool = False
    drift: pl.DataFrame = field(default_factory=lambda: DeltaRead.no_drift())

    @staticmethod
    def no_drift() -> pl.DataFrame:
        return pl.DataFrame(schema=DRIFT_SCHEMA)


@dataclass(frozen=True)
class KeptLink:
    """A read of (`system`, `entity`) through its changes, to keep: the `columns` it read
    (comma-separated), how it was read, and by which run when."""

    system: str
    entity: str
    columns: str
    read: DeltaRead
    run_id: str
    at: datetime
    flow: str | None = None
    """The flow whose extract made the read (None: a read back at the end of the run)."""
    seq: int = 0
    """Its place among the run's reads."""


def _place(one: KeptLink, read: DeltaRead) -> tuple[str | None, int, bool]:
    return one.flow, one.seq, read.link is not None


def keep_delta_links(wh: Warehouse, kept: Sequence[KeptLink]) -> None:
    """Keep the links the reads gave (each replacing the one for the same columns), how
    they were read (`run_reads`), and the records they found drifted (`drift`); one
    transaction."""
    if not kept:
        return
    with wh.transaction():
        for one in kept:
            _keep_delta_link(wh, one)


def _keep_delta_link(wh: Warehouse, one: KeptLink) -> None:
    read, at = one.read, one.at
    where = [one.system, one.entity, one.columns]
    last_full = at if read.kind == "full" else full_read_at(wh, *where)
    kept = (read.link, read.kind, read.changes, read.deletes, read.reason, one.run_id, at)
    # the link of other columns goes too: a run reads one column list of an entity set
    wh.con.execute("DELETE FROM delta_links WHERE system = ? AND entity = ?", where[:2])
    wh.con.execute(
        "INSERT INTO delta_links (system, entity, columns, link, kind, changes, deletes, "
        "reason, run_id, read_at, full_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [*where, *kept, last_full],
    )
    found = (read.kind, read.changes, read.deletes, read.mark, read.reason, read.verified)
    wh.con.execute(
        "INSERT INTO run_reads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [one.run_id, one.system, one.entity, *found, read.drift.height, at, *_place(one, read)],
    )
    if read.drift.height:
        drift = read.drift.select(
            pl.lit(one.run_id).alias("run_id"),
            pl.lit(one.system).alias("system"),
            pl.lit(one.entity).alias("entity"),
            *DRIFT_SCHEMA.names(),
        )
        wh.append("drift", drift)


def table_name(*parts: str) -> str:
    """A safe DuckDB identifier from run id, flow and role."""
    return "_".join(re.sub(r"[^0-9A-Za-z]+", "_", p) for p in parts).lower()


class Warehouse:
    """One DuckDB file; open it with `Warehouse.open(path)` for a stage and close it after,
    so that a run and a reconciliation can take turns. While it is open, what the process
    creates is private (the file, its WAL, DuckDB's spill folder: see `private`)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, path: Path | None = None, read_only: bool = False
    ) -> None:
        self.con, self.path = con, path
        self._holds_umask = False
        if not read_only and not self._schema_current():
            self.con.execute(_SCHEMA)
            self._unindex_last_written()
            self._migrate_format()
            self._unsettle_text_keys()
            self.con.execute(_SCHEMA_PRINT_TABLE)
            with self.transaction():
                self.con.execute("DELETE FROM schema_print")
                self.con.execute("INSERT INTO schema_print VALUES (?)", [_SCHEMA_PRINT])

    def _schema_current(self) -> bool:
        """Whether this code made (or brought up to date) the warehouse's schema: its tables
        and migrations are then as they are, and opening does not run them again (a run
        opens the warehouse once per flow)."""
        try:
            found = self.con.execute("SELECT print FROM schema_print").fetchall()
        except duckdb.CatalogException:
            return False
        return found == [(_SCHEMA_PRINT,)]

    def _unsettle_text_keys(self) -> None:
        """Settled rows kept by their target key as text (before they were kept by its hash)
        are dropped with what their flows settled on, and each flow computes every row on its
        next night (as after any new release): they are a cache of what a computation found
        (`stages.settle`), rebuilt by that night."""
        old = self.con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'settled_rows' "
            "AND column_name = 'target_key'"
        ).fetchall()
        if old[0][0]:
            with self.transaction():
                self.con.execute("DELETE FROM settled_rows")
                self.con.execute("DELETE FROM settled_flows")
                self.con.execute("ALTER TABLE settled_rows DROP COLUMN target_key")
                self.con.execute("ALTER TABLE settled_rows ADD COLUMN target_fold UBIGINT")

    def _unindex_last_written(self) -> None:
        indexed = self.con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'last_written' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()  # every row fetched: DuckDB refuses the next statement otherwise
        if indexed[0][0]:
            with self.transaction():
                self.con.execute(_UNINDEX_LAST_WRITTEN)

    def _migrate_format(self) -> None:
        """From format 1: drop the per-run copies of what the nightly runs read (the mirrors
        replace them; the next run reads everything once and builds them) and give their
        space back. The ledger, staged rows, rejects, changes, load results, last-written
        values, migrations (whose target snapshots resume them) and reconciliations stay.
        From format 2 (and 1): rebuild the tables of JSON columns in zstd, their rows kept."""
        found = self.con.execute("SELECT max(version) FROM warehouse_format").fetchall()
        version = 0 if found[0][0] is None else int(found[0][0])
        if version >= FORMAT:
            return
        if version < 2:
            self._drop_copies()
        with self.transaction():
            self._recompress_json()
            self.con.execute("DELETE FROM warehouse_format")
            self.con.execute("INSERT INTO warehouse_format VALUES (?)", [FORMAT])

    def _recompress_json(self) -> None:
        """From format 2: each `_JSON_TABLES` table rebuilt as `_SCHEMA` declares it (its
        JSON columns in zstd), its rows kept (inside the caller's transaction)."""
        for table in _JSON_TABLES:
            self.con.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_format2"')
        self.con.execute(_SCHEMA)
        for table in _JSON_TABLES:
            self.con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM "{table}_format2"')
            self.con.execute(f'DROP TABLE "{table}_format2"')

    def _drop_copies(self) -> None:
        """From format 1 (see `_migrate_format`)."""
        copies = self.con.execute(
            "SELECT s.run_id, s.table_name FROM snapshots s JOIN runs r USING (run_id) "
            "WHERE r.mode <> 'migrate' AND NOT ends_with(s.name, '.bad')"
        ).fetchall()
        with self.transaction():
            for run_id, table in copies:
                self.con.execute(f'DROP TABLE IF EXISTS "{table}"')
                self.con.execute(
                    "DELETE FROM snapshots WHERE run_id = ? AND table_name = ?", [run_id, table]
                )
        if copies:
            self.con.execute("CHECKPOINT")
            self.compact_if_mostly_free(least=0)

    @classmethod
    def open(cls, path: Path, wait: float = 900.0) -> Warehouse:
        """Open the warehouse. DuckDB lets one process in at a time: when another p2c-etl
        command is inside (a run's stage beside a reconciliation), wait up to `wait` seconds
        for it to step out."""
        private_dir(path.parent)
        PRIVATE_UMASK.hold()
        try:
            return cls._connect(path, wait, read_only=False)
        except BaseException:
            PRIVATE_UMASK.release()
            raise

    @classmethod
    def open_read_only(cls, path: Path) -> Warehouse:
        """Open the warehouse to read, at once: LockedError when another process is inside
        (DuckDB does not let a reader in beside a writer)."""
        PRIVATE_UMASK.hold()
        try:
            return cls._connect(path, 0.0, read_only=True)
        except BaseException:
            PRIVATE_UMASK.release()
            raise

    @classmethod
    def _connect(cls, path: Path, wait: float, read_only: bool) -> Warehouse:
        deadline, pause = time.monotonic() + wait, 0.05
        config = _config()
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only, config=config)
                # no bar drawn on the user's terminal by a long statement (the connect
                # config refuses it: it is a setting of the session, not of the database)
                con.execute("SET enable_progress_bar = false")
                # times read back are UTC, as the systems send them, on any host: DuckDB
                # would give them in the host's zone, and their text would differ by path
                con.execute("SET TimeZone = 'UTC'")
                wh = cls(con, path, read_only)
                wh._holds_umask = True
                return wh
            except duckdb.Error as exc:
                if "Could not set lock" not in str(exc):
                    raise ConnectorError(f"warehouse {path}: cannot open: {exc}") from None
                if time.monotonic() >= deadline:
                    pid = re.search(r"\(PID (\d+)\)", str(exc))
                    who = f"process {pid[1]}" if pid else "another process"
                    busy = "is busy" if wait <= 0 else f"stayed busy for {wait:.0f} s"
                    raise LockedError(f"warehouse {path} {busy} ({who})") from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            if self._holds_umask:
                self._holds_umask = False
                PRIVATE_UMASK.release()

    def fail_stale_runs(self) -> int:
        """Runs left `running` by a killed process: failed. Call only while holding the run
        lock, when no other run can be alive; reconciliations are failed when their own lock
        says their process is gone (`fail_dead_reconciliations`)."""
        rows = self.con.execute(
            "UPDATE runs SET status = 'failed', ended_at = now(), error = ? "
            "WHERE status = 'running' AND mode <> 'reconcile'",
            [_STALE],
        ).fetchall()
        return (int(rows[0][0]) if rows else 0) + self.fail_dead_reconciliations()

    def fail_dead_reconciliations(self) -> int:
        """Reconciliations left `running` whose process is gone (their lock is free): failed.
        Safe at any time: a live reconciliation holds its lock."""
        if self.path is None:
            return 0
        running = self.con.execute(
            "SELECT run_id FROM runs WHERE status = 'running' AND mode = 'reconcile'"
        ).fetchall()
        dead = [str(r[0]) for r in running if not _reconcile_alive(self.path, str(r[0]))]
        for rec_id in dead:
            self.con.execute(
                "UPDATE runs SET status = 'failed', ended_at = now(), error = ? "
                "WHERE run_id = ? AND status = 'running'",
                [_STALE, rec_id],
            )
            with contextlib.suppress(FileNotFoundError):
                reconcile_lock_path(self.path, rec_id).unlink()
            self.drop_mirrors(audit_namespace(rec_id))  # what it left
        return len(dead)

    def drop_mirrors(self, namespace: str) -> int:
        """Drop the mirrors of `namespace` (a reconciliation's own, `audit_namespace`) with
        their catalog rows; returns how many."""
        prefix = f"{namespace}."
        rows = self.con.execute(
            "SELECT table_name FROM mirrors WHERE starts_with(system, ?)", [prefix]
        ).fetchall()
        with self.transaction():
            for (table,) in rows:
                self.con.execute(f'DROP TABLE IF EXISTS "{table}"')
            self.con.execute("DELETE FROM mirrors WHERE starts_with(system, ?)", [prefix])
        return len(rows)

    @contextmanager
    def registered(self, name: str, frame: pl.DataFrame) -> Iterator[None]:
        """`frame` visible to SQL as the view `name` for the block."""
        self.con.register(name, frame.to_arrow())
        try:
            yield
        finally:
            self.con.unregister(name)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # --- frames in and out -------------------------------------------------------------

    def write_table(self, name: str, frame: pl.DataFrame) -> None:
        with self.registered("__frame", frame):
            self.con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM __frame')

    def append(
        self, table: str, frame: pl.DataFrame, constants: Mapping[str, Any] | None = None
    ) -> None:
        """Insert `frame`'s rows into `table`, with `constants` (column → value) the same in
        every row: passed once as parameters, not repeated a million times in the frame."""
        if frame.height == 0:
            return
        fixed = dict(constants or {})
        with self.registered("__frame", frame):
            columns = ", ".join(f'"{c}"' for c in [*fixed, *frame.columns])
            values = ", ".join(["?"] * len(fixed) + [f'"{c}"' for c in frame.columns])
            sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM __frame"
            self.con.execute(sql, list(fixed.values()))

    def read_table(self, name: str) -> pl.DataFrame:
        return self.query(f'SELECT * FROM "{name}"')

    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        frame: pl.DataFrame = self.con.sql(sql, params=list(params)).pl()
        return frame

    # --- the ledger ------------------------------------------------------------------

    def start_run(
        self, run_id: str, mode: RunMode, dry_run: bool, flows: Sequence[str], at: datetime
    ) -> None:
        self.con.execute(
            "INSERT INTO runs (run_id, mode, dry_run, flows, started_at, status) "
            "VALUES (?, ?, ?, ?, ?, 'running')",
            [run_id, mode, dry_run, list(flows), at],
        )

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        at: datetime,
        report: tuple[str | None, str | None] = (None, None),
        error: str | None = None,
    ) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, ended_at = ?, report_html = ?, report_json = ?, "
            "error = ? WHERE run_id = ?",
            [status, at, report[0], report[1], error, run_id],
        )

    def save_counts(self, run_id: str, counts: FlowCounts, details_run: str | None = None) -> None:
        values = [getattr(counts, c) for c in _COUNT_COLUMNS]
        self.con.execute(
            f"INSERT OR REPLACE INTO run_flows (run_id, flow, {', '.join(_COUNT_COLUMNS)}, "
            f"details_run) VALUES (?, ?, {', '.join('?' * len(values))}, ?)",
            [run_id, counts.flow, *values, details_run],
        )

    def counts(self, run_id: str) -> tuple[FlowCounts, ...]:
        rows = self.query(
            f"SELECT flow, {', '.join(_COUNT_COLUMNS)} FROM run_flows WHERE run_id = ? "
            "ORDER BY list_position((SELECT flows FROM runs WHERE run_id = ?), flow)",
            [run_id, run_id],
        )
        return tuple(FlowCounts(**row) for row in rows.iter_rows(named=True))

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows.row(0, named=True) if rows.height else None

    def recent_runs(self, limit: int) -> pl.DataFrame:
        """The latest runs, with what they wrote, and how they read: the entity sets whose
        first read was through their changes, those verified in full, and the drift found."""
        return self.query(
            "SELECT r.run_id, r.mode, r.dry_run, r.status, r.started_at, r.ended_at, "
            "coalesce(sum(f.inserted + f.updated), 0) AS written, "
            "coalesce(sum(f.rejected), 0) AS rejected, coalesce(sum(f.failed), 0) AS failed, "
            "r.report_html, any_value(coalesce(d.changes, 0)) AS change_reads, "
            "any_value(coalesce(d.verified, 0)) AS verified_reads, "
            "any_value(coalesce(d.drifted, 0)) AS drifted "
            "FROM runs r LEFT JOIN run_flows f USING (run_id) LEFT JOIN ("
            "SELECT run_id, count(*) FILTER (first IN ('delta', 'since')) AS changes, "
            "count(*) FILTER (verified) AS verified, sum(drifted) AS drifted FROM ("
            "SELECT run_id, system, entity, arg_min(kind, seq) AS first, "
            "bool_or(verified) AS verified, sum(drifted) AS drifted FROM run_reads "
            "WHERE flow IS NOT NULL GROUP BY run_id, system, entity) GROUP BY run_id) d "
            "USING (run_id) "
            "GROUP BY r.run_id, r.mode, r.dry_run, r.status, r.started_at, r.ended_at, "
            "r.report_html ORDER BY r.started_at DESC, r.run_id DESC LIMIT ?",
            [limit],
        )

    # --- snapshots and stage outputs ---------------------------------------------------

    def save_snapshot(
        self, run_id: str, name: str, system: str, entity: str, frame: pl.DataFrame, at: datetime
    ) -> str:
        table = table_name("snap", run_id, name)
        with self.transaction():
            self.write_table(table, frame)
            self.con.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, name, system, entity, table, frame.height, at],
            )
        return table

    def save_snapshot_pages(
        self,
        run_id: str,
        name: str,
        system: str,
        entity: str,
        pages: Iterable[pl.DataFrame],
        at: datetime,
    ) -> int:
        """Store a snapshot page by page (memory stays bounded by a page); returns its rows."""
        table = table_name("snap", run_id, name)
        rows = 0
        with self.transaction():
            for i, page in enumerate(pages):
                if i == 0:
                    self.write_table(table, page)
                else:
                    self.append(f'"{table}"', page)
                rows += page.height
            self.con.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, name, system, entity, table, rows, at],
            )
        return rows

    def snapshot(self, run_id: str, name: str) -> pl.DataFrame:
        rows = self.con.execute(
            "SELECT table_name FROM snapshots WHERE run_id = ? AND name = ?", [run_id, name]
        ).fetchall()
        if not rows:
            raise KeyError(f"run {run_id} has no snapshot {name!r}")
        return self.read_table(str(rows[0][0]))

    def remembers(self, flow: str) -> bool:
        """Whether any value written by `flow` is remembered (`last_written`)."""
        rows = self.con.execute(
            "SELECT EXISTS (SELECT 1 FROM last_written WHERE flow = ?)", [flow]
        ).fetchall()
        return bool(rows[0][0])

    def remember_written(
        self,
        flow: str,
        frame: pl.DataFrame,
        run_id: str,
        written_at: datetime,
        new: bool = False,
    ) -> None:
        """Upsert `flow`'s (record_key → values_json) of `frame`, written by `run_id` at
        `written_at`: the rows of those keys are deleted, then the frame's inserted (hash
        joins, which spill; no in-memory index). `new`: none of those keys is remembered yet
        (a flow's first writes), so nothing is deleted."""
        if frame.height == 0:
            return
        frame = frame.select("record_key", "values_json")
        if not new:
            with self.registered("__frame", frame):
                self.con.execute(
                    "DELETE FROM last_written USING __frame f "
                    "WHERE last_written.flow = ? AND last_written.record_key = f.record_key",
                    [flow],
                )
        self.append(
            "last_written", frame, {"flow": flow, "run_id": run_id, "written_at": written_at}
        )

    def not_remembered(self, flow: str, values: pl.DataFrame) -> pl.DataFrame:
        """The rows of `values` (record_key, values_json) whose values are not those
        remembered for `flow` (a join in DuckDB, which spills)."""
        with self.registered("__values", values.select("record_key", "values_json")):
            return self.query(
                "SELECT v.record_key, v.values_json FROM __values v ANTI JOIN "
                "(SELECT record_key, values_json FROM last_written WHERE flow = ?) l "
                "ON l.record_key = v.record_key AND l.values_json = v.values_json",
                [flow],
            )

    def for_flow(
        self, table: str, run_id: str, flow: str, columns: Sequence[str] = ()
    ) -> pl.DataFrame:
        """The rows of `flow` in `run_id` (for a flow that found nothing changed, those of
        the run it found unchanged: `details_run`); only `columns`, when given."""
        names = ", ".join(f'"{c}"' for c in columns) or "* EXCLUDE (run_id, flow)"
        return self.query(
            f"SELECT {names} FROM {table} WHERE flow = ? AND run_id = ?",
            [flow, self.details_run(run_id, flow)],
        )

    def details_run(self, run_id: str, flow: str) -> str:
        """The run whose details (changes, load results, rejects) stand for `flow` in
        `run_id`: itself, or, when the flow found nothing changed, the run it was found
        unchanged since."""
        rows = self.con.execute(
            "SELECT coalesce(max(details_run), ?) FROM run_flows WHERE run_id = ? AND flow = ?",
            [run_id, run_id, flow],
        ).fetchall()
        return str(rows[0][0])

    def has_table(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
            [name],
        ).fetchall()
        return bool(rows[0][0])

    # --- housekeeping ------------------------------------------------------------------

    def prune(self, before: datetime) -> tuple[int, int]:
        """Prune the runs started before `before`: drop their per-run tables, and the
        details (changes, load results, rejects, unmapped values) of the nightly runs and
        retries whose details no kept run or settled flow points at. The ledger (`runs`,
        `run_flows`), migrations and reconciliations with their evidence, the mirrors and the
        last-written values stay. When most of the
        file is then free space, the file is rewritten to give it back (`compact`).
        Returns (runs pruned, tables dropped)."""
        old = self.query(
            "SELECT run_id, mode FROM runs WHERE started_at < ? AND status <> 'running'",
            [before],
        )
        tables = self.query("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'")[
            "table_name"
        ].to_list()
        kept = {
            str(r[0])
            for r in self.con.execute(
                "SELECT DISTINCT details_run FROM run_flows f JOIN runs r USING (run_id) "
                "WHERE details_run IS NOT NULL AND r.started_at >= ? "
                "UNION SELECT run_id FROM settled_flows WHERE fingerprint IS NOT NULL",
                [before],
            ).fetchall()
        }
        dropped = 0
        with self.transaction():
            for run_id, mode in old.iter_rows():
                prefixes = [table_name(kind, run_id) for kind in ("snap", "stage", "claimed")]
                for table in tables:
                    if any(table.startswith(prefix) for prefix in prefixes):
                        self.con.execute(f'DROP TABLE IF EXISTS "{table}"')
                        dropped += 1
                self.con.execute("DELETE FROM snapshots WHERE run_id = ?", [run_id])
                if mode not in ("migrate", "reconcile") and run_id not in kept:
                    details = ("changes", "load_results", "rejects", "unmapped_values", "drift")
                    for detail in details:
                        self.con.execute(f"DELETE FROM {detail} WHERE run_id = ?", [run_id])
        self.con.execute("CHECKPOINT")
        self.compact_if_mostly_free()
        return old.height, dropped

    def free_share(self) -> float:
        """The share of the file's blocks that are free (DuckDB reuses them, but the file
        does not shrink by itself)."""
        size = self.con.execute("PRAGMA database_size").fetchall()[0]
        total, free = int(size[3]), int(size[5])  # total_blocks, free_blocks
        return free / total if total else 0.0

    def compact_if_mostly_free(self, share: float = 0.5, least: int = 64 << 20) -> bool:
        """Rewrite the file when more than `share` of it is free space and that is at least
        `least` bytes: the space goes back to the disk. True when it was rewritten."""
        if self.path is None or not self.path.exists():
            return False
        free = self.free_share()
        if free <= share or free * self.path.stat().st_size < least:
            return False
        self.compact()
        return True

    def compact(self) -> None:
        """Rewrite the warehouse into a new file holding only live data, then put it in the
        old one's place (the connection is reopened on it)."""
        assert self.path is not None
        fresh = self.path.with_name(self.path.name + ".compact")
        fresh.unlink(missing_ok=True)
        name = str(self.con.execute("SELECT current_database()").fetchall()[0][0])
        self.con.execute("CHECKPOINT")
        self.con.execute(f"ATTACH '{fresh}' AS p2c_compacted")
        try:
            self.con.execute(f'COPY FROM DATABASE "{name}" TO p2c_compacted')
        finally:
            self.con.execute("DETACH p2c_compacted")
        self.con.close()
        os.replace(fresh, self.path)
        self.con = duckdb.connect(str(self.path), config=_config())
