from decimal import Decimal

import polars as pl

from p2c_etl.stages.diff import diff

D = pl.Decimal(19, 2)


def frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"k": pl.String, "name": pl.String, "amount": D}, orient="row")


def kinds(result_changes: pl.DataFrame) -> dict[str, tuple[str, list[str]]]:
    return {
        k: (kind, fields)
        for k, kind, fields in result_changes.select("k", "kind", "changed_fields").rows()
    }


def test_classifies_every_key_and_names_changed_fields() -> None:
    source = frame(
        [
            ("a", "Alpha", Decimal("1.10")),
            ("b", "Beta", Decimal("2.00")),
            ("c", "Gamma", Decimal("3.00")),
        ]
    )
    target = frame(
        [("a", "Alpha", Decimal("1.10")), ("b", "Beta", Decimal("2.01")), ("z", "Zed", None)]
    )
    result = diff(source, target, ["k"], ["name", "amount"])
    assert kinds(result.changes) == {
        "b": ("update", ["amount"]),
        "c": ("insert", []),
        "z": ("target_only", []),
    }
    assert result.unchanged == 1
    b = result.changes.filter(pl.col("k") == "b").row(0, named=True)
    assert '"amount":"2.01"' in b["before"] and '"amount":"2.00"' in b["after"]


def test_null_equals_null_and_empty_string_equals_null() -> None:
    source = frame([("a", None, None), ("b", "", Decimal("5"))])
    target = frame([("a", None, None), ("b", None, Decimal("5.00"))])
    result = diff(source, target, ["k"], ["name", "amount"])
    assert result.changes.height == 0
    assert result.unchanged == 2


def test_decimals_compare_exactly_even_beyond_float_precision() -> None:
    big = pl.Decimal(38, 2)
    source = pl.DataFrame(
        {"k": ["a"], "amount": [Decimal("12345678901234567.01")]},
        schema={"k": pl.String, "amount": big},
    )
    target = pl.DataFrame(
        {"k": ["a"], "amount": [Decimal("12345678901234567.02")]},
        schema={"k": pl.String, "amount": big},
    )
    assert kinds(diff(source, target, ["k"], ["amount"]).changes) == {"a": ("update", ["amount"])}


def test_null_to_value_and_value_to_null_are_changes() -> None:
    source = frame([("a", None, Decimal("1")), ("b", "B", None)])
    target = frame([("a", "A", Decimal("1")), ("b", "B", Decimal("0"))])
    assert kinds(diff(source, target, ["k"], ["name", "amount"]).changes) == {
        "a": ("update", ["name"]),
        "b": ("update", ["amount"]),
    }


def test_claimed_keys_are_not_target_only() -> None:
    source = frame([("a", "A", None)])
    target = frame([("a", "A", None), ("r", "Rejected", None), ("z", "Zed", None)])
    claimed = pl.DataFrame({"k": ["r"]})
    result = diff(source, target, ["k"], ["name", "amount"], claimed=claimed)
    assert kinds(result.changes) == {"z": ("target_only", [])}


def test_composite_keys() -> None:
    schema = {"co": pl.String, "k": pl.String, "v": pl.Int64}
    source = pl.DataFrame([("usmf", "1", 1), ("demf", "1", 2)], schema=schema, orient="row")
    target = pl.DataFrame([("usmf", "1", 1), ("demf", "1", 3)], schema=schema, orient="row")
    result = diff(source, target, ["co", "k"], ["v"])
    assert result.changes.select("co", "k", "kind").rows() == [("demf", "1", "update")]
