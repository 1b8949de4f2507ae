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

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from p2c_etl.contracts import Contract
from p2c_etl.errors import ConfigError
from p2c_etl.transform import LINE, ROW
from p2c_etl.validate import coerce

BAD_SCHEMA = pl.Schema(
    {
        LINE: pl.Int64(),
        "field": pl.String(),
        "reason": pl.String(),
        "value": pl.String(),
        "message": pl.String(),
    }
)
_FORMATS = ("parquet", "csv", "jsonl")
_BLOCK = 1 << 22  # bytes per CSV parse block and per line-count read
_NL, _BLANK = "__breaks", "__blank"


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
        while block := handle.read(_BLOCK):
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
    problems = pl.concat(bad) if bad else _empty_bad()
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
        return _csv_batches(path, columns)
    return _jsonl_batches(path, columns, dtypes, rows)


def _missing(path: Path, present: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        raise ConfigError(f"{path}: missing columns {', '.join(missing)}")


def _empty_bad() -> pl.DataFrame:
    return pl.DataFrame(schema=BAD_SCHEMA)


def _bad(line: int, reason: str, message: str, value: str | None = None) -> dict[str, object]:
    return {LINE: line, "field": None, "reason": reason, "value": value, "message": message}


# --- Parquet ------------------------------------------------------------------------------


def _parquet_batches(
    path: Path, columns: list[str], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    _missing(path, parquet.schema_arrow.names, columns)
    start = 1
    batches = parquet.iter_batches(batch_size=rows, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(f"{path}: row {start} on: cannot read: {_first_line(exc)}") from None
        if batch is None:
            return
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        lines = pl.int_range(start, start + frame.height, dtype=pl.Int64, eager=True)
        yield frame.with_columns(lines.alias(LINE)), _empty_bad()
        start += frame.height


# --- CSV ----------------------------------------------------------------------------------


def _csv_header(path: Path) -> tuple[list[str], str]:
    """Column names and delimiter (`;` or `,`, whichever the header row has more of)."""
    with path.open("rb") as handle:
        first = handle.readline().removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: line 1: the header row is not UTF-8") from None
    if not text:
        raise ConfigError(f"{path}: line 1: no header row")
    delimiter = ";" if text.count(";") > text.count(",") else ","
    names = next(csv.reader([text], delimiter=delimiter))
    return [n.strip() for n in names], delimiter


def _csv_batches(path: Path, columns: list[str]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Fields are read as bytes (text that is not UTF-8 is a bad row, not a failed file);
    a record with the wrong number of fields, as broken quoting makes, is a bad row.

    Line numbers: pyarrow numbers records (the header is 1) and reports the malformed ones
    with their number and text; a record starts on the line after the previous one ends, and
    a quoted value may hold line breaks, so lines are counted from the values themselves.
    """
    names, delimiter = _csv_header(path)
    _missing(path, names, columns)
    with path.open("rb") as handle:
        handle.readline()
        if not handle.read(1):
            return  # a header row and no record
    invalid: list[tuple[int, str]] = []

    def skip(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number or 0, row.text))
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                use_threads=False, block_size=_BLOCK, column_names=names, skip_rows=1
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=skip,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names}, strings_can_be_null=False
            ),
        )
        state = _CsvLines(len(names), delimiter)
        held: tuple[pl.DataFrame, pl.DataFrame] | None = None  # one batch behind: see below
        for batch in reader:
            raw = pl.from_arrow(batch)
            assert isinstance(raw, pl.DataFrame)
            text, undecoded = _decoded(raw, names)
            frame, bad = state.number(text, invalid)
            undecoded = undecoded.join(frame.select(ROW, LINE), on=ROW)
            frame = frame.join(undecoded.select(ROW), on=ROW, how="anti")
            if held is not None:
                yield held
            held = (frame, pl.concat([bad, undecoded.select(BAD_SCHEMA.names())]))
            invalid = [i for i in invalid if i[0] >= state.record]
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {_first_line(exc)}") from None
    if held is not None:
        frame, bad = held
        # A quote left open runs to the end of the file; when the fields still add up, that
        # is one long last record. An odd number of quotes in the file gives it away.
        if not invalid and frame.height and frame[_NL][-1] > 0 and _quotes(path) % 2:
            last = frame.tail(1)
            record = delimiter.join(str(v or "") for v in last.select(names).row(0))
            broken = {**_bad_csv(record, len(names), delimiter), LINE: last[LINE][0]}
            broken["reason"] = "broken_quoting"
            broken["message"] = (
                "broken quoting: a quote opened in this record is never closed, so the "
                "record runs to the end of the file"
            )
            frame, bad = frame.head(-1), pl.concat([bad, pl.DataFrame([broken], schema=BAD_SCHEMA)])
        yield frame.select(*columns, LINE), bad
    if invalid:
        empty = pl.DataFrame(
            schema={
                **{c: pl.String() for c in names},
                ROW: pl.Int64(),
                _NL: pl.Int64(),
                _BLANK: pl.Boolean(),
            }
        )
        frame, bad = state.number(empty, invalid, final=True)
        yield frame.select(*columns, LINE), bad


def _quotes(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            count += block.count(b'"')
    return count


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _decoded(raw: pl.DataFrame, names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bytes to text, plus `__row`; a value that is not UTF-8 is a bad row (`ROW` set)."""
    frame = raw.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    bad: list[dict[str, object]] = []
    casts = []
    breaks = pl.Series(_NL, [0] * raw.height, dtype=pl.Int64)  # line breaks in the raw bytes
    for name in names:
        try:
            text = raw[name].cast(pl.String)
            casts.append(pl.Series(name, text))
            breaks = breaks + text.str.count_matches("\n").fill_null(0).cast(pl.Int64)
        except pl.exceptions.PolarsError:
            values = []
            counts = []
            for i, value in enumerate(raw[name].to_list()):
                counts.append(value.count(b"\n"))
                try:
                    values.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(None)
                    bad.append(
                        {
                            ROW: i,
                            "field": name,
                            "reason": "bad_encoding",
                            "value": value.decode("utf-8", "replace"),
                            "message": f"{name} is not UTF-8 text",
                        }
                    )
            casts.append(pl.Series(name, values, pl.String))
            breaks = breaks + pl.Series(counts, dtype=pl.Int64)
    # A line with no values at all (an empty line) is no record; judged on the bytes, so a
    # record whose only values are not UTF-8 is still a record (and a reject).
    blank = raw.select(pl.all_horizontal([pl.col(n) == b"" for n in names]).alias(_BLANK))
    schema = {ROW: pl.Int64(), **{k: v for k, v in BAD_SCHEMA.items() if k != LINE}}
    decoded = frame.with_columns(*casts, breaks, blank[_BLANK])
    return decoded, pl.DataFrame(bad, schema=schema)


class _CsvLines:
    """Carries record and line numbers from one parsed batch to the next."""

    def __init__(self, fields: int, delimiter: str) -> None:
        self.fields, self.delimiter = fields, delimiter
        self.record, self.line = 2, 2  # the first record after the header

    def number(
        self, frame: pl.DataFrame, invalid: list[tuple[int, str]], final: bool = False
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`frame` (parsed rows) with `__line`, blank lines dropped; and the malformed
        records that come before the last parsed one (all of them when `final`)."""
        spans = frame.select((pl.col(_NL) + 1).alias("span"), pl.col(_BLANK).alias("blank"))
        # The k-th parsed row is record `record + k`, pushed back by each malformed record
        # numbered at or before it.
        numbers = pl.int_range(self.record, self.record + frame.height, dtype=pl.Int64, eager=True)
        before = sorted(n for n, _ in invalid)
        for number in before:
            numbers = numbers + (numbers >= number).cast(pl.Int64)
        last = numbers[-1] if frame.height else (None if not final else 1 << 62)
        mine = sorted(
            ((n, t) for n, t in invalid if final or (last is not None and n < last)),
            key=lambda item: item[0],
        )
        marks = pl.Series([n for n, _ in mine], dtype=pl.Int64)
        weights = pl.Series([t.count("\n") + 1 for _, t in mine], dtype=pl.Int64)
        # A parsed row starts after every earlier parsed row and malformed record.
        parsed_before = spans["span"].cum_sum().shift(1, fill_value=0)
        bad_before = pl.concat([pl.Series([0], dtype=pl.Int64), weights.cum_sum()])
        lines = self.line + parsed_before + bad_before.gather(marks.search_sorted(numbers))
        all_spans = pl.concat([pl.Series([0], dtype=pl.Int64), spans["span"].cum_sum()])
        bad_lines = (
            self.line + all_spans.gather(numbers.search_sorted(marks)) + bad_before.head(len(mine))
        )
        out = frame.with_columns(lines.alias(LINE)).filter(~pl.col(_BLANK))
        bad = pl.DataFrame(
            [
                {**_bad_csv(text, self.fields, self.delimiter), LINE: at}
                for (_, text), at in zip(mine, bad_lines.to_list(), strict=True)
            ],
            schema=BAD_SCHEMA,
        )
        consumed = frame.height + len(mine)
        self.record += consumed
        self.line += int(spans["span"].sum()) + int(weights.sum())
        return out.drop(_BLANK), bad


def _bad_csv(text: str, fields: int, delimiter: str) -> dict[str, object]:
    found = len(next(csv.reader([text], delimiter=delimiter), []))
    if text.count('"') % 2:
        message = (
            f"broken quoting: a quote opened on this line is not closed where it should be "
            f"(expected {fields} fields, found {found})"
        )
        reason = "broken_quoting"
    else:
        message = f"expected {fields} fields, found {found}"
        reason = "wrong_field_count"
    return {"field": None, "reason": reason, "value": _shown(text), "message": message}


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
        return _jsonl_frame(lines, numbers, schema), _empty_bad()
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
            bad.append(_bad(number, *problem, value=_shown(line.decode("utf-8", "replace"))))
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
        return "wrong_type", _first_line(exc).removeprefix("JSON parse error: ")
    return None


def _jsonl_frame(lines: list[bytes], numbers: list[int], schema: pa.Schema) -> pl.DataFrame:
    if not lines:
        frame = pl.from_arrow(schema.empty_table())
    else:
        options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        frame = pl.from_arrow(pajson.read_json(io.BytesIO(b"".join(lines)), parse_options=options))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64))


def _shown(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= 200 else text[:200] + "…"
