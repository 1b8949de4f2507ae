"""What a narrowed reconciliation keeps (`--customer`, `--currency`, `--as-of`): each record
belongs to the customers, currency and day its key leads to. A key is read part by part
(`usmf|CON-02001-SMITHA|ACC-01001-ADVENT`): a part that is a customer number (an account or
a contact) is that customer, a contact's parent account included; a part that is a document
number (a quote, an order, an invoice, or a line's document) is that document's customer,
currency and day. A record nothing leads to (a product) is no customer's and in no currency,
so a customer or currency filter leaves it out; `--as-of` leaves out only what is dated
later."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import polars as pl

from p2c_etl.jobs.reconcile.money import Filters


@dataclass(frozen=True)
class Document:
    customer: str | None
    currency: str | None
    day: date | None


@dataclass(frozen=True)
class Attribution:
    """Per customer number its currency and parent; per document number its document."""

    customers: Mapping[str, str | None]
    parents: Mapping[str, str]
    documents: Mapping[str, Document]

    def wanted(self, key: str, filters: Filters) -> bool:
        """Whether the record with `key` is in the reconciliation's scope."""
        parts = key.split("|")
        doc = next((self.documents[p] for p in parts if p in self.documents), None)
        dated = doc.day if doc is not None else None
        if filters.as_of is not None and dated is not None and dated > filters.as_of:
            return False
        if filters.customer and filters.customer.casefold() not in {
            c.casefold() for c in self._customers(parts, doc)
        }:
            return False
        if filters.currency:
            currency = doc.currency if doc is not None else self._currency(parts)
            return (currency or "").upper() == filters.currency.upper()
        return True

    def customer_of(self, key: str) -> str | None:
        """The customer a record belongs to: its document's, else the account its key names
        (a contact person's), else the customer it is."""
        parts = key.split("|")
        doc = next((self.documents[p] for p in parts if p in self.documents), None)
        if doc is not None and doc.customer:
            return doc.customer
        found = [p for p in parts if p in self.customers]
        accounts = [p for p in found if p not in self.parents]
        return accounts[0] if accounts else found[0] if found else None

    def currency_of(self, key: str) -> str | None:
        parts = key.split("|")
        doc = next((self.documents[p] for p in parts if p in self.documents), None)
        return doc.currency if doc is not None else self._currency(parts)

    def _customers(self, parts: list[str], doc: Document | None) -> set[str]:
        found = {p for p in parts if p in self.customers}
        found |= {self.parents[p] for p in parts if p in self.parents}
        return found | ({doc.customer} if doc is not None and doc.customer else set())

    def _currency(self, parts: list[str]) -> str | None:
        return next((self.customers[p] for p in parts if self.customers.get(p)), None)


def attribution(customers: pl.DataFrame, every: Mapping[str, pl.DataFrame]) -> Attribution:
    """Who and what each record key can lead to: `customers` as `money.customer_table` gives
    them (number, currency, parent), `every` document as `money.all_documents` does."""
    found: dict[str, Document] = {}
    for docs in every.values():
        for r in docs.select("number", "customer", "currency", "day").iter_rows(named=True):
            found[r["number"]] = Document(r["customer"], r["currency"], r["day"])
    rows = list(customers.select("number", "currency", "parent").iter_rows(named=True))
    return Attribution(
        customers={r["number"]: r["currency"] for r in rows},
        parents={r["number"]: r["parent"] for r in rows if r["parent"]},
        documents=found,
    )
