"""`p2c sandbox serve`: both Web APIs on loopback."""

from __future__ import annotations

from pathlib import Path

import click

from p2c_etl.cli.output import errors_exit
from p2c_etl.config import sandbox_secret
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import serve


@click.group()
def sandbox() -> None:
    """The local Dataverse and Finance and Operations servers (for demos and tests)."""


@sandbox.command("serve")
@click.option(
    "--crm",
    "crm_seed",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Seed the Dataverse side from this folder [default: the demo company].",
)
@click.option(
    "--erp",
    "erp_seed",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Seed the F&O side from this folder [default: the demo company].",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--crm-port", default=8401, show_default=True)
@click.option("--erp-port", default=8402, show_default=True)
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--client-id", default="p2c-sandbox", show_default=True)
@click.option("--throttle", metavar="N/SECONDS", help="Answer 429 after N requests a window.")
@click.option(
    "--throttle-every",
    type=click.IntRange(min=0),
    default=0,
    help="Answer 429 to every N-th request of each server (counted, the same on any machine).",
)
@click.option(
    "--fail-every",
    type=click.IntRange(min=0),
    default=0,
    help="Answer 503 to every N-th request of each server (counted).",
)
@click.option(
    "--retry-after",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Seconds of Retry-After on counted and random refusals.",
)
@click.option("--error-rate", type=float, default=0.0, help="Fraction of requests answered 503.")
@click.option("--page-delay", type=float, default=0.0, help="Seconds before each page.")
@click.option(
    "--reject",
    metavar="FIELD=VALUE",
    multiple=True,
    help="Refuse records whose FIELD equals VALUE (400 for that record).",
)
@click.option(
    "--no-alternate-key",
    "keyless",
    metavar="ENTITY_SET",
    multiple=True,
    help="Serve this Dataverse entity set without its contract's alternate key, as a tenant "
    "that declares none (so a seed may hold one key value twice). The demo company's accounts "
    "are always served so.",
)
@errors_exit
def sandbox_serve(
    crm_seed: Path | None,
    erp_seed: Path | None,
    host: str,
    crm_port: int,
    erp_port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_id: str,
    throttle: str | None,
    throttle_every: int,
    fail_every: int,
    retry_after: int,
    error_rate: float,
    page_delay: float,
    reject: tuple[str, ...],
    keyless: tuple[str, ...],
) -> None:
    """Serve both Web APIs on loopback until interrupted. The client secret is read from
    P2C_SANDBOX_SECRET (default: sandbox-secret). /_sandbox/faults and /_sandbox/stats need
    a bearer token from the token endpoint, as the APIs do."""
    faults = Faults(
        throttle_every=throttle_every,
        fail_every=fail_every,
        retry_after=retry_after,
        error_rate=error_rate,
        page_delay=page_delay,
        reject=dict(r.split("=", 1) for r in reject),
    )
    if throttle:
        count, _, window = throttle.partition("/")
        try:
            faults.throttle_requests, faults.throttle_window = int(count), float(window or 1)
        except ValueError:
            raise click.BadParameter("N/SECONDS, such as 20/1", param_hint="--throttle") from None
    seed = demo_fixtures_dir()
    crm = crm_seed or seed / "crm"
    demo = DEMO_ALTERNATE_KEYS if crm.resolve() == (seed / "crm").resolve() else {}
    serve(
        crm,
        erp_seed or seed / "erp",
        host=host,
        crm_port=crm_port,
        erp_port=erp_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_id=client_id,
        client_secret=sandbox_secret(),
        faults=faults,
        alternate_keys={**demo, **dict.fromkeys(keyless, ())},
    )
