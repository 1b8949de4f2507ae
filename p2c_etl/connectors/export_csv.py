"""CSV files of the files layout, read exactly: fields as bytes through pyarrow's streaming
reader, so that text that is not UTF-8, broken quoting and a wrong number of fields each become
a bad row naming the line the record starts on, and line numbers stay exact when quoted values
span lines. An empty field is null and a quoted empty field (`""`) empty text, as polars writes
them."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from p2c_etl.connectors.badrows import (
    BAD_SCHEMA,
    BLOCK,
    RECORD,
    first_line,
    missing_columns,
    shown,
)
from p2c_etl.errors import ConfigError
from p2c_etl.model.rejects import LINE, ROW

_NL, _BLANK = "__breaks", "__blank"
_PARSE_BLOCK = 1 << 24  # bytes parsed at once: few batches, each handled column-wise


def csv_header(path: Path) -> tuple[list[str], str]:
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


def csv_batches(path: Path, columns: list[str]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Fields are read as bytes (text that is not UTF-8 is a bad row, not a failed file);
    a record with the wrong number of fields, as broken quoting makes, is a bad row.

    Line numbers: pyarrow numbers records (the header is 1) and reports the malformed ones
    with their number and text; a record starts on the line after the previous one ends, and
    a quoted value may hold line breaks, so lines are counted from the values themselves.
    """
    names, delimiter = csv_header(path)
    missing_columns(path, names, columns)
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
                use_threads=False, block_size=_PARSE_BLOCK, column_names=names, skip_rows=1
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=skip,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
        )
        state = _CsvLines(len(names), delimiter)
        held: tuple[pl.DataFrame, pl.DataFrame] | None = None  # one batch behind: see below
        for batch in reader:
            raw = pl.from_arrow(batch)
            assert isinstance(raw, pl.DataFrame)
            text, undecoded = _decoded(raw, names, columns)
            frame, bad = state.number(text, invalid)
            undecoded = undecoded.join(frame.select(ROW, LINE), on=ROW)
            # What could be read of those records (their source key, for the reject).
            as_json = pl.struct(columns).struct.json_encode().alias(RECORD)
            known = frame.join(undecoded.select(ROW).unique(), on=ROW, how="semi")
            undecoded = undecoded.join(known.select(ROW, as_json), on=ROW, how="left")
            frame = frame.join(undecoded.select(ROW), on=ROW, how="anti")
            if held is not None:
                yield held[0].select(*columns, LINE), held[1]
            held = (frame, pl.concat([bad, undecoded.select(BAD_SCHEMA.names())]))
            invalid = [i for i in invalid if i[0] >= state.record]
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {first_line(exc)}") from None
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
        while block := handle.read(BLOCK):
            count += block.count(b'"')
    return count


def _decoded(
    raw: pl.DataFrame, names: list[str], wanted: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Bytes to text, plus `__row`; a `wanted` value that is not UTF-8 is a bad row (`ROW`
    set). A column not read may hold anything: only its line breaks are counted."""
    frame = raw.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    schema = {ROW: pl.Int64(), **{k: v for k, v in BAD_SCHEMA.items() if k not in (LINE, RECORD)}}
    blank = pl.all_horizontal(pl.col(n).is_null() for n in names).alias(_BLANK)
    try:  # the common case, every value UTF-8: all columns at once
        decoded = frame.with_columns(pl.col(names).cast(pl.String)).with_columns(
            pl.sum_horizontal(
                pl.col(n).str.count_matches("\n", literal=True).fill_null(0) for n in names
            )
            .cast(pl.Int64)
            .alias(_NL),
            blank,
        )
        return decoded, pl.DataFrame(schema=schema)
    except pl.exceptions.PolarsError:
        pass
    bad: list[dict[str, object]] = []
    casts = []
    breaks = pl.Series(_NL, [0] * raw.height, dtype=pl.Int64)  # line breaks in the raw bytes
    for name in names:
        try:
            text = raw[name].cast(pl.String)
            casts.append(pl.Series(name, text))
            breaks = breaks + text.str.count_matches("\n").fill_null(0).cast(pl.Int64)
        except pl.exceptions.PolarsError:
            values: list[str | None] = []
            counts = []
            for i, value in enumerate(raw[name].to_list()):
                counts.append(value.count(b"\n") if value is not None else 0)
                try:
                    values.append(value.decode("utf-8") if value is not None else None)
                except UnicodeDecodeError:
                    values.append(None)
                    if name not in wanted:
                        continue
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
    decoded = frame.with_columns(*casts, breaks, raw.select(blank)[_BLANK])
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
    return {"field": None, "reason": reason, "value": shown(text), "message": message}
