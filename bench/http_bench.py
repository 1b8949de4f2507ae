"""The three nights an operator cares about, over HTTP (sandbox on loopback) beside files.

    python bench/http_bench.py [--accounts 100000] [--products 20000] [--seed 20261201]

Builds a company of ACCOUNTS Sales accounts and PRODUCTS F&O products in the files layout,
nothing synced yet (the targets, CRM products and ERP customers, are empty). The files side
runs the `products` and `accounts` flows on a copy of it; the HTTP side runs them through the
Dataverse and F&O connectors against the sandbox (`p2c sandbox serve` in its own process, as
a real service is), seeded once from the same files before the first night and then written
only by the runs (and by night 3's change). Each side keeps its warehouse between nights:

    1. first sync   empty targets: every record is inserted;
    2. no change    the same run again: nothing is written;
    3. 1% changed   1% of the accounts and of the products (picked by --seed, printed)
                    renamed, in the files and in the sandbox's source entity sets (through
                    its Web API: `UpsertMultiple` on accounts, PATCH on products, before the
                    night's counters are reset): exactly those are written.

Prints, per night and side, wall seconds, records written, write requests (`UpsertMultiple`
and `$batch` posted to the sandbox; the files side makes none) and records per write
request; then per night the HTTP / files ratio against its target (first sync <= 3x, no
change <= 2x, 1% changed <= 2x). Each night the files side runs first, then the HTTP side;
it asserts that both write the same number of records and that it is the expected one
(every record, none, the changed ones).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
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


@dataclass(frozen=True)
class Company:
    """The generated company: its files-layout folder and its source records."""

    folder: Path
    accounts: pl.DataFrame
    products: pl.DataFrame


def build(root: Path, n_accounts: int, n_products: int) -> Company:
    """A company where nothing was synced yet: every source record, empty targets."""
    demo = demo_fixtures_dir()
    folder = root / "company"
    for system in ("crm", "erp"):
        (folder / system).mkdir(parents=True)
    for name in ("transactioncurrencies", "uoms", "uomschedules"):
        shutil.copy(demo / "crm" / f"{name}.jsonl", folder / "crm")
    currency = json.loads(
        (demo / "crm" / "transactioncurrencies.jsonl").read_text().splitlines()[0]
    )
    all_accounts = accounts(n_accounts).with_columns(
        pl.lit(currency["transactioncurrencyid"]).alias("_transactioncurrencyid_value")
    )
    all_products = products(n_products)
    all_accounts.write_ndjson(folder / "crm" / "accounts.jsonl")
    all_products.write_ndjson(folder / "erp" / "SellableReleasedProducts.jsonl")
    (folder / "crm" / "products.jsonl").write_text("")
    (folder / "erp" / "CustomersV2.jsonl").write_text("")
    (folder / "p2c.toml").write_text(demo_config_text())
    return Company(folder, all_accounts, all_products)


@dataclass(frozen=True)
class Change:
    """1% of the accounts and of the products renamed: the new frames and the changed rows."""

    accounts: pl.DataFrame
    products: pl.DataFrame
    changed_accounts: pl.DataFrame  # accountid, name (the new one)
    changed_products: pl.DataFrame  # dataAreaId, ProductNumber, ProductName (the new one)

    @property
    def records(self) -> int:
        return self.changed_accounts.height + self.changed_products.height


def one_percent(company: Company, seed: int) -> Change:
    """Rename 1% of the accounts and 1% of the products, picked by `seed`."""

    def renamed(frame: pl.DataFrame, column: str) -> tuple[pl.DataFrame, pl.Series]:
        pick = (pl.int_range(pl.len()).shuffle(seed) < pl.len() // 100).alias("pick")
        picked = frame.select(pick).to_series()
        new = pl.when(picked).then(pl.col(column) + " (changed)").otherwise(pl.col(column))
        return frame.with_columns(new.alias(column)), picked

    new_accounts, picked_accounts = renamed(company.accounts, "name")
    new_products, picked_products = renamed(company.products, "ProductName")
    return Change(
        new_accounts,
        new_products,
        new_accounts.filter(picked_accounts).select("accountid", "name"),
        new_products.filter(picked_products).select("dataAreaId", "ProductNumber", "ProductName"),
    )


def change_files(folder: Path, change: Change) -> None:
    change.accounts.write_ndjson(folder / "crm" / "accounts.jsonl")
    change.products.write_ndjson(folder / "erp" / "SellableReleasedProducts.jsonl")


def change_sandbox(crm_url: str, erp_url: str, change: Change) -> None:
    """The same change in the sandbox's `accounts` and `SellableReleasedProducts`, through
    its Web API (the sandbox is seeded only at start; its data API writes any entity set)."""
    with httpx.Client(timeout=60) as client:
        headers = {"Authorization": f"Bearer {_token(crm_url)}"}
        targets = [
            {"@odata.type": "Microsoft.Dynamics.CRM.account", **row}
            for row in change.changed_accounts.to_dicts()
        ]
        for start in range(0, len(targets), 1000):
            answer = client.post(
                f"{crm_url}/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
                json={"Targets": targets[start : start + 1000]},
                headers=headers,
            )
            answer.raise_for_status()
        headers = {"Authorization": f"Bearer {_token(erp_url)}"}
        for row in change.changed_products.iter_rows(named=True):
            key = f"dataAreaId='{row['dataAreaId']}',ProductNumber='{row['ProductNumber']}'"
            answer = client.patch(
                f"{erp_url}/data/SellableReleasedProducts({key})",
                json={"ProductName": row["ProductName"]},
                headers=headers,
            )
            answer.raise_for_status()


def files_night(folder: Path) -> tuple[float, RunSummary]:
    start = time.perf_counter()
    summary = run_batch(load_settings(folder / "p2c.toml"), flows=FLOWS)
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


def _reset_stats(url: str) -> None:
    headers = {"Authorization": f"Bearer {_token(url)}"}
    httpx.post(f"{url}/_sandbox/reset-stats", headers=headers, timeout=10).raise_for_status()


@dataclass(frozen=True)
class HttpNight:
    seconds: float
    summary: RunSummary
    writes: int
    """Write requests (`UpsertMultiple`, `$batch`) the sandbox received."""
    crm_returned: int
    """Records the sandbox's Dataverse returned in reads."""
    crm_full: int
    """Records a full read of the same Dataverse entity sets returns (their mirrors' rows)."""


def http_night(folder: Path, crm_url: str, erp_url: str) -> HttpNight:
    """One run through the connectors against the running sandbox."""
    config = folder / "p2c.toml"
    if not config.exists():
        token_url = f"{crm_url}/sandbox/oauth2/v2.0/token"
        config.write_text(http_config_text(crm_url, erp_url, token_url))
    settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
    _reset_stats(crm_url)
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
    returned = sum(stats["crm"]["records_returned"].values())
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        full = con.execute(
            "SELECT coalesce(sum(row_count), 0) FROM mirrors WHERE system = 'crm' AND entity IN "
            "(SELECT entity FROM run_reads WHERE run_id = ? AND system = 'crm')",
            [summary.run_id],
        ).fetchall()[0][0]
    finally:
        con.close()
    return HttpNight(elapsed, summary, writes, returned, int(full))


# (night, HTTP / files target)
NIGHTS = (("first sync", 3.0), ("no change", 2.0), ("1% changed", 2.0))


def show(night: str, side: str, seconds: float, summary: RunSummary, requests: int | None) -> None:
    written = summary.written
    if requests is None:
        shown, per = f"{'-':>7}", f"{'-':>7}"
    else:
        shown = f"{requests:7,}"
        per = f"{written / requests:7,.0f}" if requests else f"{'-':>7}"
    print(
        f"{night:<10}  {side:5}  wall {seconds:7.2f} s  written {written:9,}  "
        f"write requests {shown}  records/request {per}  ({summary.status})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    ratios: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print(
            f"building {args.accounts:,} accounts and {args.products:,} products "
            f"(seed {args.seed}) ...",
            flush=True,
        )
        company = build(root, args.accounts, args.products)
        files_dir = root / "files"
        shutil.copytree(company.folder, files_dir)
        http_dir = root / "http"
        http_dir.mkdir()
        expected = {"first sync": args.accounts + args.products, "no change": 0}
        # Seeded once, from the files the files side starts from; from then on only the
        # runs (and night 3's change) write to it: it keeps its state between requests.
        with sandbox_process(files_dir) as (crm_url, erp_url):
            for night, target in NIGHTS:
                if night == "1% changed":
                    change = one_percent(company, args.seed)
                    change_files(files_dir, change)
                    change_sandbox(crm_url, erp_url, change)
                    expected[night] = change.records
                    print(
                        f"changed {change.changed_accounts.height:,} accounts and "
                        f"{change.changed_products.height:,} products (seed {args.seed}), in "
                        "the files and in the running sandbox through its Web API",
                        flush=True,
                    )
                files_s, files_summary = files_night(files_dir)
                show(night, "files", files_s, files_summary, None)
                done = http_night(http_dir, crm_url, erp_url)
                http_s, http_summary = done.seconds, done.summary
                show(night, "http", http_s, http_summary, done.writes)
                share = done.crm_returned / done.crm_full if done.crm_full else 0.0
                print(
                    f"{night:<10}  http   read from Dataverse {done.crm_returned:9,} records, "
                    f"{share:6.1%} of the {done.crm_full:,} a full read returns",
                    flush=True,
                )
                assert files_summary.status == "ok", files_summary.error
                assert http_summary.status != "failed", http_summary.error
                assert http_summary.written == files_summary.written, (
                    f"{night}: both sides must write the same"
                )
                assert files_summary.written == expected[night], (
                    f"{night}: wrote {files_summary.written:,}, expected {expected[night]:,}"
                )
                ratios.append((night, http_s / files_s, target))
    for night, ratio, target in ratios:
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{night:<10}  ratio http / files {ratio:5.2f} (target <= {target:g}) {verdict}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of p2c-etl (all runs; the sandbox runs apart): {peak:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
