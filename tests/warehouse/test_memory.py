"""The warehouse never fails a run for lack of memory: DuckDB spills to disk beside it, and no
table keeps an index that must fit in memory whole."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

import p2c_etl.warehouse.store as store
from p2c_etl.config import Settings
from p2c_etl.jobs.run import run_batch
from p2c_etl.warehouse.store import Warehouse

ACCOUNTS = 60_000
SEED = 20261201
LIMIT = 32 * 1024**2


def _many_accounts(demo_dir: Path, n: int) -> int:
    """The demo's accounts plus `n` copies of a clean one, as Parquet; returns the bytes."""
    path = demo_dir / "crm" / "accounts.jsonl"
    demo = pl.read_ndjson(path, infer_schema_length=None)
    one = demo.filter(pl.col("accountnumber") == "ACC-01001-ADVENT")
    i = pl.int_range(n).cast(pl.String).str.zfill(8)
    print(f"notes seed {SEED}")
    notes = random.Random(SEED).randbytes(n * 500).hex()  # text that does not compress away
    copies = pl.concat([one] * n).with_columns(
        pl.format("00000001-0000-4000-8000-{}", i.str.zfill(12)).alias("accountid"),
        pl.format("ACC-{}", i).alias("accountnumber"),
        pl.format("Customer {} Ltd", i).alias("name"),
        pl.format(
            "{} notes: {}", i, pl.Series([notes[k : k + 1000] for k in range(0, n * 1000, 1000)])
        ).alias("description"),
    )
    path.unlink()
    pl.concat([demo, copies], how="vertical_relaxed").write_parquet(
        demo_dir / "crm" / "accounts.parquet"
    )
    return copies.estimated_size()


def test_a_night_far_larger_than_duckdbs_memory_spills_and_finishes(
    demo_dir: Path,
    demo_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    assert_accounted: Callable[[object], None],
) -> None:
    size = _many_accounts(demo_dir, ACCOUNTS)
    monkeypatch.setattr(store, "MEMORY_LIMIT", "32MB")
    summary = run_batch(demo_settings, flows=["products", "accounts"])
    assert summary.error is None and summary.status == "partial"  # the demo's planted rejects
    assert_accounted(summary.flows)
    accounts = next(c for c in summary.flows if c.flow == "accounts")
    assert accounts.inserted > ACCOUNTS
    assert size > 1.5 * LIMIT  # the accounts alone: 60k descriptions of 1,000 characters
    assert demo_settings.warehouse_path.stat().st_size > 2 * LIMIT
    again = run_batch(demo_settings, flows=["products", "accounts"])
    assert again.error is None
    assert sum(c.inserted + c.updated for c in again.flows) == 0


def test_a_warehouse_with_the_old_last_written_index_is_rebuilt_keeping_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE last_written (flow VARCHAR NOT NULL, record_key VARCHAR NOT NULL, "
        "values_json VARCHAR NOT NULL, run_id VARCHAR NOT NULL, "
        "written_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (flow, record_key))"
    )
    con.execute(
        "INSERT INTO last_written VALUES ('accounts', 'usmf|A-1', '{}', 'r1', ?)",
        [datetime(2026, 1, 1, tzinfo=UTC)],
    )
    con.close()
    wh = Warehouse.open(path)
    try:
        assert wh.query("SELECT record_key FROM last_written")["record_key"].to_list() == [
            "usmf|A-1"
        ]
        keys = wh.query(
            "SELECT * FROM duckdb_constraints() WHERE table_name = 'last_written' "
            "AND constraint_type = 'PRIMARY KEY'"
        )
        assert keys.height == 0
        written = pl.DataFrame(
            {"record_key": ["usmf|A-1", "usmf|A-2"], "values_json": ['{"a": 1}', '{"a": 2}']}
        )
        wh.remember_written("accounts", written, "r2", datetime(2026, 1, 2, tzinfo=UTC))
        rows = wh.query("SELECT record_key, values_json FROM last_written ORDER BY record_key")
        assert rows.rows() == [("usmf|A-1", '{"a": 1}'), ("usmf|A-2", '{"a": 2}')]
    finally:
        wh.close()


_SETTINGS = """
import sys
from pathlib import Path
from p2c_etl.warehouse.store import Warehouse
path = Path(sys.argv[1])
for opened in (Warehouse.open, Warehouse.open_read_only):
    wh = opened(path)
    print(wh.con.execute("SELECT current_setting('enable_progress_bar')").fetchall())
    wh.close()
"""


def test_duckdb_draws_no_progress_bar_on_the_users_terminal(tmp_path: Path) -> None:
    """DuckDB draws its progress bar when its process runs on a terminal, over p2c-etl's own
    output, for any statement longer than two seconds (a migration, a first sync's insert):
    every connection turns it off, the reading ones too. Run on a pseudo-terminal, where
    DuckDB's own default is on."""
    main, side = os.openpty()
    try:
        subprocess.run(
            [sys.executable, "-c", _SETTINGS, str(tmp_path / "p2c.duckdb")],
            stdin=side,
            stdout=side,
            stderr=side,
            timeout=120,
            check=True,
        )
    finally:
        os.close(side)
    said = os.read(main, 4096).decode()
    os.close(main)
    assert said.split() == ["[(False,)]", "[(False,)]"], said
