"""Exact casts: a value either keeps its meaning in the target type or is reported."""

from __future__ import annotations

from decimal import Decimal

import polars as pl
import pytest

from p2c_etl.errors import ConnectorError
from p2c_etl.model.casting import coerce, exact_cast, typed_frame
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import ROW


def cast(values: list[object], dtype: pl.DataType, target: pl.DataType) -> list[tuple]:
    """(value, invalid, lossy) for each of `values`."""
    frame = pl.DataFrame({"x": pl.Series(values, dtype=dtype)})
    c = exact_cast(pl.col("x"), dtype, target)
    return frame.select(c.value.alias("v"), c.invalid.alias("i"), c.lossy.alias("l")).rows()


def test_a_number_that_is_not_whole_is_no_int_in_any_source_type() -> None:
    assert cast([12.5, 0.9, 3.0, float("nan")], pl.Float64(), pl.Int32()) == [
        (None, True, False),
        (None, True, False),  # statecode 0.9 is not 0 (an active account)
        (3, False, False),
        (None, True, False),
    ]
    decimals = [Decimal("12.5"), Decimal("3")]
    assert cast(decimals, pl.Decimal(19, 4), pl.Int64()) == [(None, True, False), (3, False, False)]
    assert cast(["12.5", " 7 "], pl.String(), pl.Int32()) == [
        (None, True, False),
        (7, False, False),
    ]


def test_a_flag_is_zero_or_one() -> None:
    assert cast([2, 1, 0], pl.Int64(), pl.Boolean()) == [
        (None, True, False),
        (True, False, False),
        (False, False, False),
    ]


def test_a_float_becomes_the_decimal_it_reads_as_or_is_reported() -> None:
    rows = cast([0.1, 123456789.123, 1.23456, 1e-7, 1e15], pl.Float64(), pl.Decimal(19, 4))
    assert rows == [
        (Decimal("0.1"), False, False),  # not 0.1000000000000000055511
        (Decimal("123456789.123"), False, False),
        (Decimal("1.2346"), False, True),
        (Decimal("0"), False, True),
        (None, True, False),  # 20 digits do not fit in 19 (and polars' own cast would fail)
    ]


def test_text_with_digits_beyond_any_wide_decimal_is_precision_loss() -> None:
    rows = cast(["0.1000000000000000000001", "1.23450", "1.2345e2"], pl.String(), pl.Decimal(19, 4))
    assert [(v, lossy) for v, _, lossy in rows] == [
        (Decimal("0.1"), True),
        (Decimal("1.2345"), False),
        (Decimal("123.45"), False),
    ]


def test_coerce_makes_a_reject_per_value_and_typed_frame_names_the_line(
    contracts: ContractSet,
) -> None:
    contract = contracts.get("crm", "accounts")
    frame = pl.DataFrame(
        {ROW: [0, 1, 2], "statecode": [0.0, 0.9, 1.0], "creditlimit": ["1", "1.00001", "x"]}
    )
    typed, rejects = coerce(frame, contract, ["statecode", "creditlimit"])
    assert typed["statecode"].to_list() == [0, None, 1]
    assert sorted(rejects.select(ROW, "field", "reason").rows()) == [
        (1, "creditlimit", "precision_loss"),
        (1, "statecode", "wrong_type"),
        (2, "creditlimit", "wrong_type"),
    ]
    with pytest.raises(ConnectorError, match=r"f\.csv: line 3: column statecode: 0\.9"):
        typed_frame(frame.drop(ROW), contract.dtypes(["statecode"]), "f.csv", first_line=2)
