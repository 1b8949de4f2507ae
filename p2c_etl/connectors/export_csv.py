"""CSV files of the files layout, read exactly: fields as bytes through pyarrow's streaming
reader, so that text that is not UTF-8, broken quoting and a wrong number of fields each become
a bad row naming the line the record starts on, and line numbers stay exact when quoted values
span lines. An empty field is null and a quoted empty field (`""`) empty text, as polars writes
them.

Lines end in LF or CRLF. A bare CR outside a quoted value (old Mac line endings) is refused:
one line naming the file and line (a CR inside a quoted value is kept as it is).

Quoting (RFC 4180): a quoted value may span lines; it is closed by a quote followed by the
delimiter or the end of the line. pyarrow reads more than that (text after a closing quote is
joined to the value, and a quote left open swallows the lines after it), so the bytes are
scanned first, as pyarrow reads them (the records found are its records):

- a record with text after a closing quote (`"Blue Yonder"Airlines`) is `broken_quoting`;
- a record holding a quote that is never closed (it runs to the end of the file), or whose
  quoted value spans lines and then is "closed" by a quote followed by text, is broken too,
  and so is a record that spans lines but has the wrong number of fields (a quote opened on
  its first line ran past where it should have closed). Each line of such a record is one
  record of the file, so each is a `broken_quoting` bad row of its own: the first line says
  what is wrong, every later one that it was swallowed by the quote opened at that line,
  with what the line holds when it reads on its own (its source key, for the reject).

A quoted value that spans lines, closes well and leaves the record with the right number of
fields is one record: that cannot be told from a value with a line break in it.

The scan runs in a thread a block ahead of pyarrow, which reads the file through `_Blanked`
and waits for it. A block without a quote or a bare CR is passed over; any other is checked
at once by one regular expression of well-formed fields (Rust's, through polars, the pieces
of a block in parallel). Only where that stops matching is the file followed quote by quote
(`_Scan._follow`), record by record, until a run of records reads well.
"""

from __future__ import annotations

import bisect
import json
import mmap
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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
_SCAN_AFTER_DAMAGE = 1 << 16  # bytes checked at once after a broken record (then doubling)
_CLEAN_RUN = 32  # records that read well, one by one, before blocks are checked again
_PIECE = 1 << 20  # bytes a piece of a block is checked in (the pieces in parallel)
_STILL_IN = re.compile(rb'[^"]*(?:""[^"]*)*')  # inside a quoted value, to the end
_OPEN_AT_END = re.compile(rb'"[^"]*(?:""[^"]*)*')  # a quoted value that does not close
_QUOTE, _LF, _CR = 0x22, 0x0A, 0x0D
_BOM = b"\xef\xbb\xbf"
_BARE_CR = (
    "a line ends in a bare CR (U+000D, old Mac line endings); lines must end in LF or CRLF "
    "(a CR inside a quoted value is kept)"
)


def csv_header(path: Path) -> tuple[list[str], str]:
    """Column names and delimiter (`;` or `,`, whichever the header row has more of)."""
    with path.open("rb") as handle:
        first = handle.readline().removeprefix(_BOM)
    first = first.removesuffix(b"\n").removesuffix(b"\r")
    if b"\r" in first:
        raise ConfigError(f"{path}: line 1: {_BARE_CR}")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: line 1: the header row is not UTF-8") from None
    if not text:
        raise ConfigError(f"{path}: line 1: no header row")
    delimiter = ";" if text.count(";") > text.count(",") else ","
    names, broken, _ = split_line(text, delimiter)
    if broken is not None:
        raise ConfigError(f"{path}: line 1: broken quoting in the header row")
    return [(n or "").strip() for n in names], delimiter


def split_line(
    text: str, delimiter: str, strict: bool = False
) -> tuple[list[str | None], int | None, bool]:
    """The fields of one line, read strictly: a quoted field ends at a quote followed by the
    delimiter or the end of the line (`""` inside is a quote); a quote inside an unquoted field
    is text, as pyarrow reads it (broken quoting too when `strict`). An empty unquoted field
    is None.

    Returns (fields, the index of the first field whose quoting is broken or None, whether a
    quote is still open at the end of `text`); a broken field is None."""
    fields: list[str | None] = []
    broken: int | None = None
    at, size = 0, len(text)
    while True:
        if text.startswith('"', at):
            parts, start = [], at + 1
            while True:
                close = text.find('"', start)
                if close < 0:
                    fields.append(None)
                    return fields, len(fields) - 1 if broken is None else broken, True
                parts.append(text[start:close])
                if not text.startswith('"', close + 1):
                    break
                parts.append('"')
                start = close + 2
            at = close + 1
            if at < size and text[at] != delimiter:  # text after the closing quote
                broken = len(fields) if broken is None else broken
                fields.append(None)
                end = text.find(delimiter, at)
                at = size if end < 0 else end
            else:
                fields.append("".join(parts))
        else:
            end = text.find(delimiter, at)
            end = size if end < 0 else end
            if strict and '"' in text[at:end]:
                broken = len(fields) if broken is None else broken
                fields.append(None)
            else:
                fields.append(text[at:end] or None)
            at = end
        if at >= size:
            return fields, broken, False
        at += 1  # past the delimiter


def csv_batches(path: Path, columns: list[str]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Fields are read as bytes (text that is not UTF-8 is a bad row, not a failed file);
    a record with the wrong number of fields, or with broken quoting, is a bad row.

    Line numbers: pyarrow numbers records (the header is 1) and reports the malformed ones
    with their number and text; a record starts on the line after the previous one ends, and
    a quoted value may hold line breaks, so lines are counted from the values themselves.
    The records the scan finds broken are handed to pyarrow as blank lines (no record, and
    the lines after keep their numbers) and become bad rows here.
    """
    names, delimiter = csv_header(path)
    missing_columns(path, names, columns)
    with path.open("rb") as handle:
        handle.readline()
        if not handle.read(1):
            return  # a header row and no record
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            scan = _Scan(data, delimiter, path)
            ahead = threading.Thread(target=scan.run, name=f"scan {path.name}", daemon=True)
            ahead.start()  # a block ahead of pyarrow, which waits for it (`_Blanked.read`)
            try:
                layout = _Layout(names, columns, delimiter)
                yield from _parsed(path, _Blanked(data, scan), layout, scan)
            finally:
                scan.cancel()
                ahead.join()


@dataclass(frozen=True)
class _Layout:
    names: list[str]
    columns: list[str]
    delimiter: str


def _parsed(
    path: Path, source: _Blanked, layout: _Layout, scan: _Scan
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    names, columns = layout.names, layout.columns
    invalid: list[tuple[int, str]] = []
    given = 0  # the broken records whose bad rows are given

    def skip(row: pacsv.InvalidRow) -> str:
        invalid.append((row.number or 0, row.text))
        return "skip"

    def due(before: int | None) -> pl.DataFrame:
        """The bad rows of the broken records that start before line `before` (all: None);
        pyarrow has read past them, so the scan has found them."""
        nonlocal given
        rows: list[dict[str, object]] = []
        while given < len(scan.found) and (before is None or scan.found[given].line < before):
            rows += scan.rows(scan.found[given], layout)
            given += 1
        return pl.DataFrame(rows, schema=BAD_SCHEMA)

    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(
                use_threads=False, block_size=_PARSE_BLOCK, column_names=names, skip_rows=1
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=layout.delimiter,
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
        state = _CsvLines(layout)
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
            bad = pl.concat([bad, undecoded.select(BAD_SCHEMA.names()), due(state.line)])
            yield frame.select(*columns, LINE), bad
            invalid = [i for i in invalid if i[0] >= state.record]
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {first_line(exc)}") from None
    scan.wait(None)
    if invalid or given < len(scan.found):
        empty = pl.DataFrame(
            schema={
                **{c: pl.String() for c in names},
                ROW: pl.Int64(),
                _NL: pl.Int64(),
                _BLANK: pl.Boolean(),
            }
        )
        frame, bad = state.number(empty, invalid, final=True)
        yield frame.select(*columns, LINE), pl.concat([bad, due(None)])


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

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
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
        rows: list[dict[str, object]] = []
        for (_, text), at in zip(mine, bad_lines.to_list(), strict=True):
            rows += _malformed(text, at, self.layout)
        bad = pl.DataFrame(rows, schema=BAD_SCHEMA)
        consumed = frame.height + len(mine)
        self.record += consumed
        self.line += int(spans["span"].sum()) + int(weights.sum())
        return out.drop(_BLANK), bad


def _malformed(text: str, line: int, layout: _Layout) -> list[dict[str, object]]:
    """The bad rows of a record pyarrow found with the wrong number of fields: one, or, when
    it spans lines (a quote opened on its first line ran on past where it should have closed),
    one for each of its lines."""
    fields, broken, unclosed = split_line(text, layout.delimiter)
    expected, found = len(layout.names), len(fields)
    if "\n" in text:
        lines = text.split("\n")
        detail = (
            f"a quote opened on this line runs on to line {line + len(lines) - 1}, and the "
            f"record it makes has {found} fields, not {expected}"
        )
        return _line_rows(lines, line, line, detail, layout)
    if unclosed or broken is not None or text.count('"') % 2:
        message = (
            f"broken quoting: a quote opened on this line is not closed where it should be "
            f"(expected {expected} fields, found {found})"
        )
        reason = "broken_quoting"
    else:
        message = f"expected {expected} fields, found {found}"
        reason = "wrong_field_count"
    return [{LINE: line, "field": None, "reason": reason, "value": shown(text), "message": message}]


def _line_rows(
    lines: list[str] | Iterator[str], first: int, opened: int, detail: str, layout: _Layout
) -> list[dict[str, object]]:
    """A `broken_quoting` bad row for each line of a broken record that holds a record (an
    empty line does not): the first says `detail`, each later one that the quote opened at
    line `opened` swallowed it. Each carries what its line holds, read on its own: the fields
    before the broken one on the first line, the whole line on a later one when it reads as
    a record with the right number of fields."""
    names, columns, delimiter = layout.names, layout.columns, layout.delimiter
    rows: list[dict[str, object]] = []
    for offset, line in enumerate(lines):
        text = line.removesuffix("\r")
        fields, broken, unclosed = split_line(text, delimiter, strict=offset > 0)
        intact = broken is None and not unclosed and len(fields) == len(names)
        if offset == 0:
            column = (
                f" (column {names[broken]})" if broken is not None and broken < len(names) else ""
            )
            message = f"broken quoting: {detail}{column}"
            if not unclosed and len(fields) == len(names):
                readable = fields  # the broken value is null
            else:  # the values before the broken one
                readable = fields[:broken] if broken is not None else []
        else:
            if not text or (intact and all(f is None for f in fields)):
                continue  # an empty line: no record
            message = f"broken quoting: swallowed by the quote opened at line {opened}"
            readable = fields if intact else []
        record = None
        if readable and "\ufffd" not in text:
            held = dict(zip(names, readable, strict=False))
            record = json.dumps({c: held[c] for c in columns if c in held}, ensure_ascii=False)
        rows.append(
            {
                LINE: first + offset,
                "field": None,
                "reason": "broken_quoting",
                "value": shown(text),
                "message": message,
                RECORD: record,
            }
        )
    return rows


@dataclass(frozen=True)
class _Broken:
    """A record whose quoting is broken: bytes `start` up to `end` (the line break that ends
    it, or the end of the file), lines `line` to `last`; the quote that went wrong opened on
    line `opened`."""

    start: int
    end: int
    line: int
    last: int
    opened: int
    detail: str


class _Scan:
    """The records of a CSV file whose quoting is broken, found by reading its bytes as
    pyarrow's parser reads them: at the start of a field a quote opens a quoted value, in
    which `""` is a quote and any other quote closes it; elsewhere a quote is text; a line
    break outside a quoted value ends the record.

    A block of lines is checked at once, by one regular expression (Rust's, through polars):
    fields, each quoted and closed by a quote followed by the delimiter or a line break, or
    unquoted; a block that does not match to its end (or to a quoted value still open at
    its end, that the next block goes on with) holds a broken record, or a bare CR. That
    record is followed quote by quote (`_follow`), and so are the records after it, until a
    run of them reads well; then blocks again. A block without a quote or a bare CR is not
    looked at."""

    def __init__(self, data: mmap.mmap, delimiter: str, path: Path) -> None:
        self.data, self.size, self.path = data, len(data), path
        self.delimiter = ord(delimiter)
        self.ends = bytes([self.delimiter, _LF, _CR])  # what may follow a closing quote
        self.marks: list[tuple[int, int]] = []  # (byte, its line) in order, a block apart at most
        self.found: list[_Broken] = []  # in file order
        self.ready = 0  # every broken record that starts before this byte is in `found`
        self.done, self.cancelled = False, False
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        d = re.escape(delimiter)
        quoted, end = '"(?:[^"]|"")*"', f"(?:{d}|\\r?\\n)"
        fields = f'(?:(?:{quoted}|(?:[^"{d}\\r\\n][^{d}\\r\\n]*)?){end})*'
        self.fields_out = f"^{fields}"  # from the start of a record
        self.fields_in = f'^(?:[^"]|"")*"{end}{fields}'  # from inside a quoted value

    def run(self) -> None:
        """Scan the file (in its own thread), `found` and `ready` kept up to date."""
        try:
            self._scan()
        except BaseException as exc:  # handed to the reader, which raises it
            self.error = exc
        finally:
            with self.changed:
                self.done = True
                self.changed.notify_all()

    def wait(self, upto: int | None) -> None:
        """Until the broken records that start before byte `upto` (None: all) are found."""
        with self.changed:
            while not self.done and (upto is None or self.ready < upto):
                self.changed.wait()
            if self.error is not None and (upto is None or self.ready < upto):
                raise self.error

    def cancel(self) -> None:
        self.cancelled = True

    def _publish(self, ready: int) -> None:
        with self.changed:
            self.ready = ready
            self.changed.notify_all()

    def _scan(self) -> None:
        data, size = self.data, self.size
        cursor = data.find(b"\n") + 1  # past the header row
        if cursor <= 0 or cursor >= size:
            return
        self.marks.append((cursor, 2))
        found = self.found
        sync, inside, step = cursor, False, _PARSE_BLOCK  # a record starts at `sync`
        while cursor < size and not self.cancelled:
            stop = self._block_end(cursor, step)
            if not inside and data.find(b'"', cursor, stop) < 0 and not self._bare_cr(cursor, stop):
                cursor = sync = stop
            else:
                block = data[cursor:stop]
                inside, failed = self._check(
                    block + (b"" if block.endswith(b"\n") else b"\n"), inside
                )
                if failed is not None:
                    start = self._record_start(cursor + failed, sync)
                    cursor = sync = self._follow_from(start, found)
                    inside = False
                    self._publish(sync)
                    step = _SCAN_AFTER_DAMAGE
                    continue
                cursor = stop
                sync = sync if inside else stop
            self._publish(sync)  # a record open at `stop` may still turn out broken
            step = min(step * 2, _PARSE_BLOCK)
        if inside and not self.cancelled:  # a quote still open at the end of the file
            start = self._record_start(size, sync)
            end, problems, _ = self._follow(start)
            if problems:
                found.append(self._broken(start, end, problems))
        self._publish(size)

    def _block_end(self, cursor: int, step: int) -> int:
        """Where the block from `cursor` ends: after a line break, about `step` bytes on."""
        if cursor + step >= self.size:
            return self.size
        brk = self.data.rfind(b"\n", cursor, cursor + step)
        if brk < 0:  # a line longer than the step
            brk = self.data.find(b"\n", cursor + step)
        return self.size if brk < 0 else brk + 1

    def _bare_cr(self, start: int, stop: int) -> bool:
        if self.data.find(b"\r", start, stop) < 0:
            return False
        chunk = self.data[start:stop]
        return chunk.count(b"\r") != chunk.count(b"\r\n")

    def _check(self, block: bytes, inside: bool) -> tuple[bool, int | None]:
        """(whether `block` ends inside a quoted value, None) when its quoting is well formed
        (it starts inside one when `inside`), else (False, where it stops being). Checked in
        pieces of whole lines at once (polars spreads them over its threads), each as if it
        started a record, and those after a piece that ends inside a quoted value again as
        starting inside one."""
        starts, at = [0], _PIECE
        while at < len(block) and (brk := block.find(b"\n", at)) >= 0 and brk + 1 < len(block):
            starts.append(brk + 1)
            at = brk + 1 + _PIECE
        pieces = [block[a:b] for a, b in zip(starts, [*starts[1:], len(block)], strict=True)]
        out = self._rests(pieces, self.fields_out)
        ends_inside = [self._open_at_end(p, r) for p, r in zip(pieces, out, strict=True)]
        after = [i for i in range(1, len(pieces)) if ends_inside[i - 1]]
        again = dict(
            zip(after, self._rests([pieces[i] for i in after], self.fields_in), strict=True)
        )
        for i, (start, piece) in enumerate(zip(starts, pieces, strict=True)):
            if not inside:
                rest = out[i]
            elif i in again:
                rest = again[i]
            else:
                rest = self._rests([piece], self.fields_in)[0]
            if inside and rest == len(piece):  # the value does not close in this piece
                if not _STILL_IN.fullmatch(piece):
                    return False, start
                continue
            if rest and not (ends_inside[i] if rest == out[i] else self._open_at_end(piece, rest)):
                return False, start + len(piece) - rest
            inside = rest > 0
        return inside, None

    @staticmethod
    def _rests(pieces: list[bytes], pattern: str) -> list[int]:
        """How many bytes of each piece are left after what `pattern` matches at its start."""
        if not pieces:
            return []
        try:  # the common case, every piece UTF-8
            text = pl.Series("piece", pieces, dtype=pl.Binary).cast(pl.String)
            latin = pl.Series([False] * len(pieces))
        except pl.exceptions.PolarsError:  # a piece that is not is read a character a byte
            decoded, flags = [], []
            for piece in pieces:
                try:
                    decoded.append(piece.decode("utf-8"))
                    flags.append(False)
                except UnicodeDecodeError:
                    decoded.append(piece.decode("latin-1"))
                    flags.append(True)
            text, latin = pl.Series(decoded, dtype=pl.String), pl.Series(flags)
        rest = pl.col("text").str.replace(pattern, "")
        return (
            pl.LazyFrame({"text": text, "latin": latin})
            .select(pl.when("latin").then(rest.str.len_chars()).otherwise(rest.str.len_bytes()))
            .collect()
            .to_series()
            .to_list()
        )

    @staticmethod
    def _open_at_end(piece: bytes, rest: int) -> bool:
        """Whether the `rest` bytes left at the end of `piece` are a quoted value that goes on
        past it (a line break inside it)."""
        return bool(rest) and _OPEN_AT_END.fullmatch(piece, len(piece) - rest) is not None

    def _follow_from(self, start: int, found: list[_Broken]) -> int:
        """Follow the records from `start` one by one, keeping the broken ones, until
        `_CLEAN_RUN` in a row read well; where the next one starts."""
        clean = 0
        while start < self.size and clean < _CLEAN_RUN:
            end, problems, _ = self._follow(start)
            if problems:
                found.append(self._broken(start, end, problems))
                clean = 0
            else:
                clean += 1
            start = end + (2 if self.data[end : end + 2] == b"\r\n" else 1)
        return min(start, self.size)

    def _record_start(self, at: int, sync: int) -> int:
        """Where the record that holds byte `at` starts: after the last line break before
        `at` that is outside a quoted value (a record starts at `sync`, and its quotes up
        to `at` are well formed, so a quoted value is open where an odd number of them is
        before)."""
        data, high = self.data, at
        quotes = self._count(b'"', sync, at)
        while True:
            lf = data.rfind(b"\n", sync, high)
            brk = max(lf, data.rfind(b"\r", max(lf, sync), high))
            if brk < 0:
                return sync
            quotes -= self._count(b'"', brk, high)
            if quotes % 2 == 0:
                return brk + 1
            high = brk

    def _follow(self, start: int) -> tuple[int, list[tuple[str, int, int]], int]:
        """Read the record that starts at `start` as pyarrow does: (the line break that ends
        it or the end of the file, what is wrong with its quoting as (what, the opening
        quote, where), the quotes it holds)."""
        data, size = self.data, self.size
        at, inside, opened, quotes = start, False, start, 0
        problems: list[tuple[str, int, int]] = []
        while True:
            if not inside:
                lf = data.find(b"\n", at)
                bound = size if lf < 0 else lf
                quote = data.find(b'"', at, bound)
                cr = data.find(b"\r", at, bound if quote < 0 else quote)
                if cr >= 0:  # pyarrow ends the record here too
                    if cr + 1 < size and data[cr + 1] != _LF:
                        raise ConfigError(f"{self.path}: line {self._line_at(cr)}: {_BARE_CR}")
                    return cr, problems, quotes
                if quote < 0:
                    return bound, problems, quotes
                quotes += 1
                if quote == start or data[quote - 1] in self.ends:
                    inside, opened = True, quote
                at = quote + 1
                continue
            quote = data.find(b'"', at)
            if quote < 0:
                problems.append(("open", opened, size))
                return size, problems, quotes
            quotes += 1
            after = data[quote + 1] if quote + 1 < size else None
            if after == _QUOTE:
                quotes, at = quotes + 1, quote + 2
                continue
            inside, at = False, quote + 1
            if after is not None and after not in self.ends:
                problems.append(("text", opened, quote))

    def _broken(self, start: int, end: int, problems: list[tuple[str, int, int]]) -> _Broken:
        what, opened, where = problems[0]
        line, last = self._line_at(start), self._line_at(end)
        opened_on, where_on = self._line_at(opened), self._line_at(where)
        on = "this line" if opened_on == line else f"line {opened_on}"
        if what == "open":
            detail = (
                f"a quote opened on {on} is never closed, so the record runs to the end of the file"
            )
        elif where_on > opened_on:
            detail = (
                f"a quote opened on {on} is not closed where it should be: the value runs on "
                f"to line {where_on}, where a quote is followed by text"
            )
        else:
            detail = "text follows the closing quote of a quoted value"
        return _Broken(start, end, line, last, opened_on, detail)

    def rows(self, broken: _Broken, layout: _Layout) -> list[dict[str, object]]:
        """The bad rows of a broken record: one for each of its lines that holds a record."""

        def lines() -> Iterator[str]:
            at = broken.start
            while True:
                brk = self.data.find(b"\n", at, broken.end)
                stop = broken.end if brk < 0 else brk
                yield self.data[at:stop].decode("utf-8", "replace")
                if brk < 0:
                    return
                at = brk + 1

        return _line_rows(lines(), broken.line, broken.opened, broken.detail, layout)

    def _count(self, byte: bytes, start: int, stop: int) -> int:
        total = 0
        while start < stop:
            upto = min(stop, start + BLOCK)
            total += self.data[start:upto].count(byte)
            start = upto
        return total

    def _line_at(self, at: int) -> int:
        """The line byte `at` is on, counted from the nearest mark before it; asked in file
        order, each answer is a mark (so counting stays short), and marks are made a block
        apart when the answer is further on."""
        while self.marks[-1][0] + BLOCK < at:
            start, line = self.marks[-1]
            self.marks.append((start + BLOCK, line + self._count(b"\n", start, start + BLOCK)))
        i = bisect.bisect_right(self.marks, at, key=lambda m: m[0]) - 1
        start, line = self.marks[i]
        line += self._count(b"\n", start, at)
        if i == len(self.marks) - 1 and at > start:
            self.marks.append((at, line))
        return line


class _Blanked:
    """The file as pyarrow is to read it: each broken record's bytes replaced by its line
    breaks alone, blank lines that hold no record, so every later line keeps its number.
    A read waits for the scan to have passed what it gives."""

    def __init__(self, data: mmap.mmap, scan: _Scan) -> None:
        self.data, self.scan, self.at, self.closed = data, scan, 0, False
        self.next = 0  # the next broken record of `scan.found` to pass
        self.blank = 0  # line breaks still to give for the record being passed

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def read(self, size: int = -1) -> bytes:
        total = len(self.data)
        want = size if size >= 0 else total
        found, out = self.scan.found, []
        while want > 0:
            self.scan.wait(min(self.at + want, total))  # again after a broken record
            if self.blank:
                given = min(self.blank, want)
                out.append(b"\n" * given)
                self.blank, want = self.blank - given, want - given
                continue
            if self.next < len(found) and self.at == found[self.next].start:
                broken = found[self.next]
                self.next, self.at, self.blank = (
                    self.next + 1,
                    broken.end,
                    broken.last - broken.line,
                )
                continue
            stop = found[self.next].start if self.next < len(found) else total
            piece = self.data[self.at : min(stop, self.at + want)]
            if not piece:
                break
            out.append(piece)
            self.at, want = self.at + len(piece), want - len(piece)
        return b"".join(out)
