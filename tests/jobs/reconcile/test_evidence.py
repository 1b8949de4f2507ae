"""The reconciliation's CSV and XLSX as a spreadsheet reads them: one record a row, every value
as it is, never a formula — line breaks, quotes and control characters included — and a
number (a negative amount included) a number."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from openpyxl.utils.escape import unescape

from p2c_etl.config import Settings
from p2c_etl.jobs.reconcile.exports import cell_text, csv_text, write_xlsx
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.reconcile.workpaper import discrepancy_rows
from p2c_etl.jobs.run import run_batch

HOSTILE = [
    "plain",
    "Wingtip\r=1+1",  # a bare CR, then a formula: the row 12 of issue 11
    "two\nlines\n+SUM(A1:A9)",
    "crlf\r\n@cmd",
    'a "quoted", comma',
    '=HYPERLINK("x")',
    "-42",
    "\tTAB",
    "esc\x1b[31m and nul\x00",
    "_x0041_ stays literal",
]


def _rows() -> list[list[str]]:
    return [["n", "value"], *([str(i), v] for i, v in enumerate(HOSTILE))]


def _unguarded(cell: str) -> str:
    """A CSV cell with the formula guard taken out: a `'` at its start and after each break."""
    for brk in ("\r\n", "\r", "\n"):
        cell = cell.replace(brk + "'", brk)
    return cell.removeprefix("'")


def test_csv_quotes_every_field_with_a_line_break_and_guards_every_line() -> None:
    text = csv_text(_rows())
    assert text.count("\r\n") - sum(v.count("\r\n") for v in HOSTILE) == len(HOSTILE) + 1
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert len(read) == len(HOSTILE) + 1  # one record a row: no CR split a record
    values = [row[1] for row in read[1:]]
    assert values[1] == "Wingtip\r'=1+1"
    assert values[2] == "two\nlines\n'+SUM(A1:A9)"
    assert values[3] == "crlf\r\n'@cmd"
    assert [_unguarded(v) for v in values] == HOSTILE
    assert values[6] == "-42"  # a number stays a number
    for value in values[:6] + values[7:]:  # no line of any other cell starts a formula
        for line in value.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            assert not line.startswith(("=", "+", "-", "@", "\t")), value
    for raw in ("Wingtip\r'=1+1", "crlf\r\n'@cmd"):
        assert f'"{raw}"' in text  # quoted, so that no reader breaks the row there


def test_a_negative_amount_is_read_back_as_a_number(tmp_path: Path) -> None:
    rows = [["document", "amount", "text"], ["INV-3005", Decimal("-100.000000"), "-1+2"]]
    read = list(csv.reader(io.StringIO(csv_text(rows), newline="")))
    assert read[1][:2] == ["INV-3005", "-100.00"] and float(read[1][1]) == -100.0
    assert read[1][2] == "'-1+2"  # text that is no number is still guarded
    path = tmp_path / "amounts.xlsx"
    write_xlsx(rows, path)
    sheet = load_workbook(path).active
    assert sheet is not None
    amount = sheet["B2"]
    assert amount.data_type == "n" and amount.value == -100 and amount.number_format == "#,##0.00"
    assert sheet["C2"].data_type == "s" and sheet["C2"].value == "-1+2"


def test_xlsx_cells_are_text_and_every_value_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "evidence.xlsx"
    write_xlsx(_rows(), path)
    sheet = load_workbook(path).active
    assert sheet is not None
    cells = [row[1] for row in sheet.iter_rows(min_row=2)]
    assert all(cell.data_type == "s" for cell in cells)  # never a formula
    assert [unescape(str(cell.value)) for cell in cells] == HOSTILE


def _libreoffice() -> str:
    found = shutil.which("soffice") or shutil.which("libreoffice")
    if found is None:
        pytest.skip(
            "LibreOffice is not installed (Debian: apt-get install libreoffice-calc-nogui): "
            "the CSV and XLSX were checked with Python's csv module and openpyxl only"
        )
    return found


def _convert(office: str, source: Path, to: str, infilter: str | None = None) -> Path:
    """`source` converted by LibreOffice headless, with a profile of its own."""
    out = source.parent / "converted"
    command = [
        office,
        f"-env:UserInstallation=file://{source.parent / 'lo-profile'}",
        "--headless",
        "--convert-to",
        to,
        "--outdir",
        str(out),
        str(source),
    ]
    if infilter:
        command[3:3] = [f"--infilter={infilter}"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    converted = out / f"{source.stem}.{to.split(':')[0]}"
    assert converted.is_file(), f"LibreOffice made no {converted}"
    return converted


def test_libreoffice_reads_one_row_a_record_and_no_formula(tmp_path: Path) -> None:
    office = _libreoffice()
    source = tmp_path / "evidence.csv"
    source.write_text(csv_text(_rows()), encoding="utf-8", newline="")
    # CSV in (comma, double quote, UTF-8; formulas evaluated if any are found), XLSX out
    sheet = load_workbook(_convert(office, source, "xlsx", "CSV:44,34,76,1")).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == len(HOSTILE) + 1  # a row per record: no CR started a new one
    cells = [row[1] for row in sheet.iter_rows(min_row=2)]
    assert all(c.data_type != "f" for c in cells)
    assert cells[6].value == -42 and cells[6].data_type == "n"  # a number is a number
    assert all(isinstance(c.value, str) for i, c in enumerate(cells) if i != 6)  # text is text

    def lf(text: str) -> str:  # an XLSX made by LibreOffice holds any line break as LF
        return text.replace("\r\n", "\n").replace("\r", "\n")

    assert [lf(_unguarded(str(c.value))) for c in cells][:8] == [lf(v) for v in HOSTILE[:8]]
    # (nothing was computed: "=HYPERLINK(...)" and "+SUM(...)" came back as their text)


def test_libreoffice_shows_the_xlsx_values_as_they_are(tmp_path: Path) -> None:
    office = _libreoffice()
    source = tmp_path / "evidence.xlsx"
    write_xlsx(_rows(), source)
    back = _convert(office, source, "csv:Text - txt - csv (StarCalc):44,34,76")
    read = list(csv.reader(io.StringIO(back.read_bytes().decode("utf-8"), newline="")))
    # LibreOffice writes a CR LF inside a cell as LF; everything else is exact
    assert [row[1] for row in read[1:]] == [v.replace("\r\n", "\n") for v in HOSTILE]


def test_a_reconciliation_files_hostile_values_safely(
    demo_dir: Path, demo_settings: Settings
) -> None:
    run_batch(demo_settings)
    customers = demo_dir / "erp" / "CustomersV2.jsonl"  # edited by hand in F&O: drift
    customers.write_text(customers.read_text().replace('"Wingtip Toys"', '"Wingtip\\r=1+1"'))
    summary = run_reconcile(demo_settings, flows=["accounts"])
    paths = {k: Path(v) for k, v in summary.paths.items()}
    expected = [[cell_text(c) for c in row] for row in discrepancy_rows(summary.data)]
    assert any(cell == "Wingtip\r=1+1" for row in expected for cell in row)
    with paths["csv"].open(newline="", encoding="utf-8") as handle:
        read = list(csv.reader(handle))
    assert [[_unguarded(c) for c in row] for row in read] == expected
    xlsx = [
        [unescape(c) if isinstance(c, str) else cell_text(c) for c in row]
        for row in load_workbook(paths["xlsx"])["Discrepancies"].iter_rows(values_only=True)
    ]
    assert xlsx == expected
