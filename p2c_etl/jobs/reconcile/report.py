"""The reconciliation's evidence, rendered last from the frozen `data.ReconcileData`: HTML
(autoescaped, self-contained, printable), JSON, the discrepancy rows as CSV and the workpaper
as XLSX (`workpaper`, `exports`). Each file's SHA-256 goes into the ones written after it: the
XLSX states the CSV's, the JSON the CSV's and the XLSX's, the HTML all three."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2

from p2c_etl.jobs.reconcile.ageing import document_item_key
from p2c_etl.jobs.reconcile.data import HistoryPoint, ReconcileData
from p2c_etl.jobs.reconcile.evidence import sha256
from p2c_etl.jobs.reconcile.exports import cents, csv_text, workbook_bytes
from p2c_etl.jobs.reconcile.workpaper import (
    DISCREPANCY_HEADER,
    discrepancy_entries,
    discrepancy_rows,
    sheets,
)
from p2c_etl.resources import templates_dir
from p2c_etl.stages.report import write_text
from p2c_etl.warehouse.private import private_dir, write_private


def amount(value: Decimal | None) -> str:
    """An amount as the report shows it: to the cent, thousands separated."""
    return "" if value is None else f"{cents(value):,.2f}"


def raw(value: Decimal | None) -> str:
    return "" if value is None else f"{cents(value):f}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["amount"] = amount
    env.filters["raw"] = raw
    env.tests["amount_cell"] = lambda value: isinstance(value, Decimal)
    return env


def render_html(data: ReconcileData, hashes: Mapping[str, str] | None = None) -> str:
    entries = discrepancy_entries(data)
    drills: dict[tuple[str, str], int] = {}
    for cells, month in entries:
        record = str(cells[2])
        reached = {("customer", str(cells[3])), ("month", month), ("record", record)}
        reached |= {("customer", part) for part in record.split("|")}
        reached |= {("record", record.split("|")[0])}
        for slot in reached:
            drills[slot] = drills.get(slot, 0) + 1
    items = [i for t in data.tie_out for i in t.items]
    return (
        _env()
        .get_template("reconcile.html")
        .render(
            report=data,
            chart=_chart(data),
            hashes=dict(hashes or {}),
            rows=entries,
            header=DISCREPANCY_HEADER,
            names=data.names(),
            drills=drills,
            ages={i.key: i for i in data.ageing.open},
            item_key=lambda i: document_item_key(i.document, i.number, i.within),
            items_count=len(items),
            breaks_count=sum(len(t.breaks) for t in data.tie_out),
            classes=sorted({str(cells[6]) for cells, _ in entries}),
            css_id=re.sub(r"[^A-Za-z0-9_.-]", "", data.reconciliation_id),
        )
    )


def render_index(points: list[HistoryPoint]) -> str:
    return _env().get_template("reconcile_index.html").render(points=points)


def _chart(data: ReconcileData) -> dict[str, Any]:
    """Geometry for the two inline SVG charts (the template only draws it). The trend holds
    only the reconciliations of this one's scope: like compared with like."""
    peak = max((f.compared - f.agree for f in data.flows), default=0) or 1
    bars = [
        {"flow": f.flow, "n": f.compared - f.agree, "width": 300 * (f.compared - f.agree) / peak}
        for f in data.flows
    ]
    points = [p for p in data.history if p.total and p.scope == data.scope]
    step = 300 / max(len(points) - 1, 1)
    line = [
        {
            "x": 50 + i * step,
            "y": 120 - 100 * p.agree / p.total,
            "date": p.at[:10],
            "label": f"{p.at[:16].replace('T', ' ')}: {100 * p.agree / p.total:.1f}%",
        }
        for i, p in enumerate(points)
    ]
    ticks = [{"y": 120 - v, "label": f"{v}%"} for v in (0, 50, 100)]
    return {"bars": bars, "line": line, "ticks": ticks}


def write_reconciliation(data: ReconcileData, out_dir: Path) -> dict[str, Path]:
    """`<id>.html`, `.json`, `.csv`, `.xlsx` in `out_dir`; returns their paths."""
    private_dir(out_dir)
    paths = {
        ext: out_dir / f"{data.reconciliation_id}.{ext}" for ext in ("html", "json", "csv", "xlsx")
    }
    hashes: dict[str, str] = {}
    csv_bytes = csv_text(discrepancy_rows(data)).encode("utf-8")
    write_private(paths["csv"], csv_bytes)
    hashes["csv"] = sha256(csv_bytes)
    xlsx = workbook_bytes(sheets(data, hashes))
    write_private(paths["xlsx"], xlsx)
    hashes["xlsx"] = sha256(xlsx)
    text = json.dumps(data.as_json(hashes), indent=2) + "\n"
    write_text(paths["json"], text)
    hashes["json"] = sha256(text.encode("utf-8"))
    write_text(paths["html"], render_html(data, hashes))
    return paths
