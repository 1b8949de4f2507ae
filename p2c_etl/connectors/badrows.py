"""Bad rows: records of an export or files-layout file that cannot be read, each naming the line
it starts on (the row number in a Parquet file), a reason, the column where one applies and the
text it held; and what a missing column is: contract drift, before a single record is read."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from p2c_etl.errors import ContractError
from p2c_etl.model.rejects import LINE

RECORD = "record"
"""What could be read of a bad record, as a JSON object of text (null when nothing could):
enough to show its source key in a reject."""
SOURCE_FILE = "source_file"
BAD_SCHEMA = pl.Schema(
    {
        LINE: pl.Int64(),
        "field": pl.String(),
        "reason": pl.String(),
        "value": pl.String(),
        "message": pl.String(),
        RECORD: pl.String(),
    }
)
SOURCE_BAD_SCHEMA = pl.Schema({**BAD_SCHEMA, SOURCE_FILE: pl.String()})
"""The bad rows a connector hands to its `on_bad` sink: BAD_SCHEMA and the file they are in."""
BadSink = Callable[[pl.DataFrame], None]
BLOCK = 1 << 22  # bytes per CSV parse block and per line-count read


def empty_bad() -> pl.DataFrame:
    return pl.DataFrame(schema=BAD_SCHEMA)


def bad_row(
    line: int,
    reason: str,
    message: str,
    value: str | None = None,
    field: str | None = None,
    record: dict[str, str | None] | None = None,
) -> dict[str, object]:
    return {
        LINE: line,
        "field": field,
        "reason": reason,
        "value": value,
        "message": message,
        RECORD: json.dumps(record, ensure_ascii=False) if record is not None else None,
    }


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def shown(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= 200 else text[:200] + "…"


def missing_columns(path: Path, present: Sequence[str], columns: Sequence[str]) -> None:
    """Contract drift: a column the contract needs that the file does not hold at all."""
    missing = [c for c in columns if c not in present]
    if missing:
        raise drift(path, missing)


def drift(path: Path, missing: Sequence[str]) -> ContractError:
    names = ", ".join(missing)
    return ContractError(
        f"{path}: contract drift: the file has no column {names} "
        f"(the contract needs {'it' if len(missing) == 1 else 'them'})"
    )


def unreadable(path: Path, bad: pl.DataFrame) -> str:
    """The one-line error for a file whose bad rows have no sink: the first one's file, line
    and column, and how many more there are."""
    row = bad.sort(LINE, "field", nulls_last=True).row(0, named=True)
    unit = "row" if path.suffix == ".parquet" else "line"
    detail = str(row["message"]).removeprefix(f"{path.name} {unit} {row[LINE]}: ")
    column = ""
    if row["field"]:
        column = f"column {row['field']}: "
        detail = detail.removeprefix(f"{row['field']} ")
    more = bad[LINE].n_unique() - 1
    return f"{path}: {unit} {row[LINE]}: {column}{detail} ({row['reason']})" + (
        f"; and {more} more bad record{'s' if more > 1 else ''}" if more else ""
    )
