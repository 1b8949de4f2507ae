"""p2c.toml → one frozen `Settings`.

Relative paths in the file are taken relative to the file's own folder, so a
configuration works from any current directory. Every problem is a `ConfigError`
with a one-line message naming the file and the key.

    [warehouse]
    path = "p2c.duckdb"          # default
    keep_days = 30               # default: runs older are pruned after each run

    [systems.crm]
    kind = "files"               # files | dataverse | finops
    path = "crm"

    [systems.erp]
    kind = "files"
    path = "erp"
    company = "usmf"             # default; becomes dataAreaId

    [report]
    dir = "reports"              # default

    [run]
    full_every = "7d"            # default: read in full to verify the mirrors this often

    [flows.accounts]
    enabled = true               # default

The bottom layer, with `errors` and `resources`: imports `errors` only. The one module that
reads the environment (secrets are named by variable in p2c.toml). About 400 lines because it
is the whole schema of p2c.toml, read top to bottom, each section beside its checks.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from p2c_etl.errors import ConfigError

SystemName = Literal["crm", "erp"]
SystemKind = Literal["files", "dataverse", "finops"]
MAX_CONCURRENCY = 52  # the service-protection limit of both APIs (reference 5.1, 5.2)
DEFAULT_CONFIG = Path("p2c.toml")


@dataclass(frozen=True)
class SystemSettings:
    """One system: which connector talks to it and where it is.

    `kind = "files"` needs `path`; `dataverse` and `finops` need `url`, `tenant`,
    `client_id` and `secret_env` (the name of the environment variable holding the client
    secret, read once here and kept in a `Secret` that never prints).
    """

    name: SystemName
    kind: SystemKind
    path: Path | None = None
    company: str | None = None
    url: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    secret_env: str | None = None
    secret: Secret | None = None
    token_url: str | None = None
    scope: str | None = None
    concurrency: int = 4
    page_size: int = 5000
    timeout: float = 60.0
    ca_file: Path | None = None
    """A CA bundle to trust (the sandbox's self-signed certificate); default: the system's."""
    high_water_lag: timedelta = timedelta(minutes=5)
    """`high_water_lag` (F&O): how far before the last high-water mark a read by
    modification time starts again, for records committed late with an earlier time."""


class Secret:
    """A secret that never shows itself in repr, str, logs, reports or exceptions."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


Scalar = str | int | bool | float
UNMAPPED_POLICIES = ("reject", "default", "pass")
ROUNDINGS = ("half_away_from_zero", "half_even")


@dataclass(frozen=True)
class AlertSettings:
    """`[alerts]`: where a run that ends partial or failed is reported."""

    webhook: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_to: tuple[str, ...] = ()
    smtp_user: str | None = None
    smtp_password: Secret | None = None
    smtp_starttls: bool = False


@dataclass(frozen=True)
class FlowSettings:
    """Per-flow overrides from `[flows.<name>]` (applied by `p2c_etl.model.overrides`)."""

    enabled: bool = True
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Mapping[str, Scalar] = field(default_factory=lambda: MappingProxyType({}))
    value_maps: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    unmapped: str | None = None
    source_filter: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a command needs from the configuration, resolved and checked."""

    config_path: Path
    warehouse_path: Path
    crm: SystemSettings
    erp: SystemSettings
    report_dir: Path
    flows: Mapping[str, FlowSettings] = field(default_factory=lambda: MappingProxyType({}))
    rounding: str = "half_away_from_zero"
    tolerances: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    alerts: AlertSettings = field(default_factory=AlertSettings)
    """`[reconcile.tolerances]`: column → largest difference that still agrees (default exact)."""
    keep_days: int = 30
    """`[warehouse] keep_days`: the runs of the last N days are kept; older ones are pruned
    at the end of every run."""
    full_every: timedelta = timedelta(days=7)
    """`[run] full_every`: an entity set read through its changes (a delta link, a
    high-water mark) is read in full, to verify its mirror, when its last full read is older."""

    @property
    def company(self) -> str:
        """The ERP legal entity written as `dataAreaId`."""
        return self.erp.company or "usmf"

    def system(self, name: SystemName) -> SystemSettings:
        return self.crm if name == "crm" else self.erp

    def flow(self, name: str) -> FlowSettings:
        return self.flows.get(name, FlowSettings())


class _Table:
    """A TOML table read key by key, so unknown and missing keys are reported by full name."""

    def __init__(self, source: Path, dotted: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{dotted}] must be a table")
        self.source, self.dotted, self.data = source, dotted, data

    def _name(self, key: str) -> str:
        return f"{self.dotted}.{key}" if self.dotted else key

    def only(self, *allowed: str) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(
                    f"{self.source}: unknown key '{self._name(key)}' "
                    f"(expected one of: {', '.join(allowed)})"
                )

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.source}: missing key '{self._name(key)}'")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            what = kind.__name__ if isinstance(kind, type) else "number"
            raise ConfigError(f"{self.source}: '{self._name(key)}' must be a {what}, got {value!r}")
        return value

    def table(self, key: str, required: bool = False) -> _Table:
        if key not in self.data and required:
            raise ConfigError(f"{self.source}: missing table [{self._name(key)}]")
        return _Table(self.source, self._name(key), self.data.get(key, {}))


def load_settings(
    path: Path,
    known_flows: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and check `path`; `known_flows` are the names `[flows.<name>]` may use; secrets
    come from `environ` (default: the process environment)."""
    path = Path(path)
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found (create it, or pass --config)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _settings(path, _Table(path, "", raw), known_flows, env)


def _settings(
    path: Path, top: _Table, known_flows: tuple[str, ...], env: Mapping[str, str]
) -> Settings:
    base = path.resolve().parent
    top.only("warehouse", "systems", "report", "flows", "money", "reconcile", "alerts", "run")
    reconcile = top.table("reconcile")
    reconcile.only("tolerances")
    tolerances = reconcile.table("tolerances")
    for key, value in tolerances.data.items():
        try:
            if not isinstance(value, str | int) or Decimal(str(value)) < 0:
                raise ValueError
        except (ValueError, ArithmeticError):
            raise ConfigError(
                f"{path}: 'reconcile.tolerances.{key}' must be a non-negative amount "
                f'like "0.01", got {value!r}'
            ) from None
    money = top.table("money")
    money.only("rounding")
    rounding = money.get("rounding", str, "half_away_from_zero")
    if rounding not in ROUNDINGS:
        raise ConfigError(
            f"{path}: 'money.rounding' must be one of {', '.join(ROUNDINGS)}, got {rounding!r}"
        )
    warehouse = top.table("warehouse")
    warehouse.only("path", "keep_days")
    keep_days = warehouse.get("keep_days", int, 30)
    if keep_days < 1:
        raise ConfigError(
            f"{path}: 'warehouse.keep_days' must be a whole number of days, 1 or more, "
            f"got {keep_days!r}"
        )
    report = top.table("report")
    report.only("dir")
    run = top.table("run")
    run.only("full_every")
    systems = top.table("systems", required=True)
    systems.only("crm", "erp")
    return Settings(
        config_path=path.resolve(),
        warehouse_path=base / warehouse.get("path", str, "p2c.duckdb"),
        crm=_system(base, "crm", systems.table("crm", required=True), env),
        erp=_system(base, "erp", systems.table("erp", required=True), env),
        report_dir=base / report.get("dir", str, "reports"),
        flows=MappingProxyType(_flows(top.table("flows"), known_flows)),
        rounding=rounding,
        tolerances=MappingProxyType({k: str(v) for k, v in tolerances.data.items()}),
        alerts=_alerts(top.table("alerts"), env),
        keep_days=keep_days,
        full_every=_duration(run, "full_every", timedelta(days=7)),
    )


_DURATION = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(table: _Table, key: str, default: timedelta) -> timedelta:
    """A duration written as a whole number and a unit: "30s", "5m", "12h", "7d"."""
    text = table.get(key, str, None)
    if text is None:
        return default
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ConfigError(
            f"{table.source}: '{table.dotted}.{key}' must be a whole number and a unit "
            f'(s, m, h or d), like "7d" or "5m", got {text!r}'
        )
    try:
        return timedelta(**{_UNITS[found[2]]: int(found[1])})
    except OverflowError:
        raise ConfigError(
            f"{table.source}: '{table.dotted}.{key}' is too long a time, got {text!r}"
        ) from None


_HTTP_KEYS = (
    "url",
    "tenant",
    "client_id",
    "secret_env",
    "token_url",
    "scope",
    "concurrency",
    "page_size",
    "timeout",
    "ca_file",
)


def _system(base: Path, name: SystemName, table: _Table, env: Mapping[str, str]) -> SystemSettings:
    kind = table.get("kind", str, required=True)
    if kind not in get_args(SystemKind):
        raise ConfigError(
            f"{table.source}: '{table.dotted}.kind' must be one of "
            f"{', '.join(get_args(SystemKind))}, got {kind!r}"
        )
    expected_kind = "finops" if name == "erp" else "dataverse"
    if kind not in ("files", expected_kind):
        raise ConfigError(
            f"{table.source}: '{table.dotted}.kind' = {kind!r}: the {name.upper()} is "
            f"'files' or '{expected_kind}'"
        )
    company = None
    if name == "erp":
        company = table.get("company", str, "usmf").strip().lower()
        if not company:
            raise ConfigError(f"{table.source}: '{table.dotted}.company' must not be empty")
    extra = ("company",) if name == "erp" else ()
    if kind == "files":
        table.only("kind", "path", *extra)
        return SystemSettings(
            name=name, kind=kind, path=base / table.get("path", str, required=True), company=company
        )
    extra = (*extra, "high_water_lag") if kind == "finops" else extra
    table.only("kind", *extra, *_HTTP_KEYS)
    secret_env = table.get("secret_env", str, required=True)
    secret = env.get(secret_env)
    concurrency = table.get("concurrency", int, 4)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(
            f"{table.source}: '{table.dotted}.concurrency' must be 1 to {MAX_CONCURRENCY}, "
            f"got {concurrency}"
        )
    page_size = table.get("page_size", int, 5000)
    if not 1 <= page_size <= 5000:
        raise ConfigError(f"{table.source}: '{table.dotted}.page_size' must be 1 to 5000")
    return SystemSettings(
        name=name,
        kind=kind,
        company=company,
        url=table.get("url", str, required=True).rstrip("/"),
        tenant=table.get("tenant", str, required=True),
        client_id=table.get("client_id", str, required=True),
        secret_env=secret_env,
        secret=Secret(secret) if secret else None,
        token_url=table.get("token_url", str),
        scope=table.get("scope", str),
        concurrency=concurrency,
        page_size=page_size,
        timeout=float(table.get("timeout", (int, float), 60.0)),
        ca_file=base / table.get("ca_file", str) if "ca_file" in table.data else None,
        high_water_lag=_duration(table, "high_water_lag", timedelta(minutes=5)),
    )


def _alerts(table: _Table, env: Mapping[str, str]) -> AlertSettings:
    table.only(
        "webhook",
        "smtp_host",
        "smtp_port",
        "smtp_from",
        "smtp_to",
        "smtp_user",
        "smtp_password_env",
        "smtp_starttls",
    )
    to = table.get("smtp_to", list, [])
    if not all(isinstance(x, str) for x in to):
        raise ConfigError(f"{table.source}: 'alerts.smtp_to' must be a list of addresses")
    host = table.get("smtp_host", str)
    if host and (not to or not table.get("smtp_from", str)):
        raise ConfigError(f"{table.source}: [alerts] with smtp_host needs smtp_from and smtp_to")
    password_env = table.get("smtp_password_env", str)
    password = env.get(password_env) if password_env else None
    return AlertSettings(
        webhook=table.get("webhook", str),
        smtp_host=host,
        smtp_port=table.get("smtp_port", int, 25),
        smtp_from=table.get("smtp_from", str),
        smtp_to=tuple(to),
        smtp_user=table.get("smtp_user", str),
        smtp_password=Secret(password) if password else None,
        smtp_starttls=table.get("smtp_starttls", bool, False),
    )


def _flows(table: _Table, known_flows: tuple[str, ...]) -> dict[str, FlowSettings]:
    flows: dict[str, FlowSettings] = {}
    for name in table.data:
        if known_flows and name not in known_flows:
            raise ConfigError(
                f"{table.source}: unknown flow [flows.{name}] (flows: {', '.join(known_flows)})"
            )
        flows[name] = _flow(table.table(name))
    return flows


def _flow(entry: _Table) -> FlowSettings:
    entry.only("enabled", "fields", "defaults", "value_maps", "unmapped", "source_filter")
    unmapped = entry.get("unmapped", str)
    if unmapped is not None and unmapped not in UNMAPPED_POLICIES:
        raise ConfigError(
            f"{entry.source}: '{entry.dotted}.unmapped' must be one of "
            f"{', '.join(UNMAPPED_POLICIES)}, got {unmapped!r}"
        )
    source_filter = entry.get("source_filter", list)
    if source_filter is not None and not all(isinstance(x, str) for x in source_filter):
        raise ConfigError(
            f"{entry.source}: '{entry.dotted}.source_filter' must be a list of strings "
            'like "statecode eq 0"'
        )
    return FlowSettings(
        enabled=entry.get("enabled", bool, True),
        fields=MappingProxyType(_strings(entry.table("fields"))),
        defaults=MappingProxyType(dict(entry.table("defaults").data)),
        value_maps=MappingProxyType(
            {
                target: MappingProxyType(_strings(entry.table("value_maps").table(target)))
                for target in entry.table("value_maps").data
            }
        ),
        unmapped=unmapped,
        source_filter=tuple(source_filter) if source_filter is not None else None,
    )


def _strings(table: _Table) -> dict[str, str]:
    for key, value in table.data.items():
        if not isinstance(value, str):
            raise ConfigError(
                f"{table.source}: '{table.dotted}.{key}' must be a string, got {value!r}"
            )
    return dict(table.data)


SANDBOX_SECRET_ENV = "P2C_SANDBOX_SECRET"


def sandbox_secret() -> str:
    """The client secret `p2c sandbox serve` accepts: $P2C_SANDBOX_SECRET, else its default."""
    return os.environ.get(SANDBOX_SECRET_ENV) or "sandbox-secret"
