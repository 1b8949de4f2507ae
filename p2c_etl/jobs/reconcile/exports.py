"""The reconciliation for a spreadsheet: the discrepancy rows as CSV, and the workpaper as
XLSX (sheets Summary, By currency, By month, By customer, Discrepancies, Header vs lines,
Ageing). An amount is a number built from its Decimal, exact to the cent (`#,##0.00`, its
currency in a column beside it); text from either system stays text and never starts a
formula: in the CSV a `'` guards a text field (a field that parses as a number is written as
the number, so `-100.00` stays a negative amount), in the XLSX a text cell is typed text."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from p2c_etl.warehouse.private import write_private

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

Cell = str | Decimal | int | None
CENT = Decimal("0.01")
AMOUNT_FORMAT = "#,##0.00"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A spreadsheet starts a new row at any line break it finds unquoted (CR alone included), and
# reads a formula at the start of any of a cell's lines.
_LINE_FORMULA = re.compile(r"(?:\r\n|\r|\n)(?=[=+\-@\t])")
# What an XLSX cell cannot hold as it is (XML refuses control characters and reads a CR as
# LF), and a literal `_xHHHH_`, which a spreadsheet would decode: escaped the OOXML way.
_OOXML_ESCAPE = re.compile(r"[\x00-\x08\x0b-\x1f]|_(?=x[0-9A-Fa-f]{4}_)")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Sheet:
    """One sheet of the workpaper: rows above the table (`preamble`), the table's header
    row and its rows."""

    title: str
    header: tuple[str, ...]
    rows: Sequence[Sequence[Cell]]
    preamble: Sequence[Sequence[Cell]] = ()


def cents(value: Decimal) -> Decimal:
    """An amount to the cent, half away from zero (F&O's "Normal" rounding)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def cell_text(value: Cell) -> str:
    """A cell as the CSV holds it before the formula guard."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{cents(value):f}"
    return str(value)


def _safe(text: str) -> str:
    """A text field a spreadsheet will never read as a formula: a `'` before the field, and
    after every line break, where a formula could start. A number stays a number."""
    if _NUMBER.fullmatch(text):
        return text
    guarded = _LINE_FORMULA.sub(lambda m: m[0] + "'", text)
    return "'" + guarded if guarded.startswith(_FORMULA_START) else guarded


def csv_text(rows: Sequence[Sequence[Cell]]) -> str:
    """RFC 4180: CRLF between records, so that every field holding a CR, an LF, a quote or a
    comma is quoted (with LF alone as the terminator, Python leaves a bare CR unquoted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow([_safe(cell_text(cell)) for cell in row])
    return out.getvalue()


def xlsx_text(text: str) -> str:
    """A cell's text as an XLSX stores it (ECMA-376 `ST_Xstring`): a control character, CR
    included, as `_xHHHH_`, and the `_` of a literal `_xHHHH_` as `_x005F_`; a spreadsheet
    shows the text exactly (`openpyxl.utils.escape.unescape` gives it back)."""
    return _OOXML_ESCAPE.sub(lambda m: f"_x{ord(m[0]):04X}_", text)


def workbook_bytes(sheets: Sequence[Sheet]) -> bytes:
    workbook = Workbook()
    first = workbook.active
    if first is not None:
        workbook.remove(first)
    for sheet in sheets:
        _fill(workbook.create_sheet(sheet.title[:31]), sheet)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def write_xlsx(rows: Sequence[Sequence[Cell]], path: Path, title: str = "Discrepancies") -> None:
    """`rows` (the first the header) as a one-sheet workbook."""
    header = tuple(cell_text(c) for c in rows[0]) if rows else ()
    write_private(path, workbook_bytes([Sheet(title, header, rows[1:])]))


def _fill(ws: Worksheet, sheet: Sheet) -> None:
    widths: dict[int, int] = {}
    for r, row in enumerate(sheet.preamble, start=1):
        for c, value in enumerate(row, start=1):
            _put(ws, r, c, value, widths, bold=c == 1)
    top = len(sheet.preamble) + (2 if sheet.preamble else 1)
    for c, name in enumerate(sheet.header, start=1):
        _put(ws, top, c, name, widths, bold=True)
    for r, row in enumerate(sheet.rows, start=top + 1):
        for c, value in enumerate(row, start=1):
            _put(ws, r, c, value, widths)
    if sheet.header:
        ws.freeze_panes = ws.cell(row=top + 1, column=1)
        last = get_column_letter(len(sheet.header))
        ws.auto_filter.ref = f"A{top}:{last}{top + max(len(sheet.rows), 1)}"
    for c, width in widths.items():
        ws.column_dimensions[get_column_letter(c)].width = min(max(width + 2, 8), 60)


def _put(
    ws: Worksheet, row: int, column: int, value: Cell, widths: dict[int, int], bold: bool = False
) -> None:
    cell = ws.cell(row=row, column=column)
    if isinstance(value, Decimal):
        cell.value = cents(value)
        cell.number_format = AMOUNT_FORMAT
        shown = len(f"{cents(value):,}")
    elif isinstance(value, int):
        cell.value = value
        shown = len(str(value))
    elif value is None:
        shown = 0
    else:
        cell.value = xlsx_text(value)
        cell.data_type = "s"  # always text: "=1+1" stays the characters "=1+1"
        shown = max((len(line) for line in value.splitlines()), default=0)
    if bold:
        cell.font = Font(bold=True)
    widths[column] = max(widths.get(column, 0), shown)
