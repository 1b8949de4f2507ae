"""Applying changes to a mirror by key, and telling drift from it."""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from p2c_etl.warehouse.mirror import apply_changes, mirror_drift, read_mirror, update_mirror
from p2c_etl.warehouse.store import Warehouse

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _mirror(tmp_path: Path, frame: pl.DataFrame) -> Warehouse:
    wh = Warehouse.open(tmp_path / "wh.duckdb")
    update_mirror(wh, "erp", "X", frame, "none", "r1", AT)
    return wh


def test_a_change_to_a_record_with_a_null_key_part_replaces_it(tmp_path: Path) -> None:
    """Keys compare as the polars joins do: a null part equals a null part, so the earlier
    version leaves the mirror and drift sees no false change."""
    folder = tmp_path
    held = pl.DataFrame({"k1": ["a", "b"], "k2": [None, "x"], "v": [1, 2]})
    wh = _mirror(Path(folder), held)
    try:
        changed = pl.DataFrame({"k1": ["a"], "k2": [None], "v": [10]}, schema=held.schema)
        none = pl.Series("k1", [], pl.String)
        applied = apply_changes(wh, "erp", "X", changed, none, "r2", AT, ("k1", "k2"))
        assert applied is not None and applied.rows == 2
        now = read_mirror(wh, "erp", "X", ["k1", "k2", "v"]).sort("k1")
        assert now.to_dicts() == [
            {"k1": "a", "k2": None, "v": 10},
            {"k1": "b", "k2": "x", "v": 2},
        ]
        system = pl.DataFrame({"k1": ["a", "b"], "k2": [None, "x"], "v": [10, 3]})
        nothing = pl.DataFrame(schema={"k1": pl.String, "k2": pl.String})
        drift = mirror_drift(wh, "erp", "X", system, ("k1", "k2"), nothing)
        assert drift is not None
        assert drift.to_dicts() == [
            {"record_key": "k1=b, k2=x", "kind": "changed", "fields": ["v"]}
        ]
    finally:
        wh.close()


def test_drift_of_an_entity_set_read_by_its_keys_alone_lists_added_and_deleted(
    tmp_path: Path,
) -> None:
    folder = tmp_path
    wh = _mirror(Path(folder), pl.DataFrame({"k": ["a", "b"]}))
    try:
        system = pl.DataFrame({"k": ["b", "c"]})
        drift = mirror_drift(wh, "erp", "X", system, ("k",), pl.DataFrame(schema={"k": pl.String}))
        assert drift is not None
        assert sorted(drift.select("record_key", "kind").rows()) == [
            ("a", "deleted"),
            ("c", "added"),
        ]
    finally:
        wh.close()


def test_a_full_read_touches_only_the_records_that_moved_and_leaves_the_mirror_equal_to_it(
    tmp_path: Path,
) -> None:
    """A full read after another (and after changes by key, which leave places unused) deletes
    exactly the held records it no longer has at their place and inserts exactly the records
    it has that are not held: the mirror then holds the read, in its order."""
    first = pl.DataFrame({"k": ["a", "b", "c", "d"], "v": [1, 2, 3, 4]})
    wh = _mirror(tmp_path, first)
    try:
        changed = pl.DataFrame({"k": ["b"], "v": [20]})
        applied = apply_changes(
            wh, "erp", "X", changed, pl.Series("k", [], pl.String), "r2", AT, ("k",)
        )
        assert applied is not None
        # b moved, d dropped, e new, a and c where they were: 2 deleted, 2 inserted
        read = pl.DataFrame({"k": ["a", "b", "c", "e"], "v": [1, 2, 3, 5]})
        mirrored = update_mirror(wh, "erp", "X", read, "none", "r3", AT)
        assert (mirrored.inserted, mirrored.deleted) == (2, 2)
        assert read_mirror(wh, "erp", "X", ["k", "v"]).equals(read)
        shorter = read.head(2)
        mirrored = update_mirror(wh, "erp", "X", shorter, "none", "r4", AT)
        assert (mirrored.inserted, mirrored.deleted) == (0, 2)
        assert read_mirror(wh, "erp", "X", ["k", "v"]).equals(shorter)
        empty = shorter.clear()
        mirrored = update_mirror(wh, "erp", "X", empty, "none", "r5", AT)
        assert (mirrored.inserted, mirrored.deleted) == (0, 2)
        assert read_mirror(wh, "erp", "X", ["k", "v"]).height == 0
    finally:
        wh.close()
