"""How long each open difference has been open: its first-seen date, carried from one
reconciliation to the next of the same scope (each stores its open differences with the
date they were first seen), days open, a table by age band with count and amount per
currency, and what the last reconciliation had open that this one no longer finds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
BANDS = (("0-7 days", 0, 7), ("8-30 days", 8, 30), ("over 30 days", 31, None))


@dataclass(frozen=True)
class OpenItem:
    """An open difference: `key` names it across reconciliations; `amount` (F&O - Sales, or a
    header less its lines) is set for a document's."""

    key: str
    what: str
    classification: str
    currency: str
    amount: Decimal | None
    first_seen: str = ""
    days_open: int = 0


@dataclass(frozen=True)
class AgeBand:
    band: str
    currency: str
    count: int
    amount: Decimal


@dataclass(frozen=True)
class Ageing:
    compared_with: str | None  # the last reconciliation of the same scope
    open: tuple[OpenItem, ...]
    bands: tuple[AgeBand, ...]
    resolved: tuple[OpenItem, ...]


def age(
    found: Sequence[OpenItem],
    at: datetime,
    previous: tuple[str, Sequence[Mapping[str, Any]]] | None,
) -> Ageing:
    """`found` aged against `previous` (its id and the open items its JSON stores)."""
    before = {str(p["key"]): p for p in (previous[1] if previous else ())}
    now = at.date()
    aged = []
    for item in found:
        seen = str(before[item.key]["first_seen"]) if item.key in before else at.isoformat()
        days = (now - datetime.fromisoformat(seen).date()).days
        aged.append(replace(item, first_seen=seen, days_open=max(days, 0)))
    keys = {i.key for i in found}
    resolved = tuple(_from_json(p) for k, p in before.items() if k not in keys)
    return Ageing(previous[0] if previous else None, tuple(aged), _bands(aged), resolved)


def _from_json(item: Mapping[str, Any]) -> OpenItem:
    amount = item.get("amount")
    return OpenItem(
        str(item["key"]),
        str(item["what"]),
        str(item["classification"]),
        str(item.get("currency") or ""),
        Decimal(str(amount)) if amount is not None else None,
        str(item["first_seen"]),
        int(item.get("days_open") or 0),
    )


def band_of(days: int) -> str:
    for name, low, high in BANDS:
        if days >= low and (high is None or days <= high):
            return name
    return BANDS[-1][0]


def _bands(items: Sequence[OpenItem]) -> tuple[AgeBand, ...]:
    counts: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for item in items:
        slot = (band_of(item.days_open), item.currency)
        n, total = counts.get(slot, (0, ZERO))
        counts[slot] = (n + 1, total + (item.amount or ZERO))
    order = {name: i for i, (name, _, _) in enumerate(BANDS)}
    return tuple(
        AgeBand(band, currency, n, total)
        for (band, currency), (n, total) in sorted(
            counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])
        )
    )


def record_item_key(flow: str, record: str) -> str:
    return f"records|{flow}|{record}"


def document_item_key(document: str, number: str, within: str | None) -> str:
    return f"money|{document}|{number}" + (f"|lines in {within}" if within else "")
