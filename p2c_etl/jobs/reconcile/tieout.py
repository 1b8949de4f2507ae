"""The tie-out a controller signs: per document type and currency, Sales' total, F&O's total,
the difference (F&O - Sales), and that difference explained by reconciling items, each a
document with its class and amount; what no item explains is `unexplained` (0.00 when every
document is itemised). A header that disagrees with its own lines inside one system does not
move the difference between the systems, but it is a disagreement too: it is itemised beside
(`breaks`), with the header less its lines as its amount.

The class of a document's difference comes from what the run knows of it: F&O has not
calculated its totals yet (timing), the source changed since the last write (timing), the
last run rejected it (with the reason), it was edited by hand in the target (drift), both
(conflict), it is in one system only, or nothing explains it (unexplained)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal, get_args

from p2c_etl.jobs.reconcile.documents import DOCUMENTS, DocumentSpec
from p2c_etl.jobs.reconcile.money import DocumentDiff, MoneyReport
from p2c_etl.jobs.reconcile.records import Discrepancy, FieldDiff, FlowAgreement

ItemClass = Literal[
    "awaiting F&O totals",
    "pending sync",
    "rejected",
    "drift",
    "conflict",
    "only in Sales",
    "only in F&O",
    "header ≠ lines",
    "unexplained",
]
ITEM_CLASSES: tuple[ItemClass, ...] = get_args(ItemClass)
TIMING: tuple[ItemClass, ...] = ("awaiting F&O totals", "pending sync")
ZERO = Decimal(0)


@dataclass(frozen=True)
class ReconcilingItem:
    """One document's part in a tie-out. `amount` is F&O - Sales; for a header against lines
    break (`within` the system named), the header less its lines and charges."""

    document: str
    number: str
    currency: str
    customer: str | None
    item_class: ItemClass
    detail: str
    sales: Decimal | None
    fo: Decimal | None
    amount: Decimal
    within: str | None = None
    day: date | None = None
    field: str | None = None  # on a record: the field whose amounts differ

    @property
    def timing(self) -> bool:
        return self.item_class in TIMING


@dataclass(frozen=True)
class TieOut:
    document: str
    currency: str
    sales_documents: int
    fo_documents: int
    sales_total: Decimal
    fo_total: Decimal
    items: tuple[ReconcilingItem, ...]
    breaks: tuple[ReconcilingItem, ...]

    @property
    def difference(self) -> Decimal:
        return self.fo_total - self.sales_total

    @property
    def explained(self) -> Decimal:
        return sum((i.amount for i in self.items if i.item_class != "unexplained"), ZERO)

    @property
    def unexplained(self) -> Decimal:
        return self.difference - self.explained


def tie_out(
    money: Sequence[MoneyReport],
    discrepancies: Sequence[Discrepancy],
    flows: Sequence[FlowAgreement],
) -> tuple[TieOut, ...]:
    """The tie-out of every document type and currency reconciled."""
    out: list[TieOut] = []
    for report in money:
        spec = next(s for s in DOCUMENTS if s.name == report.document)
        known = _known(spec, discrepancies, flows)
        items = [_item(d, known.get(d.number)) for d in report.differences]
        breaks = [
            _break(d, _lines_of(spec, d.number, discrepancies, flows))
            for d in report.header_vs_lines
        ]
        for line in report.by_currency:
            out.append(
                TieOut(
                    report.document,
                    line.currency,
                    line.crm_documents,
                    line.erp_documents,
                    line.crm_total,
                    line.erp_total,
                    tuple(i for i in items if i.currency == line.currency),
                    tuple(b for b in breaks if b.currency == line.currency),
                )
            )
    return tuple(out)


def _flows_on(entities: frozenset[str], flows: Iterable[FlowAgreement]) -> set[str]:
    return {f.flow for f in flows if f.source in entities or f.target in entities}


def _number(key: str) -> str:
    """A header flow's record key is the document number, the company's code before it or
    not (`SO-2001`, `usmf|SO-2001`); a line's is the number and its sequence."""
    parts = key.split("|")
    return parts[1] if len(parts) > 1 and parts[0].islower() else parts[0]


def _known(
    spec: DocumentSpec, discrepancies: Sequence[Discrepancy], flows: Sequence[FlowAgreement]
) -> dict[str, Discrepancy]:
    """Per document number, what the records reconciliation found of its header."""
    headers = _flows_on(spec.entities(), flows)
    out: dict[str, Discrepancy] = {}
    for d in discrepancies:
        if d.flow in headers:
            out.setdefault(_number(d.record_key), d)
    return out


def _lines_of(
    spec: DocumentSpec,
    number: str,
    discrepancies: Sequence[Discrepancy],
    flows: Sequence[FlowAgreement],
) -> list[Discrepancy]:
    lines = _flows_on(spec.line_entities(), flows)
    return [d for d in discrepancies if d.flow in lines and _number(d.record_key) == number]


_RECORD_CLASSES: Mapping[str, ItemClass] = {
    "pending": "pending sync",
    "not synced": "pending sync",
    "drift": "drift",
    "conflict": "conflict",
    "rejected": "rejected",
}


def _item(diff: DocumentDiff, record: Discrepancy | None) -> ReconcilingItem:
    item_class, detail = _classify(diff, record)
    return ReconcilingItem(
        diff.document,
        diff.number,
        diff.currency,
        diff.customer,
        item_class,
        detail,
        diff.crm_total,
        diff.erp_total,
        diff.difference,
        day=diff.day,
    )


def _classify(diff: DocumentDiff, record: Discrepancy | None) -> tuple[ItemClass, str]:
    if not diff.ready:
        return "awaiting F&O totals", (
            "F&O has not calculated its totals yet (AreTotalsUpdated = No); "
            "the next run after the Calculate sales totals job carries them"
        )
    if record is not None and record.classification in _RECORD_CLASSES:
        cls = _RECORD_CLASSES[record.classification]
        if cls == "pending sync" and record.classification == "not synced":
            return cls, f"{record.flow}: only in the source, the next run writes it"
        return cls, f"{record.flow}: {record.detail}"
    if diff.problem == "only in Sales":
        return "only in Sales", "no such document in F&O"
    if diff.problem == "only in F&O":
        return "only in F&O", "no such document in Sales"
    if record is not None:
        return "unexplained", f"{record.flow}: {record.detail}"
    return "unexplained", f"{diff.problem}; no flow carries the difference"


def _break(diff: DocumentDiff, lines: list[Discrepancy]) -> ReconcilingItem:
    detail = diff.problem
    if lines:
        detail += "; lines that differ: " + ", ".join(
            f"{d.record_key} ({d.flow}: {d.classification})" for d in lines
        )
    return ReconcilingItem(
        diff.document,
        diff.number,
        diff.currency,
        diff.customer,
        "header ≠ lines",
        detail,
        diff.crm_total,
        diff.erp_total,
        diff.difference,
        within=diff.system,
        day=diff.day,
    )


def record_amounts(
    discrepancies: Sequence[Discrepancy],
    flows: Sequence[FlowAgreement],
    currencies: Mapping[str, str | None],
) -> tuple[ReconcilingItem, ...]:
    """The amounts that differ on records other than documents (a customer's credit limit):
    one item a differing field whose values are both numbers, F&O - Sales, in the currency
    of the customer its key names (`currencies`: customer number to currency)."""
    documents = set().union(
        *(_flows_on(s.entities() | s.line_entities(), flows) for s in DOCUMENTS)
    )
    sales_first = {f.flow for f in flows if f.source.startswith("crm.")}
    out = []
    for d in discrepancies:
        if d.flow in documents or d.classification not in (*_RECORD_CLASSES, "never synced"):
            continue
        customer = next((p for p in d.record_key.split("|") if p in currencies), None)
        for f in d.fields:
            sales, fo = sides(f, d.flow in sales_first)
            amount = gap(sales, fo)
            if amount is None:
                continue
            cls = _RECORD_CLASSES.get(d.classification, "unexplained")
            out.append(
                ReconcilingItem(
                    d.flow,
                    d.record_key,
                    (currencies.get(customer) if customer else None) or "",
                    customer,
                    cls,
                    f"{f.field}: {d.detail}",
                    Decimal(sales or "0"),
                    Decimal(fo or "0"),
                    amount,
                    field=f.field,
                )
            )
    return tuple(out)


def sides(diff: FieldDiff, sales_first: bool) -> tuple[str | None, str | None]:
    """(the Sales value, the F&O value) of a field's difference, by its flow's direction
    (`sales_first`: the flow runs from Sales to F&O)."""
    return (diff.source, diff.target) if sales_first else (diff.target, diff.source)


def gap(sales: str | None, fo: str | None) -> Decimal | None:
    """F&O - Sales of two values that are both numbers; None otherwise."""
    try:
        return Decimal(fo or "x") - Decimal(sales or "x")
    except ArithmeticError:
        return None
