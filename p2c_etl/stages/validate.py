"""Validate: cast mapped rows to the target contract's types and check them with pandera.

Every failure is collected (`lazy=True` on a collected frame) and becomes a reject row with a
reason code; the good rows go on. Casting never rounds or truncates: a value that would change
is a reject (`precision_loss`, `wrong_type`), and so is a value longer than its column.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.errors
import polars as pl

from p2c_etl.errors import ContractError
from p2c_etl.model.casting import coerce
from p2c_etl.model.contracts import Contract
from p2c_etl.model.rejects import KEY, REJECT_SCHEMA, ROW, RejectReason, empty_rejects

_CHECK_REASONS: tuple[tuple[str, RejectReason], ...] = (
    ("not_nullable", "null_not_allowed"),
    ("str_length", "too_long"),
    ("isin", "not_allowed_value"),
    ("str_matches", "bad_format"),
    ("multiple_fields_uniqueness", "duplicate_key"),
    ("field_uniqueness", "duplicate_key"),
)


@dataclass(frozen=True)
class Validated:
    valid: pl.DataFrame
    rejects: pl.DataFrame


def validate(staged: pl.DataFrame, contract: Contract) -> Validated:
    """Split `staged` (`__row`, `__key`, target columns) into valid rows and rejects."""
    columns = [c for c in staged.columns if c not in (ROW, KEY)]
    typed, cast_rejects = coerce(staged, contract, columns)
    check_rejects = _check(typed, contract, columns)
    rejects = pl.concat([cast_rejects, check_rejects], how="vertical")
    valid = typed.filter(~pl.col(ROW).is_in(rejects[ROW].implode()))
    return Validated(valid=valid, rejects=rejects)


def _check(typed: pl.DataFrame, contract: Contract, columns: list[str]) -> pl.DataFrame:
    schema = contract.pandera_schema(columns)
    try:
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
            f"column {first['column']!r}: {first['failure_case']}"
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
        return "|".join(str(case[k]) for k in contract.keys)
    value = case["failure_case"]
    return None if value is None else str(value)


def _reason(check: str) -> RejectReason:
    for prefix, reason in _CHECK_REASONS:
        if check.startswith(prefix):
            return reason
    return "check_failed"


def _message(reason: RejectReason, field: str, case: dict[str, object], contract: Contract) -> str:
    value = case["failure_case"]
    if reason == "duplicate_key":
        key = ", ".join(f"{k} '{case[k]}'" for k in contract.keys)
        return f"{key} appears on more than one source record; every one is rejected"
    if reason == "too_long":
        limit = contract.column(field).max_length
        return f"{field} is {len(str(value))} characters, longer than the {limit} the target holds"
    if reason == "null_not_allowed":
        return f"{field} is required in {contract.system}.{contract.entity} but is empty"
    if reason == "not_allowed_value":
        allowed = contract.column(field).allowed or ()
        return f"{field} '{value}' is not one of {', '.join(map(str, allowed))}"
    if reason == "bad_format":
        return f"{field} '{value}' is not a GUID"
    return f"{field} '{value}' failed check {case['check']}"
