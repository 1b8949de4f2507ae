"""What a reconciliation found, frozen (`ReconcileData`): computed first, rendered last as
HTML, JSON, CSV and XLSX (`report`, `workpaper`); and the verdict sentences read first."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from p2c_etl.jobs.reconcile.ageing import Ageing
from p2c_etl.jobs.reconcile.evidence import Evidence
from p2c_etl.jobs.reconcile.money import MoneyReport
from p2c_etl.jobs.reconcile.records import Discrepancy, FlowAgreement
from p2c_etl.jobs.reconcile.tieout import ReconcilingItem, TieOut

ZERO = Decimal(0)


@dataclass(frozen=True)
class HistoryPoint:
    reconciliation_id: str
    at: str
    agree: int
    total: int
    status: str
    html: str | None
    scope: str = "everything"


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
    scope: str = "everything"
    tie_out: tuple[TieOut, ...] = ()
    ageing: Ageing = field(default_factory=lambda: Ageing(None, (), (), ()))
    evidence: Evidence | None = None
    customers: tuple[tuple[str, str], ...] = ()  # number, name: the customers shown
    record_amounts: tuple[ReconcilingItem, ...] = ()  # amounts on records, not documents
    record_customers: tuple[tuple[str, str, str], ...] = ()  # record key, customer, currency

    @property
    def agree(self) -> int:
        return sum(f.agree for f in self.flows)

    @property
    def total(self) -> int:
        return sum(f.compared for f in self.flows)

    def names(self) -> dict[str, str]:
        return dict(self.customers)

    def as_json(self, hashes: Mapping[str, str] | None = None) -> dict[str, Any]:
        data = asdict(self)
        for money, report in zip(data["money"], self.money, strict=True):
            money["unexplained"] = unexplained(self.tie_out, report.document)
            for key in ("by_currency", "by_customer", "by_month"):
                for line, source in zip(money[key], getattr(report, key), strict=True):
                    line["difference"] = source.difference
        for out, tie in zip(data["tie_out"], self.tie_out, strict=True):
            out["difference"] = tie.difference
            out["explained"] = tie.explained
            out["unexplained"] = tie.unexplained
        if data["evidence"] is not None and hashes is not None:
            data["evidence"]["sha256"] = dict(hashes)
        data["agree"], data["total"] = self.agree, self.total
        result: dict[str, Any] = json.loads(json.dumps(data, default=_plain))
        return result


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value))


def unexplained(tie_out: Sequence[TieOut], document: str) -> dict[str, str]:
    """Per currency, what no reconciling item explains, where it is not zero."""
    return {
        t.currency: str(t.unexplained) for t in tie_out if t.document == document and t.unexplained
    }


def verdicts(
    flows: Sequence[FlowAgreement], money: Sequence[MoneyReport], tie_out: Sequence[TieOut]
) -> tuple[str, ...]:
    """The sentences a finance reader reads first."""
    out = []
    for report in money:
        if report.total == 0:
            continue
        line = f"{report.agree:,} of {report.total:,} {report.document} agree"
        for t in tie_out:
            if t.document != report.document or not (t.difference or t.items or t.breaks):
                continue
            n = len(t.items)
            line += (
                f"; {t.currency} difference (F&O - Sales) {t.difference:,.2f}: "
                f"{n} reconciling item{'s' if n != 1 else ''} {t.explained:,.2f}, "
                f"unexplained {t.unexplained:,.2f}"
            )
            if t.breaks:
                gap = sum((b.amount for b in t.breaks), ZERO)
                line += f"; {len(t.breaks)} header ≠ lines, {t.currency} {gap:,.2f}"
        out.append(line)
    agree, total = sum(f.agree for f in flows), sum(f.compared for f in flows)
    out.append(f"{agree:,} of {total:,} records agree across {len(flows)} flows")
    return tuple(out)
