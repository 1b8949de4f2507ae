"""Damaged CSV files: quoting as RFC 4180 has it, or a bad row for each line of the record that
breaks it, every record counted; lines that end in LF or CRLF, or a one-line refusal.

Review findings 2 (a quote left open mid-file swallowed the lines after it, uncounted), 6 (text
after a closing quote was joined to the value) and 12 (old Mac line endings were a traceback).
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
from p2c_etl.connectors import export_csv
from p2c_etl.connectors.badrows import RECORD, SOURCE_BAD_SCHEMA
from p2c_etl.connectors.exports import read_chunks
from p2c_etl.connectors.files import FilesConnector, read_all
from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import LINE

COLUMNS = ["accountnumber", "name", "statecode", "numberofemployees", "creditlimit"]
HEADER = ",".join(COLUMNS)
SWALLOWED = "swallowed by the quote opened at line"

Bad = tuple[int, str, str, str | None]  # line, reason, message, source key read


def read(root: Path, contracts: ContractSet) -> tuple[list[str], list[Bad]]:
    """(account numbers of the clean records, bad rows) of crm/accounts.csv in `root`."""
    found: list[pl.DataFrame] = []
    frame = FilesConnector("crm", root, contracts).snapshot(
        "accounts", COLUMNS, on_bad=found.append
    )
    rows = pl.concat([pl.DataFrame(schema=SOURCE_BAD_SCHEMA), *found]).sort(LINE)
    bad = [
        (r[LINE], r["reason"], r["message"], _key(r[RECORD])) for r in rows.iter_rows(named=True)
    ]
    return frame["accountnumber"].to_list(), bad


def _key(record: str | None) -> str | None:
    return None if record is None else json.loads(record).get("accountnumber")


def write(root: Path, *lines: str, end: str = "\n") -> Path:
    path = root / "accounts.csv"
    path.write_bytes((HEADER + end + "".join(line + end for line in lines)).encode())
    return path


# --- 2: a quote left open swallows lines: each is a record, and a reject -----------------


def test_a_quote_left_open_mid_file_makes_each_line_it_swallows_a_reject_with_its_key(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write(
        tmp_path,
        "A1,One,0,5,1",
        'A2,"Two,0,5,2',  # line 3: the quote is never closed on its line …
        "A3,Three,0,5,3",
        'A4,"Four, Ltd",0,5,4',  # … and the opening quote here "closes" it, text after
        "A5,Five,0,5,5",
    )
    good, bad = read(tmp_path, contracts)
    assert good == ["A1", "A5"]
    assert [(line, reason, key) for line, reason, _, key in bad] == [
        (3, "broken_quoting", "A2"),  # read up to the field the quote opens in
        (4, "broken_quoting", "A3"),
        (5, "broken_quoting", "A4"),  # the line reads well on its own
    ]
    assert "not closed where it should be" in bad[0][2] and "line 5" in bad[0][2]
    assert all(f"{SWALLOWED} 3" in message for _, _, message, _ in bad[1:])
    assert len(good) + len(bad) == 5  # every line of the file is a record, counted


def test_a_swallowed_span_whose_fields_still_add_up_is_no_record(
    tmp_path: Path, contracts: ContractSet
) -> None:
    # pyarrow reads A1 with the name 'One,0,5,1\nA2,Two"' and the right number of fields.
    write(tmp_path, 'A1,"One,0,5,1', 'A2,"Two",0,5,2', "A3,Three,0,5,3")
    good, bad = read(tmp_path, contracts)
    assert good == ["A3"]
    assert [(line, reason, key) for line, reason, _, key in bad] == [
        (2, "broken_quoting", "A1"),
        (3, "broken_quoting", "A2"),
    ]


def test_a_quote_left_open_to_the_end_makes_each_line_after_it_a_reject(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write(tmp_path, "A1,One,0,5,1", 'A2,"Two,0,5,2', "", "A3,Three,0,5,3")
    good, bad = read(tmp_path, contracts)
    assert good == ["A1"]
    assert [(line, reason, key) for line, reason, _, key in bad] == [
        (3, "broken_quoting", "A2"),
        (5, "broken_quoting", "A3"),  # the empty line 4 is no record, swallowed or not
    ]
    assert "never closed" in bad[0][2] and f"{SWALLOWED} 3" in bad[1][2]


def test_a_record_over_two_lines_with_the_wrong_number_of_fields_is_a_reject_a_line(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write(tmp_path, 'A1,"One', 'more",0,5,1,extra', "A2,Two,0,5,2")
    good, bad = read(tmp_path, contracts)
    assert good == ["A2"]
    assert [(line, reason) for line, reason, _, _ in bad] == [
        (2, "broken_quoting"),
        (3, "broken_quoting"),
    ]
    assert "6 fields, not 5" in bad[0][2] and f"{SWALLOWED} 2" in bad[1][2]


def test_a_value_over_several_lines_that_closes_well_is_one_record(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write(tmp_path, 'A1,"One\nsecond ""line""\nthird",0,5,1', "A2,Two,0,5,x")
    good, bad = read(tmp_path, contracts)
    assert good == ["A1"] and [(b[0], b[1]) for b in bad] == [(5, "wrong_type")]


def test_damage_in_later_blocks_and_pieces_keeps_every_line_number(
    tmp_path: Path, contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_csv, "_PARSE_BLOCK", 1 << 11)  # parse and scan blocks
    monkeypatch.setattr(export_csv, "_PIECE", 1 << 8)  # values over two lines straddle pieces
    monkeypatch.setattr(export_csv, "_SCAN_AFTER_DAMAGE", 1 << 8)
    monkeypatch.setattr(export_csv, "_CLEAN_RUN", 2)

    def spread(first: int, count: int) -> list[str]:
        return [f'M{i},"Name\n{i}",0,{i},1' for i in range(first, first + count)]

    lines = [
        *spread(0, 150),  # lines 2 … 301
        'B1,"Bad"x,0,1,1',  # 302: text after the closing quote
        *spread(150, 50),  # 303 … 402
        'B2,"Open,0,1,1',  # 403, closed by the quote of 406
        "B3,Three,0,1,1",
        "B4,Four,0,1,1",
        'B5,"Five, Ltd",0,1,1',
        *spread(200, 50),  # 407 … 506
        "B6,Six,0,1.5,1",  # 507: 1.5 employees
        'B7,"Seven,0,1,1',  # 508: never closed
        "B8,Eight,0,1,1",
    ]
    path = write(tmp_path, *lines)
    contract = contracts.get("crm", "accounts")
    chunks = list(read_chunks(path, contract, COLUMNS, 64))
    good = pl.concat([c.frame.select("accountnumber", LINE) for c in chunks])
    bad = pl.concat([c.bad for c in chunks]).sort(LINE)
    assert good.height == 250 and good.row(0) == ("M0", 2) and good.row(-1) == ("M249", 505)
    assert good.filter(pl.col("accountnumber") == "M150").row(0) == ("M150", 303)
    assert bad.select(LINE, "reason").rows() == [
        (302, "broken_quoting"),
        *[(line, "broken_quoting") for line in range(403, 407)],
        (507, "wrong_type"),
        (508, "broken_quoting"),
        (509, "broken_quoting"),
    ]
    assert sum(c.records for c in chunks) == 250 + 8


def _accounts_csv(crm: Path, contracts: ContractSet) -> Path:
    """crm/accounts as CSV, every column the demo holds."""
    source = crm / "accounts.jsonl"
    held = {k for line in source.read_text(encoding="utf-8").splitlines() for k in json.loads(line)}
    columns = [c for c in contracts.get("crm", "accounts").columns if c in held]
    frame = FilesConnector("crm", crm, contracts).snapshot("accounts", columns)
    source.unlink()
    path = crm / "accounts.csv"
    frame.write_csv(path)
    return path


def _run(demo_dir: Path) -> tuple[int, dict[str, object], str]:
    config = str(demo_dir / "p2c.toml")
    result = CliRunner().invoke(main, ["run", "--config", config, "--flows", "accounts", "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr + result.stdout


def _unclosed_in_line_4(demo_dir: Path, contracts: ContractSet) -> Path:
    path = _accounts_csv(demo_dir / "crm", contracts)
    data = path.read_bytes()
    assert data.count(b"Blue Yonder Airlines") == 1  # the third account, line 4
    path.write_bytes(data.replace(b"Blue Yonder Airlines", b'"Blue Yonder Airlines'))
    return path


def test_in_a_run_each_line_an_unclosed_quote_swallows_is_a_reject_with_its_key(
    demo_dir: Path, contracts: ContractSet, assert_accounted: Callable[[object], None]
) -> None:
    path = _unclosed_in_line_4(demo_dir, contracts)
    code, summary, output = _run(demo_dir)
    assert code == 1 and "Traceback" not in output
    assert_accounted(summary["flows"])
    (accounts,) = summary["flows"]  # type: ignore[attr-defined]
    assert accounts["source_rows"] == 40  # the file's records, all of them
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        rejects = con.execute(
            "SELECT source_line, record_key, source_file, message FROM rejects "
            "WHERE reason = 'broken_quoting' ORDER BY source_line"
        ).fetchall()
    # The quote opened in line 4 runs on to the opening quote of "Litware, Inc." (line 12).
    names = ["BLUEYO", "CITYPO", "COHOWI", "CONTOS", "FABRIK", "FOURTH", "GRAPHI", "HUMONG"]
    names.append("LITWAR")
    assert [(line, key) for line, key, _, _ in rejects] == [
        (line, f"ACC-010{line - 1:02d}-{name}")
        for line, name in zip(range(4, 13), names, strict=True)
    ]
    assert {source for _, _, source, _ in rejects} == {str(path)}
    assert all(f"accounts.csv line {line}: broken quoting" in m for line, _, _, m in rejects)


def test_in_a_run_the_twin_of_a_swallowed_record_is_not_written(
    demo_dir: Path, contracts: ContractSet, assert_accounted: Callable[[object], None]
) -> None:
    # Line 7 (ACC-01006-CONTOS) is swallowed; line 38 holds the same key. Read whole, both
    # would be duplicate_key rejects: line 38 must not update the customer on its own.
    _unclosed_in_line_4(demo_dir, contracts)
    target = demo_dir / "erp" / "CustomersV2.jsonl"
    before = _customers(target, "ACC-01006-CONTOS")
    assert [c["OrganizationName"] for c in before] == ["Contoso Pharmaceuticals"]
    code, summary, _ = _run(demo_dir)
    assert code == 1
    assert_accounted(summary["flows"])
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        twins = con.execute(
            "SELECT reason FROM rejects WHERE record_key = 'ACC-01006-CONTOS' ORDER BY reason"
        ).fetchall()
    assert twins == [("broken_quoting",), ("duplicate_key",)]
    assert _customers(target, "ACC-01006-CONTOS") == before  # not "Contoso Pharmaceuticals East"


def _customers(target: Path, account: str) -> list[dict[str, object]]:
    lines = target.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["CustomerAccount"] == account]


# --- 6: text after a closing quote ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ['"One"x', '"One"""x', '""x', '"One,"x', '"One" '],
    ids=["text", "after-a-quote-in-it", "after-an-empty-value", "after-a-comma", "a-space"],
)
def test_text_after_a_closing_quote_is_broken_quoting_not_joined_to_the_value(
    tmp_path: Path, contracts: ContractSet, name: str
) -> None:
    write(tmp_path, f"A1,{name},0,5,1", 'A2,"Two, Ltd",0,5,2')
    good, bad = read(tmp_path, contracts)
    assert good == ["A2"]
    assert [(line, reason, key) for line, reason, _, key in bad] == [(2, "broken_quoting", "A1")]
    assert "text follows the closing quote" in bad[0][2] and "column name" in bad[0][2]


def test_text_after_a_closing_quote_in_a_csv_target_refuses_it_whole(tmp_path: Path) -> None:
    target = tmp_path / "CustomersV2.csv"
    target.write_text('CustomerAccount,OrganizationName\nA1,One\nA2,"Blue Yonder"Airlines\n')
    with pytest.raises(ConnectorError) as refused:
        read_all(target, {"CustomerAccount": pl.String(), "OrganizationName": pl.String()})
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert f"{target}: line 3:" in message and "(broken_quoting)" in message


# --- 12: line endings ----------------------------------------------------------------------


def test_old_mac_line_endings_in_a_source_are_a_one_line_refusal(
    demo_dir: Path, contracts: ContractSet, assert_accounted: Callable[[object], None]
) -> None:
    path = _accounts_csv(demo_dir / "crm", contracts)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    targets = {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())}
    code, summary, output = _run(demo_dir)
    assert code == 2 and "Traceback" not in output
    assert_accounted(summary["flows"])
    error = str(summary["error"])
    assert len(error.splitlines()) == 1
    assert f"{path}: line 1: a line ends in a bare CR" in error
    assert {p: p.read_bytes() for p in sorted((demo_dir / "erp").iterdir())} == targets


def test_old_mac_line_endings_in_a_target_refuse_it_whole(tmp_path: Path) -> None:
    target = tmp_path / "CustomersV2.csv"
    target.write_bytes(b"CustomerAccount,OrganizationName\rA1,One\rA2,Two\r")
    with pytest.raises(ConnectorError, match=r"CustomersV2\.csv: line 1: a line ends in a bare CR"):
        read_all(target, {"CustomerAccount": pl.String(), "OrganizationName": pl.String()})


def test_a_bare_cr_inside_a_line_is_refused_naming_the_line(
    tmp_path: Path, contracts: ContractSet
) -> None:
    # pyarrow would end a record there, and every later line number would be one too high.
    write(tmp_path, "A1,One,0,5,1", "A2,Two\rmore,0,5,2", "A3,Three,0,5,3")
    with pytest.raises(ConnectorError, match=r"accounts\.csv: line 3: a line ends in a bare CR"):
        read(tmp_path, contracts)


def test_crlf_lines_keep_their_numbers_and_a_cr_in_a_quoted_value_is_kept(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write(tmp_path, 'A1,"One\r\nTwo\rThree",0,5,1', 'A2,"x"y,0,5,2', "A3,Three,0,5,z", end="\r\n")
    connector = FilesConnector("crm", tmp_path, contracts)
    frame = connector.snapshot("accounts", COLUMNS, on_bad=lambda _: None)
    assert frame["name"].to_list() == ["One\r\nTwo\rThree"]  # as it is, CRs and all
    _, bad = read(tmp_path, contracts)
    assert [(line, reason) for line, reason, _, _ in bad] == [
        (4, "broken_quoting"),
        (5, "wrong_type"),
    ]


def test_text_that_is_not_utf8_next_to_quoted_values_is_a_bad_encoding_row(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = write(tmp_path, 'A1,"One, Ltd",0,5,1', "A2,BAD__UTF8,0,5,2", 'A3,"x"y,0,5,3')
    path.write_bytes(path.read_bytes().replace(b"__", b"\xff\xfe"))
    good, bad = read(tmp_path, contracts)
    assert good == ["A1"]
    assert [(line, reason) for line, reason, _, _ in bad] == [
        (3, "bad_encoding"),
        (4, "broken_quoting"),
    ]
