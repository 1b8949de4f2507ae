"""The record key as users see it, in rejects, changes, load results and reports."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def record_key(columns: Sequence[str]) -> pl.Expr:
    """Key values joined by `|`; a null part shows as `(blank)`."""
    parts = [pl.col(c).cast(pl.String).fill_null("(blank)") for c in columns]
    return pl.concat_str(parts, separator="|")
