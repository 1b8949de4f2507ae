"""The Dataverse query functions of `$filter`: `Microsoft.Dynamics.CRM.In(PropertyName=
'statecode',PropertyValues=['0','1'])` and the like.

Implemented: `In`, `NotIn`, `Between`, `NotBetween`, `On`, `NotOn`, `OnOrAfter`,
`OnOrBefore`. Every other documented query function (the
relative dates such as `LastXDays` and `Today`, fiscal periods, user and hierarchy functions,
multi-select `ContainValues`) is refused with 501; a name Dataverse does not document is a 400.
Dates compare in UTC, the time zone of the sandbox's users.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError, not_implemented
from p2c_etl.sandbox.values import folded, literal_for

CRM_PREFIX = "Microsoft.Dynamics.CRM."
Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
Columns = Mapping[str, ColumnSpec | None]

_DOCUMENTED = {
    "Above",
    "AboveOrEqual",
    "ContainValues",
    "DoesNotContainValues",
    "EqualBusinessId",
    "EqualUserId",
    "EqualUserLanguage",
    "EqualUserOrUserHierarchy",
    "EqualUserOrUserHierarchyAndTeams",
    "EqualUserOrUserTeams",
    "EqualUserTeams",
    "InFiscalPeriod",
    "InFiscalPeriodAndYear",
    "InFiscalYear",
    "InOrAfterFiscalPeriodAndYear",
    "InOrBeforeFiscalPeriodAndYear",
    "Last7Days",
    "LastFiscalPeriod",
    "LastFiscalYear",
    "LastMonth",
    "LastWeek",
    "LastXDays",
    "LastXFiscalPeriods",
    "LastXFiscalYears",
    "LastXHours",
    "LastXMonths",
    "LastXWeeks",
    "LastXYears",
    "LastYear",
    "Next7Days",
    "NextFiscalPeriod",
    "NextFiscalYear",
    "NextMonth",
    "NextWeek",
    "NextXDays",
    "NextXFiscalPeriods",
    "NextXFiscalYears",
    "NextXHours",
    "NextXMonths",
    "NextXWeeks",
    "NextXYears",
    "NextYear",
    "NotEqualBusinessId",
    "NotEqualUserId",
    "NotUnder",
    "OlderThanXDays",
    "OlderThanXHours",
    "OlderThanXMinutes",
    "OlderThanXMonths",
    "OlderThanXWeeks",
    "OlderThanXYears",
    "ThisFiscalPeriod",
    "ThisFiscalYear",
    "ThisMonth",
    "ThisWeek",
    "ThisYear",
    "Today",
    "Tomorrow",
    "Under",
    "UnderOrEqual",
    "Yesterday",
}


@dataclass(frozen=True)
class FunctionCall:
    name: str
    params: dict[str, Any]


def crm_function(call: FunctionCall, columns: Columns, type_name: str) -> Predicate:
    """The predicate of one query function call."""
    short = call.name.removeprefix(CRM_PREFIX)
    if short not in _BUILDERS:
        if short in _DOCUMENTED:
            raise not_implemented(f"The query function {call.name}")
        raise ODataError(400, f"Unknown function '{call.name}' in $filter.", BAD_QUERY)
    column = _column(call, columns, type_name)
    return _BUILDERS[short](call, column, columns[column])


def _column(call: FunctionCall, columns: Columns, type_name: str) -> str:
    name = call.params.get("PropertyName")
    if not isinstance(name, str):
        raise ODataError(400, f"{call.name} needs PropertyName='<column>'", BAD_QUERY)
    if name not in columns:
        message = f"Could not find a property named '{name}' on type '{type_name}'."
        raise ODataError(400, message, BAD_QUERY)
    return name


def _values(call: FunctionCall, spec: ColumnSpec | None, count: int | None) -> list[Any]:
    raw = call.params.get("PropertyValues")
    if not isinstance(raw, list) or not raw or (count is not None and len(raw) != count):
        wanted = f"{count} values" if count else "a list of values"
        raise ODataError(400, f"{call.name} needs PropertyValues=[...] with {wanted}", BAD_QUERY)
    return [_typed(call, spec, v) for v in raw]


def _typed(call: FunctionCall, spec: ColumnSpec | None, value: Any) -> Any:
    try:
        if spec is not None and spec.type in ("int", "bool") and isinstance(value, str):
            value = int(value) if spec.type == "int" else value == "true"
        return folded(literal_for(spec, value))
    except (ValueError, TypeError) as exc:
        raise ODataError(400, f"Invalid value in {call.name}: {exc}", BAD_QUERY) from None


def _in(call: FunctionCall, column: str, spec: ColumnSpec | None) -> Predicate:
    wanted = set(_values(call, spec, None))
    return lambda r: folded(r.get(column)) in wanted


def _between(call: FunctionCall, column: str, spec: ColumnSpec | None) -> Predicate:
    low, high = _values(call, spec, 2)

    def test(record: Record) -> bool:
        value = folded(record.get(column))
        return value is not None and bool(low <= value <= high)

    return test


def _day(call: FunctionCall, spec: ColumnSpec | None) -> date:
    raw = call.params.get("PropertyValue")
    if spec is None or spec.type not in ("date", "datetime") or raw is None:
        raise ODataError(400, f"{call.name} needs a date column and PropertyValue", BAD_QUERY)
    value = literal_for(ColumnSpec(spec.name, "date", spec.dtype), raw)
    assert isinstance(value, date)
    return value


def _on(compare: Callable[[date, date], bool]) -> Callable[..., Predicate]:
    def build(call: FunctionCall, column: str, spec: ColumnSpec | None) -> Predicate:
        day = _day(call, spec)

        def test(record: Record) -> bool:
            value = record.get(column)
            if isinstance(value, datetime):
                value = value.date()
            return isinstance(value, date) and compare(value, day)

        return test

    return build


def _negated(build: Callable[..., Predicate]) -> Callable[..., Predicate]:
    def negated(call: FunctionCall, column: str, spec: ColumnSpec | None) -> Predicate:
        inner = build(call, column, spec)
        return lambda r: r.get(column) is not None and not inner(r)

    return negated


_BUILDERS: dict[str, Callable[..., Predicate]] = {
    "In": _in,
    "NotIn": _negated(_in),
    "Between": _between,
    "NotBetween": _negated(_between),
    "On": _on(lambda a, b: a == b),
    "NotOn": _negated(_on(lambda a, b: a == b)),
    "OnOrAfter": _on(lambda a, b: a >= b),
    "OnOrBefore": _on(lambda a, b: a <= b),
}
