"""A corpus of damaged input files through `p2c run`: each is read exactly or refused.

For every case, in every format where it applies (Parquet, CSV, JSON Lines): the run either
finishes (exit 1) with a reject whose reason, file, line (and column where one applies) say
what is wrong, or stops (exit 2) with one line naming file, line and column, and then the
target files are byte for byte as before. Never a traceback; the accounting identity holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.model.contracts import ContractSet

Damage = Callable[[Path], None]
BAD_LINE = 3  # the record the damage goes into: the third account (a CSV's line 4)


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str
    damage: Damage
    reason: str | None  # the reject reason; None: the run must stop (exit 2)
    field: str | None = None
    error: tuple[str, ...] = ()  # what the one-line error names when the run stops


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _as_format(crm: Path, fmt: str, contracts: ContractSet) -> Path:
    """crm/accounts in `fmt`, every column the demo holds, typed by the contract."""
    source = crm / "accounts.jsonl"
    held = {k for record in _records(source) for k in record}
    columns = [c for c in contracts.get("crm", "accounts").columns if c in held]
    if fmt == "jsonl":
        return source
    frame = FilesConnector("crm", crm, contracts).snapshot("accounts", columns)
    source.unlink()
    path = crm / f"accounts.{fmt}"
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    return path


def _set(column: str, value: object, dtype: pl.DataType | None = None) -> Damage:
    """The BAD_LINE-th record's `column` set to `value` (as text in a CSV)."""

    def damage(path: Path) -> None:
        if path.suffix == ".jsonl":
            records = _records(path)
            records[BAD_LINE - 1][column] = value
            text = "".join(json.dumps(r) + "\n" for r in records)
            path.write_text(text.replace('"__NaN__"', "NaN"), encoding="utf-8")
        elif path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
            cell = pl.when(pl.int_range(pl.len()) == BAD_LINE - 1).then(pl.lit(str(value)))
            frame.with_columns(cell.otherwise(pl.col(column)).alias(column)).write_csv(path)
        else:
            frame = pl.read_parquet(path)
            kind = dtype or frame.schema[column]
            values = frame[column].cast(kind).to_list()
            values[BAD_LINE - 1] = value
            frame.with_columns(pl.Series(column, values, dtype=kind)).write_parquet(path)

    return damage


def _bytes(old: bytes, new: bytes) -> Damage:
    """In the BAD_LINE-th record, `old` (the name of that account) replaced by `new`."""

    def damage(path: Path) -> None:
        data = path.read_bytes()
        assert data.count(old) == 1
        path.write_bytes(data.replace(old, new))

    return damage


def _without(column: str) -> Damage:
    def damage(path: Path) -> None:
        if path.suffix == ".jsonl":
            records = [{k: v for k, v in r.items() if k != column} for r in _records(path)]
            path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        elif path.suffix == ".csv":
            pl.read_csv(path, infer_schema=False).drop(column).write_csv(path)
        else:
            pl.read_parquet(path).drop(column).write_parquet(path)

    return damage


def _cut_in_last_line(path: Path) -> None:
    data = path.read_bytes().rstrip(b"\n")
    path.write_bytes(data[: data.rindex(b"\n") + 40])


def _quote_left_open(path: Path) -> None:
    data = path.read_bytes()
    last = data.rstrip(b"\n").rindex(b"\n") + 1
    path.write_bytes(data[:last] + data[last:].replace(b",", b',"', 1))


NAME = b"Blue Yonder Airlines"  # the third account of the demo
LAST = 40  # records in the demo's accounts


def _corpus() -> list[Case]:
    cases: list[Case] = []
    for fmt in ("parquet", "csv", "jsonl"):
        drift = ("contract drift", f"accounts.{fmt}", "column name")
        cases += [
            Case("missing column", fmt, _without("name"), None, error=drift),
            Case("too many decimals", fmt, _set("creditlimit", "1.23456", pl.String()),
                 "precision_loss", "creditlimit"),
            Case("text in a number", fmt, _set("creditlimit", "lots", pl.String()),
                 "wrong_type", "creditlimit"),
            Case("12.5 employees", fmt, _set("numberofemployees", 12.5, pl.Float64()),
                 "wrong_type", "numberofemployees"),
            Case("statecode 0.9", fmt, _set("statecode", 0.9, pl.Float64()),
                 "wrong_type", "statecode"),
        ]  # fmt: skip
    cases += [
        Case("NaN", "jsonl", _set("creditlimit", "__NaN__"), "wrong_type", "creditlimit"),
        Case("NaN", "parquet", _set("creditlimit", float("nan"), pl.Float64()), "wrong_type",
             "creditlimit"),
        Case("invalid UTF-8", "csv", _bytes(NAME, b"BAD\xff\xfeUTF8"), "bad_encoding", "name"),
        Case("invalid UTF-8", "jsonl", _bytes(NAME, b"BAD\xff\xfeUTF8"), "bad_encoding", "name"),
        Case("cut off in the last line", "csv", _cut_in_last_line, "wrong_field_count"),
        Case("cut off in the last line", "jsonl", _cut_in_last_line, "not_json"),
        Case("unclosed quote at the end", "csv", _quote_left_open, "broken_quoting"),
        Case("cut off", "parquet", _cut_in_last_line, None,
             error=("accounts.parquet", "not a readable Parquet file")),
        Case("a 10 MB value", "jsonl", _set("description", "x" * (10 << 20)), "too_long",
             "description"),
    ]  # fmt: skip
    return cases


def _line_of(case: Case) -> int:
    if case.name in ("cut off in the last line", "unclosed quote at the end"):
        record = LAST
    else:
        record = BAD_LINE
    return record + (1 if case.fmt == "csv" else 0)


@pytest.mark.parametrize("case", _corpus(), ids=lambda c: f"{c.fmt}-{c.name}")
def test_a_damaged_source_is_a_reject_naming_file_line_and_column_or_refused_whole(
    demo_dir: Path,
    contracts: ContractSet,
    assert_accounted: Callable[[object], None],
    case: Case,
) -> None:
    path = _as_format(demo_dir / "crm", case.fmt, contracts)
    case.damage(path)
    targets = {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())}
    config = str(demo_dir / "p2c.toml")
    result = CliRunner().invoke(main, ["run", "--config", config, "--flows", "accounts", "--json"])
    assert "Traceback" not in result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert_accounted(summary["flows"])
    if case.reason is None:
        assert result.exit_code == 2, result.stdout
        assert len(summary["error"].splitlines()) == 1
        assert all(part in summary["error"] for part in case.error), summary["error"]
        assert {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())} == targets
        return
    assert result.exit_code == 1, summary.get("error")
    (accounts,) = summary["flows"]
    assert accounts["source_rows"] == LAST  # the bad record is counted, as a reject
    line = _line_of(case)
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        rejects = con.execute(
            "SELECT reason, field, source_file, source_line, message FROM rejects "
            "WHERE source_line = ? OR reason = ?",
            [line, case.reason],
        ).fetchall()
    found = [r for r in rejects if r[0] == case.reason]
    assert found, rejects
    _, field, source_file, source_line, message = found[0]
    assert field == case.field
    if case.reason != "too_long":  # read fine; the target system's length refuses it
        assert (source_file, source_line) == (str(path), line)
        assert f"{path.name} {'row' if case.fmt == 'parquet' else 'line'} {line}" in message


def test_a_target_file_that_cannot_be_read_exactly_stops_the_flow_and_is_not_rewritten(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    target = demo_dir / "erp" / "CustomersV2.jsonl"
    lines = target.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"OrganizationName": "', b'"OrganizationName": "\xff', 1)
    target.write_bytes(b"".join(lines))
    targets = {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())}
    config = str(demo_dir / "p2c.toml")
    result = CliRunner().invoke(main, ["run", "--config", config, "--flows", "accounts", "--json"])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert_accounted(summary["flows"])
    assert "CustomersV2.jsonl: line 5: column OrganizationName:" in summary["error"]
    assert "bad_encoding" in summary["error"]
    assert {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())} == targets
