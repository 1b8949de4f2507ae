"""The nightly run at a real company's size, over the files connector.

    python bench/nightly_bench.py [--accounts 1000000] [--growth-accounts 20000] [--keep DIR]

Generates a files-layout company valid under the contracts from the demo company's records
(N accounts, N contacts of those accounts, N/5 ERP products, N/5 active quotes with 10 lines
each, beside the demo company's own records and reference data, so its planted rejects stay),
then runs, each in a process of its own:

    first sync (empty targets) → no change → 1% changed (CRM sources, ERP products) → no change

and prints for each run: wall and CPU seconds, the peak RSS of the run's process, seconds per
stage (summed over flows), records written, and the warehouse file's size; then the ratio of
the no-change run against a bare baseline measured here (read the same source and target
files, hash every row, join on the flow's keys). Finally it runs ten more no-change runs on a
company of `--growth-accounts` accounts and prints the growth of the warehouse file.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from p2c_etl.resources import demo_fixtures_dir

CRM_BIG = ("accounts", "contacts", "quotes", "quotedetails")
ERP_TARGETS = (
    "CustomersV2",
    "CDSContactPersons",
    "CDSSalesQuotationHeaders",
    "CDSSalesQuotationLines",
)
STAGES = ("extract", "settle", "prepare", "compare", "load")
TIMED = {  # the functions of `p2c_etl.jobs.run` each stage's time is spent in
    "extract": ("extract_flow", "EntityReads.read_back"),
    "settle": ("context_print", "plan_rows", "keep_settled", "confirm_writes"),
    "prepare": ("source_frames", "compute_rows", "save_rows"),
    "compare": ("target_frame", "compare_flow"),
    "load": ("load_flow",),
}
# (source file, target file, source key, target key) for the bare baseline.
BASELINE = (
    ("crm/accounts", "erp/CustomersV2", ["accountnumber"], ["CustomerAccount"]),
    (
        "crm/contacts",
        "erp/CDSContactPersons",
        ["msdynce_contactnumber"],
        ["ContactPersonPartyNumber"],
    ),
    ("erp/SellableReleasedProducts", "crm/products", ["ProductNumber"], ["productnumber"]),
    ("crm/quotes", "erp/CDSSalesQuotationHeaders", ["quotenumber"], ["SalesQuotationNumber"]),
    (
        "crm/quotedetails",
        "erp/CDSSalesQuotationLines",
        ["_quoteid_value", "sequencenumber"],
        ["SalesQuotationNumber", "LineCreationSequenceNumber"],
    ),
)


def _guid(prefix: int, i: pl.Expr) -> pl.Expr:
    return pl.format(f"{prefix:08d}-0000-4000-8000-{{}}", i.cast(pl.String).str.zfill(12))


def _demo(system: str, entity: str) -> pl.DataFrame:
    path = demo_fixtures_dir() / system / f"{entity}.jsonl"
    return pl.read_ndjson(path, infer_schema_length=None)


def _copies(
    template: dict[str, object], schema: pl.Schema, n: int, **changes: pl.Expr
) -> pl.DataFrame:
    frame = pl.DataFrame({"i": pl.int_range(n, eager=True)})
    return frame.select(
        *[
            (changes[c] if c in changes else pl.lit(template[c], schema[c])).alias(c)
            for c in schema.names()
        ]
    )


def _one(frame: pl.DataFrame, keep: pl.Expr) -> dict[str, object]:
    return frame.filter(keep).row(0, named=True)


def build(root: Path, n: int) -> None:
    """The company: the demo's reference data, the big entity sets generated as Parquet, the
    ERP's customers, contact persons and quotations empty (so the first run is a first sync)."""
    demo = demo_fixtures_dir()
    for system in ("crm", "erp"):
        shutil.copytree(demo / system, root / system)
    for name in (*(f"crm/{e}" for e in CRM_BIG), *(f"erp/{e}" for e in ERP_TARGETS)):
        (root / f"{name}.jsonl").unlink()
    i = pl.col("i")
    accounts, contacts = _demo("crm", "accounts"), _demo("crm", "contacts")
    quotes, lines = _demo("crm", "quotes"), _demo("crm", "quotedetails")
    products = _demo("erp", "SellableReleasedProducts")
    account = _one(accounts, (pl.col("address1_country") == "USA") & (pl.col("statecode") == 0))
    contact = _one(
        contacts,
        pl.col("_parentcustomerid_value").is_not_null() & (pl.col("statecode") == 0),
    )
    quote = _one(quotes, pl.col("statecode") == 1)
    line = _one(lines, pl.col("_quoteid_value") == quote["quoteid"])
    product = _one(products, pl.col("IsSalesStopped") == "No")
    n_quotes = n // 5
    frames = {
        "crm/accounts": _copies(
            account,
            accounts.schema,
            n,
            accountid=_guid(1, i),
            accountnumber=pl.format("ACC-{}", i.cast(pl.String).str.zfill(8)),
            name=pl.format("Customer {} Ltd", i),
            telephone1=pl.format("+1 555 {}", i.cast(pl.String).str.zfill(7)),
        ),
        "crm/contacts": _copies(
            contact,
            contacts.schema,
            n,
            contactid=_guid(2, i),
            msdynce_contactnumber=pl.format("CON-{}", i.cast(pl.String).str.zfill(8)),
            lastname=pl.format("Person {}", i),
            _parentcustomerid_value=_guid(1, i),
        ),
        "crm/quotes": _copies(
            quote,
            quotes.schema,
            n_quotes,
            quoteid=_guid(3, i),
            quotenumber=pl.format("QUO-{}", i.cast(pl.String).str.zfill(8)),
            _customerid_value=_guid(1, i),
        ),
        "crm/quotedetails": _copies(
            line,
            lines.schema,
            10 * n_quotes,
            quotedetailid=_guid(4, i),
            _quoteid_value=_guid(3, i // 10),
            sequencenumber=(i % 10 + 1).cast(pl.Int64),
        ),
        "erp/SellableReleasedProducts": pl.concat(
            [
                products,
                _copies(
                    product,
                    products.schema,
                    n // 5,
                    ProductNumber=pl.format("P{}", i.cast(pl.String).str.zfill(8)),
                    ProductName=pl.format("Product {}", i),
                ),
            ]
        ),
    }
    (root / "erp/SellableReleasedProducts.jsonl").unlink()
    for name, frame in frames.items():
        if name.startswith("crm/"):  # the demo's own records stay: its orders refer to them
            frame = pl.concat([_demo("crm", name[4:]), frame], how="vertical_relaxed")
        frame.write_parquet(root / f"{name}.parquet")
    (root / "p2c.toml").write_text(
        '[warehouse]\npath = "p2c.duckdb"\n[systems.crm]\nkind = "files"\npath = "crm"\n'
        '[systems.erp]\nkind = "files"\npath = "erp"\n[report]\ndir = "reports"\n',
        encoding="utf-8",
    )


def change_one_percent(root: Path, seed: int) -> int:
    """Change 1% of the CRM's accounts, contacts, quotes and quote lines and of the ERP's
    products; returns how many records changed."""
    changed = 0
    edits = {
        "crm/accounts": ("telephone1", pl.lit("+1 555 9999999")),
        "crm/contacts": ("jobtitle", pl.lit("Buyer (changed)")),
        "crm/quotes": ("name", pl.lit("Changed quote")),
        "crm/quotedetails": ("description", pl.lit("Changed line")),
        "erp/SellableReleasedProducts": ("ProductName", pl.lit("Changed product")),
    }
    for name, (column, value) in edits.items():
        path = root / f"{name}.parquet"
        frame = pl.read_parquet(path)
        pick = pl.int_range(pl.len()).shuffle(seed) < pl.len() // 100
        frame = frame.with_columns(
            pl.when(pick).then(value).otherwise(pl.col(column)).alias(column)
        )
        changed += frame.height // 100
        frame.write_parquet(path)
    return changed


def baseline(root: Path) -> float:
    """Seconds to read each flow's source and target files, hash every row and join on keys."""
    started = time.perf_counter()
    for source, target, skeys, tkeys in BASELINE:
        frames = []
        for name, keys in ((source, skeys), (target, tkeys)):
            path = next(root.glob(f"{name}.*"))
            frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
            rest = [c for c in frame.columns if c not in keys]
            frames.append(
                frame.select(
                    *[pl.col(k).cast(pl.String) for k in keys], pl.struct(rest).hash().alias("h")
                )
            )
        joined = frames[0].join(frames[1], left_on=skeys, right_on=tkeys, how="full", suffix="_t")
        joined.select((pl.col("h") != pl.col("h_t")).sum()).item()
    return time.perf_counter() - started


def one_run(root: Path) -> None:
    """A nightly run in this process, its stages timed; prints one JSON line of figures."""
    import p2c_etl.jobs.run as job
    from p2c_etl.config import load_settings

    spent = dict.fromkeys(STAGES, 0.0)

    def timed(name: str, function):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    for stage, names in TIMED.items():
        for name in names:
            *owner, attribute = name.split(".")  # a module function, or a class's method
            holder = getattr(job, owner[0]) if owner else job
            setattr(holder, attribute, timed(stage, getattr(holder, attribute)))
    started = time.perf_counter()

    def progress(message: str) -> None:  # on stderr, timed: what `run` keeps of a failure
        print(f"{time.perf_counter() - started:7.2f} s  {message}", file=sys.stderr, flush=True)

    summary = job.run_batch(load_settings(root / "p2c.toml"), progress=progress)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "status": summary.status,
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss_gib": usage.ru_maxrss / 1024**2,
                "stages": spent,
                "written": sum(c.inserted + c.updated for c in summary.flows),
                "rejected": sum(c.rejected for c in summary.flows),
                "failed": sum(c.failed for c in summary.flows),
                "error": summary.error,
            }
        )
    )


def run(root: Path) -> dict[str, object]:
    child = subprocess.run(
        [sys.executable, __file__, "--run-one", str(root)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, object] = json.loads(child.stdout.strip().splitlines()[-1])
    warehouse = root / "p2c.duckdb"
    wal = root / "p2c.duckdb.wal"
    figures["warehouse_mb"] = (
        warehouse.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    ) / 1e6
    return figures


def show(label: str, f: dict[str, object]) -> None:
    stages = f["stages"]
    assert isinstance(stages, dict)
    print(
        f"{label:<16} {f['wall']:>7.1f} s wall {f['cpu']:>7.1f} s CPU {f['rss_gib']:>5.2f} GiB "
        f"{f['written']:>10,} written {f['rejected']:>6,} rejected {f['failed']:>4,} failed "
        f"warehouse {f['warehouse_mb']:>8.1f} MB  "
        + " ".join(f"{s} {stages[s]:.1f}" for s in STAGES)
        + (f"  ERROR {f['error']}" if f.get("error") else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--growth-accounts", type=int, default=20_000)
    parser.add_argument("--growth-runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--keep", type=Path, help="Build in this folder and keep it.")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        one_run(args.run_one)
        return
    print(f"seed {args.seed}; {args.accounts:,} accounts", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="p2c-nightly-bench-"))
    try:
        started = time.perf_counter()
        build(root, args.accounts)
        print(f"company generated in {time.perf_counter() - started:.1f} s", flush=True)
        show("first sync", run(root))
        quiet = run(root)
        show("no change", quiet)
        bare = min(baseline(root) for _ in range(2))
        changed = change_one_percent(root, args.seed)
        print(f"changed {changed:,} records", flush=True)
        show("1% changed", run(root))
        again = run(root)
        show("no change", again)
        best = min(float(quiet["wall"]), float(again["wall"]))  # type: ignore[arg-type]
        print(f"bare baseline (read, hash, join): {bare:.2f} s; no-change run {best / bare:.1f} x")
        small = root / "growth"
        small.mkdir()
        build(small, args.growth_accounts)
        run(small)
        first = run(small)
        sizes = [float(first["warehouse_mb"])]  # type: ignore[arg-type]
        for _ in range(args.growth_runs - 1):
            sizes.append(float(run(small)["warehouse_mb"]))  # type: ignore[arg-type]
        growth = (sizes[-1] - sizes[0]) / sizes[0] * 100
        print(
            f"warehouse over {args.growth_runs} no-change runs at {args.growth_accounts:,} "
            f"accounts: {sizes[0]:.1f} MB -> {sizes[-1]:.1f} MB ({growth:+.1f}%)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
