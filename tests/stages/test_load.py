from decimal import Decimal

import polars as pl

from p2c_etl.flows.products import PRODUCTS
from p2c_etl.model.ids import stable_id
from p2c_etl.stages.load import build_batch


def test_batch_sends_whole_inserts_and_only_changed_fields_of_updates() -> None:
    staged = pl.DataFrame(
        {
            "__row": [0, 1, 2, 3],
            "__key": ["P1", "P2", "P3", "P4"],
            **{c: [None] * 4 for c in PRODUCTS.target_columns},
        }
    ).with_columns(
        productnumber=pl.Series(["P1", "P2", "P3", "P4"]),
        name=pl.Series(["One", "Two", "Three", "Four"]),
        price=pl.Series([Decimal("1"), Decimal("2"), Decimal("3"), Decimal("4")]),
    )
    changes = pl.DataFrame(
        {
            "record_key": ["P1", "P2", "P3", "P4"],
            "kind": ["insert", "update", "update", "update"],
            "changed_fields": [[], ["price"], ["name", "price"], ["price"]],
        }
    )
    batch = build_batch(PRODUCTS, staged, changes)
    assert batch.inserts["productnumber"].to_list() == ["P1"]
    assert batch.inserts["productid"].to_list() == [stable_id(PRODUCTS, "P1")]
    assert set(PRODUCTS.target_columns) <= set(batch.inserts.columns)
    shapes = sorted((u.columns, u["productnumber"].to_list()) for u in batch.updates)
    assert shapes == [
        (["productnumber", "name", "price"], ["P3"]),
        (["productnumber", "price"], ["P2", "P4"]),
    ]
    assert batch.size == 4


def test_stable_ids_depend_only_on_the_target_and_key() -> None:
    assert stable_id(PRODUCTS, "P1") == stable_id(PRODUCTS, "P1")
    assert stable_id(PRODUCTS, "P1") != stable_id(PRODUCTS, "P2")
