"""`p2c migrate` at scale: exports of accounts, contacts, quotes and quote lines into files.

    python bench/migrate_bench.py [--accounts 1000000] [--chunk-rows 100000] [--format parquet]

Generates an export folder (N accounts, N contacts, N quotes and 2N quote lines: 5N rows)
from the demo company's records, with new ids, then migrates it into an empty files ERP in
a process of its own (as `p2c migrate` runs), and prints rows/s, seconds per stage, and the
peak memory of that process (target: under 4 GiB at 20M rows). The default (N = 1M) is 5M
rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

from p2c_etl.config import load_settings
from p2c_etl.jobs.migrate.job import run_migrate
from p2c_etl.jobs.migrate.options import MigrateOptions
from p2c_etl.resources import demo_fixtures_dir

FLOWS = ("accounts", "contacts", "quote_headers", "quote_lines")
TARGETS = ("CustomersV2", "CDSContactPersons", "CDSSalesQuotationHeaders", "CDSSalesQuotationLines")


def _guid(prefix: int, i: pl.Expr) -> pl.Expr:
    return pl.format(f"{prefix:08d}-0000-4000-8000-{{}}", i.cast(pl.String).str.zfill(12))


def _template(entity: str, keep: pl.Expr) -> dict[str, object]:
    """A demo record that migrates cleanly, to copy."""
    demo = pl.read_ndjson(demo_fixtures_dir() / "crm" / f"{entity}.jsonl", infer_schema_length=None)
    return demo.filter(keep).row(0, named=True)


def _copies(template: dict[str, object], n: int, **changes: pl.Expr) -> pl.DataFrame:
    base = pl.DataFrame([template], infer_schema_length=None)
    frame = pl.DataFrame({"i": pl.int_range(n, eager=True)})
    return frame.select(
        *[
            (changes[c] if c in changes else pl.lit(base[c][0], base.schema[c])).alias(c)
            for c in base.columns
        ]
    )


def build(root: Path, n: int, fmt: str) -> Path:
    """The export folder, and a p2c.toml whose CRM holds the reference data and whose ERP
    holds products but no customers, contacts or quotes."""
    demo = demo_fixtures_dir()
    for system in ("crm", "erp"):
        shutil.copytree(demo / system, root / system)
    for entity in TARGETS:
        for old in (root / "erp").glob(f"{entity}.*"):
            old.unlink()
    export = root / "export"
    export.mkdir()
    i = pl.col("i")
    account = _template("accounts", pl.col("address1_country") == "USA")
    contact = _template("contacts", pl.col("_parentcustomerid_value").is_not_null())
    quote = _template("quotes", pl.col("statecode") == 1)
    line = _template("quotedetails", pl.col("_quoteid_value") == quote["quoteid"])
    frames = {
        "accounts": _copies(
            account,
            n,
            accountid=_guid(1, i),
            accountnumber=pl.format("ACC-{}", i.cast(pl.String).str.zfill(8)),
            name=pl.format("Customer {} Ltd", i),
        ),
        "contacts": _copies(
            contact,
            n,
            contactid=_guid(2, i),
            msdynce_contactnumber=pl.format("CON-{}", i.cast(pl.String).str.zfill(8)),
            lastname=pl.format("Person {}", i),
            _parentcustomerid_value=_guid(1, i),
        ),
        "quotes": _copies(
            quote,
            n,
            quoteid=_guid(3, i),
            quotenumber=pl.format("QUO-{}", i.cast(pl.String).str.zfill(8)),
            _customerid_value=_guid(1, i),
        ),
        "quotedetails": _copies(
            line,
            2 * n,
            quotedetailid=_guid(4, i),
            _quoteid_value=_guid(3, i // 2),
            sequencenumber=(i % 2 + 1).cast(pl.Int64),
        ),
    }
    for entity, frame in frames.items():
        path = export / f"{entity}.{fmt}"
        if fmt == "parquet":
            frame.write_parquet(path)
        elif fmt == "csv":
            frame.write_csv(path)
        else:
            frame.write_ndjson(path)
    (root / "p2c.toml").write_text(
        '[warehouse]\npath = "p2c.duckdb"\n[systems.crm]\nkind = "files"\npath = "crm"\n'
        '[systems.erp]\nkind = "files"\npath = "erp"\n[report]\ndir = "reports"\n',
        encoding="utf-8",
    )
    return export


class RssSampler:
    """The resident memory of this process, sampled 20 times a second, per flow."""

    def __init__(self) -> None:
        self.flow = "start"
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def progress(self, line: str) -> None:
        print(f"  {line}", file=sys.stderr)
        first = line.split(":", 1)[0]
        if first in FLOWS:
            self.flow = first

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            status = Path("/proc/self/status").read_text()
            kib = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
            self.peaks[self.flow] = max(self.peaks.get(self.flow, 0.0), kib / 1024**2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def migrate(root: Path, chunk_rows: int, rows: int) -> None:
    """The migration alone, in a process of its own (as `p2c migrate` runs): its figures."""
    settings = load_settings(root / "p2c.toml")
    sampler = RssSampler()
    started = time.perf_counter()
    with sampler:
        summary = run_migrate(
            settings,
            MigrateOptions(root / "export", FLOWS, chunk_rows=chunk_rows),
            progress=sampler.progress,
        )
    seconds = time.perf_counter() - started
    print(f"migration {summary.run_id}: {summary.status}")
    for c in summary.flows:
        print(
            f"  {c.flow:<14} {c.source_rows:>11,} rows  {c.inserted:>11,} inserted  "
            f"{c.rejected:>7,} rejected  {c.failed:>5,} failed"
        )
    chunks = json.loads(Path(summary.report_json or "").read_text())["chunks"]
    stages = ("read", "prepare", "compare", "load")
    for flow in FLOWS:
        mine = [c for c in chunks if c["flow"] == flow]
        spent = {stage: sum(c[stage] for c in mine) for stage in stages}
        print(
            f"  {flow:<14} {len(mine)} chunks, seconds: "
            + ", ".join(f"{stage} {spent[stage]:.1f}" for stage in stages)
        )
    print(
        "peak RSS while migrating each flow: "
        + ", ".join(f"{flow} {gib:.2f} GiB" for flow, gib in sampler.peaks.items())
    )
    print(f"wall: {seconds:.1f} s for {rows:,} rows = {rows / seconds:,.0f} rows/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet")
    parser.add_argument("--keep", type=Path, help="Build in this folder and keep it.")
    parser.add_argument("--migrate-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rows = 5 * args.accounts
    if args.migrate_only:
        migrate(args.migrate_only, args.chunk_rows, rows)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="p2c-migrate-bench-"))
    try:
        started = time.perf_counter()
        build(root, args.accounts, args.format)
        print(f"exports: {rows:,} rows as {args.format} in {time.perf_counter() - started:.1f} s")
        child = [sys.executable, __file__, "--migrate-only", str(root)]
        child += ["--accounts", str(args.accounts), "--chunk-rows", str(args.chunk_rows)]
        subprocess.run(child, check=True, stderr=subprocess.DEVNULL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        print(f"peak memory (RSS) of the migrating process: {peak:.2f} GiB (target < 4 GiB)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
