"""Files-layout files read exactly, a chunk at a time: the exports of `p2c migrate` and every
read of the files connector.

`<folder>/<EntitySet>.parquet`, `.csv` or `.jsonl`, columns named as the system's Web API
names them. CSV files have a header row, are UTF-8 with or without a byte-order mark, and are
delimited by `,` or `;` (detected from the header); an empty field is null, a quoted empty
one (`""`) empty text. Reading never stops at a bad record: a record that cannot be read
exactly (broken quoting, a wrong number of fields, text that is not UTF-8, a line that is not
JSON, a value that is not of its column's type or would lose digits) becomes a *bad row*
naming the line it starts on (the row number in a Parquet file), the column where one
applies, and the reason, and reading goes on. A column the contract needs and the file lacks
(no header, no Parquet column, no JSON Lines key in any line) is contract drift: a
ContractError before the first record.

Memory stays bounded by the chunk: CSV is parsed by pyarrow's streaming reader, JSON Lines a
block of lines at a time (a line of any length), Parquet a row group batch at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from p2c_etl.connectors.badrows import (
    BAD_SCHEMA,
    BLOCK,
    RECORD,
    bad_row,
    drift,
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
    batches = _batches(path, contract, list(columns), chunk_rows)
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
    if rejects.height:
        # What was read of each such record, as text: its source key, for the reject.
        raw = numbered.join(rejects.select(ROW).unique(), on=ROW, how="semi").select(
            ROW,
            LINE,
            pl.struct(pl.col(columns).cast(pl.String)).struct.json_encode().alias(RECORD),
        )
        cast_bad = rejects.join(raw, on=ROW).select(BAD_SCHEMA.names())
        good = typed.join(rejects.select(ROW).unique(), on=ROW, how="anti").drop(ROW)
    else:
        cast_bad, good = empty_bad(), typed.drop(ROW)
    bad = pl.concat([bad.cast(BAD_SCHEMA), cast_bad.cast(BAD_SCHEMA)]).sort(LINE, "field")
    unit = "row" if path.suffix == ".parquet" else "line"
    bad = bad.with_columns(
        pl.format("{} {} {}: {}", pl.lit(path.name), pl.lit(unit), LINE, "message").alias("message")
    )
    return ExportChunk(index=index, first=first, frame=good, bad=bad)


def _batches(
    path: Path, contract: Contract, columns: list[str], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(clean records with `__line`, bad records) in file order, a batch at a time."""
    if path.suffix == ".parquet":
        return _parquet_batches(path, columns, rows)
    if path.suffix == ".csv":
        return csv_batches(path, columns)
    types = {c: contract.column(c).type for c in columns}
    return jsonl_batches(path, columns, contract.dtypes(columns), types)


def _parquet_batches(
    path: Path, columns: list[str], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    missing_columns(path, parquet.schema_arrow.names, columns)
    if parquet.metadata.num_rows <= rows:  # one batch: polars reads it twice as fast
        try:
            whole = pl.read_parquet(path, columns=columns)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(f"{path}: cannot read: {first_line(exc)}") from None
        lines = pl.int_range(1, whole.height + 1, dtype=pl.Int64, eager=True)
        yield whole.with_columns(lines.alias(LINE)), empty_bad()
        return
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

_BOM = b"\xef\xbb\xbf"
_JSON_BLOCK = 1 << 24  # bytes of lines parsed at once
_ARROW_BLOCK_MAX = (1 << 31) - 1
_COLON = re.compile(rb"[ \t\r\n]*:")


class _Literal(str):
    """A JSON number or constant (NaN) as the text it was written with: never a float."""


def jsonl_batches(
    path: Path,
    columns: list[str],
    dtypes: dict[str, pl.DataType],
    types: Mapping[str, str],
    *,
    required: bool = True,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(clean records with `__line`, bad records), a block of lines at a time.

    A `required` column is contract drift if no line of the file holds its key (a key whose
    value is null in every line is a column of nulls, not a missing one); that is known
    before the first block is handed on."""
    # pyarrow's JSON reader parses no dates: read them as text, `coerce` casts them exactly.
    as_read = {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}
    schema = pl.DataFrame(schema=as_read).to_arrow().schema
    blocks = _line_blocks(path)
    first = next(blocks, None)
    if first is None:
        return
    parsed = _jsonl_block(*first, schema, types)
    seen = {c for c in columns if parsed[0][c].null_count() < parsed[0].height}
    head = bytes(first[0]) if len(seen) < len(columns) else b""
    unseen = [c for c in columns if c not in seen and not _holds_key(head, c)]
    if required and unseen and parsed[0].height + parsed[1][LINE].n_unique():
        missing = _keys_absent(path, unseen)
        if missing:
            raise drift(path, missing)
    yield parsed
    for block in blocks:
        yield _jsonl_block(*block, schema, types)


def _line_blocks(path: Path) -> Iterator[tuple[memoryview, int, int]]:
    """(whole lines, each ending in a line break; the file line the first one is on; how many
    lines), about `_JSON_BLOCK` bytes at a time, read in place (no copy of a block); a line
    longer than that is a block of its own."""
    number, carry = 1, b""
    with path.open("rb") as handle:
        while True:
            buffer = bytearray(len(carry) + _JSON_BLOCK)
            buffer[: len(carry)] = carry
            got = handle.readinto(memoryview(buffer)[len(carry) :])
            if not got:
                break
            size = len(carry) + got
            start = len(_BOM) if number == 1 and not carry and buffer.startswith(_BOM) else 0
            end = buffer.rfind(b"\n", 0, size) + 1
            if end > start:
                breaks = buffer.count(b"\n", start, end)
                yield memoryview(buffer)[start:end], number, breaks
                number += breaks
            carry = bytes(buffer[max(end, start) : size])
    if carry:
        yield memoryview(carry + b"\n"), number, 1


def _holds_key(data: bytes, name: str) -> bool:
    """Whether some JSON object in `data` has the key `name` (an escaped quote inside a text
    value does not count)."""
    needle = b'"' + name.encode() + b'"'
    at = data.find(needle)
    while at >= 0:
        if (at == 0 or data[at - 1] != 0x5C) and _COLON.match(data, at + len(needle)):
            return True
        at = data.find(needle, at + 1)
    return False


def _keys_absent(path: Path, names: list[str]) -> list[str]:
    absent = set(names)
    for data, _, _ in _line_blocks(path):
        block = bytes(data)
        absent -= {n for n in absent if _holds_key(block, n)}
        if not absent:
            break
    return [n for n in names if n in absent]


def _jsonl_block(
    data: memoryview, number: int, breaks: int, schema: pa.Schema, types: Mapping[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a block of lines at once; only when that fails, in halves down to the bad lines
    (a block with k bad lines takes about k·log2(lines) parses, not one per line)."""
    table = _parsed(data, schema)
    if table is None:
        return _jsonl_lines(bytes(data), number, schema, types)
    lines = _line_numbers(data, number, breaks, table.num_rows)
    if lines is None:
        return _jsonl_lines(bytes(data), number, schema, types)
    return _frame(table).with_columns(lines.alias(LINE)), empty_bad()


def _parse(data: bytes | memoryview, schema: pa.Schema) -> pa.Table:
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        return pajson.read_json(pa.BufferReader(pa.py_buffer(data)), parse_options=options)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
    # A line longer than pyarrow's parse block (1 MiB): the whole data as one block.
    block = pajson.ReadOptions(block_size=min(len(data) + 1, _ARROW_BLOCK_MAX))
    source = pa.BufferReader(pa.py_buffer(data))
    return pajson.read_json(source, read_options=block, parse_options=options)


def _line_numbers(data: memoryview, number: int, breaks: int, rows: int) -> pl.Series | None:
    """The file line of each record pyarrow read from `data` (it skips blank lines)."""
    if rows == breaks:
        return pl.int_range(number, number + rows, dtype=pl.Int64, eager=True)
    text = pl.Series([bytes(data[:-1])], dtype=pl.Binary).cast(pl.String, strict=False)
    lines = text.str.split("\n").explode()
    filled = ~lines.str.contains(r"^[ \t\r]*$")
    numbers = filled.arg_true().cast(pl.Int64) + number
    return numbers if numbers.len() == rows else None


def _jsonl_lines(
    data: bytes, number: int, schema: pa.Schema, types: Mapping[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    entries = [
        (n, line)
        for n, line in enumerate(data.split(b"\n")[:-1], start=number)
        if line.strip(b" \t\r")
    ]
    tables: list[pa.Table] = []
    numbers: list[int] = []
    bad: list[dict[str, object]] = []
    stack = [entries]
    while stack:
        part = stack.pop()
        table = _parsed(b"\n".join(line for _, line in part) + b"\n", schema) if part else None
        if table is None and len(part) == 1:
            problems = _json_problems(*part[0], schema, types)
            table = None if problems else _parse(part[0][1] + b"\n", schema)
            bad.extend(problems)
        if table is not None:
            tables.append(table)
            numbers.extend(n for n, _ in part)
        elif len(part) > 1:
            stack += [part[len(part) // 2 :], part[: len(part) // 2]]
    frame = _frame(pa.concat_tables([schema.empty_table(), *tables]))
    return frame.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64)), pl.DataFrame(
        bad, schema=BAD_SCHEMA
    )


def _parsed(data: bytes | memoryview, schema: pa.Schema) -> pa.Table | None:
    """The records of `data`, or None when a line is not a clean record. Text is checked to
    be UTF-8 in the columns read only (pyarrow's JSON reader does not check it)."""
    try:
        table = _parse(data, schema)
        table.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return table


def _json_problems(
    number: int, line: bytes, schema: pa.Schema, types: Mapping[str, str]
) -> list[dict[str, object]]:
    """Why one line is not a clean record, a bad row per column where one applies; [] when it
    is one after all (text that is not UTF-8 in a column that is not read)."""
    try:
        text, utf8 = line.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = line.decode("utf-8", "surrogateescape"), False
    reason = "not_json" if utf8 else "bad_encoding"
    try:
        record = json.loads(text, parse_float=_Literal, parse_int=_Literal, parse_constant=_Literal)
    except ValueError as exc:
        message = f"not valid JSON: {exc}" if utf8 else "the line is not UTF-8 text"
        return [bad_row(number, reason, message, value=_shown(text))]
    if not isinstance(record, dict):
        message = f"a record is a JSON object, not {type(record).__name__}"
        return [bad_row(number, reason, message, value=_shown(text))]
    wanted = [n for n in schema.names if n in record]
    readable = {n: _text(record[n]) for n in wanted if _readable(record[n])}
    problems = [
        problem
        for name in wanted
        if (problem := _value_problem(number, line, name, record[name], schema, types, readable))
    ]
    if problems:
        return problems
    try:
        _parse(line + b"\n", schema)
    except pa.ArrowInvalid as exc:
        message = first_line(exc).removeprefix("JSON parse error: ")
        return [bad_row(number, "wrong_type", message, value=_shown(text), record=readable)]
    return []


def _value_problem(
    number: int,
    line: bytes,
    name: str,
    value: object,
    schema: pa.Schema,
    types: Mapping[str, str],
    readable: dict[str, str | None],
) -> dict[str, object] | None:
    """The bad row for column `name` of one line, or None when its value reads exactly."""
    kind = types.get(name, str(schema.field(name).type))
    if not _encodable(value):
        shown_value = _shown(_text(value) or "")
        message = f"{name} is not UTF-8 text"
        return bad_row(number, "bad_encoding", message, shown_value, name, readable)
    shown_value = _shown(_text(value) or "")
    if isinstance(value, (dict, list)):
        what = "an object" if isinstance(value, dict) else "an array"
        message = f"{name} '{shown_value}' is {what}, not a valid {kind}"
        return bad_row(number, "wrong_type", message, shown_value, name, readable)
    try:
        _parse(line + b"\n", pa.schema([schema.field(name)]))
    except pa.ArrowInvalid as exc:
        if "requires scale" in str(exc):
            message = f"{name} '{shown_value}' has more decimal places than {kind} holds"
            return bad_row(number, "precision_loss", message, shown_value, name, readable)
        message = f"{name} '{shown_value}' is not a valid {kind}"
        return bad_row(number, "wrong_type", message, shown_value, name, readable)
    return None


def _text(value: object) -> str | None:
    """A JSON value as text: a number exactly as written, an object or array as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _readable(value: object) -> bool:
    return not isinstance(value, (dict, list)) and _encodable(value)


def _encodable(value: object) -> bool:
    """False for text holding bytes that were not UTF-8 (decoded as surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    elif isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    elif isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


def _shown(text: str) -> str:
    """Text for a message: bytes that were not UTF-8 shown as U+FFFD."""
    return shown(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
