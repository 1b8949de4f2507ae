"""The files connector reads every value exactly or refuses it; a bad source record is a bad
row (a reject later) naming file, line and column; writes keep modes and clean up after kills."""

from __future__ import annotations

import fcntl
import json
import os
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from p2c_etl.connectors import export_csv, exports
from p2c_etl.connectors.badrows import SOURCE_BAD_SCHEMA
from p2c_etl.connectors.base import WriteBatch
from p2c_etl.connectors.files import FilesConnector, remove_stale_temporaries, write_atomic
from p2c_etl.errors import ConnectorError, ContractError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import LINE

COLUMNS = ["accountnumber", "name", "statecode", "numberofemployees", "creditlimit"]
HEADER = ",".join(COLUMNS)


def read(root: Path, contracts: ContractSet, columns: list[str] = COLUMNS) -> tuple[list, list]:
    """(clean rows, bad rows as (line, field, reason)) of crm/accounts in `root`."""
    bad: list[pl.DataFrame] = []
    conn = FilesConnector("crm", root, contracts)
    frame = conn.snapshot("accounts", columns, on_bad=bad.append)
    rows = pl.concat([pl.DataFrame(schema=SOURCE_BAD_SCHEMA), *bad])
    assert rows.schema == SOURCE_BAD_SCHEMA
    assert rows["source_file"].is_in([str(conn.path("accounts"))]).all()
    return frame.rows(), [(r[LINE], r["field"], r["reason"]) for r in rows.iter_rows(named=True)]


def jsonl(path: Path, *records: dict[str, object]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def account(number: str, **values: object) -> dict[str, object]:
    return {"accountnumber": number, "name": f"Name {number}", "statecode": 0,
            "numberofemployees": 1, "creditlimit": 10, **values}  # fmt: skip


# --- (1) a column the contract needs and the file lacks ----------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_missing_column_is_contract_drift_naming_file_and_column(
    tmp_path: Path, contracts: ContractSet, fmt: str
) -> None:
    records = [{k: v for k, v in account(n).items() if k != "name"} for n in ("A1", "A2")]
    path = tmp_path / f"accounts.{fmt}"
    if fmt == "jsonl":
        jsonl(path, *records)
    elif fmt == "csv":
        pl.DataFrame(records).write_csv(path)
    else:
        pl.DataFrame(records).write_parquet(path)
    with pytest.raises(ContractError, match=rf"accounts\.{fmt}: contract drift: .*column name"):
        read(tmp_path, contracts)


def test_a_json_key_null_in_every_line_is_a_column_of_nulls_not_drift(
    tmp_path: Path, contracts: ContractSet
) -> None:
    jsonl(tmp_path / "accounts.jsonl", account("A1", name=None), account("A2", name=None))
    rows, bad = read(tmp_path, contracts)
    assert [r[1] for r in rows] == [None, None] and bad == []


def test_drift_is_found_before_any_record_even_in_a_later_block(
    tmp_path: Path, contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "_JSON_BLOCK", 64)  # every line a block of its own
    lines = [account(f"A{i}", name=None) for i in range(5)]
    for line in lines:
        del line["name"]
    lines.append(account("A9", name="only here"))
    jsonl(tmp_path / "accounts.jsonl", *lines)
    rows, _ = read(tmp_path, contracts)  # the key is in the last line: not drift
    assert [r[1] for r in rows] == [None] * 5 + ["only here"]
    jsonl(tmp_path / "accounts.jsonl", *lines[:5])
    pages = FilesConnector("crm", tmp_path, contracts).pages("accounts", COLUMNS)
    with pytest.raises(ContractError, match="no column name"):
        next(pages)  # refused before the first page


# --- (2) a CSV cut off in its last line, an unclosed quote at the end ---------------------


def test_a_csv_cut_off_in_its_last_line_is_a_bad_row_not_a_shorter_record(
    tmp_path: Path, contracts: ContractSet
) -> None:
    (tmp_path / "accounts.csv").write_text(f"{HEADER}\nA1,One,0,5,1.5\nA2,Two,0,5,2\nA3,Thr")
    rows, bad = read(tmp_path, contracts)
    assert [r[0] for r in rows] == ["A1", "A2"]
    assert bad == [(4, None, "wrong_field_count")]
    with pytest.raises(ConnectorError, match=r"accounts\.csv: line 4: expected 5 fields, found 2"):
        FilesConnector("crm", tmp_path, contracts).snapshot("accounts", COLUMNS)


def test_an_unclosed_quote_at_the_end_of_a_csv_is_broken_quoting(
    tmp_path: Path, contracts: ContractSet
) -> None:
    (tmp_path / "accounts.csv").write_text(f'{HEADER}\nA1,One,0,5,1.5\nA2,"Two,0,5,2\n')
    rows, bad = read(tmp_path, contracts)
    assert [r[0] for r in rows] == ["A1"] and bad == [(3, None, "broken_quoting")]


def test_an_empty_csv_field_is_null_and_a_quoted_empty_one_is_empty_text(
    tmp_path: Path, contracts: ContractSet
) -> None:
    (tmp_path / "accounts.csv").write_text(f'{HEADER}\nA1,,0,5,1\nA2,"",0,5,1\n')
    rows, _ = read(tmp_path, contracts)
    assert [r[1] for r in rows] == [None, ""]


def test_a_csv_of_many_parse_blocks_keeps_its_lines(
    tmp_path: Path, contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_csv, "_PARSE_BLOCK", 1 << 10)
    body = "".join(f'A{i},"Name\n{i}",0,{i},1\n' for i in range(300))
    (tmp_path / "accounts.csv").write_text(f"{HEADER}\n{body}A300,x,0,1.5,1\n")
    rows, bad = read(tmp_path, contracts)
    assert len(rows) == 300 and rows[299] == ("A299", "Name\n299", 0, 299, Decimal(1))
    assert bad == [(602, "numberofemployees", "wrong_type")]  # 2 lines a record before


# --- (3) a Parquet integer column holding 12.5, statecode 0.9 ----------------------------


def test_a_parquet_float_is_never_truncated_into_an_integer_column(
    tmp_path: Path, contracts: ContractSet
) -> None:
    pl.DataFrame(
        {
            "accountnumber": ["A1", "A2", "A3"],
            "name": ["One", "Two", "Three"],
            "statecode": [0.0, 0.9, 1.0],
            "numberofemployees": [12.5, 3.0, 4.0],
            "creditlimit": [0.1, 1.23456, 2.5],
        }
    ).write_parquet(tmp_path / "accounts.parquet")
    rows, bad = read(tmp_path, contracts)
    assert rows == [("A3", "Three", 1, 4, Decimal("2.5"))]
    assert bad == [
        (1, "numberofemployees", "wrong_type"),  # 12.5 is not a whole number
        (2, "creditlimit", "precision_loss"),
        (2, "statecode", "wrong_type"),  # 0.9 is no state: not truncated to 0 (active)
    ]


# --- (4, 5) text that is not UTF-8 --------------------------------------------------------


def test_text_that_is_not_utf8_is_a_bad_row_naming_its_column_in_csv_and_json_lines(
    tmp_path: Path, contracts: ContractSet
) -> None:
    (tmp_path / "accounts.csv").write_bytes(
        f"{HEADER}\nA1,One,0,5,1\n".encode() + b"A2,BAD\xff\xfeUTF8,0,5,1\n"
    )
    rows, bad = read(tmp_path, contracts)
    assert [r[0] for r in rows] == ["A1"] and bad == [(3, "name", "bad_encoding")]
    (tmp_path / "accounts.csv").unlink()
    (tmp_path / "accounts.jsonl").write_bytes(
        json.dumps(account("A1")).encode()
        + b"\n"
        + json.dumps(account("A2", name="BAD__UTF8")).encode().replace(b"__", b"\xff\xfe")
        + b"\n"
        + json.dumps(account("A3", fax="\xff")).encode().replace(b"\\u00ff", b"\xff")
        + b"\n"  # not UTF-8 in a column that is not read: the record is clean
    )
    rows, bad = read(tmp_path, contracts)
    assert [r[0] for r in rows] == ["A1", "A3"] and bad == [(2, "name", "bad_encoding")]


# --- (6) JSON Lines: too many decimals, text in a number, NaN ----------------------------


def test_json_lines_values_that_do_not_fit_name_line_and_column(
    tmp_path: Path, contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "_JSON_BLOCK", 300)  # several blocks, bad lines in each
    lines = [json.dumps(account(f"A{i}")) for i in range(1, 9)]
    lines[1] = lines[1].replace('"creditlimit": 10', '"creditlimit": 1.23456')
    lines[3] = lines[3].replace('"creditlimit": 10', '"creditlimit": "lots"')
    lines[4] = lines[4].replace('"creditlimit": 10', '"creditlimit": NaN')
    lines[6] = lines[6].replace('"statecode": 0', '"statecode": 0.9')
    (tmp_path / "accounts.jsonl").write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]))
    rows, bad = read(tmp_path, contracts)
    assert [r[0] for r in rows] == ["A1", "A3", "A6", "A8"]
    assert bad == [
        (2, "creditlimit", "precision_loss"),
        (5, "creditlimit", "wrong_type"),  # a blank line before it: line numbers as shown
        (6, "creditlimit", "wrong_type"),
        (8, "statecode", "wrong_type"),
    ]
    with pytest.raises(
        ConnectorError,
        match=r"accounts\.jsonl: line 2: column creditlimit: '1\.23456' has more decimal "
        r"places than decimal\(19,4\) holds \(precision_loss\); and 3 more bad records",
    ):
        FilesConnector("crm", tmp_path, contracts).snapshot("accounts", COLUMNS)


def test_a_bad_record_keeps_what_could_be_read_of_it(
    tmp_path: Path, contracts: ContractSet
) -> None:
    jsonl(tmp_path / "accounts.jsonl", account("A1", creditlimit="lots"))
    bad: list[pl.DataFrame] = []
    FilesConnector("crm", tmp_path, contracts).snapshot("accounts", COLUMNS, on_bad=bad.append)
    assert json.loads(bad[0]["record"][0])["accountnumber"] == "A1"


# --- (7) a line of any length -------------------------------------------------------------


def test_a_json_line_of_ten_megabytes_written_by_the_connector_reads_back(
    tmp_path: Path, contracts: ContractSet
) -> None:
    jsonl(tmp_path / "accounts.jsonl", account("A1"))
    conn = FilesConnector("crm", tmp_path, contracts)
    memo = "x" * (10 << 20)
    batch = WriteBatch(keys=("accountnumber",), inserts=pl.DataFrame(), updates=(
        pl.DataFrame({"accountnumber": ["A1"], "description": [memo]}),))  # fmt: skip
    assert conn.upsert("accounts", batch)["status"].to_list() == ["ok"]
    again = FilesConnector("crm", tmp_path, contracts)
    assert again.snapshot("accounts", ["accountnumber", "description"]).rows() == [("A1", memo)]
    assert again.upsert("accounts", batch)["status"].to_list() == ["ok"]  # and rewrites


# --- writes -------------------------------------------------------------------------------


def test_a_rewrite_keeps_the_file_mode_and_a_new_file_is_private(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.jsonl"
    jsonl(path, account("A1"))
    path.chmod(0o640)
    conn = FilesConnector("crm", tmp_path, contracts)
    insert = pl.DataFrame({"accountnumber": ["A2"], "name": ["Two"]})
    conn.upsert("accounts", WriteBatch(keys=("accountnumber",), inserts=insert))
    assert path.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        write_atomic(insert, tmp_path / "new.parquet")
    finally:
        os.umask(old)
    assert (tmp_path / "new.parquet").stat().st_mode & 0o777 == 0o600


def test_a_temporary_file_left_by_a_killed_write_is_removed_by_the_next_write(
    tmp_path: Path, contracts: ContractSet
) -> None:
    jsonl(tmp_path / "accounts.jsonl", account("A1"))
    stale = tmp_path / ".accounts.jsonl.k1ll3d.tmp"
    stale.write_bytes(b'{"half a rec')
    busy = tmp_path / ".products.parquet.wr1t1ng.tmp"  # a write in progress holds its lock
    busy.write_bytes(b"")
    mine = tmp_path / ".notes.tmp"  # not one of the connector's
    mine.write_bytes(b"")
    with busy.open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        insert = pl.DataFrame({"accountnumber": ["A2"]})
        conn = FilesConnector("crm", tmp_path, contracts)
        conn.upsert("accounts", WriteBatch(keys=("accountnumber",), inserts=insert))
        assert not stale.exists() and busy.exists() and mine.exists()
    assert remove_stale_temporaries(tmp_path) == [busy]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_rewrite_refuses_a_target_file_it_cannot_read_exactly(
    tmp_path: Path, contracts: ContractSet, fmt: str
) -> None:
    path = tmp_path / f"accounts.{fmt}"
    if fmt == "csv":
        path.write_bytes(f"{HEADER},fax\nA1,One,0,5,1,x\n".encode() + b"A2,Two,0,5,1,\xff\n")
    else:
        path.write_bytes(json.dumps(account("A1")).encode() + b'\n{"accountnumber": "A2", '
                         b'"name": "Two", "statecode": 0, "numberofemployees": 1, "creditlimit": '
                         b'1, "extra": "\xff"}\n')  # fmt: skip
    before = path.read_bytes()
    insert = pl.DataFrame({"accountnumber": ["A3"]})
    conn = FilesConnector("crm", tmp_path, contracts)
    line = 3 if fmt == "csv" else 2
    with pytest.raises(ConnectorError, match=rf"accounts\.{fmt}: line {line}: .*not rewritten"):
        conn.upsert("accounts", WriteBatch(keys=("accountnumber",), inserts=insert))
    assert path.read_bytes() == before


def test_a_rewrite_refuses_a_number_outside_the_contract_that_a_float_would_change(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.jsonl"
    jsonl(path, {**account("A1"), "extra": 12345678901234567.891})
    path.write_text(path.read_text().replace("1.2345678901234568e+16", "12345678901234567.891"))
    before = path.read_bytes()
    conn = FilesConnector("crm", tmp_path, contracts)
    insert = pl.DataFrame({"accountnumber": ["A3"]})
    with pytest.raises(ConnectorError, match="column extra: not in the contract"):
        conn.upsert("accounts", WriteBatch(keys=("accountnumber",), inserts=insert))
    assert path.read_bytes() == before
