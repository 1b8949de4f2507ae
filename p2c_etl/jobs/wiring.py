"""What every job needs before its first stage: a run id, the clock, the selected flows with
their p2c.toml overrides in dependency order, a connector per system, and the warehouse."""

from __future__ import annotations

import secrets
import signal
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from p2c_etl.config import Settings, SystemName, SystemSettings
from p2c_etl.connectors.base import Connector
from p2c_etl.connectors.dataverse import DataverseConnector
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.connectors.finops import FinOpsConnector
from p2c_etl.errors import ConfigError
from p2c_etl.flows import ALL_FLOWS, flow_names
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import Flow, dependency_order
from p2c_etl.model.overrides import apply_overrides
from p2c_etl.warehouse.store import Warehouse

Clock = Callable[[], datetime]
Progress = Callable[[str], None]


class Crash(Exception):
    """An unexpected exception (a bug) caught where a job ends its run as `failed`: its
    message is the run's one-line error, `traceback` what the command prints on stderr."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.traceback = "".join(traceback.format_exception(exc))
        super().__init__(f"unexpected {type(exc).__name__}: {exc}")


class Interrupted(BaseException):
    """The process was asked to stop (SIGTERM: `systemctl stop`, a scheduler's timeout);
    raised by the CLI's signal handler, so that the run is marked failed on the way out."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def interruption(exc: BaseException) -> str:
    """The ledger's error for a run that an interrupt or an exit ended."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT (Ctrl-C)"
    if isinstance(exc, Interrupted):
        return f"interrupted: {exc}"
    if isinstance(exc, Exception):
        return f"ended by {Crash(exc)}"
    return f"interrupted by {type(exc).__name__}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(at: datetime) -> str:
    """Sortable by time, unique across machines: `20261124T034500Z-1a2b3c`."""
    return f"{at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def select_flows(
    settings: Settings, contracts: ContractSet, names: Sequence[str] | None = None
) -> list[Flow]:
    """The enabled flows (or exactly `names`) with their p2c.toml overrides, in dependency
    order."""
    if names:
        unknown = [n for n in names if n not in flow_names()]
        if unknown:
            raise ConfigError(
                f"unknown flow {', '.join(unknown)} (flows: {', '.join(flow_names())})"
            )
        chosen = [f for f in ALL_FLOWS if f.name in names]
    else:
        chosen = [f for f in ALL_FLOWS if settings.flow(f.name).enabled]
    config = settings.config_path.name
    return dependency_order(
        apply_overrides(f, settings.flow(f.name), contracts, config) for f in chosen
    )


def connectors_for(settings: Settings, contracts: ContractSet) -> dict[SystemName, Connector]:
    """A connector per system, of the kind p2c.toml names."""
    systems: tuple[SystemName, ...] = ("crm", "erp")
    return {name: connector_for(settings.system(name), contracts) for name in systems}


def connector_for(system: SystemSettings, contracts: ContractSet) -> Connector:
    if system.kind == "dataverse":
        return DataverseConnector(system, contracts)
    if system.kind == "finops":
        return FinOpsConnector(system, contracts)
    assert system.path is not None
    return FilesConnector(system.name, system.path, contracts)


@contextmanager
def closing_all(connectors: Mapping[SystemName, Connector]) -> Iterator[None]:
    """Close every connector when the block ends, however it ends."""
    try:
        yield
    finally:
        for connector in connectors.values():
            connector.close()


@contextmanager
def open_warehouse(settings: Settings) -> Iterator[Warehouse]:
    wh = Warehouse.open(settings.warehouse_path)
    try:
        yield wh
    finally:
        wh.close()
