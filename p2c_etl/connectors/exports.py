"""Export files for `p2c migrate`: a folder in the files layout, read a chunk at a time.

`<folder>/<EntitySet>.parquet`, `.csv` or `.jsonl`, columns named as the system's Web API
names them. CSV files have a header row, are UTF-8 with or without a byte-order mark, and are
delimited by `,` or `;` (detected from the header). Reading never stops at a bad record: a
record that cannot be read (broken quoting, a wrong number of fields, text that is not UTF-8,
a line that is not JSON, a value that is not of its column's type) becomes a *bad row* naming
the line it starts on (the row number in a Parquet file) and the reason, and reading goes on.

Memory stays bounded by the chunk: CSV is parsed by pyarrow's streaming reader, JSON Lines a
block of lines at a time, Parquet a row group batch at a time.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from p2c_etl.connectors.badrows import (
    BAD_SCHEMA,
    BLOCK,
    bad_row,
    empty_bad,
    first_line,
    missing_columns,
    shown,
)
from p2c_etl.connectors.export_csv import csv_batches
from p2c_etl.errors import ConfigError
from p2c_etl.model.casting import coerce
from p2c_etl.model.contracts import Contract
from p2c_etl.model.rejects import LINE, ROW

_FORMATS = ("parquet", "csv", "jsonl")


@dataclass(frozen=True)
class ExportChunk:
    """Records `first` … `first + records - 1` of an export file (0-based, in file order):
    `frame` holds those that read cleanly (contract-typed, plus `__line`), `bad` the others."""

    index: int
    first: int
    frame: pl.DataFrame
    bad: pl.DataFrame

    @property
    def records(self) -> int:
        return self.frame.height + self.bad[LINE].n_unique()


def find_export(folder: Path, entity: str) -> Path | None:
    """The export file of `entity` in `folder`, or None; two files for one entity is an error."""
    found = [
        folder / f"{entity}.{fmt}" for fmt in _FORMATS if (folder / f"{entity}.{fmt}").is_file()
    ]
    if len(found) > 1:
        raise ConfigError(f"{folder} holds {', '.join(p.name for p in found)}; keep only one")
    return found[0] if found else None


def count_records(path: Path) -> int:
    """How many records the file holds, for progress (CSV: lines after the header, which
    over-counts a value that spans lines; JSON Lines: non-blank lines)."""
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            lines += block.count(b"\n") - (block.count(b"\n\n") if path.suffix == ".jsonl" else 0)
            last = block[-1:]
    lines += last != b"\n"
    return max(lines - (1 if path.suffix == ".csv" else 0), 0)


def read_chunks(
    path: Path, contract: Contract, columns: Sequence[str], chunk_rows: int
) -> Iterator[ExportChunk]:
    """The records of `path`, `chunk_rows` clean ones a chunk (bad ones ride along with the
    chunk they fall in), typed by `contract`. The same file always splits the same way."""
    dtypes = contract.dtypes(columns)
    batches = _batches(path, list(columns), dtypes, chunk_rows)
    pending: list[pl.DataFrame] = []
    bad: list[pl.DataFrame] = []
    held = index = first = 0
    for frame, problems in batches:
        pending.append(frame)
        bad.append(problems)
        held += frame.height
        while held >= chunk_rows:
            whole = pl.concat(pending)
            head, tail = whole.head(chunk_rows), whole.slice(chunk_rows)
            last = head[LINE][-1] if head.height else None
            problems = pl.concat(bad)
            mine = problems if last is None else problems.filter(pl.col(LINE) <= last)
            chunk = _typed_chunk(path, index, first, head, mine, contract, columns)
            yield chunk
            index, first = index + 1, first + chunk.records
            rest = problems if last is None else problems.filter(pl.col(LINE) > last)
            pending, bad, held = [tail], [rest], tail.height
    empty = pl.DataFrame(schema={**{c: pl.String() for c in columns}, LINE: pl.Int64()})
    rest = pl.concat(pending) if pending else empty
    problems = pl.concat(bad) if bad else empty_bad()
    if rest.height or problems.height or index == 0:
        yield _typed_chunk(path, index, first, rest, problems, contract, columns)


def read_whole(path: Path, contract: Contract, columns: Sequence[str]) -> pl.DataFrame:
    """Every clean record of `path` (reference data for lookups; bad records are the business
    of the flow that migrates them)."""
    frames = [c.frame.drop(LINE) for c in read_chunks(path, contract, columns, 1_000_000)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=contract.dtypes(columns))


def _typed_chunk(
    path: Path,
    index: int,
    first: int,
    frame: pl.DataFrame,
    bad: pl.DataFrame,
    contract: Contract,
    columns: Sequence[str],
) -> ExportChunk:
    """Cast to the contract's types; a value that does not fit makes its record bad."""
    numbered = frame.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    typed, rejects = coerce(numbered, contract, list(columns))
    cast_bad = rejects.join(numbered.select(ROW, LINE), on=ROW).select(BAD_SCHEMA.names())
    good = typed.join(rejects.select(ROW).unique(), on=ROW, how="anti").drop(ROW)
    bad = pl.concat([bad.cast(BAD_SCHEMA), cast_bad.cast(BAD_SCHEMA)]).sort(LINE, "field")
    unit = "row" if path.suffix == ".parquet" else "line"
    bad = bad.with_columns(
        pl.format("{} {} {}: {}", pl.lit(path.name), pl.lit(unit), LINE, "message").alias("message")
    )
    return ExportChunk(index=index, first=first, frame=good, bad=bad)


def _batches(
    path: Path, columns: list[str], dtypes: dict[str, pl.DataType], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(clean records with `__line`, bad records) in file order, a batch at a time."""
    if path.suffix == ".parquet":
        return _parquet_batches(path, columns, rows)
    if path.suffix == ".csv":
        return csv_batches(path, columns)
    return _jsonl_batches(path, columns, dtypes, rows)


def _parquet_batches(
    path: Path, columns: list[str], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    missing_columns(path, parquet.schema_arrow.names, columns)
    start = 1
    batches = parquet.iter_batches(batch_size=rows, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(f"{path}: row {start} on: cannot read: {first_line(exc)}") from None
        if batch is None:
            return
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        lines = pl.int_range(start, start + frame.height, dtype=pl.Int64, eager=True)
        yield frame.with_columns(lines.alias(LINE)), empty_bad()
        start += frame.height


# --- JSON Lines ---------------------------------------------------------------------------


def _jsonl_batches(
    path: Path, columns: list[str], dtypes: dict[str, pl.DataType], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    # pyarrow's JSON reader parses no dates: read them as text, `coerce` casts them exactly.
    as_read = {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}
    schema = pl.DataFrame(schema=as_read).to_arrow().schema
    block: list[bytes] = []
    numbers: list[int] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            block.append(raw if raw.endswith(b"\n") else raw + b"\n")
            numbers.append(number)
            if len(block) >= rows:
                yield _jsonl_block(block, numbers, schema)
                block, numbers = [], []
    if block:
        yield _jsonl_block(block, numbers, schema)


def _jsonl_block(
    lines: list[bytes], numbers: list[int], schema: pa.Schema
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a block of lines at once; only when that fails, line by line, to name the bad
    lines."""
    try:
        b"".join(lines).decode("utf-8")  # pyarrow's JSON reader does not check UTF-8
        return _jsonl_frame(lines, numbers, schema), empty_bad()
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    good: list[bytes] = []
    good_numbers: list[int] = []
    bad: list[dict[str, object]] = []
    for line, number in zip(lines, numbers, strict=True):
        problem = _json_problem(line, schema)
        if problem is None:
            good.append(line)
            good_numbers.append(number)
        else:
            bad.append(bad_row(number, *problem, value=shown(line.decode("utf-8", "replace"))))
    frame = _jsonl_frame(good, good_numbers, schema)
    return frame, pl.DataFrame(bad, schema=BAD_SCHEMA)


def _json_problem(line: bytes, schema: pa.Schema) -> tuple[str, str] | None:
    """Why one line is not a record: (reason, message), or None."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return "bad_encoding", "the line is not UTF-8 text"
    except ValueError as exc:
        return "not_json", f"not valid JSON: {exc}"
    if not isinstance(record, dict):
        return "not_json", f"a record is a JSON object, not {type(record).__name__}"
    try:
        _jsonl_frame([line], [0], schema)
    except pa.ArrowInvalid as exc:
        return "wrong_type", first_line(exc).removeprefix("JSON parse error: ")
    return None


def _jsonl_frame(lines: list[bytes], numbers: list[int], schema: pa.Schema) -> pl.DataFrame:
    if not lines:
        frame = pl.from_arrow(schema.empty_table())
    else:
        options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        frame = pl.from_arrow(pajson.read_json(io.BytesIO(b"".join(lines)), parse_options=options))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64))
