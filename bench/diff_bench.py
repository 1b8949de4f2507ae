"""Time p2c-etl's diff stage against a bare polars hash-join baseline, in one process.

    python bench/diff_bench.py [--rows 1000000] [--repeat 7]

Two snapshots of ROWS x 12 columns (a key and 11 typed columns: text, integers, decimals,
dates, flags); about 2% of the keys differ (1.6% updated in one or two columns, 0.2% new,
0.2% only in the target). The baseline hashes both sides and joins on key + hash: it finds
*which* keys differ and nothing more. The project's `diff` also classifies every key, names
the changed fields and renders before / after for each change. Prints both medians, the
ratio (target ≤ 2) and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

import polars as pl

from p2c_etl.stages.diff import diff

DEC = pl.Decimal(19, 4)


def make_target(rows: int) -> pl.DataFrame:
    i = pl.col("i")
    countries = pl.Series(["USA", "CAN", "DEU", "GBR"])
    return pl.DataFrame({"i": pl.int_range(rows, eager=True)}).select(
        pl.format("ACC-{}", i.cast(pl.String).str.zfill(8)).alias("key"),
        pl.format("Customer {} Holdings", i).alias("name"),
        pl.format("City {}", i % 997).alias("city"),
        (i % 4).replace_strict(dict(enumerate(countries)), return_dtype=pl.String).alias("country"),
        pl.format("ap{}@example.com", i).alias("email"),
        ((i * 7) % 5000).alias("employees"),
        ((i % 20) + 10).cast(pl.String).alias("group"),
        ((i % 100_000) * 25).cast(DEC).alias("credit"),
        (i * 13 % 1_000_000).cast(DEC).alias("balance"),
        (pl.lit(date(2000, 1, 1)) + pl.duration(days=i % 9000)).alias("since"),
        (i % 11 != 0).alias("active"),
        pl.when(i % 3 == 0).then(None).otherwise(pl.format("note {}", i % 50)).alias("memo"),
    )


def make_source(target: pl.DataFrame) -> pl.DataFrame:
    rows = target.height
    i = pl.int_range(rows)
    updated = (i % 125 == 1) | (i % 125 == 2)  # 1.6 %
    dropped = i % 500 == 3  # 0.2 % only in the target
    source = target.with_columns(
        pl.when(updated).then(pl.col("credit") + 1).otherwise("credit").cast(DEC).alias("credit"),
        pl.when(i % 125 == 2).then(pl.lit("Changed City")).otherwise("city").alias("city"),
    ).filter(~dropped)
    new = target.head(rows // 500).with_columns(
        pl.format("NEW-{}", pl.int_range(rows // 500)).alias("key")
    )  # 0.2 % new
    return pl.concat([source, new])


def baseline(source: pl.DataFrame, target: pl.DataFrame, compare: list[str]) -> int:
    left = source.select("key", source.select(compare).hash_rows().alias("h"))
    right = target.select("key", target.select(compare).hash_rows().alias("h"))
    joined = left.join(right, on="key", how="full", coalesce=True, suffix="_t")
    return joined.filter(pl.col("h").ne_missing(pl.col("h_t"))).height


def timed(func: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    target = make_target(args.rows)
    source = make_source(target)
    compare = [c for c in target.columns if c != "key"]
    print(
        f"snapshots: source {source.height:,} x {source.width}, target {target.height:,} x "
        f"{target.width}; polars {pl.__version__}, {pl.thread_pool_size()} threads"
    )

    base_s, base_n = timed(lambda: baseline(source, target, compare), args.repeat)
    ours_s, result = timed(lambda: diff(source, target, ["key"], compare), args.repeat)
    changes = result.changes if hasattr(result, "changes") else None
    assert changes is not None and changes.height == base_n, "both must find the same keys"
    kinds = dict(changes.group_by("kind").len().iter_rows())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"keys that differ: {base_n:,} ({base_n / target.height:.1%}) — {kinds}")
    print(f"baseline (polars hash + join), median of {args.repeat}: {base_s * 1000:8.1f} ms")
    print(f"p2c diff (classify + changed fields + before/after): {ours_s * 1000:8.1f} ms")
    print(f"ratio p2c / baseline: {ours_s / base_s:.2f} (target ≤ 2)")
    print(f"peak resident memory of this process: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
