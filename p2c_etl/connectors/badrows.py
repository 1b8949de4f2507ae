"""Bad rows: records of an export or files-layout file that cannot be read, each naming the line
it starts on (the row number in a Parquet file), a reason and the text it held."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from p2c_etl.errors import ConfigError
from p2c_etl.model.rejects import LINE

BAD_SCHEMA = pl.Schema(
    {
        LINE: pl.Int64(),
        "field": pl.String(),
        "reason": pl.String(),
        "value": pl.String(),
        "message": pl.String(),
    }
)
BLOCK = 1 << 22  # bytes per CSV parse block and per line-count read


def empty_bad() -> pl.DataFrame:
    return pl.DataFrame(schema=BAD_SCHEMA)


def bad_row(line: int, reason: str, message: str, value: str | None = None) -> dict[str, object]:
    return {LINE: line, "field": None, "reason": reason, "value": value, "message": message}


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def shown(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= 200 else text[:200] + "…"


def missing_columns(path: Path, present: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise ConfigError(f"{path}: missing columns {', '.join(missing)}")


# --- Parquet ------------------------------------------------------------------------------
