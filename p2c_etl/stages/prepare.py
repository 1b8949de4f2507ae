"""Prepare: transform and validate a flow's source, read from the warehouse by run id; the
mapped rows, their rejects and unmapped values are committed together, and a typed info record
is returned. The pure parts are `stages.transform` and `stages.validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from p2c_etl.connectors.badrows import RECORD, SOURCE_FILE
from p2c_etl.model.casting import coerce
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Context, Flow, Inputs
from p2c_etl.model.ids import stable_id
from p2c_etl.model.keys import folded_record_key, record_key
from p2c_etl.model.rejects import KEY, LINE, REJECT_SCHEMA, ROW, empty_rejects
from p2c_etl.stages.diff import KIND
from p2c_etl.stages.extract import SourceFrames
from p2c_etl.stages.transform import Mappings, References, derive, derived_hash, transform
from p2c_etl.stages.validate import validate
from p2c_etl.warehouse.mirror import ORD
from p2c_etl.warehouse.store import Warehouse, table_name


@dataclass(frozen=True)
class PrepareInfo:
    source_rows: int
    filtered_out: int
    rejected: int
    staged: int


def staged_table(run_id: str, flow: Flow) -> str:
    return table_name("stage", run_id, flow.name)


class Handoff:
    """The rows prepare staged and the keys they claim, handed to compare in the process
    that prepared them (the staged rows are stored too: a retry, a report and a later
    stage read them). `take` gives them once and keeps no reference, so the diff can
    release them part by part."""

    def __init__(self, staged: pl.DataFrame, claimed: pl.DataFrame) -> None:
        self._frames: tuple[pl.DataFrame, pl.DataFrame] | None = (staged, claimed)

    def take(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(staged rows, claimed keys)."""
        if self._frames is None:
            raise RuntimeError("the prepared rows were handed to compare already")
        frames, self._frames = self._frames, None
        return frames


def prepare_flow(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    frames: SourceFrames,
    contracts: ContractSet,
    context: Context,
    planned: Sequence[Flow] = (),
) -> tuple[PrepareInfo, Handoff]:
    """Map and validate the source (`frames`, read from the mirrors by `source_frames`);
    store good rows and rejects; the rows for compare.

    `planned` are the flows of a dry run that ran before this one: the records they would
    have inserted count as existing, so references resolve as they would in a real run.
    """
    prepared, _ = compute_rows(wh, run_id, flow, frames, contracts, context, planned)
    return prepared.info, save_rows(wh, run_id, flow, prepared)


def compute_rows(
    wh: Warehouse,
    run_id: str,
    flow: Flow,
    frames: SourceFrames,
    contracts: ContractSet,
    context: Context,
    planned: Sequence[Flow] = (),
) -> tuple[Prepared, pl.DataFrame | None]:
    """`prepare_flow` without storing: the prepared rows, and per source row its outcome
    (`__ord`: its place in the source; `target_key`: the target key it claims, folded;
    `staged`; `filtered`; `unmapped`: a value no value map knew; `__derived`, with
    derivations: the hash of what they add, `derived_hash`). When `frames` holds only
    some source rows (with their places, `__ord`), row numbers are their places. No
    outcomes when the flow's derivations add or drop rows (see `Prepared.aligned`)."""
    refs: References = frames.references
    extra: Inputs = frames.inputs
    for earlier in planned:
        refs, extra = with_planned(refs, extra, earlier, planned_inserts(wh, run_id, earlier))
    places = frames.source[ORD] if ORD in frames.source.columns else None
    source = frames.source.drop(ORD, strict=False)
    bad = frames.bad
    keys = unreadable_keys(flow, bad, contracts, extra, context) if bad.height else None
    prepared = prepare_frame(run_id, flow, source, refs, extra, contracts, context, unreadable=keys)
    if bad.height:
        prepared = with_unreadable(prepared, run_id, flow, bad, keys)
    if not prepared.aligned or bad.height:
        return prepared, None  # rows that cannot be told apart, or unreadable twins: all rows
    outcomes = _outcomes(flow, prepared)
    if places is not None:
        prepared = _at_places(prepared, places)
        outcomes = outcomes.with_columns(pl.col(ORD).map_batches(_place(places), pl.Int64))
    return prepared, outcomes


def save_rows(wh: Warehouse, run_id: str, flow: Flow, prepared: Prepared) -> Handoff:
    """Store the staged rows, the rejects and the unmapped values; the rows for compare."""
    with wh.transaction():
        wh.write_table(staged_table(run_id, flow), prepared.valid)
        save_prepared(wh, prepared)
    return Handoff(prepared.valid, prepared.claimed)


def _outcomes(flow: Flow, prepared: Prepared) -> pl.DataFrame:
    rows = pl.int_range(prepared.claimed.height, dtype=pl.Int64, eager=True)
    staged = prepared.valid[ROW].implode()
    rejected = prepared.rejects["source_row"].drop_nulls().implode()
    return prepared.claimed.select(
        rows.alias(ORD),
        folded_record_key(flow.keys).alias("target_key"),
    ).with_columns(
        pl.col(ORD).is_in(staged).alias("staged"),
        (~pl.col(ORD).is_in(staged) & ~pl.col(ORD).is_in(rejected)).alias("filtered"),
        pl.col(ORD).is_in(prepared.unmapped_rows.implode()).alias("unmapped"),
        *([] if prepared.derived is None else [pl.lit(prepared.derived)]),
    )


def _place(places: pl.Series) -> Callable[[pl.Series], pl.Series]:
    def at(rows: pl.Series) -> pl.Series:
        return places.gather(rows)

    return at


def _at_places(prepared: Prepared, places: pl.Series) -> Prepared:
    """`prepared` with its row numbers (the rows of a part of the source) made the places of
    those rows in the whole source."""
    at = _place(places.cast(pl.Int64))
    return replace(
        prepared,
        valid=prepared.valid.with_columns(pl.col(ROW).map_batches(at, pl.Int64)),
        rejects=prepared.rejects.with_columns(pl.col("source_row").map_batches(at, pl.Int64)),
        unmapped_rows=at(prepared.unmapped_rows),
        lines=prepared.lines.with_columns(pl.col(ROW).map_batches(at, pl.Int64)),
    )


@dataclass(frozen=True)
class Prepared:
    """What preparing a source frame gives: valid rows, claimed keys, reject and unmapped
    rows ready for the warehouse, and the counts."""

    valid: pl.DataFrame
    claimed: pl.DataFrame
    rejects: pl.DataFrame
    unmapped: pl.DataFrame
    info: PrepareInfo
    lines: pl.DataFrame
    """`__row` → `__line`: where each source row starts in its export (null outside a
    migration)."""
    unmapped_rows: pl.Series = field(default_factory=lambda: pl.Series(ROW, [], dtype=pl.Int64))
    """`__row` of the rows with a value no value map knew."""
    aligned: bool = True
    """Row `i` (`__row`) is source row `i`: the derivations kept the rows as they were (some
    add rows, such as a discount line beside its order line)."""
    derived: pl.Series | None = None
    """Per source row, the hash of what the flow's derivations add to it (`derived_hash`;
    None without derivations, or when they add or drop rows): settle keeps it, so that a
    first sync needs no derivation pass of its own."""


def prepare_frame(
    run_id: str,
    flow: Flow,
    source: pl.DataFrame,
    refs: References,
    extra: Inputs,
    contracts: ContractSet,
    context: Context,
    first_wins: bool = False,
    mappings: Mappings | None = None,
    unreadable: pl.Series | None = None,
) -> Prepared:
    """Map `source` onto the target and validate it against the target's contract.

    Two source records with one target key are both rejected; with `first_wins` (a
    migration, which streams and cannot take back what it wrote) the first one in the
    source goes on and the later ones are rejected, naming where the first one is.
    `unreadable` are the source keys of the records that could not be read (extract's bad
    rows, `unreadable_keys`): a record holding one of them is a `duplicate_key` reject too.
    """
    mapped = transform(flow, source, refs, context, extra, mappings)
    lines = mapped.source.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW),
        (pl.col(LINE) if LINE in mapped.source.columns else pl.lit(None, pl.Int64)).alias(LINE),
    )
    staged, later = mapped.staged, empty_rejects()
    if first_wins:
        staged, later = _first_of_each_key(flow, staged, lines)
    checked = validate(
        staged,
        contracts.get(flow.target.system, flow.target.entity),
        source=mapped.source,  # its text is held to the source system's lengths too
        source_contract=contracts.get(flow.source.system, flow.source.entity),
    )
    twins = _twins_of_unreadable(flow, mapped.source, checked.valid, unreadable)
    valid = checked.valid.join(twins.select(ROW), on=ROW, how="anti")
    rejects = pl.concat([mapped.rejects, later, checked.rejects, twins], how="vertical")
    unmapped = mapped.unmapped.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        pl.all(),
        pl.lit(flow.unmapped).alias("policy"),
    )
    return Prepared(
        valid=valid,
        claimed=mapped.claimed,
        rejects=_reject_rows(run_id, flow, mapped.source, rejects),
        unmapped=unmapped,
        info=PrepareInfo(
            source_rows=mapped.source.height,
            filtered_out=mapped.filtered_out,
            rejected=rejects[ROW].n_unique(),
            staged=valid.height,
        ),
        lines=lines,
        unmapped_rows=mapped.unmapped_rows,
        aligned=mapped.aligned,
        derived=derived_hash(flow, mapped.source) if flow.derive and mapped.aligned else None,
    )


def _twins_of_unreadable(
    flow: Flow, source: pl.DataFrame, valid: pl.DataFrame, unreadable: pl.Series | None
) -> pl.DataFrame:
    """A `duplicate_key` reject for each valid row whose source key a record that could not
    be read also holds: of two records with one key neither is taken, whether both read or
    not (the one that did not might be the right one)."""
    if unreadable is None or unreadable.drop_nulls().is_empty():
        return empty_rejects()
    keys = unreadable.drop_nulls().unique().implode()
    rows = source.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW),
        record_key(flow.source_keys).alias("value"),
    ).join(valid.select(ROW), on=ROW, how="semi")
    return (
        rows.filter(pl.col("value").is_in(keys))
        .select(
            ROW,
            pl.lit(",".join(flow.source_keys)).alias("field"),
            pl.lit("duplicate_key").alias("reason"),
            "value",
            pl.lit(
                "a record that could not be read has the same key (see its reject); "
                "neither is taken"
            ).alias("message"),
        )
        .cast(REJECT_SCHEMA)
    )


def with_unreadable(
    prepared: Prepared,
    run_id: str,
    flow: Flow,
    bad: pl.DataFrame,
    keys: pl.Series | None = None,
) -> Prepared:
    """`prepared` with the source records that could not be read (extract's bad rows) as
    rejects: each is a source row, and rejected (a record with several bad values once)."""
    if bad.height == 0:
        return prepared
    rejects = unreadable_rejects(run_id, flow, bad, keys)
    records = bad.select(SOURCE_FILE, LINE).unique().height
    info = replace(
        prepared.info,
        source_rows=prepared.info.source_rows + records,
        rejected=prepared.info.rejected + records,
    )
    every = pl.concat([prepared.rejects, rejects], how="diagonal_relaxed")
    return replace(prepared, rejects=every, info=info)


def unreadable_rejects(
    run_id: str, flow: Flow, bad: pl.DataFrame, keys: pl.Series | None = None
) -> pl.DataFrame:
    """Reject rows of bad source records, naming file, line and column, with their record
    key (`keys`, a row each; null where none of it could be read)."""
    return bad.select(
        pl.lit(run_id).alias("run_id"),
        pl.lit(flow.name).alias("flow"),
        (keys if keys is not None else pl.lit(None, pl.String)).alias("record_key"),
        pl.lit(None, pl.Int64).alias("source_row"),
        "field",
        "reason",
        "value",
        "message",
        pl.col(RECORD).alias("row_json"),
        pl.col(LINE).alias("source_line"),
        SOURCE_FILE,
    ).sort(SOURCE_FILE, "source_line", "field", nulls_last=True)


def unreadable_keys(
    flow: Flow, bad: pl.DataFrame, contracts: ContractSet, extra: Inputs, context: Context
) -> pl.Series:
    """The source key of each bad row, from what could be read of its record: the values
    that read exactly, with the flow's derivations (a generated account number) applied;
    null where the key cannot be told."""
    contract = contracts.get(flow.source.system, flow.source.entity)
    columns = list(flow.source_columns)
    raw = bad.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW),
        *[pl.col(RECORD).str.json_path_match(f"$.{c}").alias(c) for c in columns],
    )
    typed, _ = coerce(raw, contract, columns)  # a value that does not read is null
    readable = pl.any_horizontal(pl.col(c).is_not_null() for c in columns)
    try:
        derived = derive(flow, typed.drop(ROW), extra, context)
    except (pl.exceptions.PolarsError, KeyError, ValueError, TypeError):
        derived = typed
    if derived.height != typed.height or not set(flow.source_keys) <= set(derived.columns):
        return pl.Series("record_key", [None] * bad.height, dtype=pl.String)
    keys = derived.with_columns(readable=typed.select(readable).to_series())
    return keys.select(
        pl.when(pl.col("readable")).then(record_key(flow.source_keys)).alias("record_key")
    ).to_series()


def _first_of_each_key(
    flow: Flow, staged: pl.DataFrame, lines: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the first row of each target key, `duplicate_key` rejects for the later ones)."""
    keys = list(flow.keys)
    first = pl.struct(keys).is_first_distinct()
    later = (
        staged.with_columns(pl.col(ROW).first().over(keys, order_by=ROW).alias("__first"))
        .filter(~first)
        .join(lines.rename({ROW: "__first", LINE: "__first_line"}), on="__first", how="left")
    )
    where = pl.when(pl.col("__first_line").is_not_null()).then(
        pl.format("line {}", pl.col("__first_line"))
    )
    rejects = later.select(
        ROW,
        pl.lit(",".join(keys)).alias("field"),
        pl.lit("duplicate_key").alias("reason"),
        record_key(keys).alias("value"),
        pl.format(
            "the record at {} has the same key and was taken; this one is not",
            where.otherwise(pl.format("source row {}", pl.col("__first"))),
        ).alias("message"),
    ).cast(REJECT_SCHEMA)
    return staged.filter(first), rejects


def save_prepared(wh: Warehouse, prepared: Prepared) -> None:
    wh.append("rejects", prepared.rejects)
    wh.append("unmapped_values", prepared.unmapped)


def with_planned(
    refs: References, extra: Inputs, earlier: Flow, rows: pl.DataFrame
) -> tuple[dict[tuple[str, str], pl.DataFrame], dict[str, pl.DataFrame]]:
    """References and inputs as they would be once `earlier` had inserted `rows`."""
    target = (earlier.target.system, earlier.target.entity)
    name = f"{target[0]}.{target[1]}"
    return (
        {k: _union(v, rows) if k == target else v for k, v in refs.items()},
        {k: _union(v, rows) if k == name else v for k, v in extra.items()},
    )


def _union(snapshot: pl.DataFrame, planned: pl.DataFrame) -> pl.DataFrame:
    columns = [c for c in snapshot.columns if c in planned.columns]
    rows = planned.select(columns).cast({c: snapshot.schema[c] for c in columns})
    return pl.concat([snapshot, rows], how="diagonal")


def planned_inserts(wh: Warehouse, run_id: str, flow: Flow) -> pl.DataFrame:
    """The rows `flow` inserts (or would insert) in this run, with their generated ids."""
    staged = wh.read_table(staged_table(run_id, flow))
    inserts = wh.for_flow("changes", run_id, flow.name).filter(pl.col(KIND) == "insert")
    rows = staged.drop(ROW, KEY).with_columns(record_key(flow.keys).alias("record_key"))
    rows = rows.join(inserts.select("record_key"), on="record_key", how="semi")
    if flow.target_id:
        rows = rows.with_columns(
            pl.col("record_key")
            .map_elements(lambda key: stable_id(flow, key), return_dtype=pl.String)
            .alias(flow.target_id)
        )
    return rows.drop("record_key")


def _reject_rows(
    run_id: str, flow: Flow, source: pl.DataFrame, rejects: pl.DataFrame
) -> pl.DataFrame:
    rejected = (
        source.with_row_index(ROW)
        .with_columns(pl.col(ROW).cast(pl.Int64))
        .join(rejects.select(ROW).unique(), on=ROW, how="semi")
    )  # only the rejected rows are encoded: a source of a million rows has a few
    columns = [c for c in source.columns if c != LINE]
    rows = rejected.select(
        ROW,
        record_key(flow.source_keys).alias("record_key"),
        pl.struct(columns).struct.json_encode().alias("row_json"),
        (pl.col(LINE) if LINE in source.columns else pl.lit(None, pl.Int64)).alias("source_line"),
    )
    return (
        rejects.join(rows, on=ROW, how="left")
        .select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(flow.name).alias("flow"),
            "record_key",
            pl.col(ROW).alias("source_row"),
            "field",
            "reason",
            "value",
            "message",
            "row_json",
            "source_line",
        )
        .sort("source_row", "field")
    )
