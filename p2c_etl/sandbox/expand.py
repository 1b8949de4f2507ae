"""`$expand` of navigation properties, with `$select` inside: `$expand=
parentcustomerid_account($select=name,accountnumber),transactioncurrencyid`.

A single-valued property expands to the related record (or null), a collection-valued one to
the list of related records. Inside the parentheses only `$select` is implemented; any other
option there is a 501, and a name that is not a navigation property of the entity a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2c_etl.sandbox.entitynames import type_name
from p2c_etl.sandbox.navigation import Navigation, navigations
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError, not_implemented
from p2c_etl.sandbox.query import check_columns
from p2c_etl.sandbox.store import Key, Row, Store, Table
from p2c_etl.sandbox.values import folded

Project = Callable[[Table, Row, list[str] | None], dict[str, Any]]


@dataclass(frozen=True)
class Expansion:
    navigation: Navigation
    target: Table
    select: list[str] | None


def split_top_level(raw: str, separator: str = ",") -> list[str]:
    """`raw` cut at each `separator` outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in raw:
        quoted = not quoted if char == "'" else quoted
        if not quoted:
            depth += {"(": 1, ")": -1}.get(char, 0)
        if char == separator and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def parse_expand(raw: str | None, table: Table, store: Store) -> list[Expansion]:
    """The expansions `$expand` asks of `table`'s records."""
    if raw is None:
        return []
    known = navigations(table, store)
    return [_expansion(item, table, known, store) for item in split_top_level(raw)]


def _expansion(item: str, table: Table, known: dict[str, Navigation], store: Store) -> Expansion:
    name, _, options = item.partition("(")
    name = name.strip()
    if name == "*" or "/" in name:
        raise not_implemented(f"$expand={name}")
    if name not in known:
        message = f"Could not find a property named '{name}' on type '{type_name(table)}'."
        raise ODataError(400, message, BAD_QUERY)
    navigation = known[name]
    target = store.tables[navigation.target]
    return Expansion(navigation, target, _inner_select(options.rstrip(")"), target))


def _inner_select(options: str, target: Table) -> list[str] | None:
    select: list[str] | None = None
    for option in split_top_level(options, ";"):
        key, _, value = option.partition("=")
        if key.strip() != "$select":
            raise not_implemented(f"The option {key.strip()} inside $expand")
        select = [n.strip() for n in value.split(",") if n.strip()]
        check_columns(target, select)
    if select is not None and target.primary:
        select = list(dict.fromkeys([target.primary, *select]))
    return select


class Expander:
    """Adds the expanded navigation properties to projected records (one request's worth:
    the collections it indexes are indexed once)."""

    def __init__(self, expansions: list[Expansion], project: Project) -> None:
        self.expansions = expansions
        self.project = project
        self._indexes: dict[str, dict[Key, list[Row]]] = {}

    def add(self, row: Row, shown: dict[str, Any]) -> dict[str, Any]:
        for item in self.expansions:
            related = self._related(item, row)
            if item.navigation.collection:
                shown[item.navigation.name] = [
                    self.project(item.target, r, item.select) for r in related
                ]
            else:
                first = related[0] if related else None
                value = self.project(item.target, first, item.select) if first else None
                shown[item.navigation.name] = value
        return shown

    def _related(self, item: Expansion, row: Row) -> list[Row]:
        local = tuple(folded(row.values.get(c)) for c, _ in item.navigation.pairs)
        if None in local:
            return []
        columns = tuple(t for _, t in item.navigation.pairs)
        if columns == item.target.key_columns:
            found = item.target.get(local)
            return [found] if found is not None else []
        return self._index(item, columns).get(local, [])

    def _index(self, item: Expansion, columns: tuple[str, ...]) -> dict[Key, list[Row]]:
        name = item.navigation.name
        if name not in self._indexes:
            index: dict[Key, list[Row]] = {}
            for candidate in item.target.rows():
                key = tuple(folded(candidate.values.get(c)) for c in columns)
                index.setdefault(key, []).append(candidate)
            self._indexes[name] = index
        return self._indexes[name]
