"""One flow of a migration: its reference data, its target snapshot, then its export file a
chunk at a time, each chunk committed with its checkpoint (see `jobs.migrate.job`).

About 400 lines on purpose: `FlowJob` is one unit of exactly-once bookkeeping. Its steps share
the chunk's state (keys seen, planned inserts, the target rows of the chunk) and the order of
what one transaction commits; spreading them over modules would hide that order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.connectors.exports import (
    ExportChunk,
    count_records,
    find_export,
    read_chunks,
    read_whole,
)
from p2c_etl.errors import ConfigError, P2CError, StageError
from p2c_etl.jobs.migrate.options import Bars, MigrateOptions
from p2c_etl.jobs.wiring import Clock, Progress
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Context, Flow, Lookup
from p2c_etl.model.ids import stable_id
from p2c_etl.model.keys import folded_record_key, record_key
from p2c_etl.model.rejects import KEY, LINE, ROW
from p2c_etl.model.summary import FlowCounts
from p2c_etl.stages.compare import Compared, change_rows, compare_frames
from p2c_etl.stages.diff import KIND
from p2c_etl.stages.extract import target_name
from p2c_etl.stages.load import outcome, record_results, send
from p2c_etl.stages.prepare import Prepared, prepare_frame, save_prepared, with_planned
from p2c_etl.stages.transform import filters_expr, reference_mapping
from p2c_etl.warehouse.store import Warehouse, table_name

RK = "__rk"
"""A record's key folded as the target compares keys (`folded_record_key`): how a chunk finds
its target rows and the keys earlier chunks had."""


@dataclass
class _Timer:
    seconds: float = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self._start


class FlowJob:
    """One flow of a migration: its reference data, target snapshot and chunks."""

    def __init__(
        self,
        wh: Warehouse,
        run_id: str,
        flow: Flow,
        options: MigrateOptions,
        contracts: ContractSet,
        connectors: dict[SystemName, Connector],
        context: Context,
        clock: Clock,
    ) -> None:
        self.wh, self.run_id, self.flow, self.options = wh, run_id, flow, options
        self.contracts, self.connectors, self.context, self.clock = (
            contracts,
            connectors,
            context,
            clock,
        )
        path = find_export(options.source, flow.source.entity)
        if path is None:
            raise ConfigError(f"flow {flow.name}: the export of {flow.source.entity} is gone")
        self.path = path
        self.window = bool(options.since or options.until) and flow.dated_by is not None
        self.keys_table = table_name("stage", run_id, flow.name, "keys")
        self.planned_table = table_name("stage", run_id, flow.name, "planned")

    def run(self, earlier: Sequence[Flow], progress: Progress, bars: Bars) -> FlowCounts:
        flow, stage = self.flow, "extract"
        try:
            done = self._committed()
            progress(f"{flow.name}: {self.path.name} → {flow.target}")
            # Lookups need only their mappings, made once: no reference frame stays.
            self.mappings, self.inputs = self._reference_data(earlier)
            self._snapshot_target()
            if self.options.dry_run and not done:  # a resumed dry run keeps what it planned
                self.wh.con.execute(f'DROP TABLE IF EXISTS "{self.planned_table}"')
            stage = "migrate"
            columns = [*flow.source_columns]
            if self.window and flow.dated_by not in columns:
                columns.append(flow.dated_by or "")
            contract = self.contracts.get(flow.source.system, flow.source.entity)
            total = count_records(self.path)
            chunks = read_chunks(self.path, contract, columns, self.options.chunk_rows)
            with bars(flow.name, total) as tick:
                for chunk, read_seconds in _timed(chunks):
                    if chunk.index not in done:
                        self._chunk(chunk, read_seconds)
                    tick(chunk.records)
        except P2CError as exc:
            raise StageError(stage, flow.name, self.run_id, exc) from exc
        counts = next((c for c in self.wh.counts(self.run_id) if c.flow == flow.name), None)
        counts = counts or FlowCounts(flow.name)
        self.wh.save_counts(self.run_id, counts)
        progress(
            f"{flow.name}: {counts.source_rows:,} records, {counts.filtered_out:,} outside the "
            f"window or filtered out, {counts.rejected:,} rejected, {counts.inserted:,} inserted, "
            f"{counts.updated:,} updated, {counts.unchanged:,} unchanged, {counts.failed:,} failed"
        )
        return counts

    def _committed(self) -> set[int]:
        rows = self.wh.query(
            "SELECT chunk FROM migrate_chunks WHERE run_id = ? AND flow = ?",
            [self.run_id, self.flow.name],
        )
        return set(rows["chunk"].to_list())

    # --- before the chunks -------------------------------------------------------------

    def _reference_data(
        self, earlier: Sequence[Flow]
    ) -> tuple[dict[Lookup, pl.DataFrame], dict[str, pl.DataFrame]]:
        """The mapping of every lookup (each reference entity set is read, mapped and let go
        before the next: only the mappings stay) and the inputs of the derivations."""
        flow = self.flow
        planned = []
        if self.options.dry_run:  # what earlier flows would have inserted counts as there
            for before in earlier:
                table = table_name("stage", self.run_id, before.name, "planned")
                if self._exists(table):
                    planned.append((before, self.wh.read_table(table)))
        mappings: dict[Lookup, pl.DataFrame] = {}
        for system, entity in dict.fromkeys((lk.system, lk.entity) for lk in flow.lookups):
            mine = [lk for lk in flow.lookups if (lk.system, lk.entity) == (system, entity)]
            columns = sorted({c for lk in mine for c in lk.columns})
            refs: dict[tuple[str, str], pl.DataFrame] = {
                (system, entity): self._entity(system, entity, columns)
            }
            for before, rows in planned:
                refs, _ = with_planned(refs, {}, before, rows)
            for lookup in mine:
                mappings[lookup] = reference_mapping(lookup, refs[(system, entity)], self.context)
            del refs
        inputs: dict[str, pl.DataFrame] = {}
        for item in flow.inputs:
            frame = self._entity(item.system, item.entity, list(item.columns))
            inputs[item.name] = frame.filter(filters_expr(item.filters, self.context))
        for before, rows in planned:
            _, inputs = with_planned({}, inputs, before, rows)
        return mappings, inputs

    def _entity(self, system: SystemName, entity: str, columns: list[str]) -> pl.DataFrame:
        """An entity set's columns: from the export folder when it holds the entity set and
        stands for that system (the flow's source system), else from the system itself."""
        path = find_export(self.options.source, entity)
        if system == self.flow.source.system and path is not None:
            return read_whole(path, self.contracts.get(system, entity), columns)
        return self.connectors[system].snapshot(
            entity, columns, missing_ok=system == self.flow.target.system
        )

    def _snapshot_target(self) -> None:
        """What the target holds now, with each record's key, for the chunks to look up."""
        flow = self.flow
        columns = list(
            dict.fromkeys(
                [
                    *flow.target_columns,
                    *([flow.target_id] if flow.target_id else []),
                    *(f.column for f in flow.target_filters),
                ]
            )
        )
        scope = filters_expr(flow.target_filters, self.context)
        pages = self.connectors[flow.target.system].pages(
            flow.target.entity, columns, missing_ok=True
        )
        self.wh.save_snapshot_pages(
            self.run_id,
            target_name(flow),
            flow.target.system,
            flow.target.entity,
            (p.filter(scope).with_columns(folded_record_key(flow.keys).alias(RK)) for p in pages),
            self.clock(),
        )
        self.target_table = table_name("snap", self.run_id, target_name(flow))
        self.wh.con.execute(
            f'CREATE TABLE IF NOT EXISTS "{self.keys_table}" (record_key VARCHAR, line BIGINT)'
        )

    # --- one chunk ---------------------------------------------------------------------

    def _chunk(self, chunk: ExportChunk, read_seconds: float) -> None:
        flow = self.flow
        prepare, compare, load = _Timer(), _Timer(), _Timer()
        with prepare:
            frame, outside = self._in_window(chunk.frame)
            if self.window and flow.dated_by not in flow.source_columns:
                frame = frame.drop(flow.dated_by or "")
            prepared = prepare_frame(
                self.run_id,
                flow,
                frame,
                {},  # every lookup is in `self.mappings`
                self.inputs,
                self.contracts,
                self.context,
                first_wins=True,
                mappings=self.mappings,
            )
            valid, again = self._first_time(prepared.valid, prepared.lines)
        with compare:
            target = self._target_rows(valid[RK])
            valid = valid.drop(RK)
            empty_claims = valid.select(list(flow.keys)).clear()
            compared = compare_frames(self.run_id, flow, valid, target, empty_claims)
            changes = change_rows(self.run_id, flow, compared.result)
        results: pl.DataFrame | None = None
        with load:
            if not self.options.dry_run:
                writes = changes.filter(pl.col(KIND).is_in(["insert", "update"]))
                connector = self.connectors[flow.target.system]
                results = send(flow, connector, compared.staged, writes, target)
        timings = (read_seconds, prepare.seconds, compare.seconds, load.seconds)
        self._commit(chunk, prepared, again, compared, changes, results, outside, timings)

    def _in_window(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Records created in [since, until] (whole days, UTC); a record with no date is
        outside any window."""
        if not self.window:
            return frame, 0
        column = pl.col(self.flow.dated_by or "")
        day = column.dt.date() if frame.schema[self.flow.dated_by or ""] != pl.Date else column
        keep = day.is_not_null()
        if self.options.since:
            keep &= day >= self.options.since
        if self.options.until:
            keep &= day <= self.options.until
        kept = frame.filter(keep)
        return kept, frame.height - kept.height

    def _first_time(
        self, valid: pl.DataFrame, lines: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split off rows whose target key an earlier chunk of this migration already had:
        the first record wins, later ones are `duplicate_key` rejects."""
        keyed = valid.with_columns(folded_record_key(self.flow.keys).alias(RK)).join(
            lines, on=ROW, how="left"
        )
        seen = self._with_keys(
            keyed[RK],
            f'SELECT k.record_key, min(k.line) AS first_line FROM "{self.keys_table}" k '
            f"JOIN __chunk_keys c ON k.record_key = c.{RK} GROUP BY k.record_key",
        )
        again = keyed.join(seen, left_on=RK, right_on="record_key", how="inner")
        first = keyed.join(seen, left_on=RK, right_on="record_key", how="anti")
        return first.drop(LINE), again  # keeps its record keys (`__rk`) for the target

    def _target_rows(self, keys: pl.Series) -> pl.DataFrame:
        return self._with_keys(
            keys,
            f'SELECT t.* EXCLUDE ({RK}) FROM "{self.target_table}" t '
            f"SEMI JOIN __chunk_keys c ON t.{RK} = c.{RK}",
        )

    def _with_keys(self, keys: pl.Series, sql: str) -> pl.DataFrame:
        """`sql` run with the chunk's record `keys` as the table `__chunk_keys` (`__rk`)."""
        with self.wh.registered("__chunk_keys", keys.alias(RK).to_frame()):
            return self.wh.query(sql)

    def _commit(
        self,
        chunk: ExportChunk,
        prepared: Prepared,
        again: pl.DataFrame,
        compared: Compared,
        changes: pl.DataFrame,
        results: pl.DataFrame | None,
        outside: int,
        timings: tuple[float, float, float, float],
    ) -> None:
        """The chunk's rejects, changes, failed writes, keys, counts, timings and checkpoint,
        in one transaction."""
        flow, wh, run_id = self.flow, self.wh, self.run_id
        file = str(self.path)
        lines = prepared.rejects  # already carries source_line
        read_bad = chunk.bad.select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(flow.name).alias("flow"),
            pl.lit(None, pl.String).alias("record_key"),
            pl.lit(None, pl.Int64).alias("source_row"),
            "field",
            "reason",
            "value",
            "message",
            pl.lit(None, pl.String).alias("row_json"),
            pl.col(LINE).alias("source_line"),
        )
        duplicates = again.select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(flow.name).alias("flow"),
            pl.col(KEY).alias("record_key"),
            pl.lit(None, pl.Int64).alias("source_row"),
            pl.lit(",".join(flow.keys)).alias("field"),
            pl.lit("duplicate_key").alias("reason"),
            record_key(flow.keys).alias("value"),
            pl.format(
                "the record at {} has the same key and was taken; this one is not",
                pl.when(pl.col("first_line").is_not_null())
                .then(pl.format("line {}", pl.col("first_line")))
                .otherwise(pl.lit("an earlier chunk")),
            ).alias("message"),
            pl.lit(None, pl.String).alias("row_json"),
            pl.col(LINE).alias("source_line"),
        )
        doubled = compared.rejects.with_columns(pl.lit(None, pl.Int64).alias("source_line"))
        rejects = pl.concat(
            [
                lines.with_columns(pl.lit(None, pl.Int64).alias("source_row")),
                read_bad,
                duplicates,
                doubled,
            ],
            how="diagonal_relaxed",
        ).with_columns(pl.lit(file).alias("source_file"))
        if results is None:
            info = compared.info
            inserted, updated, failed = info.inserts, info.updates, 0
        else:
            done = outcome(results)
            inserted, updated, failed = done.inserted, done.updated, done.failed
        rejected = (
            chunk.bad[LINE].n_unique()
            + prepared.info.rejected
            + again.height
            + compared.rejects.height
        )
        line_of = chunk.frame[LINE]
        with wh.transaction():
            save_prepared(wh, replace(prepared, rejects=rejects))
            # Inserts keep no copy of the record (`compare_frames`): the export and the target
            # hold it.
            wh.append("changes", changes)
            if results is not None:
                record_results(wh, run_id, flow, results, None, pl.DataFrame(), self.clock())
            keys = compared.staged.join(prepared.lines, on=ROW, how="left").select(
                folded_record_key(flow.keys).alias("record_key"), pl.col(LINE).alias("line")
            )
            wh.append(f'"{self.keys_table}"', keys)
            if self.options.dry_run:
                self._plan(compared)
            wh.con.execute(
                "INSERT INTO migrate_chunks VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    flow.name,
                    chunk.index,
                    chunk.first,
                    chunk.records,
                    line_of.min() if line_of.len() else None,
                    line_of.max() if line_of.len() else None,
                    outside + prepared.info.filtered_out,
                    rejected,
                    inserted,
                    updated,
                    compared.info.unchanged,
                    failed,
                    *timings,
                    self.clock(),
                ],
            )
            wh.con.execute(
                "INSERT OR REPLACE INTO run_flows (run_id, flow, source_rows, filtered_out, "
                "rejected, inserted, updated, unchanged, target_only, failed) "
                "SELECT run_id, flow, sum(records), sum(filtered_out), sum(rejected), "
                "sum(inserted), sum(updated), sum(unchanged), 0, sum(failed) "
                "FROM migrate_chunks WHERE run_id = ? AND flow = ? GROUP BY ALL",
                [run_id, flow.name],
            )

    def _plan(self, compared: Compared) -> None:
        """A dry run remembers the records it would insert, for later flows' lookups."""
        flow = self.flow
        inserts = compared.result.changes.filter(pl.col(KIND) == "insert").select(list(flow.keys))
        rows = compared.staged.drop(ROW, KEY).join(
            inserts, on=list(flow.keys), how="semi", nulls_equal=True
        )
        if flow.target_id:
            rows = rows.with_columns(
                record_key(flow.keys)
                .map_elements(lambda key: stable_id(flow, key), return_dtype=pl.String)
                .alias(flow.target_id)
            )
        if rows.height == 0:
            return
        if self._exists(self.planned_table):
            self.wh.append(f'"{self.planned_table}"', rows)
        else:
            self.wh.write_table(self.planned_table, rows)

    def _exists(self, table: str) -> bool:
        found = self.wh.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchall()
        return bool(found[0][0])


def _timed(chunks: Iterator[ExportChunk]) -> Iterator[tuple[ExportChunk, float]]:
    """Each chunk with the seconds it took to read."""
    while True:
        start = time.perf_counter()
        chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk, time.perf_counter() - start
