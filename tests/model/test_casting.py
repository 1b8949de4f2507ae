"""Exact casts: a value either keeps its meaning in the target type or is reported."""

from __future__ import annotations

from datetime import UTC, date, datetime
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


# --- a date-time is a date only at midnight or noon UTC (review finding 9) -----------------


def test_a_date_time_in_text_is_a_date_only_at_midnight_or_noon_utc() -> None:
    day = date(2026, 10, 5)
    rows = cast(
        [
            "2026-10-05",
            "2026-10-05T00:00:00Z",  # how Dataverse returns a date-only value
            "2026-10-05T00:00:00.000+00:00",
            "2026-10-05T12:00:00Z",  # how F&O's OData serves a date field
            "2026-10-05T13:45:00",
            "2026-10-05T23:30:00+05:00",  # 18:30 UTC
            "2026-10-05T00:00:00+05:00",  # the day before, in UTC
            "2026-10-05T00:00:00.5Z",
            "2026-10-05garbage",  # was 2026-10-05: the first 10 characters were read
            "2026-02-30",
            None,
        ],
        pl.String(),
        pl.Date(),
    )
    assert rows == [(day, False, False)] * 4 + [(None, True, False)] * 6 + [(None, False, False)]


def test_a_timestamp_is_a_date_only_at_midnight_or_noon_utc() -> None:
    stamps = [datetime(2026, 10, 5, h, m, s) for h, m, s in [(0, 0, 0), (12, 0, 0), (13, 45, 0)]]
    expected = [(date(2026, 10, 5), False, False)] * 2 + [(None, True, False)]
    assert cast(stamps, pl.Datetime("us"), pl.Date()) == expected
    assert cast(stamps, pl.Datetime("ms", "UTC"), pl.Date()) == expected
    paris = pl.Series([datetime(2026, 10, 5, 2, tzinfo=UTC)]).dt.convert_time_zone("Europe/Paris")
    frame = pl.DataFrame({"x": paris})  # 04:00 in Paris is 02:00 UTC: no date
    c = exact_cast(pl.col("x"), paris.dtype, pl.Date())
    assert frame.select(c.value.alias("v"), c.invalid.alias("i")).row(0) == (None, True)


def test_coerce_and_typed_frame_refuse_a_date_time_in_a_date_column(
    contracts: ContractSet,
) -> None:
    contract = contracts.get("crm", "quotes")
    frame = pl.DataFrame({ROW: [0, 1], "requestdeliveryby": ["2026-10-05T13:45:00", "2026-10-05"]})
    typed, rejects = coerce(frame, contract, ["requestdeliveryby"])
    assert typed["requestdeliveryby"].to_list() == [None, date(2026, 10, 5)]
    assert rejects.select(ROW, "field", "reason", "value").rows() == [
        (0, "requestdeliveryby", "wrong_type", "2026-10-05T13:45:00")
    ]
    with pytest.raises(ConnectorError, match=r"t\.jsonl: line 1: column requestdeliveryby"):
        typed_frame(frame.drop(ROW), contract.dtypes(["requestdeliveryby"]), "t.jsonl")


# --- a flag is no number, an object or a list no text (review findings 3, 15) -------------


def test_a_flag_is_no_number() -> None:
    assert cast([False, True, None], pl.Boolean(), pl.Int64()) == [
        (None, True, False),
        (None, True, False),
        (None, False, False),
    ]
    assert cast([True], pl.Boolean(), pl.Decimal(19, 4)) == [(None, True, False)]
    assert cast([True], pl.Boolean(), pl.Boolean()) == [(True, False, False)]


def test_an_object_or_a_list_is_no_text_and_its_reject_shows_it_as_json(
    contracts: ContractSet,
) -> None:
    contract = contracts.get("crm", "accounts")
    frame = pl.DataFrame(
        {ROW: [0, 1], "name": [{"a": "x"}, None], "description": [["p", "Ünïcode"], None]}
    )
    typed, rejects = coerce(frame, contract, ["name", "description"])
    assert typed.select("name", "description").rows() == [(None, None), (None, None)]
    assert sorted(rejects.select(ROW, "field", "reason", "value").rows()) == [
        (0, "description", "wrong_type", '["p","Ünïcode"]'),
        (0, "name", "wrong_type", '{"a":"x"}'),  # not '{"x"}', as polars casts a struct
    ]


def test_a_date_time_in_text_reads_the_same_wherever_it_stands_in_its_column() -> None:
    """Each value by its own format: a value without an offset after one with `Z` (or the
    other way round) is not made null by a format guessed from the first value."""
    texts = ["2026-10-05T13:45:00Z", "2026-10-05T13:45:00", "2026-10-05T15:45:00.5+02:00"]
    at = datetime(2026, 10, 5, 13, 45, tzinfo=UTC)
    expected = {
        texts[0]: (at, False, False),
        texts[1]: (at, False, False),  # no offset: UTC
        texts[2]: (at.replace(microsecond=500_000), False, False),
    }
    target = pl.Datetime("us", "UTC")
    for order in (texts, texts[::-1], [texts[1], texts[0], texts[2]]):
        assert cast(order, pl.String(), target) == [expected[t] for t in order]
    assert cast(["2026-10-05", "5 Oct 2026"], pl.String(), target) == [
        (datetime(2026, 10, 5, tzinfo=UTC), False, False),
        (None, True, False),
    ]
