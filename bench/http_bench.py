"""The nightly run over HTTP (sandbox on loopback) beside the same run on the files connector.

    python bench/http_bench.py [--accounts 100000] [--products 20000]

Builds a company of ACCOUNTS Sales accounts and PRODUCTS F&O products in the files layout, of
which 90% were synced earlier (by p2c-etl itself) and 1% of those changed since; then runs the
`products` and `accounts` flows once on files and once through the Dataverse and F&O
connectors against the sandbox (`p2c sandbox serve` in its own process, as a real service
is) seeded with the same data. Prints wall time, records/s, records
written and records written per write request (`UpsertMultiple` and `$batch`, target >= 500),
and the HTTP / files ratio (target <= 5).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from p2c_etl.config import SANDBOX_SECRET_ENV, load_settings
from p2c_etl.flows import flow_names
from p2c_etl.jobs.demo import demo_config_text, http_config_text
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.summary import RunSummary
from p2c_etl.resources import demo_fixtures_dir

FLOWS = ["products", "accounts"]
SECRET = "bench-secret"


def accounts(n: int) -> pl.DataFrame:
    i = pl.col("i")
    return pl.DataFrame({"i": pl.int_range(n, eager=True)}).select(
        pl.format("00000000-0000-4000-8000-{}", i.cast(pl.String).str.zfill(12)).alias("accountid"),
        pl.format("ACC-{}", i.cast(pl.String).str.zfill(7)).alias("accountnumber"),
        pl.format("Customer {} Ltd", i).alias("name"),
        pl.lit(0).alias("statecode"),
        pl.lit("0b6f8a52-0000-0000-0000-000000000000").alias("_transactioncurrencyid_value"),
        pl.format("{} Main St", i % 999 + 1).alias("address1_line1"),
        pl.format("City {}", i % 500).alias("address1_city"),
        pl.format("{}", 10000 + i % 80000).alias("address1_postalcode"),
        pl.lit("WA").alias("address1_stateorprovince"),
        pl.when(i % 3 == 0)
        .then(pl.lit("United States"))
        .otherwise(pl.lit("USA"))
        .alias("address1_country"),
        pl.format("+1 555 {}", i % 10000).alias("telephone1"),
        pl.format("ap{}@example.com", i).alias("emailaddress1"),
        ((i % 1000) * 100).cast(pl.String).alias("creditlimit"),
        (i % 5000).alias("numberofemployees"),
        # Columns the contract reads that these accounts leave empty (present, as null).
        *[pl.lit(None, pl.String).alias(c) for c in UNUSED_ACCOUNT_COLUMNS],
    )


UNUSED_ACCOUNT_COLUMNS = (
    "address1_county",
    "address2_line1",
    "address2_city",
    "address2_postalcode",
    "address2_stateorprovince",
    "address2_county",
    "address2_country",
    "fax",
    "websiteurl",
    "description",
)


def products(n: int) -> pl.DataFrame:
    i = pl.col("i")
    return pl.DataFrame({"i": pl.int_range(n, eager=True)}).select(
        pl.lit("usmf").alias("dataAreaId"),
        pl.format("P{}", i.cast(pl.String).str.zfill(7)).alias("ProductNumber"),
        pl.format("Product {}", i).alias("ProductName"),
        pl.format("Product {}, as sold.", i).alias("ProductDescription"),
        pl.lit("Item").alias("ProductType"),
        pl.lit("Yes").alias("IsStockedProduct"),
        pl.lit("No").alias("IsSalesStopped"),
        pl.lit("ea").alias("SalesUnitSymbol"),
        pl.lit(0).alias("SalesUnitDecimalPrecision"),
        ((i % 900 + 100) * 100 + 99)
        .cast(pl.String)
        .str.replace(r"(\d\d)$", ".$1")
        .alias("SalesPrice"),
        pl.lit("10.00").alias("UnitCost"),
        pl.lit("USD").alias("CurrencyCode"),
    )


def build(root: Path, n_accounts: int, n_products: int) -> Path:
    """A company where 90% was synced earlier and 1% of that changed since."""
    demo = demo_fixtures_dir()
    state = root / "state"
    for system in ("crm", "erp"):
        (state / system).mkdir(parents=True)
    for name in ("transactioncurrencies", "uoms", "uomschedules"):
        shutil.copy(demo / "crm" / f"{name}.jsonl", state / "crm")
    currency = json.loads(
        (demo / "crm" / "transactioncurrencies.jsonl").read_text().splitlines()[0]
    )
    all_accounts = accounts(n_accounts).with_columns(
        pl.lit(currency["transactioncurrencyid"]).alias("_transactioncurrencyid_value")
    )
    all_products = products(n_products)
    synced = int(n_accounts * 0.9), int(n_products * 0.9)
    all_accounts.head(synced[0]).write_ndjson(state / "crm" / "accounts.jsonl")
    all_products.head(synced[1]).write_ndjson(state / "erp" / "SellableReleasedProducts.jsonl")
    (state / "crm" / "products.jsonl").write_text("")
    (state / "erp" / "CustomersV2.jsonl").write_text("")
    (state / "p2c.toml").write_text(demo_config_text())
    earlier = run_batch(load_settings(state / "p2c.toml"), flows=FLOWS)
    assert earlier.status == "ok", earlier.error
    changed = pl.col("accountnumber").str.slice(-2) == "07"  # 1% of the accounts
    all_accounts.with_columns(
        pl.when(changed).then(pl.col("name") + " (renamed)").otherwise("name").alias("name")
    ).write_ndjson(state / "crm" / "accounts.jsonl")
    all_products.write_ndjson(state / "erp" / "SellableReleasedProducts.jsonl")
    (state / "p2c.duckdb").unlink()
    shutil.rmtree(state / "reports")
    return state


def files_run(state: Path, root: Path) -> tuple[float, RunSummary]:
    work = root / "files"
    shutil.copytree(state, work)
    start = time.perf_counter()
    summary = run_batch(load_settings(work / "p2c.toml"), flows=FLOWS)
    return time.perf_counter() - start, summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sandbox_process(state: Path) -> Iterator[tuple[str, str]]:
    """`p2c sandbox serve` in its own process, as a real service is: (crm url, erp url)."""
    ports = _free_port(), _free_port()
    command = [
        sys.executable,
        "-m",
        "p2c_etl",
        "sandbox",
        "serve",
        "--crm",
        str(state / "crm"),
        "--erp",
        str(state / "erp"),
        "--crm-port",
        str(ports[0]),
        "--erp-port",
        str(ports[1]),
    ]
    env = {**os.environ, SANDBOX_SECRET_ENV: SECRET}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    urls = tuple(f"http://127.0.0.1:{p}" for p in ports)
    try:
        deadline = time.monotonic() + 300
        while not all(_answers(u) for u in urls):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.2)
        yield urls[0], urls[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def _token(url: str, timeout: float = 10) -> str:
    """A bearer token from the sandbox's token endpoint: `/_sandbox/*` needs one too."""
    form = {
        "grant_type": "client_credentials",
        "client_id": "p2c-sandbox",
        "client_secret": SECRET,
        "scope": f"{url}/.default",
    }
    answer = httpx.post(f"{url}/sandbox/oauth2/v2.0/token", data=form, timeout=timeout)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def _stats(url: str, timeout: float = 10) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {_token(url, timeout)}"}
    answer = httpx.get(f"{url}/_sandbox/stats", headers=headers, timeout=timeout)
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def _answers(url: str) -> bool:
    try:
        _stats(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def http_run(state: Path, root: Path) -> tuple[float, RunSummary, int]:
    work = root / "http"
    work.mkdir()
    with sandbox_process(state) as (crm_url, erp_url):
        config = work / "p2c.toml"
        token_url = f"{crm_url}/sandbox/oauth2/v2.0/token"
        config.write_text(http_config_text(crm_url, erp_url, token_url))
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        start = time.perf_counter()
        summary = run_batch(settings, flows=FLOWS)
        elapsed = time.perf_counter() - start
        stats = _stats(crm_url)
    writes = sum(
        n
        for system in stats.values()
        for endpoint, n in system["requests"].items()
        if endpoint.startswith("POST") and ("$batch" in endpoint or "Multiple" in endpoint)
    )
    return elapsed, summary, writes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print(f"building {args.accounts:,} accounts and {args.products:,} products ...")
        state = build(root, args.accounts, args.products)
        files_s, files_summary = files_run(state, root)
        http_s, http_summary, write_requests = http_run(state, root)
    rows = sum(f.source_rows for f in files_summary.flows)
    for label, seconds, summary in (
        ("files", files_s, files_summary),
        ("http", http_s, http_summary),
    ):
        written = summary.written
        print(
            f"{label:5}  wall {seconds:7.2f} s  {rows / seconds:10,.0f} source rows/s  "
            f"written {written:,} ({summary.status})"
        )
    assert http_summary.status != "failed", http_summary.error
    assert http_summary.written == files_summary.written, "both runs must write the same"
    per_request = http_summary.written / write_requests if write_requests else 0.0
    print(
        f"http write requests: {write_requests:,}  records per write request: {per_request:,.0f} "
        "(target >= 500)"
    )
    print(f"ratio http / files: {http_s / files_s:.2f} (target <= 5)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of p2c-etl (both runs; the sandbox runs apart): {peak:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
