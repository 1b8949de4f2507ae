"""The evidence block a controller signs under: when and by whom (user and host) the
reconciliation was made, with which p2c-etl, the effective configuration without a secret
(system kinds, paths, and URLs without credentials or query), the tolerances, and what was
read from each system. The SHA-256 of the evidence files are added as they are written
(`report.write_reconciliation`)."""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

import p2c_etl
from p2c_etl.config import Settings, SystemSettings
from p2c_etl.jobs.reconcile.records import EntityRead


@dataclass(frozen=True)
class Evidence:
    made_at: str
    user: str
    host: str
    version: str
    configuration: tuple[tuple[str, str], ...]
    tolerances: tuple[tuple[str, str], ...]
    reads: tuple[EntityRead, ...]


def evidence(
    settings: Settings, made_at: str, tolerances: dict[str, Decimal], reads: Sequence[EntityRead]
) -> Evidence:
    return Evidence(
        made_at=made_at,
        user=_user(),
        host=socket.gethostname(),
        version=p2c_etl.__version__,
        configuration=configuration(settings),
        tolerances=tolerances_used(tolerances),
        reads=tuple(reads),
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no name (a container's)
        return f"uid {os.getuid()}"


def configuration(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The settings that decide what was compared, none of them secret."""
    flows = sorted(n for n, f in settings.flows.items() if not f.enabled)
    return (
        ("config file", str(settings.config_path)),
        ("warehouse", str(settings.warehouse_path)),
        ("company", settings.company),
        ("rounding", settings.rounding),
        ("Sales", _system(settings.crm)),
        ("F&O", _system(settings.erp)),
        ("flows disabled", ", ".join(flows) or "none"),
        ("flow overrides", ", ".join(sorted(settings.flows)) or "none"),
    )


def _system(system: SystemSettings) -> str:
    if system.kind == "files":
        return f"files at {system.path}"
    return f"{system.kind} at {safe_url(system.url or '')}"


def safe_url(url: str) -> str:
    """`url` without user, password, query or fragment: what may be shown to anyone."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else ""


def tolerances_used(tolerances: dict[str, Decimal]) -> tuple[tuple[str, str], ...]:
    """Every tolerance applied; document totals are compared exactly unless one is set."""
    stated = {"totalamount": "0.00 (exact)"} | {k: str(v) for k, v in tolerances.items()}
    return tuple(sorted(stated.items()))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
