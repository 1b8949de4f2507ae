"""Apply `[flows.<name>]` overrides from p2c.toml to a flow's declaration.

[flows.accounts]
enabled = true
unmapped = "default"                      # reject (default) | default | pass
source_filter = ["statecode eq 0", "customertypecode eq 3"]   # replaces the flow's
fields = { SalesMemo = "description" }    # target field = source field (replace or add)
defaults = { CustomerGroupId = "20" }     # target field = value (replace or add)
[flows.accounts.value_maps.AddressCountryRegionISOCode]
"Atlantis" = "USA"                        # entries added to (or replacing) the field's map
"""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal

from p2c_etl.config import FlowSettings
from p2c_etl.errors import ConfigError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import (
    FILTER_OPS,
    Field,
    Filter,
    Flow,
    FromContext,
    Scalar,
    UnmappedPolicy,
    Value,
    ValueMap,
)

_FILTER = re.compile(r"^\s*(\w+)\s+(eq|ne)\s+(.+?)\s*$")


def apply_overrides(
    flow: Flow, settings: FlowSettings, contracts: ContractSet, config: str = "p2c.toml"
) -> Flow:
    """`flow` with the overrides of `settings`; a field the target lacks, or a source field
    the source entity set lacks, is a ConfigError naming `config` (the file) and the key."""
    target = contracts.get(flow.target.system, flow.target.entity)
    readable = set(contracts.get(flow.source.system, flow.source.entity).columns)
    readable |= {c for d in flow.derive for c in d.adds}
    fields = {f.target: f for f in flow.fields}
    for name, source in settings.fields.items():
        if source not in readable:
            raise ConfigError(
                f"{config}: [flows.{flow.name}] fields.{name} = {source!r}: {flow.source} has "
                f"no field {source!r} to read (see p2c flows show {flow.name})"
            )
        fields[name] = replace(fields.get(name, Field(name)), source=source)
    for name, value in settings.defaults.items():
        fields[name] = replace(fields.get(name, Field(name)), default=_scalar(value))
    for name, entries in settings.value_maps.items():
        current = fields.get(name, Field(name)).value_map
        merged = {**(current.entries if current else {}), **entries}
        label = f"{current.name if current else name} (with p2c.toml entries)"
        fields[name] = replace(fields.get(name, Field(name)), value_map=ValueMap(label, merged))
    for name in fields:
        if name not in target.columns:
            raise ConfigError(
                f"{config}: [flows.{flow.name}]: {flow.target} has no column {name!r} "
                f"(see {target.source.name})"
            )
    out = replace(flow, fields=tuple(fields.values()))
    if settings.unmapped is not None:
        policy: UnmappedPolicy = settings.unmapped  # type: ignore[assignment]
        out = replace(out, unmapped=policy)
    if settings.source_filter is not None:
        out = replace(
            out, source_filters=tuple(parse_filter(flow.name, t) for t in settings.source_filter)
        )
    return out


def parse_filter(flow: str, text: str) -> Filter:
    """`"statecode eq 0"`, `"name ne 'x'"`, `"dataAreaId eq <company>"`, `"x eq null"`."""
    match = _FILTER.match(text)
    if not match or match[2] not in FILTER_OPS:
        raise ConfigError(f"[flows.{flow}].source_filter: {text!r} is not 'column eq|ne value'")
    return Filter(match[1], match[2], _literal(flow, match[3]))


def _literal(flow: str, text: str) -> Value | None:
    if text == "null":
        return None
    if text == "<company>":
        return FromContext("company")
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return Decimal(text)
    raise ConfigError(f"[flows.{flow}].source_filter: cannot read the value {text!r}")


def _scalar(value: object) -> Scalar:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str | int | bool):
        return value
    raise ConfigError(f"a default must be text, a number or true/false, got {value!r}")
