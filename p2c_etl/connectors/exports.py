"""Files-layout files read exactly, a chunk at a time: the exports of `p2c migrate` and every
read of the files connector.

`<folder>/<EntitySet>.parquet`, `.csv` or `.jsonl`, columns named as the system's Web API
names them. CSV files have a header row, are UTF-8 with or without a byte-order mark, and are
delimited by `,` or `;` (detected from the header); an empty field is null, a quoted empty
one (`""`) empty text. Reading never stops at a bad record: a record that cannot be read
exactly (broken quoting, a wrong number of fields, text that is not UTF-8, a line that is not
one JSON object or lacks its key, a value that is not of its column's type or would lose
digits) becomes a *bad row* naming the line it starts on (the row number in a Parquet file),
the column where one applies, and the reason, and reading goes on. A column the contract
needs and the file lacks (no header, no Parquet column, no JSON Lines key in any line) is
contract drift: a ContractError before the first record.

Memory stays bounded by the chunk: CSV is parsed by pyarrow's streaming reader, JSON Lines a
block of lines at a time (a line of any length), Parquet a row group batch at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
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
    shown,
)
from p2c_etl.connectors.export_csv import csv_batches
from p2c_etl.connectors.export_parquet import parquet_batches
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
        return parquet_batches(path, contract, columns, rows)
    if path.suffix == ".csv":
        return csv_batches(path, columns)
    types = {c: contract.column(c).type for c in columns}
    return jsonl_batches(path, columns, contract.dtypes(columns), types, keys=_identity(contract))


def _identity(contract: Contract) -> list[str]:
    """The columns of a record's identity that are never null (key and primary id columns):
    a JSON Lines record without one is no record of the entity set."""
    names = dict.fromkeys([*contract.keys, *([contract.primary_id] if contract.primary_id else [])])
    return [n for n in names if not contract.column(n).nullable]


# --- JSON Lines ---------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_JSON_BLOCK = 1 << 24  # bytes of lines parsed at once
_ARROW_BLOCK_MAX = (1 << 31) - 1
_COLON = re.compile(rb"[ \t\r\n]*:")
_SPACE = b" \t\r"  # what JSON counts as white space, within a line
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Literal(str):
    """A JSON number or constant (NaN) as the text it was written with: never a float."""


class _Object(dict[str, object]):
    """A JSON object as `json.loads` reads it (the last value of a key it holds twice), and
    the keys it holds more than once."""

    twice: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Reading:
    """How the lines of one file are read: the columns as pyarrow parses them, the contract
    type of each (for messages), and the key columns no record may lack."""

    schema: pa.Schema
    types: Mapping[str, str]
    keys: tuple[str, ...]


def jsonl_batches(
    path: Path,
    columns: list[str],
    dtypes: dict[str, pl.DataType],
    types: Mapping[str, str],
    *,
    required: bool = True,
    keys: Sequence[str] = (),
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(clean records with `__line`, bad records), a block of lines at a time.

    A line is a record when it is one JSON object: a line holding anything else (`null`, an
    array, a number, two objects) is a bad row, not_json. A record without one of `keys` (the
    columns of the record's identity that are never null; the key there with the value null
    is a null, as in the other formats) is a bad row, null_not_allowed.

    A `required` column is contract drift if no line of the file holds its key (a key whose
    value is null in every line is a column of nulls, not a missing one); that is known
    before the first block is handed on."""
    # pyarrow's JSON reader parses no dates: read them as text, `coerce` casts them exactly.
    as_read = {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}
    schema = pl.DataFrame(schema=as_read).to_arrow().schema
    reading = _Reading(schema, types, tuple(k for k in keys if k in columns))
    blocks = _line_blocks(path)
    first = next(blocks, None)
    if first is None:
        return
    parsed = _jsonl_block(*first, reading)
    seen = {c for c in columns if parsed[0][c].null_count() < parsed[0].height}
    head = bytes(first[0]) if len(seen) < len(columns) else b""
    unseen = [c for c in columns if c not in seen and not _holds_key(head, c)]
    if required and unseen and parsed[0].height + parsed[1][LINE].n_unique():
        missing = _keys_absent(path, unseen)
        if missing:
            raise drift(path, missing)
    yield parsed
    for block in blocks:
        yield _jsonl_block(*block, reading)


def _line_blocks(path: Path) -> Iterator[tuple[memoryview, int, int, bool]]:
    """(whole lines, each ending in a line break; the file line the first one is on; how many
    lines; whether each starts with `{`), about `_JSON_BLOCK` bytes at a time, read in place
    (no copy of a block); a line longer than that is a block of its own."""
    number, carry = 1, b""
    with path.open("rb") as handle:
        left = os.fstat(handle.fileno()).st_size
        while True:
            # the size of what is left, not 16 MB of zeros for a small file; past the size
            # the file had (it grows while read), 64 KB at a time
            buffer = bytearray(len(carry) + (min(_JSON_BLOCK, left) if left else 1 << 16))
            buffer[: len(carry)] = carry
            got = handle.readinto(memoryview(buffer)[len(carry) :])
            if not got:
                break
            left = max(left - got, 0)
            size = len(carry) + got
            start = len(_BOM) if number == 1 and not carry and buffer.startswith(_BOM) else 0
            end = buffer.rfind(b"\n", 0, size) + 1
            if end > start:
                view = memoryview(buffer)[start:end]
                breaks = _matches(view, "\n")
                objects = view[0] == 0x7B and not _matches(view[:-1], "\n[^{]")
                yield view, number, breaks, objects
                number += breaks
            carry = bytes(buffer[max(end, start) : size])
    if carry:
        yield memoryview(carry + b"\n"), number, 1, carry.startswith(b"{")


def _matches(data: memoryview, pattern: str) -> int:
    """How many times the regular expression `pattern` matches in `data`, read in place
    (pyarrow's RE2 counts line breaks three times as fast as `bytearray.count`)."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    text = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    return int(pc.count_substring_regex(text, pattern)[0].as_py())


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
    for data, _, _, _ in _line_blocks(path):
        block = bytes(data)
        absent -= {n for n in absent if _holds_key(block, n)}
        if not absent:
            break
    return [n for n in names if n in absent]


def _jsonl_block(
    data: memoryview, number: int, breaks: int, objects: bool, reading: _Reading
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a block of lines at once; only when that fails, or its lines may not be one JSON
    object each, line by line, in halves down to the bad lines (a block with k bad lines
    takes about k·log2(lines) parses, not one per line)."""
    table = _parsed(data, reading.schema)
    if table is None:
        return _jsonl_lines(bytes(data), number, reading)
    if objects and table.num_rows == breaks:  # every line starts an object, and holds one
        lines = pl.int_range(number, number + breaks, dtype=pl.Int64, eager=True)
    else:
        found = _line_numbers(data, number, table.num_rows)
        if found is None:
            return _jsonl_lines(bytes(data), number, reading)
        lines = found
    return _keyed(_frame(table).with_columns(lines.alias(LINE)), data, number, reading)


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


def _line_numbers(data: memoryview, number: int, rows: int) -> pl.Series | None:
    """The file line of each record pyarrow read from `data` (it skips blank lines), when
    each line that is not blank starts an object and holds one; else None."""
    text = pl.Series([bytes(data[:-1])], dtype=pl.Binary).cast(pl.String, strict=False)
    lines = text.str.split("\n").explode()
    if lines.null_count():  # text that is not UTF-8 somewhere: line by line
        return None
    starts = lines.str.contains(r"^[ \t\r]*\{")
    if not (starts | lines.str.contains(r"^[ \t\r]*$")).all():
        return None
    numbers = starts.arg_true().cast(pl.Int64) + number
    return numbers if numbers.len() == rows else None


def _keyed(
    frame: pl.DataFrame, data: bytes | memoryview, number: int, reading: _Reading
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`frame` less the records without one of the key columns (bad rows). Only a record
    whose key column is null needs a look at its line: is the key there, as null?"""
    nulls = [k for k in reading.keys if frame[k].null_count()]
    if not nulls:
        return frame, empty_bad()
    lines = bytes(data).split(b"\n")
    suspects = frame.filter(pl.any_horizontal(pl.col(nulls).is_null())).select(LINE, *nulls)
    absent = [
        (row[LINE], key)
        for row in suspects.iter_rows(named=True)
        for key in nulls
        if row[key] is None and not _holds_key(lines[row[LINE] - number], key)
    ]
    if not absent:
        return frame, empty_bad()
    which = pl.DataFrame(absent, schema={LINE: pl.Int64(), "field": pl.String()}, orient="row")
    columns = [c for c in frame.columns if c != LINE]
    records = frame.select(
        LINE, pl.struct(pl.col(columns).cast(pl.String)).struct.json_encode().alias(RECORD)
    )
    what = "{} is missing: the record has no key {}, which every record holds"
    message = pl.format(what, "field", "field").alias("message")
    bad = which.join(records, on=LINE).select(
        LINE,
        "field",
        pl.lit("null_not_allowed").alias("reason"),
        pl.lit(None, dtype=pl.String).alias("value"),
        message,
        RECORD,
    )
    return frame.join(which.select(LINE), on=LINE, how="anti"), bad


def _jsonl_lines(data: bytes, number: int, reading: _Reading) -> tuple[pl.DataFrame, pl.DataFrame]:
    entries = [
        (n, line)
        for n, line in enumerate(data.split(b"\n")[:-1], start=number)
        if line.strip(_SPACE)
    ]
    tables: list[pa.Table] = []
    numbers: list[int] = []
    bad: list[dict[str, object]] = []
    # A line that does not start an object is never a record (pyarrow reads `null` as one).
    for n, line in entries:
        if not line.lstrip(_SPACE).startswith(b"{"):
            bad.extend(_json_problems(n, line, reading)[0])
    stack = [[(n, line) for n, line in entries if line.lstrip(_SPACE).startswith(b"{")]]
    while stack:
        part = stack.pop()
        joined = b"\n".join(line for _, line in part) + b"\n"
        table = _parsed(joined, reading.schema) if part else None
        if table is not None and table.num_rows != len(part):
            table = None  # a line holding two objects
        if table is None and len(part) == 1:
            problems, table = _json_problems(*part[0], reading)
            bad.extend(problems)
        if table is not None:
            tables.append(table)
            numbers.extend(n for n, _ in part)
        elif len(part) > 1:
            stack += [part[len(part) // 2 :], part[: len(part) // 2]]
    frame = _frame(pa.concat_tables([reading.schema.empty_table(), *tables]))
    frame = frame.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64))
    keyed, missing = _keyed(frame, data, number, reading)
    return keyed, pl.concat([pl.DataFrame(bad, schema=BAD_SCHEMA), missing])


def _parsed(data: bytes | memoryview, schema: pa.Schema) -> pa.Table | None:
    """The records of `data`, or None when a line is not a clean record. Text is checked to
    be UTF-8, and a decimal to fit its precision, in the columns read only (pyarrow's JSON
    reader checks neither)."""
    return _attempt(data, schema)[0]


def _attempt(data: bytes | memoryview, schema: pa.Schema) -> tuple[pa.Table | None, str]:
    """(the records of `data`, "") or (None, why not)."""
    try:
        table = _parse(data, schema)
        table.validate(full=True)
    except pa.ArrowInvalid as exc:
        return None, first_line(exc).removeprefix("JSON parse error: ")
    return table, ""


def _json_problems(
    number: int, line: bytes, reading: _Reading
) -> tuple[list[dict[str, object]], pa.Table | None]:
    """Why one line is not a clean record: a bad row per column where one applies. Or, when
    it is one after all (what pyarrow could not read is in a column that is not read: text
    that is not UTF-8, a lone surrogate escape, a number no float holds), its record."""
    try:
        text, utf8 = line.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = line.decode("utf-8", "surrogateescape"), False
    reason = "not_json" if utf8 else "bad_encoding"
    try:
        record = json.loads(
            text,
            parse_float=_Literal,
            parse_int=_Literal,
            parse_constant=_Literal,
            object_pairs_hook=_object,
        )
    except ValueError as exc:
        message = f"not valid JSON: {exc}" if utf8 else "the line is not UTF-8 text"
        return [bad_row(number, reason, message, value=_shown(text))], None
    if not isinstance(record, _Object):
        message = f"the line holds {_kind(record)}, not a JSON object"
        return [bad_row(number, reason, message, value=_shown(text))], None
    schema = reading.schema
    twice = [n for n in record.twice if n in schema.names]
    wanted = [n for n in schema.names if n in record and n not in twice]
    readable = {n: _text(record[n]) for n in wanted if _readable(record[n])}
    if twice:
        what = "appears twice in one object: which of its values is meant is not known"
        return [bad_row(number, "not_json", f"{n} {what}", None, n, readable) for n in twice], None
    problems = [
        problem
        for name in wanted
        if (problem := _value_problem(number, name, record[name], utf8, reading, readable))
    ]
    if problems:
        return problems, None
    # The columns read, each as it was written: what pyarrow could not read is left out.
    clean = "{" + ", ".join(f"{json.dumps(n)}: {_raw(record[n])}" for n in wanted) + "}\n"
    table, error = _attempt(clean.encode(), schema)
    if table is None:
        return [bad_row(number, "wrong_type", error, _shown(text), record=readable)], None
    return [], table


def _object(pairs: list[tuple[str, object]]) -> _Object:
    record = _Object(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        twice: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in twice:
                twice.append(key)
            seen.add(key)
        record.twice = tuple(twice)
    return record


def _kind(value: object) -> str:
    """What a JSON value is, for a message."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, _Literal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _value_problem(
    number: int,
    name: str,
    value: object,
    utf8: bool,
    reading: _Reading,
    readable: dict[str, str | None],
) -> dict[str, object] | None:
    """The bad row for column `name` of one line, or None when its value reads exactly."""
    field = reading.schema.field(name)
    kind = reading.types.get(name, str(field.type))
    shown_value = _shown(_text(value) or "")
    if not _encodable(value):
        message = f"{name} is not UTF-8 text"
        lone = _SURROGATE.search(_text(value) or "") if utf8 else None
        if lone:  # the line is UTF-8: the text holds half of a surrogate pair, escaped
            code = f"\\u{ord(lone.group()):04x}"
            message = f"{name} holds {code}, a lone surrogate escape: no character, not UTF-8"
        return bad_row(number, "bad_encoding", message, shown_value, name, readable)
    if isinstance(value, (dict, list)):
        what = "an object" if isinstance(value, dict) else "an array"
        message = f"{name} '{shown_value}' is {what}, not a valid {kind}"
        return bad_row(number, "wrong_type", message, shown_value, name, readable)
    # The value alone: whatever else the line holds, this is about this column.
    _, error = _attempt(f"{{{json.dumps(name)}: {_raw(value)}}}\n".encode(), pa.schema([field]))
    if not error:
        return None
    if "requires scale" in error:
        message = f"{name} '{shown_value}' has more decimal places than {kind} holds"
        return bad_row(number, "precision_loss", message, shown_value, name, readable)
    message = f"{name} '{shown_value}' is not a valid {kind}"
    return bad_row(number, "wrong_type", message, shown_value, name, readable)


def _raw(value: object) -> str:
    """A JSON value as JSON text that reads as the same value (a number as it was written)."""
    if isinstance(value, _Literal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_raw(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_raw(v) for v in value) + "]"
    return json.dumps(value)


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
    """False for text holding bytes that were not UTF-8 (decoded as surrogates), or a lone
    surrogate escape (`\\ud800`), which no UTF-8 text holds."""
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
    """Text for a message: bytes that were not UTF-8, and lone surrogates, shown as U+FFFD."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate escape: it stands for no byte
        text = _SURROGATE.sub("\ufffd", text)
    return shown(text)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
