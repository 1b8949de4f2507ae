"""Settled flows: a flow whose inputs are all as they were when it last found nothing to write
has nothing to write again, and the same rejects, unmapped values and target-only records.

Every stage of a flow is a pure function of what it reads (the mirrors of its source, target,
references and inputs, with their unreadable records), of p2c-etl's code and contracts, of the
flow's settings in p2c.toml and of the run's context. The fingerprint is a digest of all of
them: the mirrors by their versions, which change whenever their content does. When a run of a
flow ends with nothing to insert or update and nothing failed, its fingerprint is kept with
the run; a later run whose fingerprint is the same takes that run's counts and points at its
rejects, changes and unmapped values (`run_flows.details_run`) instead of computing them
again: the same result, without reading a row through Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from weakref import WeakKeyDictionary

import duckdb
import polars as pl

import p2c_etl
from p2c_etl.config import SystemName
from p2c_etl.model.flow import Context, Flow, Lookup
from p2c_etl.model.keys import folded_record_key
from p2c_etl.model.rejects import ROW
from p2c_etl.model.summary import FlowCounts
from p2c_etl.resources import contracts_dir
from p2c_etl.stages.extract import EntityReads, input_frames
from p2c_etl.stages.prepare import staged_table
from p2c_etl.stages.transform import (
    DERIVED,
    DERIVED_SEED,
    derived_columns,
    derived_hash,
    filters_expr,
    lookup_key,
    reference_mapping,
    resolve,
)
from p2c_etl.warehouse.mirror import HASH, ORD, VALUES, held_values, pairs_in, values_hashes
from p2c_etl.warehouse.store import Warehouse


@cache
def code_digest() -> str:
    """A digest of p2c-etl's code and contracts as installed (a new release settles nothing)."""
    versions = f"p2c-etl {p2c_etl.__version__} polars {pl.__version__} duckdb {duckdb.__version__}"
    digest = hashlib.sha256(versions.encode())
    for root in (Path(p2c_etl.__file__).resolve().parent, contracts_dir()):
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(
    flow: Flow, settings: str, context: Context, versions: Iterable[tuple[str, str, int]]
) -> str:
    """The digest of everything `flow`'s result depends on (`versions`: the mirror version of
    every entity set it reads; `settings`: its p2c.toml settings as text)."""
    digest = hashlib.sha256(code_digest().encode())
    digest.update(flow.name.encode())
    digest.update(settings.encode())
    digest.update(repr(sorted((k, repr(v)) for k, v in context.items())).encode())
    digest.update(repr(sorted(versions)).encode())
    return digest.hexdigest()


def settled_run(wh: Warehouse, flow: Flow, print_: str) -> str | None:
    """The run whose result `flow` would repeat, when its fingerprint is `print_`."""
    rows = wh.con.execute(
        "SELECT s.run_id FROM settled_flows s JOIN run_flows f ON f.run_id = s.run_id "
        "AND f.flow = s.flow WHERE s.flow = ? AND s.fingerprint = ?",
        [flow.name, print_],
    ).fetchall()
    return str(rows[0][0]) if rows else None


def settled_counts(wh: Warehouse, run_id: str, flow: Flow, origin: str) -> FlowCounts:
    """`flow`'s counts in `run_id`, taken from `origin` (where its details stay)."""
    counts = next(c for c in wh.counts(origin) if c.flow == flow.name)
    rows = wh.con.execute(
        "SELECT coalesce(details_run, run_id) FROM run_flows WHERE run_id = ? AND flow = ?",
        [origin, flow.name],
    ).fetchall()
    wh.save_counts(run_id, counts, details_run=str(rows[0][0]))
    return counts


def remember(wh: Warehouse, flow: Flow, print_: str | None, run_id: str) -> None:
    """Keep `print_` for `flow` as found in `run_id` (None: the flow wrote or failed to write
    something, so a later run must look again)."""
    wh.con.execute(
        "INSERT INTO settled_flows (flow, fingerprint, run_id) VALUES (?, ?, ?) "
        "ON CONFLICT (flow) DO UPDATE SET fingerprint = excluded.fingerprint, "
        "run_id = excluded.run_id",
        [flow.name, print_, run_id],
    )


# --- settled rows -------------------------------------------------------------------------
#
# A flow whose source or target changed is computed again, but only for the rows that may come out
# differently. Of the rows its last computation found unchanged or filtered out (`settled_rows`: the
# source row's hash, a hash of the target key it claims, folded as the target compares keys, and the
# hash of that target record), those whose source row and target record still have those hashes come
# out the same again: unchanged, or filtered out, claiming the same key. A source row's hash covers
# what the flow's derivations add to it (computed for every row, vectorised, from the inputs as they
# are now), so a changed input recomputes only the rows whose derived values moved; a changed
# reference recomputes only the rows that look up a key whose entry changed (`LookupState`). That
# holds while code, settings and run context are as they were (`context_print`); when they are not,
# every row is computed.

FOLD = "__fold"
T_HASH = "__t_hash"
T_ORD = "__t_ord"
T_FOLD = "target_fold"


def fold_hash(key: pl.Expr) -> pl.Expr:
    """A folded record key as settle finds records by: its hash (null for no key). Settled
    rows are joined on it, a million a flow, at the cost of integers, not strings; two keys
    of one hash only ever make a row be computed (`held_once`), never settle one wrongly."""
    return pl.when(key.is_not_null()).then(key.hash(_KEY_SEED))


def context_print(flow: Flow, settings: str, context: Context) -> str:
    """The digest of what every row of `flow` depends on besides its own source row (with
    what its derivations add to it, from the inputs), its target record and the entries of
    the references it looks up (`LookupState`): code, settings and context."""
    return hashlib.sha256(fingerprint(flow, settings, context, []).encode()).hexdigest()


def lookup_id(lookup: Lookup) -> str:
    return hashlib.sha256(repr(lookup).encode()).hexdigest()[:32]


_KEYS_SCHEMA = pl.Schema({"k": pl.UInt64(), "h": pl.UInt64()})
_NO_KEYS = pl.DataFrame(schema=_KEYS_SCHEMA)


@dataclass(frozen=True)
class LookupState:
    """A lookup's reference as this run maps with it, against the one the settled rows were
    mapped with: per key (hashed, `k`) a hash of the key and what it resolves to (`h`; a key
    that resolves to nothing, or to two records, has no entry)."""

    id: str
    digest: str
    known: bool
    """The settled rows' reference is known (kept by an earlier run)."""
    added: pl.DataFrame = field(default_factory=_NO_KEYS.clear)
    removed: pl.DataFrame = field(default_factory=_NO_KEYS.clear)
    changed_digest: bool = False

    @property
    def changed(self) -> pl.Series:
        """The keys whose entry is not what it was."""
        return pl.concat([self.added["k"], self.removed["k"]]).unique()


def lookup_states(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context
) -> tuple[LookupState, ...]:
    """The state of each of `flow`'s lookups; a reference whose digest is the one kept is not
    read."""
    kept = dict(
        wh.con.execute(
            "SELECT lookup, digest FROM settled_lookups WHERE flow = ?", [flow.name]
        ).fetchall()
    )
    states = []
    for lookup in flow.lookups:
        ident, entity = lookup_id(lookup), (lookup.system, lookup.entity)
        digest = _entries_digest(lookup, reads.digest(wh, entity, list(lookup.columns)), context)
        if kept.get(ident) == digest:
            states.append(LookupState(ident, digest, True))
            continue
        now = _entries(wh, lookup, reads, context, digest)
        held = _NO_KEYS
        if ident in kept:
            held = wh.query(
                "SELECT k, h FROM settled_lookup_keys WHERE flow = ? AND lookup = ?",
                [flow.name, ident],
            ).cast(_KEYS_SCHEMA)
        added = now.join(held, on=["k", "h"], how="anti")
        removed = held.join(now, on=["k", "h"], how="anti")
        states.append(LookupState(ident, digest, ident in kept, added, removed, True))
    return tuple(states)


_KEY_SEED = 0x5032_4B45_5953
_ENTRIES: WeakKeyDictionary[EntityReads, dict[tuple[str, str], pl.DataFrame]] = WeakKeyDictionary()
"""Per run (its reads), the entries of each lookup by the digest they were made with."""


def _entries(
    wh: Warehouse, lookup: Lookup, reads: EntityReads, context: Context, digest: str
) -> pl.DataFrame:
    """The lookup's entries (`k`, `h`) as this run maps with them. Made once per run for a
    reference as it is (its digest: the reference's columns and the values of its filters),
    however many flows look it up (a million customers, by contacts, quotes and orders)."""
    made = _ENTRIES.setdefault(reads, {})
    key = (lookup_id(lookup), digest)
    if key not in made:
        entity = (lookup.system, lookup.entity)
        mapping = reference_mapping(lookup, reads.frame(wh, entity, lookup.columns), context)
        made[key] = mapping.select(
            pl.col("k").hash(_KEY_SEED).alias("k"), pl.struct("k", "v").hash(_KEY_SEED).alias("h")
        )
    return made[key]


def _entries_digest(lookup: Lookup, reference: str, context: Context) -> str:
    """What a lookup's entries depend on: the columns of its reference (`reference`, their
    digest), the values its filters take in this run (a company), and the code that makes
    the entries (how keys are normalised)."""
    scope = [(f.column, f.op, repr(resolve(f.value, context))) for f in lookup.filters]
    text = f"{code_digest()}|{reference}|{scope!r}"
    return hashlib.sha256(text.encode()).hexdigest()


def looked_up(
    wh: Warehouse,
    flow: Flow,
    reads: EntityReads,
    context: Context,
    settled: pl.Series,
    states: tuple[LookupState, ...],
    derived: pl.DataFrame | None,
) -> pl.Series:
    """Places (of `settled`) of the source rows that look up a key whose entry changed
    (`derived`: what the flow's derivations add to each source row, by `__ord`; made here,
    when not at hand, if a changed entry is looked up by a value a derivation adds)."""
    changed = {s.id: s.changed for s in states if s.changed_digest}
    changed = {ident: keys for ident, keys in changed.items() if keys.len()}
    found = [pl.Series(ORD, [], pl.Int64)]
    fields = [f for f in flow.fields if any(lookup_id(lk) in changed for lk in f.lookups)]
    if not fields or settled.len() == 0:
        return found[0]
    if derived is None and _looks_up_derived(flow, states):
        derived = _derived(wh, flow, reads, context)
    source = (flow.source.system, flow.source.entity)
    added = set(derived.columns) - {ORD} if derived is not None else set()
    columns = sorted({f.source for f in fields if f.source and f.source not in added})
    rows = reads.frame(wh, source, columns, settled, keep_ord=True)
    if derived is not None:
        rows = rows.join(derived, on=ORD, how="left")
    for item in fields:
        keys = pl.concat(
            [changed[lookup_id(lk)] for lk in item.lookups if lookup_id(lk) in changed]
        )
        key = lookup_key(item, context, flow.unmapped).hash(_KEY_SEED)
        found.append(rows.filter(key.is_in(keys.implode()))[ORD])
    return pl.concat(found).unique().sort()


def _keep_lookups(wh: Warehouse, flow: Flow, states: tuple[LookupState, ...]) -> None:
    """Keep the references the settled rows are now mapped with (in the caller's
    transaction)."""
    idents = [s.id for s in states]
    wh.con.execute(
        "DELETE FROM settled_lookups WHERE flow = ? AND NOT list_contains(?, lookup)",
        [flow.name, idents],
    )
    wh.con.execute(
        "DELETE FROM settled_lookup_keys WHERE flow = ? AND NOT list_contains(?, lookup)",
        [flow.name, idents],
    )
    for state in states:
        if not state.changed_digest:
            continue
        if state.removed.height:
            with wh.registered("__removed", state.removed):
                wh.con.execute(
                    "DELETE FROM settled_lookup_keys USING __removed r WHERE "
                    "settled_lookup_keys.flow = ? AND settled_lookup_keys.lookup = ? AND "
                    "settled_lookup_keys.k = r.k AND settled_lookup_keys.h = r.h",
                    [flow.name, state.id],
                )
        wh.append(
            "settled_lookup_keys",
            state.added.select("k", "h"),
            constants={"flow": flow.name, "lookup": state.id},
        )
        wh.con.execute(
            "DELETE FROM settled_lookups WHERE flow = ? AND lookup = ?", [flow.name, state.id]
        )
        wh.con.execute(
            "INSERT INTO settled_lookups VALUES (?, ?, ?)", [flow.name, state.id, state.digest]
        )


@dataclass(frozen=True)
class Plan:
    """Which source rows of a flow to compute, and what the others settle as."""

    ords: pl.Series | None
    """Places (`__ord`) of the source rows to compute; None: every row."""
    settled: pl.DataFrame
    """The settled rows: `__ord`, `target_fold` (`fold_hash`), `filtered`, and `__t_ord`: the place
    of the target record of that key, when the target holds it once."""
    source: pl.DataFrame
    """`__ord`, `__hash` of every source row."""
    target: pl.DataFrame
    """`__ord`, `__fold` (`fold_hash` of its folded key), `__hash` of every target record in
    the flow's scope (in no particular order)."""
    print_: str | None
    refreshed: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(
            schema={
                ORD: pl.Int64,
                T_FOLD: pl.UInt64,
                "filtered": pl.Boolean,
                T_ORD: pl.Int64,
                T_HASH: pl.UInt64,
            }
        )
    )
    """The settled rows that were written last and are found held: kept again by the hash of
    their target record."""
    lookups: tuple[LookupState, ...] = ()
    """The references of the flow's lookups, as this run maps with them."""
    derived_from: str | None = None
    """Every row is computed and the flow derives: `source`'s hashes do not cover what its
    derivations add yet; the computed rows give that (`__derived`), and the hashes are kept
    under this print of what they are made from (`_derived_print`)."""
    once: pl.DataFrame | None = None
    """The rows of `target` whose folded key it holds once (made from it when None)."""
    gone: pl.Series | None = None
    """The source hashes of `settled_rows` no row of `source` has any more (None when every
    row is computed: all of them are replaced)."""

    def target_once(self) -> pl.DataFrame:
        """`__ord`, `__fold`, `__hash` of the target records whose folded key is held once."""
        if self.once is not None:
            return self.once
        return held_once(self.target, FOLD)

    @property
    def unchanged(self) -> int:
        return int((~self.settled["filtered"]).sum())

    @property
    def filtered(self) -> int:
        return int(self.settled["filtered"].sum())

    def without(self, ords: pl.Series) -> Plan:
        """This plan with the settled rows at `ords` computed after all."""
        assert self.ords is not None
        return replace(
            self,
            ords=pl.concat([self.ords, ords]).unique().sort(),
            settled=self.settled.filter(~pl.col(ORD).is_in(ords.implode())),
            refreshed=self.refreshed.filter(~pl.col(ORD).is_in(ords.implode())),
        )

    def every_row(self) -> Plan:
        return replace(self, ords=None, settled=_NO_SETTLED, refreshed=self.refreshed.clear())

    def twins(self, outcomes: pl.DataFrame) -> pl.Series:
        """Places of the settled unchanged rows whose target key a computed row stages too
        (two source rows for one record: both must be computed to be found)."""
        staged = outcomes.filter(pl.col("staged")).select(fold_hash(pl.col("target_key")))
        unfiltered = ~pl.col("filtered") & pl.col(T_FOLD).is_in(staged.to_series().implode())
        return self.settled.filter(unfiltered)[ORD]

    def target_ords(self, keys: pl.Series) -> pl.Series | None:
        """Places of the target records the computed rows must be compared with: every record
        no settled row claims, and those whose folded key is in `keys` (claimed by a computed
        row)."""
        if self.ords is None:
            return None
        # by place, not by key: a record a settled row claims is the one at its `__t_ord`,
        # unless the target holds its key more than once (twins: rare, found by key)
        claimed = self.settled[T_ORD].drop_nulls()
        twins = self.target.join(self.target_once().select(ORD), on=ORD, how="anti")
        if twins.height:
            keys_claimed = self.settled[T_FOLD].drop_nulls().implode()
            claimed = pl.concat([claimed, twins.filter(pl.col(FOLD).is_in(keys_claimed))[ORD]])
        folds = pl.select(fold_hash(pl.lit(keys))).to_series()
        unclaimed = ~at_places(self.target[ORD], claimed)
        return self.target.filter(unclaimed | pl.col(FOLD).is_in(folds.implode()))[ORD]


def held_once(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """The rows of `frame` (in its order) whose value in `column` no other row has. Told by
    a hash of the value, grouped, then only the few repeated ones looked for (3 times faster
    than `is_unique` on a million keys): two values of one hash both count as repeated,
    which only ever computes a row, never settles one wrongly."""
    if frame[column].n_unique() == frame.height:  # the usual case, told at a third of the cost
        return frame
    value = pl.col(column)
    if frame.schema[column] != pl.UInt64:
        value = value.hash(_KEY_SEED)
    counted = frame.group_by(value.alias("__once")).len()
    repeated = counted.filter(pl.col("len") > 1)["__once"]
    return frame.filter(~value.is_in(repeated.implode())) if repeated.len() else frame


def at_places(places: pl.Series, wanted: pl.Series) -> pl.Series:
    """Per place of `places`: whether it is one of `wanted` (places: small whole numbers, as
    mirrors number their records). Told by a mask indexed by place, not by hashing a
    million of them."""
    if places.len() == 0 or wanted.len() == 0:
        return pl.repeat(False, places.len(), eager=True)
    wanted = wanted.drop_nulls()
    size = max(int(places.max()), int(wanted.max()) if wanted.len() else 0) + 1  # type: ignore[arg-type]
    mask = pl.repeat(False, size, eager=True).scatter(wanted, True)
    return mask.gather(places)


def scoped_target(wh: Warehouse, flow: Flow, reads: EntityReads, context: Context) -> pl.DataFrame:
    """`__ord`, `__fold` (`fold_hash` of the folded key), `__hash` of the target records in
    `flow`'s scope (its target filters), in no particular order. Each record's fold, and
    whether it is in scope, is kept by its place and hash (`target_folds`): a record still
    at its place with its hash is not read again, so a night reads two integers of each of
    a million target records, not their keys, and folds only the records that moved."""
    entity = (flow.target.system, flow.target.entity)
    scope = [(f.column, f.op, repr(resolve(f.value, context))) for f in flow.target_filters]
    text = f"{code_digest()}|{reads.system(flow.target.system)}|{flow.keys!r}|{scope!r}"
    made_with = hashlib.sha256(text.encode()).hexdigest()
    held = reads.frame(wh, entity, [HASH], keep_ord=True, ordered=False)
    kept = wh.query(
        f'SELECT "{ORD}", "{HASH}", "{FOLD}", in_scope FROM target_folds '
        "WHERE flow = ? AND made_with = ?",
        [flow.name, made_with],
    ).cast({ORD: pl.Int64, HASH: pl.UInt64, FOLD: pl.UInt64})
    known = pairs_in(held, kept)
    fresh = held.filter(~known)  # moved since they were folded: read (none: nothing read)
    columns = [*flow.keys, *(f.column for f in flow.target_filters)]
    wanted = None if fresh.height == held.height else fresh[ORD]  # all moved: read them all
    rows = reads.frame(wh, entity, columns, wanted, keep_ord=True, ordered=False)
    rows = rows.select(
        ORD,
        fold_hash(folded_record_key(flow.keys)).alias(FOLD),
        filters_expr(flow.target_filters, context).alias("in_scope"),
    )
    fresh = fresh.join(rows, on=ORD)
    live = pairs_in(kept, held)  # the kept records still at their place with their hash
    stale = kept.filter(~live)
    if fresh.height or stale.height:
        with wh.transaction():
            wh.con.execute(
                "DELETE FROM target_folds WHERE flow = ? AND made_with <> ?", [flow.name, made_with]
            )
            if stale.height:
                with wh.registered("__stale", stale.select(ORD, HASH)):
                    wh.con.execute(
                        "DELETE FROM target_folds USING __stale s WHERE target_folds.flow = ? AND "
                        f'target_folds."{ORD}" = s."{ORD}" AND target_folds."{HASH}" = s."{HASH}"',
                        [flow.name],
                    )
            wh.append(
                "target_folds",
                fresh.select(ORD, HASH, FOLD, "in_scope"),
                {"flow": flow.name, "made_with": made_with},
            )
    found = kept.filter(live)
    both = pl.concat(
        [found.select(ORD, FOLD, HASH, "in_scope"), fresh.select(ORD, FOLD, HASH, "in_scope")]
    )
    return both.filter("in_scope").drop("in_scope")


_NO_SETTLED = pl.DataFrame(
    schema={ORD: pl.Int64, T_FOLD: pl.UInt64, "filtered": pl.Boolean, T_ORD: pl.Int64}
)


def plan_rows(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context, print_: str | None
) -> Plan:
    """The plan of `flow`'s run: with `print_` (its context print) the same as when its
    settled rows were kept, only the rows that may have changed; otherwise every row."""
    source = reads.frame(wh, (flow.source.system, flow.source.entity), [HASH], keep_ord=True)
    target = scoped_target(wh, flow, reads, context)
    stored = wh.con.execute(
        "SELECT context_print FROM settled_flows WHERE flow = ?", [flow.name]
    ).fetchall()
    states = lookup_states(wh, flow, reads, context) if print_ is not None else ()
    derived = None
    whole = bool(stored) and stored[0][0] is None  # its rows could not be told apart last time
    every = print_ is None or not stored or stored[0][0] != print_
    every = every or not all(s.known for s in states)
    if flow.derive and print_ is not None and not whole:
        if every:  # prepare derives every row anyway: no pass of settle's own (first sync)
            made_from = _derived_print(flow, reads, context)
            return Plan(
                None, _NO_SETTLED, source, target, print_, lookups=states, derived_from=made_from
            )
        hashed = _derived_hashes(wh, flow, reads, context)
        if hashed is None:  # derivations that add rows: every row, every time
            return Plan(None, _NO_SETTLED, source, target, print_, lookups=states)
        source, derived = hashed
    if every:
        return Plan(None, _NO_SETTLED, source, target, print_, lookups=states)
    state = wh.query(
        "SELECT source_hash, target_fold, target_hash, filtered, values_hash "
        "FROM settled_rows WHERE flow = ?",
        [flow.name],
    )
    unique = held_once(target, FOLD)
    once = _by_fold(unique)
    rows = (
        held_once(source, HASH)
        .join(state, left_on=HASH, right_on="source_hash")
        .join(once, left_on=T_FOLD, right_on=FOLD, how="left")
    )
    holds = pl.col("filtered") | (pl.col(T_HASH) == pl.col("target_hash")).fill_null(False)
    settled = rows.filter(holds).select(ORD, T_FOLD, "filtered", T_ORD)
    refreshed = _written_and_held(wh, flow, reads, rows.filter(pl.col("values_hash").is_not_null()))
    settled = pl.concat([settled, refreshed.select(_NO_SETTLED.columns)])
    ords = source.filter(~at_places(source[ORD], settled[ORD]))[ORD]
    gone = state.join(source, left_on="source_hash", right_on=HASH, how="anti")["source_hash"]
    plan = Plan(ords, settled, source, target, print_, refreshed, states, once=unique, gone=gone)
    moved = looked_up(wh, flow, reads, context, settled[ORD], states, derived)
    return plan.without(moved) if moved.len() else plan


def _by_fold(once: pl.DataFrame) -> pl.DataFrame:
    """Target records held once by their folded key (`held_once`): `__fold`, and the hash
    (`__t_hash`) and place (`__t_ord`) a settled row claiming that key is joined with."""
    return once.select(FOLD, pl.col(HASH).alias(T_HASH), pl.col(ORD).alias(T_ORD))


_PASSES: WeakKeyDictionary[EntityReads, tuple[object, pl.DataFrame | None]] = WeakKeyDictionary()
"""Per run (its reads), its last derivation pass, with what it was made from."""


def _derived(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context
) -> pl.DataFrame | None:
    """`__ord` and what `flow`'s derivations add to each source row (None: they add or drop
    rows), from the whole source and its inputs, vectorised. Flows with the same
    derivations of the same source share the pass while its source and inputs are as they
    were (contacts and contact_customers: a million contacts routed once, not twice); what a
    derivation adds depends only on what it reads (`Derive`), which each such flow reads."""
    entity = (flow.source.system, flow.source.entity)
    made_from = (
        flow.derive,
        entity,
        tuple(reads.versions(_derive_entities(flow))),
        frozenset(context.items()),
    )
    kept = _PASSES.get(reads)
    if kept is not None and kept[0] == made_from:
        return kept[1]
    source = reads.frame(wh, entity, flow.source_columns, keep_ord=True)
    places, source = source[ORD], source.drop(ORD)
    inputs = input_frames(wh, flow, reads, context, own=source)
    added = derived_columns(flow, source, inputs, context)
    added = None if added is None else added.with_columns(places)
    _PASSES[reads] = (made_from, added)
    return added


def _derive_entities(flow: Flow) -> list[tuple[SystemName, str]]:
    """The source and the inputs of `flow`'s derivations."""
    entities = [
        (flow.source.system, flow.source.entity),
        *((i.system, i.entity) for i in flow.inputs),
    ]
    return list(dict.fromkeys(entities))


def _looks_up_derived(flow: Flow, states: tuple[LookupState, ...]) -> bool:
    """Some changed entry is looked up by a value a derivation adds."""
    changed = {s.id for s in states if s.changed_digest and s.changed.len()}
    adds = {c for d in flow.derive for c in d.adds}
    return any(
        f.source in adds and any(lookup_id(lk) in changed for lk in f.lookups) for f in flow.fields
    )


def _derived_hashes(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context
) -> tuple[pl.DataFrame, pl.DataFrame | None] | None:
    """(`__ord`, `__hash` of each source row with what its derivations add) and the derived
    columns; None when the derivations add or drop rows. The hashes are kept with a print of
    the versions of the source and inputs they were made from (and code and context): while
    those hold, they are read back and the derivations are not run again (the derived
    columns are then not at hand: None; they are made when a changed lookup entry is looked
    up by one, `_looks_up_derived`)."""
    made_from = _derived_print(flow, reads, context)
    kept = wh.con.execute(
        "SELECT made_from FROM derived_prints WHERE flow = ?", [flow.name]
    ).fetchall()
    if kept and kept[0][0] == made_from:
        held = wh.query(
            f'SELECT "{ORD}", "{HASH}" FROM derived_hashes WHERE flow = ? ORDER BY "{ORD}"',
            [flow.name],
        )
        return held.cast({ORD: pl.Int64, HASH: pl.UInt64}), None
    derived = _derived(wh, flow, reads, context)
    if derived is None:
        return None
    entity = (flow.source.system, flow.source.entity)
    added = derived.select(ORD, derived_hash(flow, derived))
    source = _with_derived(reads.frame(wh, entity, [HASH], keep_ord=True), added)
    with wh.transaction():
        _keep_derived(wh, flow, source, made_from)
    return source, derived


def _derived_print(flow: Flow, reads: EntityReads, context: Context) -> str:
    """A print of what `flow`'s derived hashes are made from: the versions of its source and
    inputs, code and context."""
    return fingerprint(flow, "", context, reads.versions(_derive_entities(flow)))


def _keep_derived(wh: Warehouse, flow: Flow, source: pl.DataFrame, made_from: str) -> None:
    """Keep the derived hashes `source` (`__ord`, `__hash`) under `made_from` (in the
    caller's transaction)."""
    wh.con.execute("DELETE FROM derived_hashes WHERE flow = ?", [flow.name])
    wh.con.execute("DELETE FROM derived_prints WHERE flow = ?", [flow.name])
    wh.append("derived_hashes", source.select(ORD, HASH), {"flow": flow.name})
    wh.con.execute("INSERT INTO derived_prints VALUES (?, ?)", [flow.name, made_from])


def _with_derived(source: pl.DataFrame, added: pl.DataFrame) -> pl.DataFrame:
    """`source` (`__ord`, `__hash`) with each row's hash covering what its derivations add
    (`added`: `__ord`, `__derived`): a row whose derived values changed (an input changed) is
    no longer the row settled."""
    return source.join(added, on=ORD, how="left").select(
        ORD, pl.struct(HASH, DERIVED).hash(DERIVED_SEED).alias(HASH)
    )


def _written_and_held(
    wh: Warehouse, flow: Flow, reads: EntityReads, written: pl.DataFrame
) -> pl.DataFrame:
    """Of the rows last written (`values_hash`: of the values written), those whose source row
    is as it was and whose target record now holds exactly those values: unchanged, found
    without mapping them again. `__ord`, `target_fold`, `filtered`, and the target record's
    hash (`__t_hash`) to keep them by from now on. The values are compared by their hashes
    in the warehouse: a million written records are confirmed without reading them."""
    return _held_as_sent(wh, flow, reads, written).select(ORD, T_FOLD, "filtered", T_ORD, T_HASH)


def _held_as_sent(
    wh: Warehouse, flow: Flow, reads: EntityReads, written: pl.DataFrame
) -> pl.DataFrame:
    """The rows of `written` (with `__t_ord`, the place of the target record of their key,
    and `values_hash`, of the values sent) whose target record holds exactly those values."""
    written = written.filter(pl.col(T_ORD).is_not_null())
    if written.height == 0:
        return written
    system, entity = reads.system(flow.target.system), flow.target.entity
    wanted = written.select(pl.col(T_ORD).alias(ORD), pl.col("values_hash").alias(VALUES))
    held = held_values(wh, system, entity, flow.compare_columns, wanted)
    return written.filter(pl.col(T_ORD).is_in(held.implode()))


def confirm_written(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context
) -> tuple[int, int]:
    """After a run that wrote to `flow`'s target has read it back: of the rows written (kept
    by the values sent), those whose target record now holds exactly those values are kept
    by that record's hash, and the target's records folded by their place (`scoped_target`),
    as the next run's plan would find and keep them. That work moves from the next night
    (a first sync's: four million records folded and confirmed) into the run that wrote,
    which has just read them. (rows confirmed, rows written)."""
    target = scoped_target(wh, flow, reads, context)
    written = wh.query(
        "SELECT source_hash, target_fold, values_hash FROM settled_rows "
        "WHERE flow = ? AND values_hash IS NOT NULL",
        [flow.name],
    )
    if written.height == 0:  # its rows are not kept (`Prepared.aligned`): folded all the same
        return 0, 0
    once = _by_fold(held_once(target, FOLD))
    rows = written.cast({T_FOLD: pl.UInt64}).join(once, left_on=T_FOLD, right_on=FOLD)
    confirmed = _held_as_sent(wh, flow, reads, rows)
    with wh.transaction():
        _refresh(wh, flow, confirmed.select(pl.col("source_hash").alias(HASH), T_HASH))
    return confirmed.height, written.height


def settle_again(
    wh: Warehouse, flow: Flow, reads: EntityReads, context: Context
) -> tuple[int, int]:
    """After a run wrote, later than `flow` ran, what `flow` reads beside its source (the
    orders and invoices the back flows write to the CRM route the contacts; the customers
    `contact_customers` writes to the ERP are looked up by the contacts): `flow`'s settled
    state brought up to what was written, as the next run's plan would bring it first, so
    that a quiet night after does not derive or look up again.

    - Its derived hashes are made again from what was written (`_derived_hashes`).
    - Of its lookups whose entries changed, the new entries are kept, and the settled rows
      that look up a changed entry are no longer kept: the next run computes them, as its
      plan would have (`looked_up`).

    (rows derived again, settled rows the next run computes). Nothing is done when nothing
    `flow` reads beside its source was written this run, when `flow` was not kept by rows
    this run (its rows cannot be told apart), or when what it reads was written and not
    read since (the next run reads it)."""
    entities = [*_derive_entities(flow), *((lk.system, lk.entity) for lk in flow.lookups)]
    if not any(map(reads.was_written, entities)) or not all(map(reads.is_current, entities)):
        return 0, 0
    kept = wh.con.execute(
        "SELECT context_print FROM settled_flows WHERE flow = ?", [flow.name]
    ).fetchall()
    if not kept or kept[0][0] is None:
        return 0, 0
    stale = False
    if flow.derive:
        made = wh.con.execute(
            "SELECT made_from FROM derived_prints WHERE flow = ?", [flow.name]
        ).fetchall()
        if not made:
            return 0, 0
        stale = made[0][0] != _derived_print(flow, reads, context)
    states = lookup_states(wh, flow, reads, context)
    relook = all(s.known for s in states) and any(s.changed_digest for s in states)
    if not stale and not relook:
        return 0, 0
    source, derived = None, None
    if flow.derive:
        hashed = _derived_hashes(wh, flow, reads, context)
        if hashed is None:
            return 0, 0
        source, derived = hashed
    derived_again = source.height if source is not None and stale else 0
    if not relook:
        return derived_again, 0
    if source is None:
        source = reads.frame(wh, (flow.source.system, flow.source.entity), [HASH], keep_ord=True)
    state = wh.query("SELECT source_hash FROM settled_rows WHERE flow = ?", [flow.name])
    rows = held_once(source, HASH).join(state, left_on=HASH, right_on="source_hash")
    moved = looked_up(wh, flow, reads, context, rows[ORD], states, derived)
    drop = pl.concat(
        [
            rows.filter(at_places(rows[ORD], moved)).select(pl.col(HASH).alias("source_hash")),
            # kept rows no source row now matches once (gone, changed or twinned): their
            # lookups are not checked here, so they are not kept past the entries kept now
            state.join(rows.select(HASH), left_on="source_hash", right_on=HASH, how="anti"),
        ]
    )
    with wh.transaction():
        _forget_rows(wh, flow, drop)
        _keep_lookups(wh, flow, states)
    return derived_again, drop.height


def _forget_rows(wh: Warehouse, flow: Flow, drop: pl.DataFrame) -> None:
    """No longer keep `flow`'s settled rows of the source hashes `drop` (`source_hash`), in
    the caller's transaction: the next run computes them."""
    if drop.height:
        with wh.registered("__drop", drop):
            wh.con.execute(
                "DELETE FROM settled_rows USING __drop d WHERE settled_rows.flow = ? "
                "AND settled_rows.source_hash = d.source_hash",
                [flow.name],
            )


def settled_outcomes(
    outcomes: pl.DataFrame, written: pl.Series, doubled: pl.Series
) -> pl.DataFrame:
    """`outcomes` with `settled`: filtered out, or staged and found unchanged (not written,
    not a duplicate key), and with no value a value map did not know; and `written`: staged
    to be inserted or updated (kept by the values sent, to be found held next time)."""
    unchanged = (
        pl.col("staged")
        & ~pl.col("target_key").is_in(written.implode())
        & ~pl.col(ORD).is_in(doubled.drop_nulls().cast(pl.Int64).implode())
    )
    sent = (
        pl.col("staged")
        & pl.col("target_key").is_in(written.implode())
        & ~pl.col(ORD).is_in(doubled.drop_nulls().cast(pl.Int64).implode())
    )
    return outcomes.with_columns(
        ((pl.col("filtered") | unchanged) & ~pl.col("unmapped")).alias("settled"),
        (sent & ~pl.col("unmapped")).alias("written"),
    )


def keep_settled(
    wh: Warehouse,
    flow: Flow,
    plan: Plan,
    outcomes: pl.DataFrame | None,
    run_id: str,
    staged: pl.DataFrame | None = None,
) -> None:
    """Keep the rows this run settled (`outcomes` of the computed rows: `__ord`, `target_key`
    folded, `settled` true for a row found unchanged or filtered out, `filtered`), with the
    plan's context print. Rows whose source row is gone, or was computed, are replaced; a run
    that computed no row writes nothing. `staged`: the run's staged rows after load (read
    from the warehouse when not given)."""
    if plan.print_ is None:
        return
    if outcomes is None:  # its rows cannot be told apart (`Prepared.aligned`): none kept
        with wh.transaction():
            wh.con.execute("DELETE FROM settled_rows WHERE flow = ?", [flow.name])
            wh.con.execute(
                "UPDATE settled_flows SET context_print = NULL WHERE flow = ?", [flow.name]
            )
            _keep_lookups(wh, flow, plan.lookups)
        return
    hashes = plan.source.select(ORD, HASH)
    if plan.derived_from is not None:  # every row computed: prepare's rows give the hashes
        hashes = _with_derived(hashes, outcomes.select(ORD, DERIVED))
    once = plan.target_once()
    outcomes = outcomes.with_columns(fold_hash(pl.col("target_key")).alias(T_FOLD))
    kept = (
        outcomes.filter(pl.col("settled"))
        .join(hashes, on=ORD)
        .join(once, left_on=T_FOLD, right_on=FOLD, how="left", suffix="_t")
        .filter(pl.col("filtered") | pl.col(f"{HASH}_t").is_not_null())
        .select(
            pl.col(HASH).alias("source_hash"),
            T_FOLD,
            pl.when(~pl.col("filtered")).then(pl.col(f"{HASH}_t")).alias("target_hash"),
            "filtered",
            pl.lit(None, pl.UInt64).alias("values_hash"),
        )
    )
    if staged is None:
        staged = wh.read_table(staged_table(run_id, flow))  # after load: the rows written
    sent = values_hashes(wh, staged, ROW, flow.compare_columns).select(
        pl.col(ROW).alias(ORD), pl.col(VALUES).alias("values_hash")
    )
    written = (
        outcomes.filter(pl.col("written"))
        .join(hashes, on=ORD)
        .join(sent, on=ORD)
        .select(
            pl.col(HASH).alias("source_hash"),
            T_FOLD,
            pl.lit(None, pl.UInt64).alias("target_hash"),
            pl.lit(False).alias("filtered"),
            "values_hash",
        )
    )
    new = pl.concat([kept, written])
    with wh.transaction():
        if plan.ords is None:
            wh.con.execute("DELETE FROM settled_rows WHERE flow = ?", [flow.name])
        else:
            _refresh(wh, flow, plan.refreshed.join(hashes, on=ORD))
            computed = outcomes.select(ORD).join(hashes, on=ORD)
            computed = computed.select(pl.col(HASH).alias("source_hash"))
            assert plan.gone is not None  # a plan of some rows is made by `plan_rows`
            gone = plan.gone.cast(pl.UInt64).to_frame("source_hash")
            _forget_rows(wh, flow, pl.concat([computed, gone]).unique())
        wh.append("settled_rows", new, constants={"flow": flow.name})
        if plan.derived_from is not None:
            _keep_derived(wh, flow, hashes, plan.derived_from)
        _keep_lookups(wh, flow, plan.lookups)
        wh.con.execute(
            "INSERT INTO settled_flows (flow, fingerprint, run_id, context_print) "
            "VALUES (?, NULL, ?, ?) ON CONFLICT (flow) DO UPDATE SET "
            "context_print = excluded.context_print",
            [flow.name, run_id, plan.print_],
        )


def _refresh(wh: Warehouse, flow: Flow, refreshed: pl.DataFrame) -> None:
    """Keep the rows written last and found held (`refreshed`, with the source row's hash) by
    the hash of their target record from now on (in the caller's transaction). Updated in
    place: two hashes per row, where deleting and inserting them again rewrites every column
    of a million rows the night after a first sync."""
    if refreshed.height == 0:
        return
    rows = refreshed.select(pl.col(HASH).alias("source_hash"), pl.col(T_HASH).alias("t_hash"))
    with wh.registered("__refreshed", rows):
        wh.con.execute(
            "UPDATE settled_rows SET target_hash = r.t_hash, values_hash = NULL "
            "FROM __refreshed r WHERE settled_rows.flow = ? "
            "AND settled_rows.source_hash = r.source_hash",
            [flow.name],
        )
