"""`$apply` with `filter`, `groupby` and `aggregate`, as Dataverse serves it:

    $apply=aggregate(creditlimit with sum as total,$count as n)
    $apply=groupby((statecode,address1_country),aggregate(creditlimit with average as mean))
    $apply=filter(statecode eq 0)/groupby((customertypecode))

Aggregation methods: sum, min, max, average, countdistinct and `$count`. Like Dataverse, an
aggregation over more than 50,000 records is refused (400). Other transformations
(`topcount`, `compute`, `expand`, ...) and other query options beside `$apply` are 501.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from p2c_etl.sandbox.entitynames import type_name
from p2c_etl.sandbox.expand import split_top_level
from p2c_etl.sandbox.odata_filter import compile_filter
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError, not_implemented
from p2c_etl.sandbox.query import check_columns, columns_of, view
from p2c_etl.sandbox.store import Row, Table
from p2c_etl.sandbox.values import folded

RECORD_LIMIT = 50_000
Record = dict[str, Any]
_ITEM = re.compile(r"^(\$count|\w+)(?:\s+with\s+(\w+))?\s+as\s+(\w+)$")
_METHODS: dict[str, Callable[[list[Any]], Any]] = {
    "sum": lambda v: sum(v) if v else None,
    "min": lambda v: min(v) if v else None,
    "max": lambda v: max(v) if v else None,
    "average": lambda v: Decimal(sum(v)) / len(v) if v else None,
    "countdistinct": lambda v: len({folded(x) for x in v}),
}


@dataclass(frozen=True)
class Aggregation:
    column: str | None
    method: str
    alias: str


def apply(raw: str, table: Table, rows: Iterable[Row]) -> list[Record]:
    """The records `$apply=raw` makes of `rows`."""
    records = [view(table, row) for row in rows]
    for step in split_top_level(raw, "/"):  # the transformations, in order
        name, _, rest = step.partition("(")
        body = rest[:-1] if rest.endswith(")") else rest
        records = _transform(name.strip(), body, table, records)
    return records


def _transform(name: str, body: str, table: Table, records: list[Record]) -> list[Record]:
    if name == "filter":
        test = compile_filter(body, columns_of(table), type_name(table))
        return [r for r in records if test(r)]
    if len(records) > RECORD_LIMIT:
        message = f"The maximum record limit of {RECORD_LIMIT} is exceeded by an aggregate query."
        raise ODataError(400, message, BAD_QUERY)
    if name == "aggregate":
        return [_aggregated(_aggregations(body, table), records)]
    if name == "groupby":
        return _grouped(body, table, records)
    raise not_implemented(f"The $apply transformation {name}")


def _grouped(body: str, table: Table, records: list[Record]) -> list[Record]:
    parts = split_top_level(body)
    if not parts or not parts[0].startswith("(") or len(parts) > 2:
        raise ODataError(400, f"Invalid groupby({body})", BAD_QUERY)
    columns = [c.strip() for c in parts[0].strip("()").split(",") if c.strip()]
    check_columns(table, columns)
    aggregations: list[Aggregation] = []
    if len(parts) == 2:
        inner = parts[1]
        if not inner.startswith("aggregate(") or not inner.endswith(")"):
            raise not_implemented(f"The groupby transformation {inner}")
        aggregations = _aggregations(inner[len("aggregate(") : -1], table)
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for record in records:
        groups.setdefault(tuple(folded(record.get(c)) for c in columns), []).append(record)
    return [
        {c: members[0].get(c) for c in columns} | _aggregated(aggregations, members)
        for members in groups.values()
    ]


def _aggregations(body: str, table: Table) -> list[Aggregation]:
    found: list[Aggregation] = []
    for item in split_top_level(body):
        match = _ITEM.match(item.strip())
        if match is None:
            raise ODataError(400, f"Invalid aggregate expression {item!r}", BAD_QUERY)
        column, method, alias = match[1], match[2], match[3]
        if column == "$count":
            found.append(Aggregation(None, "$count", alias))
            continue
        if method not in _METHODS:
            raise ODataError(400, f"Unknown aggregation method {method!r}", BAD_QUERY)
        check_columns(table, [column])
        found.append(Aggregation(column, method, alias))
    return found


def _aggregated(aggregations: list[Aggregation], records: list[Record]) -> Record:
    result: Record = {}
    for item in aggregations:
        if item.column is None:
            result[item.alias] = len(records)
            continue
        values = [r[item.column] for r in records if r.get(item.column) is not None]
        result[item.alias] = _METHODS[item.method](values)
    return result
