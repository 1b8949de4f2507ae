"""Parquet files of the files layout, read exactly, a row-group batch at a time (rows numbered
from 1).

A column is read for what the file declares it to be. Its Parquet type must be one that holds
values of the contract type the way a JSON Lines file would, so that a value gets the same
verdict in every format (`ACCEPTED`): text where the contract wants text (an object, a list,
a map, a number or a flag is not text), whole numbers where it wants an int (a flag is not a
number, the text "0" is not an int; an int8 is), numbers or text where it wants a decimal,
flags where it wants a flag. Each value of a column of another type is a `wrong_type` bad
row. CSV, all text, is cast from text; a Parquet file declares its types.

Text that is not UTF-8 (the bytes of a string or binary column that Parquet does not check)
is a `bad_encoding` bad row naming its row and column. A binary column where the contract
wants text is read as text when its bytes are UTF-8, as writers that store text as plain
binary (Hive, older Spark) intend.

The checks on types are per column, on the file's schema; each value's bytes are checked
only when a column is binary, or when the one fast read (every column at once) fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from p2c_etl.connectors.badrows import (
    BAD_SCHEMA,
    RECORD,
    empty_bad,
    first_line,
    missing_columns,
    shown,
)
from p2c_etl.errors import ConfigError
from p2c_etl.model.casting import as_text
from p2c_etl.model.contracts import Contract
from p2c_etl.model.rejects import LINE, SHOWN

ACCEPTED: dict[str, frozenset[str]] = {
    "string": frozenset({"text", "bytes"}),
    "guid": frozenset({"text", "bytes"}),
    "int": frozenset({"integer", "float", "decimal"}),  # a float or decimal if whole
    "decimal": frozenset({"integer", "float", "decimal", "text"}),
    "bool": frozenset({"bool"}),
    "date": frozenset({"date", "timestamp", "text"}),  # a timestamp at midnight or noon UTC
    "datetime": frozenset({"timestamp", "date", "text"}),
}
"""Contract type → the kinds of Parquet column (`kind`) that hold it; a column of nulls only
(Parquet's null type) holds any."""
_SAID = {
    "text": "text",
    "bytes": "bytes",
    "integer": "a whole number",
    "float": "a floating-point number",
    "decimal": "a decimal number",
    "bool": "a flag (true or false)",
    "date": "a date",
    "timestamp": "a timestamp",
    "struct": "a struct (an object)",
    "map": "a map (an object)",
    "list": "a list (an array)",
}
_UTF8 = (
    r"^(?:[\x00-\x7F]|[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]"
    r"|[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}|\xED[\x80-\x9F][\x80-\xBF]"
    r"|\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}|\xF4[\x80-\x8F][\x80-\xBF]{2})*$"
)
"""Well-formed UTF-8 (RFC 3629: no overlong form, no surrogate, nothing past U+10FFFF), byte
by byte: pyarrow matches a binary column with RE2 in Latin-1 mode, where `\\xC2` is the byte."""


def parquet_batches(
    path: Path, contract: Contract, columns: list[str], rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(clean records with `__line`, bad records) in file order, a batch at a time."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from None
    schema = parquet.schema_arrow
    missing_columns(path, schema.names, columns)
    declared = {c: _declared(path, schema, c) for c in columns}
    refused = {
        c: kind(t)
        for c, t in declared.items()
        if kind(t) not in ACCEPTED[_base(contract.column(c).type)] | {"null"}
    }
    texts = [c for c in columns if c not in refused and kind(declared[c]) in ("text", "bytes")]
    start = 1
    if all(kind(declared[c]) != "bytes" for c in texts):
        scan = pl.scan_parquet(path).select(columns)
        try:  # polars reads twice as fast as pyarrow's batches, and checks UTF-8 itself
            for offset in range(0, max(parquet.metadata.num_rows, 1), rows):
                frame = scan.slice(offset, rows).collect()
                yield _checked(frame, start, contract, refused, _no_undecoded())
                start += frame.height
            return
        except (OSError, pl.exceptions.PolarsError):
            pass  # text that is not UTF-8, say: read on below, where each value is checked
    batches = _batches_from(parquet, columns, rows, start - 1)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            batch, undecoded = _decoded(batch, start, texts)
            arrow = pl.from_arrow(batch)
        except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
            raise ConfigError(f"{path}: row {start} on: cannot read: {first_line(exc)}") from None
        assert isinstance(arrow, pl.DataFrame)
        yield _checked(arrow, start, contract, refused, undecoded)
        start += arrow.height


def _batches_from(
    parquet: pq.ParquetFile, columns: list[str], rows: int, skip: int
) -> Iterator[pa.RecordBatch]:
    """The file's record batches from row `skip` (0-based) on."""
    for batch in parquet.iter_batches(batch_size=rows, columns=columns):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        yield batch.slice(skip)
        skip = 0


def kind(dtype: pa.DataType) -> str:
    """What a Parquet column declares it holds: text, bytes, integer, float, decimal, bool,
    date, timestamp, struct, map, list, null, or (anything else) its Arrow type."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    checks = [
        ("null", pa.types.is_null),
        ("text", pa.types.is_string),
        ("text", pa.types.is_large_string),
        ("text", pa.types.is_string_view),
        ("bytes", pa.types.is_binary),
        ("bytes", pa.types.is_large_binary),
        ("bytes", pa.types.is_binary_view),
        ("bool", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("date", pa.types.is_date),
        ("timestamp", pa.types.is_timestamp),
        ("struct", pa.types.is_struct),
        ("map", pa.types.is_map),
        ("list", pa.types.is_list),
        ("list", pa.types.is_large_list),
        ("list", pa.types.is_fixed_size_list),
        ("list", pa.types.is_list_view),
        ("list", pa.types.is_large_list_view),
    ]
    return next((name for name, check in checks if check(dtype)), str(dtype))


def _base(contract_type: str) -> str:
    return "decimal" if contract_type.startswith("decimal") else contract_type


def _declared(path: Path, schema: pa.Schema, column: str) -> pa.DataType:
    found = schema.get_all_field_indices(column)
    if len(found) > 1:
        raise ConfigError(
            f"{path}: {len(found)} columns are named {column}; which one holds the values is "
            "not known"
        )
    return schema.field(found[0]).type


def _no_undecoded() -> pl.DataFrame:
    return pl.DataFrame(schema={k: v for k, v in BAD_SCHEMA.items() if k != RECORD})


def _decoded(
    batch: pa.RecordBatch, start: int, texts: list[str]
) -> tuple[pa.RecordBatch, pl.DataFrame]:
    """`batch` with each of `texts` as text, UTF-8 throughout; a value that is not UTF-8 is
    null there, and a bad row (without its record)."""
    arrays = list(batch.columns)
    bad: list[dict[str, object]] = []
    for name in texts:
        i = batch.schema.get_field_index(name)
        array = arrays[i]
        if kind(array.type) == "text":
            try:  # the common case: one pass of pyarrow's own check
                array.validate(full=True)
                continue
            except pa.ArrowInvalid:
                pass
        raw = _as_bytes(array)
        undecoded = pc.fill_null(pc.invert(pc.match_substring_regex(raw, _UTF8)), False)
        if pc.any(undecoded).as_py():
            where = pc.indices_nonzero(undecoded).to_pylist()
            values = raw.filter(undecoded).to_pylist()
            bad += [
                {
                    LINE: start + at,
                    "field": name,
                    "reason": "bad_encoding",
                    "value": shown(value.decode("utf-8", "replace")),
                    "message": f"{name} is not UTF-8 text",
                }
                for at, value in zip(where, values, strict=True)
            ]
            raw = pc.if_else(undecoded, pa.scalar(None, raw.type), raw)
        arrays[i] = raw.view(pa.large_string())
    names = batch.schema.names
    return pa.RecordBatch.from_arrays(arrays, names=names), pl.DataFrame(
        bad, schema=_no_undecoded().schema
    )


def _as_bytes(array: pa.Array) -> pa.Array:
    """The values of a text or binary column as large binary (which pyarrow's regex reads byte
    by byte), without checking them."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type):
        array = array.view(pa.binary())
    elif pa.types.is_large_string(array.type):
        array = array.view(pa.large_binary())
    elif pa.types.is_string_view(array.type):
        array = array.view(pa.binary_view())
    return array.cast(pa.large_binary())


def _shown(text: pl.Expr) -> pl.Expr:
    """`text` cut as a bad row shows it (`badrows.shown`)."""
    cut = text.str.slice(0, SHOWN) + pl.lit("…")
    return pl.when(text.str.len_chars() > SHOWN).then(cut).otherwise(text)


def _checked(
    frame: pl.DataFrame,
    start: int,
    contract: Contract,
    refused: dict[str, str],
    undecoded: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`frame` numbered from row `start`, less the records that hold a value of a `refused`
    column (column → the kind it declares) or an `undecoded` one: those are bad rows."""
    lines = pl.int_range(start, start + frame.height, dtype=pl.Int64, eager=True)
    frame = frame.with_columns(lines.alias(LINE))
    if not refused and not undecoded.height:
        return frame, empty_bad()
    wrong = [undecoded]
    for name, declared in refused.items():
        wanted = contract.column(name).type
        said = _SAID.get(declared, f"a Parquet {declared} value")
        text = as_text(pl.col(name), frame.schema[name])
        message = pl.format(f"{name} '{{}}' is {said} in the file, not a valid {wanted}", text)
        held = f"{name} holds {said} in the file, not a valid {wanted}"
        wrong.append(
            frame.filter(pl.col(name).is_not_null()).select(
                LINE,
                pl.lit(name, pl.String).alias("field"),
                pl.lit("wrong_type", pl.String).alias("reason"),
                _shown(text).alias("value"),
                message.fill_null(held).alias("message"),
            )
        )
    problems = pl.concat(wrong, how="vertical")
    readable = [c for c in frame.columns if c != LINE and c not in refused]
    bad_lines = problems[LINE].unique()
    bad = frame.filter(pl.col(LINE).is_in(bad_lines.implode()))
    if readable:
        record = pl.struct(pl.col(readable).cast(pl.String)).struct.json_encode()
    else:
        record = pl.lit(None, pl.String)
    known = bad.select(LINE, record.alias(RECORD))
    problems = problems.join(known, on=LINE, how="left").select(BAD_SCHEMA.names())
    nulls = [pl.lit(None, contract.column(c).dtype).alias(c) for c in refused]
    clean = frame.filter(~pl.col(LINE).is_in(bad_lines.implode())).with_columns(nulls)
    return clean, problems.cast(BAD_SCHEMA)
