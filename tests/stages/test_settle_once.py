"""`held_once`: the rows whose key no other row has, the way settle finds the target records
a settled row can claim by itself."""

from __future__ import annotations

import polars as pl

from p2c_etl.stages.settle import held_once


def test_rows_of_a_repeated_key_are_left_out_and_the_others_keep_their_order() -> None:
    frame = pl.DataFrame(
        {"__fold": ["b", "a", "c", "a", "d"], "__hash": [5, 4, 3, 2, 1]},
        schema={"__fold": pl.String, "__hash": pl.UInt64},
    )
    assert held_once(frame, "__fold")["__fold"].to_list() == ["b", "c", "d"]
    assert held_once(frame, "__hash").equals(frame)


def test_repeated_hashes_are_left_out_too() -> None:
    frame = pl.DataFrame({"__hash": [7, 7, 8]}, schema={"__hash": pl.UInt64})
    assert held_once(frame, "__hash")["__hash"].to_list() == [8]
    assert held_once(frame.clear(), "__hash").height == 0
