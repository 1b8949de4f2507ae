"""Damaged JSON Lines files: every line is one record read exactly, or a bad row naming its
line (and column) in a source, or a one-line refusal in a target, which is then not rewritten.

A JSON Lines target is rewritten whole; what is outside the contract is kept as it was written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.connectors import exports
from p2c_etl.connectors.badrows import SOURCE_BAD_SCHEMA
from p2c_etl.connectors.base import WriteBatch
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import LINE

COLUMNS = ["accountid", "accountnumber", "name", "numberofemployees", "creditlimit"]
ID = "0a272f15-b26e-54ef-8504-fbdfc5b112"


def account(n: int, **values: object) -> str:
    """The JSON text of account n (values given as JSON text, written as they are)."""
    fields = {"accountid": f'"{ID}{n:02d}"', "accountnumber": f'"A{n}"', "name": f'"Name {n}"',
              "numberofemployees": "5", "creditlimit": "10.5", **values}  # fmt: skip
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def source(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "accounts.jsonl"
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def read(
    tmp_path: Path, contracts: ContractSet, columns: list[str] = COLUMNS
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[str]]:
    """(clean (accountnumber, line), bad (line, field, reason), bad messages) of crm accounts."""
    bad: list[pl.DataFrame] = []
    contract = contracts.get("crm", "accounts")
    path = tmp_path / "accounts.jsonl"
    good: list[tuple[object, ...]] = []
    for chunk in exports.read_chunks(path, contract, columns, 1000):
        good += chunk.frame.select("accountnumber", LINE).rows()
        bad.append(chunk.bad)
    rows = pl.concat(bad)
    found = [(r[LINE], r["field"], r["reason"]) for r in rows.iter_rows(named=True)]
    return good, found, rows["message"].to_list()


def target(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "CustomersV2.jsonl"
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def customer(n: int, extra: str = "") -> str:
    keys = f'"dataAreaId": "usmf", "CustomerAccount": "C{n}"'
    return f'{{{keys}, "OrganizationName": "Org {n}"{extra}}}'


def rename_first_customer(tmp_path: Path, contracts: ContractSet) -> pl.DataFrame:
    update = pl.DataFrame({"dataAreaId": ["usmf"], "CustomerAccount": ["C1"],
                           "OrganizationName": ["Renamed"]})  # fmt: skip
    batch = WriteBatch(keys=("dataAreaId", "CustomerAccount"), inserts=pl.DataFrame(),
                       updates=(update,))  # fmt: skip
    return FilesConnector("erp", tmp_path, contracts).upsert("CustomersV2", batch)


def refused(tmp_path: Path, contracts: ContractSet, path: Path, *parts: str) -> str:
    """The one-line error of a rewrite of `path` that must not happen; the file is unchanged."""
    before = path.read_bytes()
    with pytest.raises(ConnectorError) as info:
        rename_first_customer(tmp_path, contracts)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert all(part in message for part in parts), message
    assert path.read_bytes() == before
    return message


def refused_on_read(tmp_path: Path, contracts: ContractSet, *parts: str) -> str:
    """A target's contract columns read as a flow reads them: refused in one line."""
    conn = FilesConnector("erp", tmp_path, contracts)
    with pytest.raises(ConnectorError) as info:
        conn.snapshot("CustomersV2", ["dataAreaId", "CustomerAccount", "OrganizationName"])
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert all(part in message for part in parts), message
    return message


# --- (1) a rewrite keeps what is outside the contract as it was written -------------------


@pytest.mark.parametrize(
    "raw",
    [
        '"2026-01-01"',
        '"2026-01-01T10:00:00Z"',
        '"2026-01-01T10:00:00+01:00"',
        '"2026-01-01 10:00:00"',
        '{"b": 1, "a": "2026-01-01"}',
        '["2026-01-01T10:00:00Z", null]',
    ],
)
def test_a_rewrite_keeps_text_outside_the_contract_that_looks_like_a_date(
    tmp_path: Path, contracts: ContractSet, raw: str
) -> None:
    path = target(tmp_path, customer(1, f', "zzDate": {raw}'), customer(2, f', "zzDate": {raw}'))
    assert rename_first_customer(tmp_path, contracts)["status"].to_list() == ["ok"]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["OrganizationName"] for r in records] == ["Renamed", "Org 2"]
    assert [r["zzDate"] for r in records] == [json.loads(raw)] * 2


# --- (4) a lone surrogate escape is no character -----------------------------------------


def test_a_lone_surrogate_escape_in_a_source_is_a_bad_encoding_row(
    tmp_path: Path, contracts: ContractSet
) -> None:
    source(tmp_path, account(1), account(2, name=r'"Blue \ud800 Yonder"'),
           account(3, fax=r'"\udfff"'), account(4, name=r'"pair \ud83d\ude00"'))  # fmt: skip
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A1", 1), ("A3", 3), ("A4", 4)]  # not read, the fax does not matter
    assert bad == [(2, "name", "bad_encoding")]
    assert "line 2: name" in messages[0] and "surrogate" in messages[0]


def test_a_lone_surrogate_escape_in_a_target_is_refused_in_one_line(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = target(tmp_path, customer(1), customer(2, ', "zzS": "\\ud83d"'))
    refused(tmp_path, contracts, path, "CustomersV2.jsonl: line 2", "zzS", "not rewritten")
    target(tmp_path, customer(1), customer(2).replace("Org 2", "Org \\ud800"))
    refused_on_read(tmp_path, contracts, "line 2", "OrganizationName", "bad_encoding")


# --- (5) two JSON values on one line -------------------------------------------------------


def test_two_objects_on_one_line_are_one_bad_line_and_the_others_keep_their_lines(
    tmp_path: Path, contracts: ContractSet
) -> None:
    # A blank line and a line of two records: as many records as line breaks.
    source(tmp_path, account(1), "", account(2) + " " + account(3), account(4))
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A1", 1), ("A4", 4)]
    assert bad == [(3, None, "not_json")]
    assert "line 3: not valid JSON" in messages[0]
    source(tmp_path, account(1), account(2) + account(3), account(4))
    assert read(tmp_path, contracts)[:2] == ([("A1", 1), ("A4", 3)], [(2, None, "not_json")])


def test_two_objects_on_one_line_of_a_target_are_refused_naming_the_line(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = target(tmp_path, customer(1), customer(2) + ' {"dataAreaId": "usmf"}', customer(3))
    refused(tmp_path, contracts, path, "CustomersV2.jsonl: line 2", "not_json")
    refused_on_read(tmp_path, contracts, "CustomersV2.jsonl: line 2", "not_json")


# --- (7) a target that is not UTF-8 -----------------------------------------------------------


@pytest.mark.parametrize("where", ["OrganizationName", "zzExtra"])
def test_a_target_line_that_is_not_utf8_is_refused_naming_the_line(
    tmp_path: Path, contracts: ContractSet, where: str
) -> None:
    bad = (
        customer(2).encode().replace(b"Org 2", b"Org \xff")
        if where == "OrganizationName"
        else customer(2, ', "zzExtra": "__"').encode().replace(b"__", b"\xc3")
    )
    path = target(tmp_path, customer(1), bad, customer(3))
    refused(tmp_path, contracts, path, "CustomersV2.jsonl: line 2", "UTF-8", "not rewritten")


# --- (8) a decimal beyond its precision ------------------------------------------------------


def test_a_json_decimal_beyond_its_precision_is_wrong_type_as_in_csv(
    tmp_path: Path, contracts: ContractSet
) -> None:
    source(tmp_path, account(1, creditlimit="1000000000000000"),
           account(2, creditlimit="12345678901234567.1"),
           account(3, creditlimit='"1000000000000000"'),
           account(4, creditlimit="999999999999999.9999"),
           account(5, creditlimit="-999999999999999.9999"))  # fmt: skip
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A4", 4), ("A5", 5)]
    assert bad == [(n, "creditlimit", "wrong_type") for n in (1, 2, 3)]
    assert "creditlimit '1000000000000000' is not a valid decimal(19,4)" in messages[0]
    frame = FilesConnector("crm", tmp_path, contracts).snapshot(
        "accounts", COLUMNS, on_bad=lambda _: None
    )
    largest = "999999999999999.9999"
    assert [str(v) for v in frame["creditlimit"]] == [largest, f"-{largest}"]


# --- (10) one reject naming the real column and reason ----------------------------------------


def test_a_number_too_big_for_a_double_is_one_bad_row_for_its_column(
    tmp_path: Path, contracts: ContractSet
) -> None:
    source(tmp_path, account(1, creditlimit="1e309"), account(2, numberofemployees="-1e309"),
           account(3, fax="1e309"), account(4))  # fmt: skip
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A3", 3), ("A4", 4)]  # the fax is not read
    assert bad == [(1, "creditlimit", "wrong_type"), (2, "numberofemployees", "wrong_type")]
    assert "creditlimit '1e309' is not a valid decimal(19,4)" in messages[0]


def test_a_key_twice_in_one_object_is_a_not_json_row_saying_so(
    tmp_path: Path, contracts: ContractSet
) -> None:
    source(tmp_path, account(1), account(2, name='"Blue Yonder", "name": "EVIL"'), account(3))
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A1", 1), ("A3", 3)]
    assert bad == [(2, "name", "not_json")]
    assert "name appears twice" in messages[0] and "EVIL" not in messages[0]


# --- (14) a line that is not a JSON object, a record without its key --------------------------


def test_a_line_that_is_not_a_json_object_is_not_json(
    tmp_path: Path, contracts: ContractSet
) -> None:
    source(tmp_path, account(1), "null", "[1]", "3", '"text"', "true", "  " + account(7), "{}")
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A1", 1), ("A7", 7)]
    assert bad == [
        *((n, None, "not_json") for n in range(2, 7)),
        (8, "accountid", "null_not_allowed"),
    ]
    assert "line 2: the line holds null, not a JSON object" in messages[0]
    assert "line 3: the line holds an array, not a JSON object" in messages[1]


def test_a_record_without_its_key_is_null_not_allowed_and_a_null_key_is_kept(
    tmp_path: Path, contracts: ContractSet
) -> None:
    lines = [account(n) for n in range(1, 7)]
    lines[1] = '{"accountnumber": "A2", "name": "no id"}'
    lines[3] = account(4, accountid="null")  # there, and null: as the other formats read it
    source(tmp_path, *lines)
    good, bad, messages = read(tmp_path, contracts)
    assert good == [("A1", 1), ("A3", 3), ("A4", 4), ("A5", 5), ("A6", 6)]
    assert bad == [(2, "accountid", "null_not_allowed")]
    assert "accounts.jsonl line 2: accountid" in messages[0]
    assert read(tmp_path, contracts, COLUMNS[1:])[1] == []  # the key is not read: no matter


@pytest.mark.parametrize("line", ["null", "{}", '{"dataAreaId": "usmf", "OrganizationName": "x"}'])
def test_a_target_line_that_is_no_record_is_refused_naming_the_line(
    tmp_path: Path, contracts: ContractSet, line: str
) -> None:
    path = target(tmp_path, customer(1), line, customer(3))
    reason = "not_json" if line == "null" else "null_not_allowed"
    refused(tmp_path, contracts, path, "CustomersV2.jsonl: line 2", reason, "not rewritten")
    refused_on_read(tmp_path, contracts, "CustomersV2.jsonl: line 2", reason)


def test_the_live_columns_of_a_file_are_the_keys_of_its_objects_whatever_else_it_holds(
    tmp_path: Path, contracts: ContractSet
) -> None:
    # What a run reads as bad records names no column; p2c check does not stop at them.
    path = source(tmp_path, account(1), "null", "3", "[1]", "not json", '{"fax": "\xff"}')
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\xc3\xbf", b"\xff"))
    live = FilesConnector("crm", tmp_path, contracts).live_columns("accounts")
    assert live == {*COLUMNS, "fax"}


def test_an_empty_object_in_a_source_is_a_reject_and_counted(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    path = demo_dir / "crm" / "accounts.jsonl"
    lines = path.read_bytes().count(b"\n")
    path.write_bytes(path.read_bytes() + b"{}\nnull\n")
    config = str(demo_dir / "p2c.toml")
    result = CliRunner().invoke(main, ["run", "--config", config, "--flows", "accounts", "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert_accounted(summary["flows"])
    assert summary["flows"][0]["source_rows"] == lines + 2
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        rejects = con.execute(
            "SELECT source_line, reason, field FROM rejects WHERE source_line > ? ORDER BY 1",
            [lines],
        ).fetchall()
    assert rejects == [(lines + 1, "null_not_allowed", "accountid"), (lines + 2, "not_json", None)]


def test_bad_rows_keep_their_schema(tmp_path: Path, contracts: ContractSet) -> None:
    source(tmp_path, account(1, name=r'"\ud800"'), "null", "{}")
    bad: list[pl.DataFrame] = []
    FilesConnector("crm", tmp_path, contracts).snapshot("accounts", COLUMNS, on_bad=bad.append)
    rows = pl.concat(bad)
    assert rows.schema == SOURCE_BAD_SCHEMA and rows.height == 3
    readable = {"accountid": f"{ID}01", "accountnumber": "A1", "numberofemployees": "5",
                "creditlimit": "10.5"}  # fmt: skip
    assert json.loads(rows["record"][0]) == readable  # what could be read, for its key
