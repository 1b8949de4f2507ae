from decimal import Decimal

import polars as pl
import pytest

from p2c_etl.flows.derived import discount_join, discount_split
from p2c_etl.model.money import divide, round_to

D = pl.Decimal(19, 4)


def col(values: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"x": [Decimal(v) for v in values]}, schema={"x": D})


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [
        ("half_away_from_zero", ["2.35", "-2.35", "2.36", "0.01", "-0.01", "2.34"]),
        ("half_even", ["2.34", "-2.34", "2.36", "0.00", "0.00", "2.34"]),
    ],
)
def test_the_xx5_cases_round_by_the_chosen_rule(rounding: str, expected: list[str]) -> None:
    frame = col(["2.345", "-2.345", "2.355", "0.005", "-0.005", "2.3449"])
    out = frame.select(round_to(pl.col("x"), 2, rounding))["x"]  # type: ignore[arg-type]
    assert out.to_list() == [Decimal(v) for v in expected]


def test_division_is_exact_and_zero_divisor_is_null() -> None:
    frame = pl.DataFrame(
        {
            "n": [Decimal("10.00"), Decimal("0.07"), Decimal("1"), Decimal("-10")],
            "d": [Decimal("3"), Decimal("2"), Decimal("0"), Decimal("4")],
        },
        schema={"n": D, "d": D},
    )
    out = frame.select(divide(pl.col("n"), pl.col("d"), 2).alias("q"))["q"].to_list()
    assert out == [Decimal("3.33"), Decimal("0.04"), None, Decimal("-2.50")]


def lines(quantity: str, discount: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"quantity": [Decimal(quantity)], "manualdiscountamount": [discount and Decimal(discount)]},
        schema={"quantity": pl.Decimal(23, 5), "manualdiscountamount": D},
    )


def test_three_times_ten_is_3_33_per_unit_and_a_minus_0_01_charge_and_back() -> None:
    out = discount_split(lines("3", "10.00"), {}, {}).row(0, named=True)
    assert out["p2c_linediscount"] == Decimal("3.33")
    assert out["p2c_discountcharge"] == Decimal("-0.01")
    back = pl.DataFrame(
        {
            "OrderedSalesQuantity": [Decimal("3")],
            "LineDiscountAmount": [out["p2c_linediscount"]],
            "FixedPriceCharges": [out["p2c_discountcharge"]],
        },
        schema={
            "OrderedSalesQuantity": pl.Decimal(32, 6),
            "LineDiscountAmount": pl.Decimal(32, 6),
            "FixedPriceCharges": pl.Decimal(32, 6),
        },
    )
    assert discount_join(back, {}, {})["p2c_manualdiscount"].to_list() == [Decimal("10.00")]


def test_split_then_join_gives_back_every_discount_exactly() -> None:
    quantities = [Decimal(q) for q in ("1", "2", "3", "6", "7", "12", "2.5", "0.75")]
    discounts = [Decimal(d) / 100 for d in range(0, 2000, 37)]
    grid = pl.DataFrame(
        {
            "quantity": [q for q in quantities for _ in discounts],
            "manualdiscountamount": [d for _ in quantities for d in discounts],
        },
        schema={"quantity": pl.Decimal(23, 5), "manualdiscountamount": D},
    )
    split = discount_split(grid, {}, {})
    back = discount_join(
        split.select(
            pl.col("quantity").alias("OrderedSalesQuantity"),
            pl.col("p2c_linediscount").alias("LineDiscountAmount"),
            pl.col("p2c_discountcharge").alias("FixedPriceCharges"),
        ),
        {},
        {},
    )
    assert (back["p2c_manualdiscount"] == grid["manualdiscountamount"]).all()
    assert (
        split["p2c_discountcharge"].abs() < split["quantity"] * Decimal("0.005") + Decimal("0.0001")
    ).all()


def test_no_discount_means_no_charge() -> None:
    out = discount_split(lines("4", None), {}, {}).row(0, named=True)
    assert (out["p2c_linediscount"], out["p2c_discountcharge"]) == (Decimal("0"), Decimal("0"))
