"""Pre-flight (`p2c check`): both systems reachable, credentials accepted, every contract still
matching what the systems hold ("contract drift"), and the reference data the lookups need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from p2c_etl.config import Settings, SystemName
from p2c_etl.connectors.base import Connector
from p2c_etl.errors import ConfigError, P2CError
from p2c_etl.flows import ALL_FLOWS
from p2c_etl.jobs.wiring import closing_all, connectors_for, select_flows
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Flow
from p2c_etl.resources import contracts_dir

Verdict = Literal["ok", "failed"]
# Reference data the flows look up by natural key; an empty set rejects every record.
REFERENCE_DATA: tuple[tuple[SystemName, str], ...] = (
    ("crm", "transactioncurrencies"),
    ("crm", "uoms"),
    ("crm", "uomschedules"),
    ("crm", "pricelevels"),
)


@dataclass(frozen=True)
class Finding:
    system: str
    check: str
    verdict: Verdict
    detail: str


def entity_columns(flows: Iterable[Flow]) -> dict[tuple[SystemName, str], set[str]]:
    """Per entity set, the columns the flows read or write there."""
    needed: dict[tuple[SystemName, str], set[str]] = {}
    for flow in flows:
        needed.setdefault((flow.source.system, flow.source.entity), set()).update(
            flow.source_columns
        )
        target = set(flow.target_columns) | ({flow.target_id} if flow.target_id else set())
        needed.setdefault((flow.target.system, flow.target.entity), set()).update(target)
        for lookup in flow.lookups:
            needed.setdefault((lookup.system, lookup.entity), set()).update(lookup.columns)
        for item in flow.inputs:
            needed.setdefault((item.system, item.entity), set()).update(item.columns)
    return needed


def run_checks(
    connectors: dict[SystemName, Connector], contracts: ContractSet, flows: Iterable[Flow]
) -> list[Finding]:
    findings: list[Finding] = []
    for (system, entity), columns in sorted(entity_columns(flows).items()):
        findings.append(_drift(connectors[system], contracts, system, entity, columns))
        if any(f.check.startswith("reach") and f.verdict == "failed" for f in findings):
            break
    for system, entity in REFERENCE_DATA:
        findings.append(_reference(connectors[system], contracts, system, entity))
    return findings


def _drift(
    connector: Connector, contracts: ContractSet, system: str, entity: str, columns: set[str]
) -> Finding:
    try:
        live = connector.live_columns(entity)
    except P2CError as exc:
        return Finding(system, f"reach {entity}", "failed", str(exc))
    contract = contracts.get(system, entity)
    if live is None:
        return Finding(system, f"contract {entity}", "failed", f"{entity} does not exist")
    missing = sorted(columns - live)
    if missing:
        return Finding(
            system,
            f"contract {entity}",
            "failed",
            f"contract drift: {entity} has no column {', '.join(missing)} "
            f"(see {contract.source.name})",
        )
    return Finding(system, f"contract {entity}", "ok", f"{len(columns)} columns present")


def _reference(connector: Connector, contracts: ContractSet, system: str, entity: str) -> Finding:
    contract = contracts.get(system, entity)
    try:
        rows = connector.snapshot(entity, list(contract.keys)).height
    except P2CError as exc:
        return Finding(system, f"reference {entity}", "failed", str(exc))
    if rows == 0:
        return Finding(system, f"reference {entity}", "failed", f"{entity} is empty")
    return Finding(system, f"reference {entity}", "ok", f"{rows} record{'' if rows == 1 else 's'}")


def check_systems(settings: Settings) -> list[Finding]:
    """`run_checks` on the systems and enabled flows of `settings`, connectors closed after.
    A flow whose overrides p2c.toml gets wrong is a finding of its own (a configuration
    error, not contract drift), and the systems are checked for the other flows."""
    contracts = ContractSet.load(contracts_dir())
    findings, flows = _configured_flows(settings, contracts)
    connectors = connectors_for(settings, contracts)
    with closing_all(connectors):
        return findings + run_checks(connectors, contracts, flows)


def _configured_flows(
    settings: Settings, contracts: ContractSet
) -> tuple[list[Finding], list[Flow]]:
    findings: list[Finding] = []
    flows: list[Flow] = []
    config = settings.config_path.name
    for flow in ALL_FLOWS:
        if not settings.flow(flow.name).enabled:
            continue
        try:
            flows.extend(select_flows(settings, contracts, [flow.name]))
        except ConfigError as exc:
            findings.append(Finding(config, f"overrides {flow.name}", "failed", str(exc)))
    return findings, flows
