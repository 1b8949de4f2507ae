"""Export files read a chunk at a time: every record is a clean row or a bad one, at its line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from p2c_etl.connectors.exports import count_records, read_chunks
from p2c_etl.errors import ContractError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import LINE

COLUMNS = ["accountid", "accountnumber", "statecode", "numberofemployees"]
ID = "11111111-1111-1111-1111-1111111111"


def _read(path: Path, contracts: ContractSet, chunk_rows: int = 1000) -> tuple[list, list]:
    contract = contracts.get("crm", "accounts")
    chunks = list(read_chunks(path, contract, COLUMNS, chunk_rows))
    good = [r for c in chunks for r in c.frame.select("accountnumber", LINE).rows()]
    bad = [(r[LINE], r["reason"]) for c in chunks for r in c.bad.iter_rows(named=True)]
    records = sum(c.records for c in chunks)
    assert records == len(good) + len({line for line, _ in bad})
    return good, bad


def test_a_record_with_two_bad_fields_is_one_record(tmp_path: Path, contracts: ContractSet) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(
        f"accountid,accountnumber,statecode,numberofemployees\n{ID}01,A1,x,y\n{ID}02,A2,0,5\n"
    )
    good, bad = _read(path, contracts)
    assert good == [("A2", 3)]
    assert bad == [(2, "wrong_type"), (2, "wrong_type")]


def test_text_that_is_not_utf8_is_a_reject_and_keeps_the_line_count(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_bytes(
        b"accountid,accountnumber,statecode,numberofemployees\n"
        b"\xff,\xfe,,\n"  # every value is undecodable: still a record
        + f'{ID}01,"A\xff\nB",0,1\n'.encode("latin-1")  # spans two lines, not UTF-8
        + f"{ID}02,A2,0,1\n\n{ID}03,A3,0,1\n".encode()
    )
    good, bad = _read(path, contracts)
    assert good == [("A2", 5), ("A3", 7)]
    assert bad == [(2, "bad_encoding"), (2, "bad_encoding"), (3, "bad_encoding")]


def test_a_header_row_alone_holds_no_record(tmp_path: Path, contracts: ContractSet) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("accountid,accountnumber,statecode,numberofemployees")
    assert _read(path, contracts) == ([], [])
    assert count_records(path) == 0


def test_json_lines_not_utf8_or_not_json_are_rejects(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.jsonl"
    path.write_bytes(
        f'{{"accountid": "{ID}01", "accountnumber": "A1", "numberofemployees": 3}}\n'.encode()
        + b'{"accountid": "\xff", "accountnumber": "A2"}\n'
        + b"not json\n"
        + f'{{"accountid": "{ID}04", "accountnumber": "A4", "statecode": "zero"}}\n'.encode()
    )
    good, bad = _read(path, contracts, chunk_rows=2)
    assert good == [("A1", 1)]
    assert bad == [(2, "bad_encoding"), (3, "not_json"), (4, "wrong_type")]


def test_parquet_rows_are_numbered_and_a_missing_column_is_a_clear_error(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.parquet"
    pl.DataFrame(
        {
            "accountid": [f"{ID}01", f"{ID}02"],
            "accountnumber": ["A1", "A2"],
            "statecode": [0.0, 0.5],
            "numberofemployees": [1, 2],
        }
    ).write_parquet(path)
    assert _read(path, contracts, chunk_rows=1) == ([("A1", 1)], [(2, "wrong_type")])
    pl.DataFrame({"accountid": [f"{ID}01"]}).write_parquet(path)
    with pytest.raises(ContractError, match="contract drift: the file has no column accountnumber"):
        _read(path, contracts)


def test_a_quote_left_open_to_the_end_of_the_file_is_a_reject(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(
        "accountid,accountnumber,statecode,numberofemployees\n"
        f"{ID}01,A1,0,1\n"
        f'{ID}02,"A2,0,1\n'  # the quote never closes: the fields still add up at the end
        f"{ID}03,A3,0,1\n"
    )
    good, bad = _read(path, contracts)
    assert good == [("A1", 2)]
    assert bad == [(3, "broken_quoting"), (4, "broken_quoting")]  # line 4 was swallowed
    # A value over several lines with its quotes closed is no such case.
    path.write_text(
        "accountid,accountnumber,statecode,numberofemployees\n"
        f'{ID}01,"A1\nsecond line",0,1\n{ID}02,A2,0,1\n'
    )
    assert _read(path, contracts) == ([("A1\nsecond line", 2), ("A2", 4)], [])
