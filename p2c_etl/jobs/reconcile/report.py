"""The reconciliation's evidence: a frozen `ReconcileData`, rendered last as HTML (autoescaped,
self-contained, printable), JSON, and the discrepancy rows as CSV and XLSX."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from openpyxl import Workbook

from p2c_etl.jobs.reconcile.money import MoneyReport
from p2c_etl.jobs.reconcile.records import Discrepancy, FlowAgreement
from p2c_etl.resources import templates_dir
from p2c_etl.stages.report import write_text
from p2c_etl.warehouse.private import private_dir, write_private

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A spreadsheet starts a new row at any line break it finds unquoted (CR alone included), and
# reads a formula at the start of any of a cell's lines.
_LINE_FORMULA = re.compile(r"(?:\r\n|\r|\n)(?=[=+\-@\t])")
# What an XLSX cell cannot hold as it is (XML refuses control characters and reads a CR as
# LF), and a literal `_xHHHH_`, which a spreadsheet would decode: escaped the OOXML way.
_OOXML_ESCAPE = re.compile(r"[\x00-\x08\x0b-\x1f]|_(?=x[0-9A-Fa-f]{4}_)")


@dataclass(frozen=True)
class HistoryPoint:
    reconciliation_id: str
    at: str
    agree: int
    total: int
    status: str
    html: str | None


@dataclass(frozen=True)
class ReconcileData:
    reconciliation_id: str
    at: str
    company: str
    status: str
    verdicts: tuple[str, ...]
    filters: tuple[tuple[str, str], ...]
    flows: tuple[FlowAgreement, ...]
    discrepancies: tuple[Discrepancy, ...]
    money: tuple[MoneyReport, ...]
    history: tuple[HistoryPoint, ...]

    @property
    def agree(self) -> int:
        return sum(f.agree for f in self.flows)

    @property
    def total(self) -> int:
        return sum(f.compared for f in self.flows)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for money, report in zip(data["money"], self.money, strict=True):
            money["unexplained"] = {c: str(v) for c, v in report.unexplained().items()}
            for key in ("by_currency", "by_customer", "by_month"):
                for line, source in zip(money[key], getattr(report, key), strict=True):
                    line["difference"] = source.difference
        data["agree"], data["total"] = self.agree, self.total
        result: dict[str, Any] = json.loads(json.dumps(data, default=_plain))
        return result


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value))


def verdicts(flows: tuple[FlowAgreement, ...], money: tuple[MoneyReport, ...]) -> tuple[str, ...]:
    """The sentences a finance reader reads first."""
    out = []
    for report in money:
        if report.total == 0:
            continue
        line = f"{report.agree:,} of {report.total:,} {report.document} agree"
        unexplained = report.unexplained()
        if unexplained:
            line += "; " + ", ".join(
                f"{c} {v:,.2f} unexplained" for c, v in sorted(unexplained.items())
            )
        out.append(line)
    agree, total = sum(f.agree for f in flows), sum(f.compared for f in flows)
    out.append(f"{agree:,} of {total:,} records agree across {len(flows)} flows")
    return tuple(out)


def discrepancy_rows(data: ReconcileData) -> list[list[str]]:
    """Every discrepancy as table rows: one per field for mismatches, one per record else."""
    rows = [
        ["flow", "record", "classification", "detail", "field", "source", "target", "last written"]
    ]
    for item in data.discrepancies:
        if not item.fields:
            rows.append(
                [item.flow, item.record_key, item.classification, item.detail, "", "", "", ""]
            )
        for diff in item.fields:
            rows.append(
                [
                    item.flow,
                    item.record_key,
                    item.classification,
                    item.detail,
                    diff.field,
                    diff.source or "",
                    diff.target or "",
                    diff.last_written or "",
                ]
            )
    for report in data.money:
        for doc in (*report.differences, *report.header_vs_lines):
            rows.append(
                [
                    f"money {doc.document}",
                    doc.number,
                    doc.problem,
                    doc.currency,
                    "total",
                    _amount(doc.crm_total),
                    _amount(doc.erp_total),
                    "",
                ]
            )
    return rows


def _amount(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def _safe(text: str) -> str:
    """A cell a spreadsheet will never read as a formula: a `'` before the cell, and after
    every line break, where a formula could start."""
    guarded = _LINE_FORMULA.sub(lambda m: m[0] + "'", text)
    return "'" + guarded if guarded.startswith(_FORMULA_START) else guarded


def csv_text(rows: list[list[str]]) -> str:
    """RFC 4180: CRLF between records, so that every field holding a CR, an LF, a quote or a
    comma is quoted (with LF alone as the terminator, Python leaves a bare CR unquoted)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow([_safe(cell) for cell in row])
    return out.getvalue()


def xlsx_text(text: str) -> str:
    """A cell's text as an XLSX stores it (ECMA-376 `ST_Xstring`): a control character, CR
    included, as `_xHHHH_`, and the `_` of a literal `_xHHHH_` as `_x005F_`; a spreadsheet
    shows the text exactly (`openpyxl.utils.escape.unescape` gives it back)."""
    return _OOXML_ESCAPE.sub(lambda m: f"_x{ord(m[0]):04X}_", text)


def write_xlsx(rows: list[list[str]], path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "discrepancies"
    for r, row in enumerate(rows, start=1):
        for c, text in enumerate(row, start=1):
            cell = sheet.cell(row=r, column=c)
            cell.value = xlsx_text(text)
            cell.data_type = "s"  # always text: "=1+1" stays the characters "=1+1"
    out = io.BytesIO()
    workbook.save(out)
    write_private(path, out.getvalue())


def render_html(data: ReconcileData) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("reconcile.html").render(report=data, chart=_chart(data))


def render_index(points: list[HistoryPoint]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), autoescape=True)
    return env.get_template("reconcile_index.html").render(points=points)


def _chart(data: ReconcileData) -> dict[str, Any]:
    """Geometry for the two inline SVG charts (the template only draws it)."""
    peak = max((f.compared - f.agree for f in data.flows), default=0) or 1
    bars = [
        {"flow": f.flow, "n": f.compared - f.agree, "width": 300 * (f.compared - f.agree) / peak}
        for f in data.flows
    ]
    points = [p for p in data.history if p.total]
    line = [
        {
            "x": 10 + i * (280 / max(len(points) - 1, 1)),
            "y": 110 - 100 * p.agree / p.total,
            "label": f"{p.at[:10]}: {100 * p.agree / p.total:.1f}%",
        }
        for i, p in enumerate(points)
    ]
    return {"bars": bars, "line": line}


def write_reconciliation(data: ReconcileData, out_dir: Path) -> dict[str, Path]:
    """`<id>.html`, `.json`, `.csv`, `.xlsx` in `out_dir`; returns their paths."""
    private_dir(out_dir)
    paths = {
        ext: out_dir / f"{data.reconciliation_id}.{ext}" for ext in ("html", "json", "csv", "xlsx")
    }
    rows = discrepancy_rows(data)
    write_text(paths["json"], json.dumps(data.as_json(), indent=2) + "\n")
    write_text(paths["csv"], csv_text(rows))
    write_xlsx(rows, paths["xlsx"])
    write_text(paths["html"], render_html(data))
    return paths
