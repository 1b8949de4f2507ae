"""The record key as users see it, in rejects, changes, load results and reports."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def record_key(columns: Sequence[str]) -> pl.Expr:
    """Key values joined by `|`; a null part shows as `(blank)`."""
    parts = [pl.col(c).cast(pl.String).fill_null("(blank)") for c in columns]
    return pl.concat_str(parts, separator="|")


def folded_record_key(columns: Sequence[str]) -> pl.Expr:
    """The record key as SQL Server compares it (both targets do): each part lower-cased and
    its trailing spaces dropped, so `ACC-1`, `acc-1` and `acc-1 ` are one key. For finding
    a record, never for showing it."""
    parts = [
        pl.col(c).cast(pl.String).str.strip_chars_end(" ").str.to_lowercase().fill_null("(blank)")
        for c in columns
    ]
    return pl.concat_str(parts, separator="|")
