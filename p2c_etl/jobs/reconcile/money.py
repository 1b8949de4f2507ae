"""Money, reconciled per document type (quotes, orders, invoices): totals per currency, per
customer and per month in each system side by side, document counts, and header total against
the sum of lines inside each system. Exact decimals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

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
    """A document whose totals disagree between the systems, or (`system` set) whose header
    total disagrees with its own lines and charges inside one system (`lines_total`)."""

    document: str
    number: str
    currency: str
    customer: str | None
    crm_total: Decimal | None
    erp_total: Decimal | None
    problem: str
    ready: bool = True  # F&O has calculated the document's totals
    system: str | None = None  # "Sales" or "F&O": a header against lines break in it
    lines_total: Decimal | None = None
    day: date | None = None

    @property
    def difference(self) -> Decimal:
        """F&O - Sales; for a header against lines break, the header less its lines."""
        if self.system is not None:
            header = self.crm_total if self.system == "Sales" else self.erp_total
            return (header or ZERO) - (self.lines_total or ZERO)
        return (self.erp_total or ZERO) - (self.crm_total or ZERO)


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


# --- money --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What a reconciliation is narrowed to (`--as-of`, `--currency`, `--customer`)."""

    as_of: date | None = None
    currency: str | None = None
    customer: str | None = None

    def items(self) -> tuple[tuple[str, str], ...]:
        pairs = (("as of", self.as_of), ("currency", self.currency), ("customer", self.customer))
        return tuple((k, str(v)) for k, v in pairs if v)


def all_documents(
    connectors: Mapping[SystemName, Connector],
    company: str,
    currencies: pl.DataFrame,
    customers: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """Every document of every type in either system (`documents`), read once for the money
    and for what a filter keeps (`scope`); `currencies` and `customers` as `currency_codes`
    and `customer_numbers` read them."""
    crm, erp = connectors["crm"], connectors["erp"]
    return {
        spec.name: documents(spec, crm, erp, company, currencies, customers) for spec in DOCUMENTS
    }


def reconcile_money(
    connectors: Mapping[SystemName, Connector],
    company: str,
    filters: Filters,
    tolerance: Decimal,
    flows: Sequence[str],
    every: Mapping[str, pl.DataFrame],
) -> list[MoneyReport]:
    """Money of the document types whose flows are reconciled (quotes, orders, invoices), of
    `every` document (`all_documents`)."""
    wanted = wanted_documents(flows)
    crm, erp = connectors["crm"], connectors["erp"]
    return [
        _money(spec, crm, erp, company, every[spec.name], filters, tolerance)
        for spec in DOCUMENTS
        if spec.name in wanted
    ]


def wanted_documents(flows: Sequence[str]) -> set[str]:
    return {f"{doc}s" for doc in ("quote", "order", "invoice") if any(doc in f for f in flows)}


def currency_codes(crm: Connector) -> pl.DataFrame:
    return crm.snapshot("transactioncurrencies", ["transactioncurrencyid", "isocurrencycode"])


def customer_numbers(crm: Connector) -> pl.DataFrame:
    """Sales' customers (accounts and contacts): id, number, name, currency id, parent id."""
    accounts = crm.snapshot(
        "accounts", ["accountid", "accountnumber", "name", "_transactioncurrencyid_value"]
    )
    contacts = crm.snapshot(
        "contacts",
        [
            "contactid",
            "msdynce_contactnumber",
            "firstname",
            "lastname",
            "_transactioncurrencyid_value",
            "_parentcustomerid_value",
        ],
    )
    return pl.concat(
        [
            accounts.select(
                pl.col("accountid").cast(pl.String).alias("id"),
                pl.col("accountnumber").alias("number"),
                pl.col("name").alias("name"),
                pl.col("_transactioncurrencyid_value").cast(pl.String).alias("currency_id"),
                pl.lit(None, pl.String).alias("parent_id"),
            ),
            contacts.select(
                pl.col("contactid").cast(pl.String).alias("id"),
                pl.col("msdynce_contactnumber").alias("number"),
                pl.concat_str(["firstname", "lastname"], separator=" ", ignore_nulls=True).alias(
                    "name"
                ),
                pl.col("_transactioncurrencyid_value").cast(pl.String).alias("currency_id"),
                pl.col("_parentcustomerid_value").cast(pl.String).alias("parent_id"),
            ),
        ]
    ).unique("id", keep="first", maintain_order=True)


def customer_table(customers: pl.DataFrame, currencies: pl.DataFrame) -> pl.DataFrame:
    """Sales' customers by number: name, currency (ISO code) and parent account's number
    (`customers`, `currencies`: as `customer_numbers` and `currency_codes` read them)."""
    return (
        customers.join(
            currencies.with_columns(pl.col("transactioncurrencyid").cast(pl.String)),
            left_on="currency_id",
            right_on="transactioncurrencyid",
            how="left",
        )
        .join(
            customers.select(pl.col("id").alias("parent_id"), pl.col("number").alias("parent")),
            on="parent_id",
            how="left",
        )
        .select("number", "name", pl.col("isocurrencycode").alias("currency"), "parent")
        .filter(pl.col("number").is_not_null())
    )


def documents(
    spec: DocumentSpec,
    crm: Connector,
    erp: Connector,
    company: str,
    currencies: pl.DataFrame,
    customers: pl.DataFrame,
) -> pl.DataFrame:
    """Every document of `spec` in either system, one row a number: Sales' total (`total`),
    F&O's (`total_erp`), currency, customer, day, and whether F&O's totals are calculated."""
    crm_docs = _crm_documents(spec, crm, currencies, customers)
    erp_docs = _erp_documents(spec, erp, company)
    both = crm_docs.join(erp_docs, on="number", how="full", coalesce=True, suffix="_erp")
    return both.with_columns(
        pl.coalesce("currency", "currency_erp").alias("currency"),
        pl.coalesce("customer", "customer_erp").alias("customer"),
        pl.coalesce("day", "day_erp").alias("day"),
        pl.col("ready").fill_null(True),
        pl.col("in_crm").fill_null(False),
        pl.col("in_erp").fill_null(False),
    ).sort("number")


def narrowed(both: pl.DataFrame, filters: Filters) -> pl.DataFrame:
    if filters.as_of is not None:
        both = both.filter(pl.col("day").is_null() | (pl.col("day") <= filters.as_of))
    if filters.currency:
        both = both.filter(pl.col("currency") == filters.currency.upper())
    if filters.customer:
        both = both.filter(pl.col("customer") == filters.customer)
    return both


def _money(
    spec: DocumentSpec,
    crm: Connector,
    erp: Connector,
    company: str,
    every: pl.DataFrame,
    filters: Filters,
    tolerance: Decimal,
) -> MoneyReport:
    both = narrowed(every, filters)
    differences = _document_differences(spec, both, tolerance)
    crm_lines, erp_lines = _line_counts(spec, crm, erp, company) if spec.lines else (0, 0)
    mine = both.select("number", "currency", "customer", "day")
    checks = (
        [
            *_header_vs_lines(spec, crm, mine, tolerance),
            *_erp_header_vs_lines(spec, erp, company, mine, tolerance),
        ]
        if spec.lines
        else []
    )
    disagree = {d.number for d in differences} | {d.number for d in checks}
    return MoneyReport(
        document=spec.name,
        agree=both.height - len(disagree),
        total=both.height,
        by_currency=_side_by_side(both, "currency", spec.by_presence),
        by_customer=_side_by_side(both, "customer", spec.by_presence),
        by_month=_side_by_side(
            both.with_columns(pl.col("day").dt.strftime("%Y-%m")), "day", spec.by_presence
        ),
        differences=tuple(differences),
        header_vs_lines=tuple(checks),
        crm_lines=crm_lines,
        erp_lines=erp_lines,
    )


def _crm_documents(
    spec: DocumentSpec, crm: Connector, currencies: pl.DataFrame, customers: pl.DataFrame
) -> pl.DataFrame:
    only = [spec.crm_only[0]] if spec.crm_only else []
    docs = crm.snapshot(
        spec.crm_header,
        [
            spec.crm_number,
            spec.crm_total,
            spec.crm_date,
            "_transactioncurrencyid_value",
            "_customerid_value",
            *only,
        ],
    )
    if spec.crm_only:
        docs = docs.filter(pl.col(spec.crm_only[0]) == spec.crm_only[1])
    return (
        docs.with_columns(
            pl.col("_transactioncurrencyid_value").cast(pl.String),
            pl.col("_customerid_value").cast(pl.String),
        )
        .join(
            currencies.with_columns(pl.col("transactioncurrencyid").cast(pl.String)),
            left_on="_transactioncurrencyid_value",
            right_on="transactioncurrencyid",
            how="left",
        )
        .join(
            customers.select("id", "number"), left_on="_customerid_value", right_on="id", how="left"
        )
        .select(
            pl.col(spec.crm_number).alias("number"),
            pl.col(spec.crm_total).cast(pl.Decimal(38, 6)).alias("total"),
            pl.col("isocurrencycode").alias("currency"),
            pl.col("number").alias("customer"),
            pl.col(spec.crm_date).cast(pl.Date).alias("day"),
            pl.lit(True).alias("in_crm"),
        )
    )


def _erp_documents(spec: DocumentSpec, erp: Connector, company: str) -> pl.DataFrame:
    ready = [spec.erp_totals_ready] if spec.erp_totals_ready else []
    docs = erp.snapshot(
        spec.erp_header,
        [
            "dataAreaId",
            spec.erp_number,
            spec.erp_total,
            spec.erp_date,
            "CurrencyCode",
            spec.erp_customer,
            *ready,
        ],
    )
    return docs.filter(pl.col("dataAreaId").str.to_lowercase() == company).select(
        pl.col(spec.erp_number).alias("number"),
        pl.col(spec.erp_total).cast(pl.Decimal(38, 6)).alias("total"),
        pl.col("CurrencyCode").alias("currency"),
        pl.col(spec.erp_customer).alias("customer"),
        pl.col(spec.erp_date).cast(pl.Date).alias("day"),
        (pl.col(ready[0]) != "No").fill_null(True).alias("ready")
        if ready
        else pl.lit(True).alias("ready"),
        pl.lit(True).alias("in_erp"),
    )


def _document_differences(
    spec: DocumentSpec, both: pl.DataFrame, tolerance: Decimal
) -> list[DocumentDiff]:
    out: list[DocumentDiff] = []
    name = spec.name
    for row in both.iter_rows(named=True):
        problem = _problem(row, tolerance, spec.by_presence)
        if problem is not None:
            out.append(
                DocumentDiff(
                    name,
                    row["number"],
                    row["currency"] or "",
                    row["customer"],
                    row["total"],
                    row["total_erp"],
                    problem,
                    ready=bool(row["ready"]),
                    day=row["day"],
                )
            )
    return out


def _problem(row: dict[str, Any], tolerance: Decimal, by_presence: bool) -> str | None:
    """What is wrong with a document's totals, or None. A document in one system only
    without a total has no money to tie out (the records reconciliation tells the rest)
    unless its type is compared `by_presence`."""
    crm_total, erp_total = row["total"], row["total_erp"]
    if not row["in_crm"]:
        return "only in F&O" if by_presence or erp_total is not None else None
    if not row["in_erp"]:
        return "only in Sales" if by_presence or crm_total is not None else None
    if crm_total is None and erp_total is None:
        return None
    if crm_total is None:
        return "no total in Sales"
    if erp_total is None:
        return "no total in F&O"
    if abs(crm_total - erp_total) > tolerance:
        return "totals differ"
    return None


def _side_by_side(both: pl.DataFrame, group: str, by_presence: bool) -> tuple[MoneyLine, ...]:
    """Totals per `group`; documents counted where they have a total (or, for a type
    compared `by_presence`, where they are)."""
    crm_n = pl.col("in_crm") if by_presence else pl.col("total").is_not_null()
    erp_n = pl.col("in_erp") if by_presence else pl.col("total_erp").is_not_null()
    keys = [pl.col(group).cast(pl.String).fill_null("(none)").alias("__group")]
    if group != "currency":
        keys.append(pl.col("currency"))
    grouped = (
        both.group_by(keys)
        .agg(
            crm_n.sum().alias("crm_n"),
            erp_n.sum().alias("erp_n"),
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
    spec: DocumentSpec, crm: Connector, mine: pl.DataFrame, tolerance: Decimal
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
    ).rename({spec.crm_number: "number", spec.crm_total: "header"})
    expected = pl.col("lines").fill_null(0) + pl.sum_horizontal(
        [pl.col(c).fill_null(0) for c in spec.crm_header_parts]
    )
    return _unbalanced(spec.name, "Sales", joined, mine, expected, tolerance)


def _erp_header_vs_lines(
    spec: DocumentSpec, erp: Connector, company: str, mine: pl.DataFrame, tolerance: Decimal
) -> list[DocumentDiff]:
    headers = erp.snapshot(
        spec.erp_header, ["dataAreaId", spec.erp_number, spec.erp_total, *spec.erp_header_parts]
    )
    lines = erp.snapshot(spec.erp_lines, ["dataAreaId", spec.erp_number, *spec.erp_line_parts])
    here = pl.col("dataAreaId").str.to_lowercase() == company
    sums = (
        lines.filter(here)
        .group_by(spec.erp_number)
        .agg(
            pl.sum_horizontal([pl.col(c).fill_null(0) for c in spec.erp_line_parts])
            .sum()
            .alias("lines")
        )
    )
    joined = (
        headers.filter(here)
        .join(sums, on=spec.erp_number, how="left")
        .rename({spec.erp_number: "number", spec.erp_total: "header"})
    )
    expected = pl.col("lines").fill_null(0) + pl.sum_horizontal(
        [pl.col(c).fill_null(0) for c in spec.erp_header_parts]
    )
    return _unbalanced(spec.name, "F&O", joined, mine, expected, tolerance)


def _unbalanced(
    name: str,
    where: str,
    joined: pl.DataFrame,
    mine: pl.DataFrame,
    expected: pl.Expr,
    tolerance: Decimal,
) -> list[DocumentDiff]:
    """The documents in `mine` whose header total (`header`) is not `expected`."""
    rows = (
        joined.filter(pl.col("header").is_not_null())
        .select("number", "header", expected.alias("expected"))
        .join(mine, on="number", how="inner")
        .sort("number")
    )
    out = []
    for r in rows.iter_rows(named=True):
        header, lines = Decimal(r["header"]), Decimal(r["expected"])
        if abs(header - lines) <= tolerance:
            continue
        out.append(
            DocumentDiff(
                name,
                r["number"],
                r["currency"] or "",
                r["customer"],
                header if where == "Sales" else None,
                header if where == "F&O" else None,
                f"{where}: header {header:,.2f} but lines and charges add up to {lines:,.2f}",
                system=where,
                lines_total=lines,
                day=r["day"],
            )
        )
    return out
