"""Money rules, exact: decimals in, decimals out, one explicit rounding rule.

Division and rounding go through integers (Int128) so that no engine's own rounding — polars
rounds half to even, DuckDB half away from zero, and a decimal division truncates at the
dividend's scale — can change a cent. Finance and Operations' default currency rounding
("Normal") is half away from zero, the default here.
"""

from __future__ import annotations

from typing import Literal, get_args

import polars as pl

Rounding = Literal["half_away_from_zero", "half_even"]
ROUNDINGS: tuple[Rounding, ...] = get_args(Rounding)
_SCALE = 10  # digits kept when turning decimals into integers for exact division


def _as_int(expr: pl.Expr) -> pl.Expr:
    """`expr` times 10^_SCALE as Int128 (exact for any decimal with at most _SCALE places)."""
    scaled: pl.Expr = expr.cast(pl.Decimal(38, _SCALE)) * 10**_SCALE
    return scaled.cast(pl.Int128)


def divide(
    numerator: pl.Expr,
    denominator: pl.Expr,
    places: int,
    rounding: Rounding = "half_away_from_zero",
) -> pl.Expr:
    """numerator / denominator rounded to `places`, as Decimal(38, places); null when the
    denominator is zero or null."""
    num, den = _as_int(numerator), _as_int(denominator)
    sign = pl.when((num < 0) != (den < 0)).then(-1).otherwise(1).cast(pl.Int128)
    a, b = num.abs() * 10**places, den.abs()
    quotient, remainder = a // b, a % b
    twice = remainder * 2
    if rounding == "half_away_from_zero":
        up = twice >= b
    else:
        up = (twice > b) | ((twice == b) & (quotient % 2 == 1))
    units = (quotient + up.cast(pl.Int128)) * sign
    result = units.cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, places)) / 10**places
    return pl.when(den != 0).then(result.cast(pl.Decimal(38, places)))


def round_to(expr: pl.Expr, places: int, rounding: Rounding = "half_away_from_zero") -> pl.Expr:
    """`expr` rounded to `places` by `rounding`."""
    return divide(expr, pl.lit(1, pl.Decimal(38, 0)), places, rounding)
