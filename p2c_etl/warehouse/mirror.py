"""Mirrors: what p2c-etl last saw of each entity set, one table per system and entity set.

A mirror holds the columns the selected flows read of the entity set, with two more:
`__ord`, the record's place in the read (so a flow sees its source in the order the system
gave it), and `__hash`, a hash of the record's values. A run reads each entity set once and
updates its mirror in place: the records whose (place, hash) the mirror lacks are inserted,
those the read lacks are deleted, and nothing else is touched. A read that finds nothing new
writes nothing, not even the catalog row.

The catalog (`mirrors`) keeps per mirror its columns and their types, its row count, and a
`version` that goes up whenever its content changes (records, or the entity set's unreadable
records, `bad_digest`). A flow whose inputs all have the versions they had when it last found
nothing to do has nothing to do again (see `stages.settle`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from p2c_etl.warehouse.store import DRIFT_SCHEMA, Warehouse, table_name

HASH = "__hash"
ORD = "__ord"
VALUES = "__values"
_SEED = 0x5032_4345_544C  # "P2CETL": hashes are compared only within one polars version


@dataclass(frozen=True)
class Mirrored:
    """What updating a mirror found: its table, version, rows, and the rows it touched."""

    table: str
    version: int
    rows: int
    inserted: int
    deleted: int

    @property
    def touched(self) -> int:
        return self.inserted + self.deleted


def mirror_table(system: str, entity: str) -> str:
    return table_name("mirror", system, entity)


def _schema_text(frame: pl.DataFrame) -> str:
    return f"polars {pl.__version__}: " + ", ".join(f"{c} {t}" for c, t in frame.schema.items())


def update_mirror(
    wh: Warehouse,
    system: str,
    entity: str,
    frame: pl.DataFrame,
    bad_digest: str,
    run_id: str,
    at: datetime,
    content_print: str | None = None,
) -> Mirrored:
    """Make the mirror of (`system`, `entity`) hold `frame` (a full read, in the system's
    order), touching only the records that differ; one transaction. `content_print`: the
    print of what was read, if the connector gives one (see `unchanged_mirror`)."""
    table = mirror_table(system, entity)
    hashed = frame.with_columns(
        frame.hash_rows(_SEED).alias(HASH),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ORD),
    )
    schema, digest = _schema_text(frame), _pairs_digest(hashed)
    known = wh.con.execute(
        "SELECT schema_text, version, bad_digest, pairs_digest, content_print FROM mirrors "
        "WHERE system = ? AND entity = ?",
        [system, entity],
    ).fetchall()
    exists = mirror_exists(wh, system, entity)
    version = int(known[0][1]) if known else 0
    same = bool(known) and exists and known[0][0] == schema
    if same and known[0][3] == digest and known[0][2] == bad_digest:
        if known[0][4] != content_print:  # the same records from other bytes
            wh.con.execute(
                "UPDATE mirrors SET content_print = ? WHERE system = ? AND entity = ?",
                [content_print, system, entity],
            )
        return Mirrored(table, version, hashed.height, 0, 0)  # not a record to compare
    with wh.transaction():
        if not same:
            wh.write_table(table, hashed)
            inserted, deleted = hashed.height, -1
        else:
            held = wh.query(f'SELECT "{ORD}", "{HASH}" FROM "{table}"')
            gone = held.filter(~pairs_in(held, hashed))
            new = hashed.filter(~pairs_in(hashed, held))
            if gone.height:
                with wh.registered("__gone", gone):
                    wh.con.execute(
                        f'DELETE FROM "{table}" USING __gone g WHERE "{table}"."{ORD}" = g."{ORD}" '
                        f'AND "{table}"."{HASH}" = g."{HASH}"'
                    )
            wh.append(f'"{table}"', new)
            inserted, deleted = new.height, gone.height
            if inserted == 0 and deleted == 0 and known[0][2] == bad_digest:
                wh.con.execute(  # a mirror kept before its digest was: no version moves
                    "UPDATE mirrors SET pairs_digest = ?, content_print = ? "
                    "WHERE system = ? AND entity = ?",
                    [digest, content_print, system, entity],
                )
                return Mirrored(table, version, hashed.height, 0, 0)
        version += 1
        wh.con.execute(
            "INSERT OR REPLACE INTO mirrors (system, entity, table_name, schema_text, version, "
            "row_count, bad_digest, run_id, changed_at, pairs_digest, content_print) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                *(system, entity, table, schema, version, hashed.height, bad_digest, run_id),
                *(at, digest, content_print),
            ],
        )
    return Mirrored(table, version, hashed.height, inserted, max(deleted, 0))


def printed_mirror(
    wh: Warehouse, system: str, entity: str, bad_digest: str
) -> tuple[str, Mirrored] | None:
    """The print of the read the mirror of (`system`, `entity`) was made from, and the
    mirror, untouched, when it was made from a read that found the unreadable records of
    `bad_digest` (none, as the callers ask: those must be reported again, so their file is
    read again) and gave a print; None otherwise."""
    known = wh.con.execute(
        "SELECT content_print, version, row_count FROM mirrors WHERE system = ? "
        "AND entity = ? AND bad_digest = ? AND content_print IS NOT NULL",
        [system, entity, bad_digest],
    ).fetchall()
    if not known or not mirror_exists(wh, system, entity):
        return None
    printed, version, rows = known[0]
    return str(printed), Mirrored(mirror_table(system, entity), int(version), int(rows), 0, 0)


def unchanged_mirror(
    wh: Warehouse, system: str, entity: str, content_print: str, bad_digest: str
) -> Mirrored | None:
    """The mirror of (`system`, `entity`), untouched, when it was made from a read with this
    `content_print` (the same bytes read by the same code: the same records) that found
    the unreadable records of `bad_digest`; None otherwise (see `printed_mirror`)."""
    found = printed_mirror(wh, system, entity, bad_digest)
    return found[1] if found is not None and found[0] == content_print else None


def apply_changes(
    wh: Warehouse,
    system: str,
    entity: str,
    changed: pl.DataFrame,
    deleted: pl.Series,
    run_id: str,
    at: datetime,
    keys: Sequence[str] = (),
) -> Mirrored | None:
    """Apply a delta to the mirror of (`system`, `entity`): the records of `deleted` (primary
    ids; the series is named after the id column) and the earlier versions of the `changed`
    ones leave it, the `changed` ones join it at the end. A record is named by `keys` (default:
    the id column alone). Applying a delta twice gives the same mirror. None when the mirror
    cannot take it (none yet, or other columns): read in full."""
    table, names = mirror_table(system, entity), list(keys or [deleted.name])
    known = wh.con.execute(
        "SELECT schema_text, version FROM mirrors WHERE system = ? AND entity = ?",
        [system, entity],
    ).fetchall()
    usable = known and mirror_exists(wh, system, entity) and set(names) <= set(changed.columns)
    if not usable or known[0][0] != _schema_text(changed):
        return None
    version = int(known[0][1])
    changed = changed.with_columns(changed.hash_rows(_SEED).alias(HASH))
    held = mirror_hashes(wh, system, entity, names, changed.select(names))
    changed = changed.join(held, on=[*names, HASH], how="anti")  # changed in columns not read
    gone_ids = pl.DataFrame({deleted.name: deleted}).cast(changed.select(deleted.name).schema)
    ids = pl.concat([changed.select(names), gone_ids], how="diagonal").unique()
    on = _same_keys(table, "i", names)
    with wh.transaction():
        with wh.registered("__ids", ids):
            where = f'FROM "{table}" SEMI JOIN __ids i ON {on}'
            gone = int(wh.con.execute(f"SELECT count(*) {where}").fetchall()[0][0])
            wh.con.execute(f'DELETE FROM "{table}" USING __ids i WHERE {on}')
        if gone == 0 and changed.height == 0:
            rows = int(wh.con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
            return Mirrored(table, version, rows, 0, 0)
        start = int(
            wh.con.execute(f'SELECT coalesce(max("{ORD}") + 1, 0) FROM "{table}"').fetchall()[0][0]
        )
        wh.append(
            f'"{table}"',
            changed.with_columns(
                pl.int_range(start, start + changed.height, dtype=pl.Int64).alias(ORD)
            ),
        )
        rows = int(wh.con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
        version += 1
        wh.con.execute(
            "UPDATE mirrors SET version = ?, row_count = ?, run_id = ?, changed_at = ?, "
            "pairs_digest = NULL, content_print = NULL WHERE system = ? AND entity = ?",
            [version, rows, run_id, at, system, entity],
        )
    return Mirrored(table, version, rows, changed.height, gone)


def mirror_hashes(
    wh: Warehouse, system: str, entity: str, keys: Sequence[str], only: pl.DataFrame | None = None
) -> pl.DataFrame:
    """(`keys`, `__hash`) of the mirror's records (only those whose keys are in `only`)."""
    table = mirror_table(system, entity)
    select = f'SELECT {_listed([*keys, HASH])} FROM "{table}"'
    if only is None:
        return wh.query(select)
    with wh.registered("__only", only.select(keys)):
        return wh.query(f"{select} SEMI JOIN __only o ON {_same_keys(table, 'o', keys)}")


def _listed(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _same_keys(table: str, other: str, keys: Sequence[str]) -> str:
    """The records of `table` and `other` have the same keys (a null part equal to a null:
    `nulls_equal`, as the polars joins on them)."""
    return " AND ".join(f'"{table}"."{k}" IS NOT DISTINCT FROM {other}."{k}"' for k in keys)


def pairs_in(frame: pl.DataFrame, other: pl.DataFrame) -> pl.Series:
    """Per row of `frame` (`__ord`, `__hash`): whether `other` holds that place with that
    hash (each frame holds a place once, as a mirror does). Found by place, not by a join
    on both columns: `other`'s hashes laid out by place, and each row's looked up (a
    million records in milliseconds, where an anti-join on the pair costs a second)."""
    places, theirs = frame[ORD].cast(pl.Int64), other[ORD].cast(pl.Int64)
    size = max(int(places.max() or 0), int(theirs.max() or 0)) + 1  # type: ignore[arg-type]
    at = pl.repeat(None, size, dtype=pl.UInt64, eager=True).scatter(theirs, other[HASH])
    return (at.gather(places) == frame[HASH]).fill_null(False)


def _pairs_digest(hashed: pl.DataFrame) -> str:
    """A digest of every record's (place, hash): the row hashes in the order read."""
    values = hashed[HASH].rechunk().to_arrow()  # UInt64, never null: one data buffer
    data = values.buffers()[1]
    digest = hashlib.sha256()
    if data is not None:
        digest.update(memoryview(data)[values.offset * 8 : (values.offset + len(values)) * 8])
    return digest.hexdigest()


def mirror_exists(wh: Warehouse, system: str, entity: str) -> bool:
    rows = wh.con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [mirror_table(system, entity)]
    ).fetchall()
    return bool(rows[0][0])


def mirror_rows(wh: Warehouse, system: str, entity: str) -> int:
    """The records the mirror holds (0: none, or no mirror yet)."""
    rows = wh.con.execute(
        "SELECT row_count FROM mirrors WHERE system = ? AND entity = ?", [system, entity]
    ).fetchall()
    return int(rows[0][0]) if rows and mirror_exists(wh, system, entity) else 0


def mirror_version(wh: Warehouse, system: str, entity: str) -> int:
    rows = wh.con.execute(
        "SELECT version FROM mirrors WHERE system = ? AND entity = ?", [system, entity]
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def read_mirror(
    wh: Warehouse,
    system: str,
    entity: str,
    columns: list[str],
    ords: pl.Series | None = None,
    keep_ord: bool = False,
    ordered: bool = True,
) -> pl.DataFrame:
    """`columns` of every record of the mirror (or of those at the places `ords`), in the
    order of the read that made it (in no order, when not `ordered`: for a caller that
    finds records by key or place, spared sorting a million of them); with `keep_ord`,
    `__ord` too."""
    names = ", ".join(f'"{c}"' for c in dict.fromkeys([*columns, ORD]))
    table = mirror_table(system, entity)
    if ords is None:
        frame = wh.query(f'SELECT {names} FROM "{table}"')
    else:
        with wh.registered("__ords", pl.DataFrame({ORD: ords.cast(pl.Int64)})):
            frame = wh.query(f'SELECT {names} FROM "{table}" SEMI JOIN __ords USING ("{ORD}")')
    if ordered:  # sorted by polars: DuckDB's sort must hold the rows in its (small) memory
        frame = frame.sort(ORD)
    return frame if keep_ord else frame.drop(ORD)


def mirror_digest(wh: Warehouse, system: str, entity: str, columns: list[str]) -> str:
    """A digest of `columns` of every record of the mirror (whatever their order)."""
    rows = wh.con.execute(
        f"SELECT count(*), sum({_values_sql(columns)}::HUGEINT) "
        f'FROM "{mirror_table(system, entity)}"'
    ).fetchall()
    return f"{rows[0][0]}:{rows[0][1]}"


def _values_sql(columns: Sequence[str], alias: str = "") -> str:
    """DuckDB's hash of a record's values in `columns` (the same for equal values of equal
    types, whichever table holds them)."""
    return "hash(" + ", ".join(f'{alias}"{c}"' for c in columns) + ")"


def values_hashes(
    wh: Warehouse, frame: pl.DataFrame, key: str, columns: Sequence[str]
) -> pl.DataFrame:
    """`key` and `__values`: the hash of each row of `frame` in `columns`, as `held_values`
    computes it of a mirror's records."""
    with wh.registered("__values", frame.select(key, *columns)):
        hashed = wh.query(f'SELECT "{key}", {_values_sql(columns)} AS "{VALUES}" FROM __values')
    return hashed.cast({VALUES: pl.UInt64})


def held_values(
    wh: Warehouse, system: str, entity: str, columns: Sequence[str], wanted: pl.DataFrame
) -> pl.Series:
    """Of `wanted` (`__ord`, `__values`: places in the mirror and the hash of values, from
    `values_hashes`), the places whose record holds those values, found in the warehouse
    (not a value crosses into Python)."""
    table = mirror_table(system, entity)
    with wh.registered("__wanted", wanted.select(ORD, VALUES)):
        held = wh.query(
            f'SELECT m."{ORD}" FROM "{table}" m JOIN __wanted w ON m."{ORD}" = w."{ORD}" '
            f'AND {_values_sql(columns, "m.")} = w."{VALUES}"'
        )
    return held[ORD].cast(pl.Int64)


def mirror_drift(
    wh: Warehouse,
    system: str,
    entity: str,
    frame: pl.DataFrame,
    keys: Sequence[str],
    changed_since: pl.DataFrame,
) -> pl.DataFrame | None:
    """What a full read (`frame`) finds the mirror had wrong, record by record (named by
    `keys`; DRIFT_SCHEMA): records it holds otherwise (with the fields that differ), records
    the mirror lacks (added) and records it holds that the system no longer has (deleted).
    The records of `changed_since` (their `keys`) changed after the mirror was brought up to
    date, so they are not drift. None when the mirror holds other columns than `frame`."""
    known = wh.con.execute(
        "SELECT schema_text FROM mirrors WHERE system = ? AND entity = ?", [system, entity]
    ).fetchall()
    if not known or not mirror_exists(wh, system, entity) or known[0][0] != _schema_text(frame):
        return None
    names = list(keys)
    read = frame.with_columns(frame.hash_rows(_SEED).alias(HASH))
    held = mirror_hashes(wh, system, entity, names)
    pairs = read.select(*names, HASH).join(
        held, on=names, how="full", coalesce=True, nulls_equal=True, suffix="_held"
    )
    pairs = pairs.join(changed_since.select(names).unique(), on=names, how="anti", nulls_equal=True)
    kind = (
        pl.when(pl.col(f"{HASH}_held").is_null())
        .then(pl.lit("added"))
        .when(pl.col(HASH).is_null())
        .then(pl.lit("deleted"))
        .when(pl.col(HASH) != pl.col(f"{HASH}_held"))
        .then(pl.lit("changed"))
    )
    found = pairs.with_columns(kind.alias("kind")).filter(pl.col("kind").is_not_null())
    if found.height == 0:
        return pl.DataFrame(schema=DRIFT_SCHEMA)
    was = read_keyed(
        wh, system, entity, frame.columns, found.filter(kind="changed").select(names)
    ).cast(frame.schema)  # DuckDB gives its own name of UTC back
    now = read.join(found.filter(kind="changed").select(names), on=names, how="semi")
    columns = [c for c in frame.columns if c not in names]
    both = now.join(was, on=names, how="left", suffix="__was", nulls_equal=True)
    differ = (
        pl.concat_list(
            [pl.when(pl.col(c).ne_missing(pl.col(f"{c}__was"))).then(pl.lit(c)) for c in columns]
        ).list.drop_nulls()
        if columns
        else pl.lit([], dtype=pl.List(pl.String))  # only keys are read: nothing else differs
    )
    fields = both.select(*names, differ.alias("fields"))
    label = (
        pl.concat_str(
            [
                pl.concat_str(pl.lit(f"{k}="), pl.col(k).cast(pl.String).fill_null(""))
                for k in names
            ],
            separator=", ",
        )
        if len(names) > 1
        else pl.col(names[0]).cast(pl.String)
    )
    return (
        found.join(fields, on=names, how="left", nulls_equal=True)
        .sort("kind", *names)
        .select(label.alias("record_key"), "kind", "fields")
        .cast(DRIFT_SCHEMA)
    )


def read_keyed(
    wh: Warehouse, system: str, entity: str, columns: Sequence[str], only: pl.DataFrame
) -> pl.DataFrame:
    """`columns` of the mirror's records whose keys (the columns of `only`) are in `only`."""
    table = mirror_table(system, entity)
    on = _same_keys(table, "o", only.columns)
    with wh.registered("__only", only):
        return wh.query(f'SELECT {_listed(columns)} FROM "{table}" SEMI JOIN __only o ON {on}')
