"""Validate: cast mapped rows to the target contract's types and check them with pandera.

Every failure is collected (`lazy=True` on a collected frame) and becomes a reject row with a
reason code; the good rows go on. Casting never rounds or truncates: a value that would change
is a reject (`precision_loss`, `wrong_type`), and so is a value longer than its column
(`too_long`, counted in UTF-16 code units as both systems count), an integer outside the 32
bits of an `int` column (`out_of_range`), or text holding a control or bidi character, a line
break or zero-width character in a single-line column, or, in a key, any character one cannot
see or type (a non-ASCII space such as NBSP, a zero-width joiner) or a leading space
(`bad_format`). Given the source and
its contract, a source value longer than the source system itself holds is a `too_long`
reject too: no real record can carry it.

A reject's value and message never carry a refused character as it is (it is written as
`<U+0000>`), nor more than the first `SHOWN` characters of a long value (`rejects.shown`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import pandera.errors
import polars as pl

from p2c_etl.errors import ContractError
from p2c_etl.model.casting import coerce
from p2c_etl.model.contracts import (
    INT_RANGE,
    INVISIBLE,
    LINE_BREAKS,
    REFUSED_CHARACTERS,
    Contract,
    python_character_class,
    refused_characters,
    utf16_length,
)
from p2c_etl.model.rejects import KEY, REJECT_SCHEMA, ROW, RejectReason, empty_rejects, shown

_CHECK_REASONS: tuple[tuple[str, RejectReason], ...] = (
    ("not_nullable", "null_not_allowed"),
    ("str_length", "too_long"),
    ("isin", "not_allowed_value"),
    ("in_range", "out_of_range"),
    ("str_matches", "bad_format"),
    ("text_", "bad_format"),
    ("multiple_fields_uniqueness", "duplicate_key"),
    ("field_uniqueness", "duplicate_key"),
)
_C0_NAMES = (
    *("NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL"),
    *("BS", "TAB", "LF", "VT", "FF", "CR", "SO", "SI"),
    *("DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB"),
    *("CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"),
)

_REFUSED = python_character_class(REFUSED_CHARACTERS)
_LINE_BREAK = python_character_class(LINE_BREAKS)
_INVISIBLE = python_character_class(INVISIBLE)


@dataclass(frozen=True)
class Validated:
    valid: pl.DataFrame
    rejects: pl.DataFrame


def validate(
    staged: pl.DataFrame,
    contract: Contract,
    source: pl.DataFrame | None = None,
    source_contract: Contract | None = None,
) -> Validated:
    """Split `staged` (`__row`, `__key`, target columns) into valid rows and rejects.

    With `source` (the rows `__row` points into, by position) and its contract, the staged
    rows' source text is also held to the lengths of the source system.
    """
    columns = [c for c in staged.columns if c not in (ROW, KEY)]
    typed, cast_rejects = coerce(staged, contract, columns)
    check_rejects = _check(typed, contract, columns)
    rejects = pl.concat([cast_rejects, check_rejects], how="vertical")
    if source is not None and source_contract is not None:
        rows = staged[ROW]
        rejects = pl.concat([rejects, source_rejects(source, source_contract, rows)])
    valid = typed.filter(~pl.col(ROW).is_in(rejects[ROW].implode()))
    return Validated(valid=valid, rejects=rejects)


def source_rejects(source: pl.DataFrame, contract: Contract, rows: pl.Series) -> pl.DataFrame:
    """`too_long` rejects for the text of `source` (rows `rows`, by position) that is longer
    than `contract` (the source system's) holds."""
    bounded = [
        name
        for name in source.columns
        if name in contract.columns
        and contract.columns[name].max_length is not None
        and source.schema[name] == pl.String
    ]
    if not bounded:
        return empty_rejects()
    frame = (
        source.select(bounded)
        .with_row_index(ROW)
        .with_columns(pl.col(ROW).cast(pl.Int64))
        .filter(pl.col(ROW).is_in(rows.implode()))
    )
    found = []
    for name in bounded:
        limit = contract.column(name).max_length
        length = utf16_length(pl.col(name))
        for row, value, units in (
            frame.filter(length > limit).select(ROW, name, length.alias("__units")).iter_rows()
        ):
            where = f"{contract.system}.{contract.entity}"
            found.append(
                {
                    ROW: row,
                    "field": name,
                    "reason": "too_long",
                    "value": shown(value),
                    "message": f"{name} is {_length(value, units)}, longer than the {limit} "
                    f"{where} holds: no real {where} record carries it",
                }
            )
    return pl.DataFrame(found, schema=REJECT_SCHEMA)


def _check(typed: pl.DataFrame, contract: Contract, columns: list[str]) -> pl.DataFrame:
    """The rejects of pandera's checks. pandera collects a lazy query per check of each
    column (hundreds a contract): polars 2's default engine costs ~0.4 ms to start each,
    its in-memory engine ~0.1 ms, so the checks of a contract run on that engine cost half
    as much, on six rows (320 -> 150 ms) and on a million (550 -> 330 ms). No row, no check
    to fail (the types are the contract's: `coerce` made them): most flows of a quiet night
    compute no row, and their checks cost ~50 ms each for nothing."""
    if typed.height == 0:
        return empty_rejects()
    schema = contract.pandera_schema(columns)
    try:
        with pl.Config(engine_affinity="in-memory"):  # applied when made: one per use
            schema.validate(typed.select(columns), lazy=True)
    except pandera.errors.SchemaErrors as errors:
        return _failure_rejects(typed, errors.failure_cases, contract)
    return empty_rejects()


def _failure_rejects(typed: pl.DataFrame, cases: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    shape = cases.filter(pl.col("index").is_null())
    if shape.height:
        first = shape.row(0, named=True)
        raise ContractError(
            f"{contract.system}.{contract.entity}: {first['check']} failed on "
            f"column {first['column']!r}: {shown(first['failure_case'])}"
        )
    rows = typed.select(ROW, *contract.keys).with_row_index("index").cast({"index": pl.Int32})
    joined = cases.join(rows, on="index", how="left")
    out = []
    for case in joined.iter_rows(named=True):
        reason = _reason(case["check"])
        field = ",".join(contract.keys) if reason == "duplicate_key" else case["column"]
        out.append(
            {
                ROW: case[ROW],
                "field": field,
                "reason": reason,
                "value": _value(reason, case, contract),
                "message": _message(reason, field, case, contract),
            }
        )
    return pl.DataFrame(out, schema=REJECT_SCHEMA)


def _value(reason: RejectReason, case: dict[str, object], contract: Contract) -> str | None:
    if reason == "duplicate_key":
        return "|".join(shown(case[k]) for k in contract.keys)
    value = case["failure_case"]
    return None if value is None else shown(value)


def _reason(check: str) -> RejectReason:
    for prefix, reason in _CHECK_REASONS:
        if check.startswith(prefix):
            return reason
    return "check_failed"


def _message(reason: RejectReason, field: str, case: dict[str, object], contract: Contract) -> str:
    value = case["failure_case"]
    if reason == "duplicate_key":
        key = ", ".join(f"{k} '{shown(case[k])}'" for k in contract.keys)
        return f"{key} appears on more than one source record; every one is rejected"
    if reason == "too_long":
        limit = contract.column(field).max_length
        text = str(value)
        return f"{field} is {_length(text, _units(text))}, longer than the {limit} the target holds"
    if reason == "null_not_allowed":
        return f"{field} is required in {contract.system}.{contract.entity} but is empty"
    if reason == "not_allowed_value":
        allowed = contract.column(field).allowed or ()
        return f"{field} '{shown(value)}' is not one of {', '.join(map(str, allowed))}"
    if reason == "out_of_range":
        lowest, highest = INT_RANGE
        return (
            f"{field} {shown(value)} is outside what {contract.system}.{contract.entity} "
            f"holds: a 32-bit whole number, {lowest} to {highest}"
        )
    if reason == "bad_format" and str(case["check"]).startswith("text_"):
        return _character_message(field, str(value), contract, field in contract.keys)
    if reason == "bad_format":
        return f"{field} '{shown(value)}' is not a GUID"
    return f"{field} '{shown(value)}' failed check {case['check']}"


def _character_message(field: str, text: str, contract: Contract, key: bool) -> str:
    refused = python_character_class(refused_characters(contract.column(field), key))
    found = refused.search(text)
    if key and text.startswith(" ") and (found is None or found.start() > 0):
        return (
            f"{field} '{shown(text)}' starts with a space: a key never does (no one would "
            "find the record by typing its key)"
        )
    if found is None:  # cannot happen: the check and this search use the same characters
        return f"{field} '{shown(text)}' holds a character the target refuses"
    char = found.group()
    what = f"{field} holds {character_name(char)} at position {found.start() + 1}"
    if _REFUSED.match(char):
        return f"{what}: control and bidi characters are refused in text (no one could type it)"
    if _LINE_BREAK.match(char):
        return f"{what}: a single-line column (a key, a name, a code) holds no line break or tab"
    if _INVISIBLE.match(char):
        return (
            f"{what}: an invisible character is refused in single-line text (no one could type it)"
        )
    return (
        f"{what}: a key holds no invisible character and no space but the ASCII one "
        "(a second record would be made beside the one everybody types)"
    )


def character_name(char: str) -> str:
    """`\\x00` → `U+0000 NUL`, `\\u202e` → `U+202E RIGHT-TO-LEFT OVERRIDE`."""
    point = ord(char)
    if point < 0x20:
        name = _C0_NAMES[point]
    elif point == 0x7F:
        name = "DEL"
    elif 0x80 <= point <= 0x9F:
        name = "C1 control"
    else:
        name = unicodedata.name(char, "")
    return f"U+{point:04X} {name}".rstrip()


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _length(text: str, units: int) -> str:
    if units == len(text):
        return f"{units} characters"
    return f"{len(text)} characters ({units} UTF-16 code units, as the systems count them)"
