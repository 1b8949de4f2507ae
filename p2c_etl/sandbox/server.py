"""`Sandbox`: the Dataverse and F&O servers on loopback, each in a background thread.

    with Sandbox(crm_seed, erp_seed) as sb:
        sb.crm_url          # http://127.0.0.1:PORT — service root f"{sb.crm_url}/api/data/v9.2/"
        sb.erp_url          # service root f"{sb.erp_url}/data/"
        sb.token_url        # f"{sb.crm_url}/{tenant}/oauth2/v2.0/token" (also on the erp server)
        sb.faults.throttle_requests = 10
        sb.stats(), sb.records("crm", "accounts")
        sb.tracking.switch("accounts", False); sb.expire_delta_tokens()
        sb.plant("crm", "accounts", {...})   # a change no delta reports

`serve()` runs the same until interrupted, for `p2c sandbox serve`.
"""

from __future__ import annotations

import gc
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn

from p2c_etl.config import SystemName
from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import contracts_dir
from p2c_etl.sandbox.app import Admin, ServerParts, Service, build_app
from p2c_etl.sandbox.auth import TokenIssuer
from p2c_etl.sandbox.changetracking import ChangeTracking
from p2c_etl.sandbox.dataverse import SERVICE_PATH as DATAVERSE_PATH
from p2c_etl.sandbox.dataverse import DataverseService
from p2c_etl.sandbox.dateheader import DatedApp
from p2c_etl.sandbox.faults import FaultGate, Faults
from p2c_etl.sandbox.finops import SERVICE_PATH as FINOPS_PATH
from p2c_etl.sandbox.finops import FinOpsService
from p2c_etl.sandbox.seed import build_store
from p2c_etl.sandbox.stats import Stats
from p2c_etl.sandbox.store import Clock, Store, utc_now
from p2c_etl.sandbox.whoami import Identity

_START_TIMEOUT = 15.0


class Sandbox:
    """Both servers, seeded from files-layout folders, sharing tokens and `faults`."""

    def __init__(
        self,
        crm_seed: Path | None,
        erp_seed: Path | None,
        *,
        client_id: str = "p2c-sandbox",
        client_secret: str = "sandbox-secret",
        tenant: str = "sandbox",
        company: str = "usmf",
        host: str = "127.0.0.1",
        crm_port: int = 0,
        erp_port: int = 0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        faults: Faults | None = None,
        contracts: ContractSet | None = None,
        unique_alternate_keys: bool = True,
        alternate_keys: Mapping[str, tuple[str, ...]] | None = None,
        delta_token_ttl: int | None = None,
        untracked: tuple[str, ...] = (),
        clock: Clock = utc_now,
    ) -> None:
        """`unique_alternate_keys`: refuse a CRM seed that holds one alternate key value twice,
        as a tenant with that key could not (off only to serve such data anyway).
        `alternate_keys`: the alternate key of a Dataverse entity set where the tenant's
        differs from the contract's `keys` (`{"accounts": ()}`: accounts have none; the demo
        company's seed needs `seed.DEMO_ALTERNATE_KEYS`). `delta_token_ttl`: a
        delta token expires once more than this many record writes were committed after it
        was issued (None: never). `untracked`: Dataverse entity sets without change tracking.
        `clock`: the time the servers write records at (`createdon`, `modifiedon`)."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        contracts = contracts or ContractSet.load(contracts_dir())
        self.tenant = tenant
        self.faults = faults if faults is not None else Faults()
        self.tracking = ChangeTracking(delta_token_ttl, untracked)
        self._stats: dict[SystemName, Stats] = {"crm": Stats(), "erp": Stats()}
        self._stores: dict[SystemName, Store] = {
            "crm": build_store(
                "crm",
                crm_seed,
                contracts,
                self._stats["crm"].written,
                unique_alternate_keys=unique_alternate_keys,
                alternate_keys=alternate_keys,
                clock=clock,
            ),
            "erp": build_store("erp", erp_seed, contracts, self._stats["erp"].written, clock=clock),
        }
        issuer = TokenIssuer(client_id, client_secret, tenant)
        admin = Admin(self.faults, self.stats, self.reset_stats, self.tracking)
        identity = Identity(client_id, tenant, issuer.client_of)
        services: dict[SystemName, tuple[Service, str]] = {
            "crm": (
                DataverseService(
                    self._stores["crm"], self.faults, self._stats["crm"], identity, self.tracking
                ),
                DATAVERSE_PATH,
            ),
            "erp": (
                FinOpsService(self._stores["erp"], self.faults, self._stats["erp"], company),
                FINOPS_PATH,
            ),
        }
        ports: dict[SystemName, int] = {"crm": crm_port, "erp": erp_port}
        self._servers: dict[SystemName, _Background] = {}
        for system, (service, path) in services.items():
            gate = FaultGate(self.faults)
            parts = ServerParts(service, path, issuer, gate, self._stats[system], admin)
            self._servers[system] = _Background(
                DatedApp(build_app(parts), clock), host, ports[system], tls_cert, tls_key
            )

    def start(self) -> None:
        """Start both servers; returns once both accept connections."""
        try:
            for server in self._servers.values():
                server.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both servers and join their threads."""
        for server in self._servers.values():
            server.ask_to_stop()
        for server in self._servers.values():
            server.stop()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def crm_url(self) -> str:
        return self._servers["crm"].url

    @property
    def erp_url(self) -> str:
        return self._servers["erp"].url

    @property
    def token_url(self) -> str:
        return f"{self.crm_url}/{self.tenant}/oauth2/v2.0/token"

    def stats(self) -> dict[str, Any]:
        return {system: stats.snapshot() for system, stats in self._stats.items()}

    def reset_stats(self) -> None:
        for stats in self._stats.values():
            stats.reset()

    def expire_delta_tokens(self) -> None:
        """Refuse every Dataverse delta token issued so far, as an expired one is."""
        self.tracking.expire_tokens()

    def plant(self, system: str, entity: str, values: dict[str, Any]) -> None:
        """Change (or add) one record, whole, behind change tracking's back: no delta
        reports it, as after a set-based update or a restore. Values as `records` gives."""
        if system not in self._stores:
            raise KeyError(f"unknown system {system!r} (crm or erp)")
        store = self._stores[system]
        table = store.table(entity)
        if table is None:
            raise KeyError(f"{system} serves no entity set {entity!r}")
        with store.lock:
            table.plant(dict(values))

    def records(self, system: str, entity: str) -> list[dict[str, Any]]:
        """The current records of one entity set, values as Python objects."""
        if system not in self._stores:
            raise KeyError(f"unknown system {system!r} (crm or erp)")
        return self._stores[system].records(entity)


class _Background:
    """One uvicorn server on its own socket and thread."""

    def __init__(
        self, app: DatedApp, host: str, port: int, cert: Path | None, key: Path | None
    ) -> None:
        self._app, self._host, self._port = app, host, port
        self._cert, self._key = cert, key
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        scheme = "https" if self._cert else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._socket.getsockname()[1]}"

    def start(self) -> None:
        if self._thread is not None:
            return
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=str(self._cert) if self._cert else None,
            ssl_keyfile=str(self._key) if self._key else None,
            timeout_graceful_shutdown=1,
            date_header=False,  # `DatedApp` dates responses by the sandbox's clock
        )
        self._socket = _listening_socket(self._host, self._port)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        self._wait_started(self._server, self._thread)

    def ask_to_stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def stop(self) -> None:
        self.ask_to_stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    @staticmethod
    def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("a sandbox server did not start (see the log above)")
            time.sleep(0.01)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket names its protocol; without it every answer waits ~40 ms (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    crm_seed: Path | None,
    erp_seed: Path | None,
    *,
    host: str = "127.0.0.1",
    crm_port: int = 0,
    erp_port: int = 0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_id: str = "p2c-sandbox",
    client_secret: str = "sandbox-secret",
    faults: Faults | None = None,
    tenant: str = "sandbox",
    company: str = "usmf",
    alternate_keys: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Run both servers until Ctrl-C or SIGTERM; prints their URLs on stderr.
    `alternate_keys` as for `Sandbox`."""
    sandbox = Sandbox(
        crm_seed,
        erp_seed,
        client_id=client_id,
        client_secret=client_secret,
        tenant=tenant,
        company=company,
        host=host,
        crm_port=crm_port,
        erp_port=erp_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        faults=faults,
        alternate_keys=alternate_keys,
    )
    _settle_heap()
    stopped = threading.Event()
    with sandbox, _stop_on_sigterm(stopped):
        print(f"Dataverse Web API  {sandbox.crm_url}{DATAVERSE_PATH}", file=sys.stderr)
        print(f"F&O OData          {sandbox.erp_url}{FINOPS_PATH}", file=sys.stderr)
        print(f"token (client {client_id})  {sandbox.token_url}", file=sys.stderr)
        try:
            while not stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


def _settle_heap() -> None:
    """Take the seeded records out of the garbage collector's sight, for a process that serves
    them until it stops: they live as long as it does, so a full collection walking a million
    of them (every few thousand records written) is time the service does not answer in.
    Collections also run less often: a `$batch` of 1,000 records makes tens of thousands of
    short-lived objects, freed by reference counting, not by the collector."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class _stop_on_sigterm:
    """Within the block, SIGTERM sets `event` (main thread only; elsewhere nothing changes)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._event.set()
