"""The pure pieces of a reconciliation, on a few literal rows: ageing, what a filter keeps,
how a document's difference is classified, what the evidence may show."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from p2c_etl.jobs.reconcile.ageing import OpenItem, age
from p2c_etl.jobs.reconcile.evidence import safe_url
from p2c_etl.jobs.reconcile.money import DocumentDiff, Filters, MoneyLine, MoneyReport
from p2c_etl.jobs.reconcile.records import Discrepancy, FlowAgreement
from p2c_etl.jobs.reconcile.scope import Attribution, Document
from p2c_etl.jobs.reconcile.tieout import tie_out

AT = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)


def test_ageing_carries_first_seen_bands_and_lists_what_was_resolved() -> None:
    found = [
        OpenItem("money|orders|SO-1", "orders SO-1", "drift", "USD", Decimal("10.00")),
        OpenItem("money|orders|SO-2", "orders SO-2", "drift", "USD", Decimal("-2.50")),
        OpenItem("records|accounts|A", "accounts A", "pending", "", None),
        OpenItem("money|invoices|INV-9", "invoices INV-9", "drift", "EUR", Decimal("1")),
    ]
    previous = [
        {"key": "money|orders|SO-1", "what": "orders SO-1", "classification": "drift",
         "currency": "USD", "amount": "10.00", "first_seen": "2026-02-01T20:00:00+00:00"},
        {"key": "money|orders|SO-2", "what": "orders SO-2", "classification": "drift",
         "currency": "USD", "amount": "-2.50", "first_seen": "2026-03-20T20:00:00+00:00"},
        {"key": "money|orders|SO-3", "what": "orders SO-3", "classification": "pending sync",
         "currency": "USD", "amount": "7", "first_seen": "2026-03-30T20:00:00+00:00"},
    ]  # fmt: skip
    ageing = age(found, AT, ("rec-before", previous))
    days = {i.key: i.days_open for i in ageing.open}
    assert days == {
        "money|orders|SO-1": 58,
        "money|orders|SO-2": 11,
        "records|accounts|A": 0,
        "money|invoices|INV-9": 0,
    }
    assert [(b.band, b.currency, b.count, b.amount) for b in ageing.bands] == [
        ("0-7 days", "", 1, Decimal(0)),
        ("0-7 days", "EUR", 1, Decimal(1)),
        ("8-30 days", "USD", 1, Decimal("-2.50")),
        ("over 30 days", "USD", 1, Decimal("10.00")),
    ]
    assert [(r.key, r.amount) for r in ageing.resolved] == [("money|orders|SO-3", Decimal(7))]
    assert ageing.compared_with == "rec-before"
    first = age(found, AT, None)
    assert {i.first_seen for i in first.open} == {AT.isoformat()} and not first.resolved


WHO = Attribution(
    customers={"ACC-1": "USD", "ACC-2": "CAD", "CON-9": "USD"},
    parents={"CON-9": "ACC-2"},
    documents={
        "SO-1": Document("ACC-1", "USD", date(2026, 1, 15)),
        "SO-2": Document("ACC-2", "CAD", date(2026, 2, 15)),
    },
)


def test_a_filter_keeps_the_records_its_key_leads_to() -> None:
    keys = ["usmf|ACC-1", "usmf|CON-9|ACC-2", "CON-9", "SO-1|2", "usmf|SO-2", "D0001"]

    def kept(**filters: object) -> list[str]:
        return [k for k in keys if WHO.wanted(k, Filters(**filters))]  # type: ignore[arg-type]

    assert kept() == keys
    assert kept(customer="ACC-2") == ["usmf|CON-9|ACC-2", "CON-9", "usmf|SO-2"]
    assert kept(customer="acc-1") == ["usmf|ACC-1", "SO-1|2"]  # as the systems compare keys
    assert kept(currency="usd") == ["usmf|ACC-1", "usmf|CON-9|ACC-2", "CON-9", "SO-1|2"]
    assert kept(as_of=date(2026, 1, 31)) == [k for k in keys if k != "usmf|SO-2"]
    assert kept(customer="ACC-1", currency="CAD") == []
    assert [WHO.customer_of(k) for k in keys] == ["ACC-1", "ACC-2", "CON-9", "ACC-1", "ACC-2", None]
    assert [WHO.currency_of(k) for k in keys] == ["USD", "USD", "USD", "USD", "CAD", None]


def _report(*differences: DocumentDiff, breaks: tuple[DocumentDiff, ...] = ()) -> MoneyReport:
    line = MoneyLine("USD", "USD", 3, 3, Decimal("300"), Decimal("260"))
    return MoneyReport("orders", 1, 3, (line,), (), (), differences, breaks, 0, 0)


def test_each_difference_is_classified_by_what_the_run_knows() -> None:
    headers = ("erp.CDSSalesOrderHeaders", "crm.salesorders")
    lines = ("erp.CDSSalesOrderLines", "crm.salesorderdetails")
    flows = [
        FlowAgreement("order_headers_back", *headers, 3, 1, ()),
        FlowAgreement("order_lines_back", *lines, 3, 2, ()),
    ]
    found = [
        Discrepancy("order_headers_back", "SO-1", "drift", "edited in the target"),
        Discrepancy("order_lines_back", "SO-3|2", "only in target", "no source record"),
    ]
    report = _report(
        DocumentDiff("orders", "SO-1", "USD", "ACC-1", Decimal("100"), Decimal("80"), "differ"),
        DocumentDiff("orders", "SO-2", "USD", "ACC-1", Decimal("50"), Decimal("30"), "differ"),
        DocumentDiff("orders", "SO-4", "USD", "ACC-1", None, Decimal("10"), "no total in Sales",
                     ready=False),
        breaks=(DocumentDiff("orders", "SO-3", "USD", "ACC-2", None, Decimal("90"), "F&O: …",
                             system="F&O", lines_total=Decimal("60")),),
    )  # fmt: skip
    (tie,) = tie_out([report], found, flows)
    classes = {i.number: (i.item_class, i.amount) for i in tie.items}
    assert classes == {
        "SO-1": ("drift", Decimal(-20)),
        "SO-2": ("unexplained", Decimal(-20)),  # nothing the run knows explains it
        "SO-4": ("awaiting F&O totals", Decimal(10)),
    }
    assert tie.difference == Decimal(-40) and tie.explained == Decimal(-10)
    assert tie.unexplained == Decimal(-30)  # SO-2's -20 and the -10 no document carries
    (broken,) = tie.breaks
    assert (broken.amount, broken.within) == (Decimal(30), "F&O")
    assert "SO-3|2 (order_lines_back: only in target)" in broken.detail


def test_the_evidence_shows_no_credentials_of_a_url() -> None:
    url = "https://user:hunter2@org.crm.dynamics.com:8443/api/data/v9.2/?code=abc#frag"
    assert safe_url(url) == "https://org.crm.dynamics.com:8443/api/data/v9.2/"
