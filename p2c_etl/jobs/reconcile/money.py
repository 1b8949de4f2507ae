"""Money, reconciled per document type (quotes, orders, invoices): totals per currency, per
customer and per month in each system side by side, document counts, and header total against
the sum of lines inside each system. Exact decimals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import polars as pl

from p2c_etl.config import SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.jobs.reconcile.documents import DOCUMENTS, DocumentSpec

ZERO = Decimal(0)


@dataclass(frozen=True)
class MoneyLine:
    """One row of a side-by-side table: a currency, a customer or a month."""

    group: str
    currency: str
    crm_documents: int
    erp_documents: int
    crm_total: Decimal
    erp_total: Decimal

    @property
    def difference(self) -> Decimal:
        return self.erp_total - self.crm_total


@dataclass(frozen=True)
class DocumentDiff:
    document: str
    number: str
    currency: str
    customer: str | None
    crm_total: Decimal | None
    erp_total: Decimal | None
    problem: str


@dataclass(frozen=True)
class MoneyReport:
    document: str
    agree: int
    total: int
    by_currency: tuple[MoneyLine, ...]
    by_customer: tuple[MoneyLine, ...]
    by_month: tuple[MoneyLine, ...]
    differences: tuple[DocumentDiff, ...]
    header_vs_lines: tuple[DocumentDiff, ...]
    crm_lines: int
    erp_lines: int

    def unexplained(self) -> dict[str, Decimal]:
        """Per currency, the net amount by which the two systems' documents disagree."""
        out: dict[str, Decimal] = {}
        for diff in self.differences:
            gap = (diff.erp_total or ZERO) - (diff.crm_total or ZERO)
            out[diff.currency] = out.get(diff.currency, ZERO) + gap
        return {c: v for c, v in out.items() if v != 0}


# --- money --------------------------------------------------------------------------------


def reconcile_money(
    connectors: Mapping[SystemName, Connector],
    company: str,
    as_of: date | None,
    currency: str | None,
    customer: str | None,
    tolerance: Decimal,
    flows: Sequence[str],
) -> list[MoneyReport]:
    """Money of the document types whose flows are reconciled (quotes, orders, invoices)."""
    wanted = {doc for doc in ("quote", "order", "invoice") if any(doc in f for f in flows)}
    if not wanted:
        return []
    crm, erp = connectors["crm"], connectors["erp"]
    currencies = crm.snapshot("transactioncurrencies", ["transactioncurrencyid", "isocurrencycode"])
    customers = _customer_numbers(crm)
    reports = [
        _money(spec, crm, erp, company, currencies, customers, as_of, currency, customer, tolerance)
        for spec in DOCUMENTS
        if spec.name.removesuffix("s") in wanted
    ]
    return [*reports, *([_quote_counts(crm, erp, company)] if "quote" in wanted else [])]


def _customer_numbers(crm: Connector) -> pl.DataFrame:
    accounts = crm.snapshot("accounts", ["accountid", "accountnumber"])
    contacts = crm.snapshot("contacts", ["contactid", "msdynce_contactnumber"])
    return pl.concat(
        [
            accounts.select(
                pl.col("accountid").alias("id"), pl.col("accountnumber").alias("number")
            ),
            contacts.select(
                pl.col("contactid").alias("id"), pl.col("msdynce_contactnumber").alias("number")
            ),
        ]
    ).unique("id")


def _money(
    spec: DocumentSpec,
    crm: Connector,
    erp: Connector,
    company: str,
    currencies: pl.DataFrame,
    customers: pl.DataFrame,
    as_of: date | None,
    currency: str | None,
    customer: str | None,
    tolerance: Decimal,
) -> MoneyReport:
    crm_docs = _crm_documents(spec, crm, currencies, customers)
    erp_docs = _erp_documents(spec, erp, company)
    both = crm_docs.join(erp_docs, on="number", how="full", coalesce=True, suffix="_erp")
    both = both.with_columns(
        pl.coalesce("currency", "currency_erp").alias("currency"),
        pl.coalesce("customer", "customer_erp").alias("customer"),
        pl.coalesce("day", "day_erp").alias("day"),
    )
    both = both.sort("number")
    if as_of is not None:
        both = both.filter(pl.col("day").is_null() | (pl.col("day") <= as_of))
    if currency:
        both = both.filter(pl.col("currency") == currency.upper())
    if customer:
        both = both.filter(pl.col("customer") == customer)
    differences = _document_differences(spec.name, both, tolerance)
    crm_lines, erp_lines = _line_counts(spec, crm, erp, company)
    checks = [
        *_header_vs_lines(spec, crm, "crm", crm_docs, tolerance),
        *_erp_header_vs_lines(spec, erp, company, erp_docs, tolerance),
    ]
    return MoneyReport(
        document=spec.name,
        agree=both.height - len(differences),
        total=both.height,
        by_currency=_side_by_side(both, "currency"),
        by_customer=_side_by_side(both, "customer"),
        by_month=_side_by_side(both.with_columns(pl.col("day").dt.strftime("%Y-%m")), "day"),
        differences=tuple(differences),
        header_vs_lines=tuple(checks),
        crm_lines=crm_lines,
        erp_lines=erp_lines,
    )


def _crm_documents(
    spec: DocumentSpec, crm: Connector, currencies: pl.DataFrame, customers: pl.DataFrame
) -> pl.DataFrame:
    docs = crm.snapshot(
        spec.crm_header,
        [
            spec.crm_number,
            spec.crm_total,
            spec.crm_date,
            "_transactioncurrencyid_value",
            "_customerid_value",
        ],
    )
    return (
        docs.join(
            currencies,
            left_on="_transactioncurrencyid_value",
            right_on="transactioncurrencyid",
            how="left",
        )
        .join(customers, left_on="_customerid_value", right_on="id", how="left")
        .select(
            pl.col(spec.crm_number).alias("number"),
            pl.col(spec.crm_total).cast(pl.Decimal(38, 6)).alias("total"),
            pl.col("isocurrencycode").alias("currency"),
            pl.col("number").alias("customer"),
            pl.col(spec.crm_date).alias("day"),
        )
    )


def _erp_documents(spec: DocumentSpec, erp: Connector, company: str) -> pl.DataFrame:
    docs = erp.snapshot(
        spec.erp_header,
        [
            "dataAreaId",
            spec.erp_number,
            spec.erp_total,
            spec.erp_date,
            "CurrencyCode",
            spec.erp_customer,
        ],
    )
    return docs.filter(pl.col("dataAreaId").str.to_lowercase() == company).select(
        pl.col(spec.erp_number).alias("number"),
        pl.col(spec.erp_total).cast(pl.Decimal(38, 6)).alias("total"),
        pl.col("CurrencyCode").alias("currency"),
        pl.col(spec.erp_customer).alias("customer"),
        pl.col(spec.erp_date).alias("day"),
    )


def _document_differences(name: str, both: pl.DataFrame, tolerance: Decimal) -> list[DocumentDiff]:
    out: list[DocumentDiff] = []
    for row in both.iter_rows(named=True):
        crm_total, erp_total = row["total"], row["total_erp"]
        if crm_total is None and erp_total is None:
            problem = None
        elif crm_total is None:
            problem = "no total in Sales" if row.get("currency") else "only in F&O"
        elif erp_total is None:
            problem = "no total in F&O"
        elif abs(crm_total - erp_total) > tolerance:
            problem = "totals differ"
        else:
            problem = None
        if problem is not None:
            out.append(
                DocumentDiff(
                    name,
                    row["number"],
                    row["currency"] or "",
                    row["customer"],
                    crm_total,
                    erp_total,
                    problem,
                )
            )
    return out


def _side_by_side(both: pl.DataFrame, group: str) -> tuple[MoneyLine, ...]:
    keys = [pl.col(group).cast(pl.String).fill_null("(none)").alias("__group")]
    if group != "currency":
        keys.append(pl.col("currency"))
    grouped = (
        both.group_by(keys)
        .agg(
            pl.col("total").is_not_null().sum().alias("crm_n"),
            pl.col("total_erp").is_not_null().sum().alias("erp_n"),
            pl.col("total").sum().alias("crm"),
            pl.col("total_erp").sum().alias("erp"),
            *([] if group != "currency" else [pl.col("currency").first().alias("__currency")]),
        )
        .sort("__group", "currency" if group != "currency" else "__group")
    )
    currency = "currency" if group != "currency" else "__currency"
    return tuple(
        MoneyLine(
            r["__group"],
            r[currency] or "",
            int(r["crm_n"]),
            int(r["erp_n"]),
            r["crm"] or ZERO,
            r["erp"] or ZERO,
        )
        for r in grouped.iter_rows(named=True)
    )


def _line_counts(
    spec: DocumentSpec, crm: Connector, erp: Connector, company: str
) -> tuple[int, int]:
    crm_lines = crm.snapshot(spec.crm_lines, [spec.crm_line_parent]).height
    erp_lines = (
        erp.snapshot(spec.erp_lines, ["dataAreaId"])
        .filter(pl.col("dataAreaId").str.to_lowercase() == company)
        .height
    )
    return crm_lines, erp_lines


def _header_vs_lines(
    spec: DocumentSpec, crm: Connector, system: str, docs: pl.DataFrame, tolerance: Decimal
) -> list[DocumentDiff]:
    headers = crm.snapshot(
        spec.crm_header,
        [spec.crm_header_id, spec.crm_number, spec.crm_total, *spec.crm_header_parts],
    )
    lines = crm.snapshot(spec.crm_lines, [spec.crm_line_parent, *spec.crm_line_parts])
    sums = lines.group_by(spec.crm_line_parent).agg(
        pl.sum_horizontal([pl.col(c).fill_null(0) for c in spec.crm_line_parts])
        .sum()
        .alias("lines")
    )
    joined = headers.join(
        sums, left_on=spec.crm_header_id, right_on=spec.crm_line_parent, how="left"
    )
    expected = pl.col("lines").fill_null(0) + pl.sum_horizontal(
        [pl.col(c).fill_null(0) for c in spec.crm_header_parts]
    )
    return _unbalanced(
        spec.name, system, joined, spec.crm_number, spec.crm_total, expected, tolerance
    )


def _erp_header_vs_lines(
    spec: DocumentSpec, erp: Connector, company: str, docs: pl.DataFrame, tolerance: Decimal
) -> list[DocumentDiff]:
    headers = erp.snapshot(
        spec.erp_header, ["dataAreaId", spec.erp_number, spec.erp_total, *spec.erp_header_parts]
    )
    lines = erp.snapshot(spec.erp_lines, ["dataAreaId", spec.erp_number, *spec.erp_line_parts])
    mine = pl.col("dataAreaId").str.to_lowercase() == company
    sums = (
        lines.filter(mine)
        .group_by(spec.erp_number)
        .agg(
            pl.sum_horizontal([pl.col(c).fill_null(0) for c in spec.erp_line_parts])
            .sum()
            .alias("lines")
        )
    )
    joined = headers.filter(mine).join(sums, on=spec.erp_number, how="left")
    expected = pl.col("lines").fill_null(0) + pl.sum_horizontal(
        [pl.col(c).fill_null(0) for c in spec.erp_header_parts]
    )
    return _unbalanced(
        spec.name, "erp", joined, spec.erp_number, spec.erp_total, expected, tolerance
    )


def _unbalanced(
    name: str,
    system: str,
    joined: pl.DataFrame,
    number: str,
    total: str,
    expected: pl.Expr,
    tolerance: Decimal,
) -> list[DocumentDiff]:
    rows = (
        joined.filter(pl.col(total).is_not_null())
        .select(
            pl.col(number).alias("number"), pl.col(total).alias("total"), expected.alias("expected")
        )
        .sort("number")
    )
    where = "Sales" if system == "crm" else "F&O"
    return [
        DocumentDiff(
            name,
            r["number"],
            "",
            None,
            r["total"] if system == "crm" else None,
            r["total"] if system == "erp" else None,
            f"{where}: header {r['total']} but lines and charges add up to {r['expected']}",
        )
        for r in rows.iter_rows(named=True)
        if abs(Decimal(r["total"]) - Decimal(r["expected"])) > tolerance
    ]


def _quote_counts(crm: Connector, erp: Connector, company: str) -> MoneyReport:
    crm_quotes = crm.snapshot("quotes", ["quotenumber", "statecode"]).filter(
        pl.col("statecode") == 1
    )
    erp_quotes = erp.snapshot("CDSSalesQuotationHeaders", ["dataAreaId", "SalesQuotationNumber"])
    erp_numbers = set(
        erp_quotes.filter(pl.col("dataAreaId").str.to_lowercase() == company)[
            "SalesQuotationNumber"
        ].to_list()
    )
    crm_numbers = set(crm_quotes["quotenumber"].to_list())
    missing = sorted(crm_numbers - erp_numbers)
    return MoneyReport(
        document="quotes",
        agree=len(crm_numbers & erp_numbers),
        total=len(crm_numbers | erp_numbers),
        by_currency=(),
        by_customer=(),
        by_month=(),
        differences=tuple(
            DocumentDiff("quotes", n, "", None, None, None, "active in Sales, not in F&O")
            for n in missing
        ),
        header_vs_lines=(),
        crm_lines=0,
        erp_lines=0,
    )
