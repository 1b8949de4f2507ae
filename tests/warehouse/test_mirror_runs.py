"""The warehouse keeps state, not copies: a run from the mirrors (settled flows taking an
earlier run's result) gives exactly what the same run gives on a fresh warehouse, and a run
with nothing changed writes nothing, to the targets or to the mirrors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import duckdb
import polars as pl
from pytest import MonkeyPatch

from p2c_etl.config import load_settings
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.summary import FlowCounts, RunSummary
from p2c_etl.stages import compare
from p2c_etl.warehouse.store import FORMAT, Warehouse


def _files(root: Path) -> dict[str, str]:
    return {
        f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for system in ("crm", "erp")
        for p in sorted((root / system).rglob("*"))
        if p.is_file()
    }


def _run(root: Path, clock: Callable[[], datetime]) -> RunSummary:
    return run_batch(load_settings(root / "p2c.toml"), clock=clock)


def _rejects(root: Path, run_id: str) -> list[tuple[object, ...]]:
    """The rejects a report of `run_id` shows, flow by flow (as the report reads them)."""
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT r.flow, r.record_key, r.source_row, r.field, r.reason, r.value, r.message "
            "FROM rejects r JOIN run_flows f ON r.flow = f.flow "
            "AND r.run_id = coalesce(f.details_run, f.run_id) WHERE f.run_id = ? "
            "ORDER BY ALL",
            [run_id],
        ).fetchall()
    finally:
        con.close()
    return rows


def _mirror_rows(root: Path) -> dict[str, tuple[int, int]]:
    """Per mirror: (version, rows)."""
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        return {
            f"{s}.{e}": (int(v), int(n))
            for s, e, v, n in con.execute(
                "SELECT system, entity, version, row_count FROM mirrors"
            ).fetchall()
        }
    finally:
        con.close()


def _rewrite(
    path: Path, change: Callable[[list[dict[str, object]]], list[dict[str, object]]]
) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    path.write_text("".join(json.dumps(r) + "\n" for r in change(records)), encoding="utf-8")


def _edit_both_systems(root: Path) -> None:
    """Changes on both sides, through lookups and derivations: a renamed account, a new one,
    a contact gone, a quote line's quantity (a header total is derived from its lines), an
    ERP product's price, and a hand edit in the ERP."""

    def accounts(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        rows[0] = {**rows[0], "name": "Adventure Works Cycles (renamed)"}
        new = {**rows[1], "accountid": "0d0a8c1e-1111-4e4e-9999-000000000001"}
        return [*rows, {**new, "accountnumber": "ACC-09999-NEWCO", "name": "Newco"}]

    _rewrite(root / "crm" / "accounts.jsonl", accounts)
    _rewrite(root / "crm" / "contacts.jsonl", lambda rows: rows[1:])

    def lines(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{**rows[0], "quantity": 7}, *rows[1:]]

    _rewrite(root / "crm" / "quotedetails.jsonl", lines)

    def products(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{**rows[0], "SalesPrice": "123.45"}, *rows[1:]]

    _rewrite(root / "erp" / "SellableReleasedProducts.jsonl", products)

    def customers(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [*rows[:-1], {**rows[-1], "OrganizationName": "edited by hand"}]

    _rewrite(root / "erp" / "CustomersV2.jsonl", customers)


def _fresh_copy(root: Path, to: Path) -> Path:
    """The systems and p2c.toml of `root`, with an empty warehouse."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for system in ("crm", "erp"):
        shutil.copytree(root / system, to / system)
    shutil.copy(root / "p2c.toml", to / "p2c.toml")
    return to


def _same_result(mine: RunSummary, fresh: RunSummary, a: Path, b: Path) -> None:
    assert mine.status == fresh.status
    assert mine.flows == fresh.flows  # every count of every flow
    assert _files(a) == _files(b)  # the targets, byte for byte
    assert _rejects(a, mine.run_id) == _rejects(b, fresh.run_id)
    report_a = json.loads(Path(str(mine.report_json)).read_text(encoding="utf-8"))
    report_b = json.loads(Path(str(fresh.report_json)).read_text(encoding="utf-8"))
    assert report_a["flows"] == report_b["flows"]


def test_runs_from_the_mirrors_equal_runs_on_a_fresh_warehouse(
    demo_dir: Path,
    tmp_path: Path,
    clock: Callable[[], datetime],
    assert_accounted: Callable[[object], None],
) -> None:
    _run(demo_dir, clock)  # the first sync

    def twin(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        # a new account with the number of one just written: both become duplicate_key
        return [*rows, {**rows[2], "accountid": "0d0a8c1e-2222-4e4e-9999-000000000002"}]

    _rewrite(demo_dir / "crm" / "accounts.jsonl", twin)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "after_sync")
    after = _run(demo_dir, clock)  # finds what the first one wrote held
    _same_result(after, _run(fresh_dir, clock), demo_dir, fresh_dir)
    quiet = _run(demo_dir, clock)
    assert sum(c.inserted + c.updated for c in quiet.flows) == 0

    written = []
    for step in range(2):  # changes, then nothing changed after them
        if step == 0:
            _edit_both_systems(demo_dir)
        fresh_dir = _fresh_copy(demo_dir, tmp_path / f"fresh{step}")
        mine = _run(demo_dir, clock)
        fresh = _run(fresh_dir, clock)
        assert_accounted(mine.flows)
        _same_result(mine, fresh, demo_dir, fresh_dir)
        written.append(sum(c.inserted + c.updated for c in mine.flows))
    assert written[0] > 0 and written[1] == 0  # the edits were carried, and only once


def test_a_run_with_nothing_changed_writes_nothing_and_touches_no_mirror_row(
    demo_dir: Path, clock: Callable[[], datetime]
) -> None:
    _run(demo_dir, clock)
    _run(demo_dir, clock)
    before_files, before_mirrors = _files(demo_dir), _mirror_rows(demo_dir)
    con = duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True)
    mirrored = {
        t: con.execute(f'SELECT count(*), sum("__hash") FROM "{t}"').fetchall()[0]
        for (t,) in con.execute("SELECT table_name FROM mirrors").fetchall()
    }
    con.close()
    quiet = _run(demo_dir, clock)
    assert sum(c.inserted + c.updated + c.failed for c in quiet.flows) == 0
    assert _files(demo_dir) == before_files
    assert _mirror_rows(demo_dir) == before_mirrors  # no version moved: no mirror row touched
    con = duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True)
    try:
        # every flow took the result of the run before, and no per-run copy was made
        details = con.execute(
            "SELECT count(*) FROM run_flows WHERE run_id = ? AND details_run IS NOT NULL",
            [quiet.run_id],
        ).fetchall()[0][0]
        assert details == len(quiet.flows)
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        ours = [t for t in tables if quiet.run_id.lower().replace("-", "_") in t]
        assert ours == []
        after = {
            t: con.execute(f'SELECT count(*), sum("__hash") FROM "{t}"').fetchall()[0]
            for t in mirrored
        }
    finally:
        con.close()
    assert after == mirrored
    frame = pl.DataFrame([c.__dict__ for c in quiet.flows])
    assert frame["source_rows"].sum() > 0


def _old_run(wh: Warehouse, run_id: str, started: datetime) -> None:
    wh.start_run(run_id, "run", False, ["accounts"], started)
    wh.finish_run(run_id, "partial", started)


def test_pruning_an_old_run_gives_its_space_back_to_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "p2c.duckdb"
    wh = Warehouse.open(path)
    try:
        _old_run(wh, "r-old", datetime(2026, 1, 1, tzinfo=UTC))
        # a large per-run table (the staged rows of a big first sync), hard to compress
        wh.con.execute(
            "CREATE TABLE stage_r_old_accounts AS SELECT md5(i::VARCHAR) || md5((i * 7)::VARCHAR) "
            "|| md5((i * 13)::VARCHAR) AS v FROM range(2000000) t(i)"
        )
        wh.con.execute("CHECKPOINT")
    finally:
        wh.close()
    before = path.stat().st_size
    assert before > 80 << 20  # more than the 64 MiB of free space that makes it worth it
    wh = Warehouse.open(path)
    try:
        assert wh.prune(datetime(2026, 2, 1, tzinfo=UTC)) == (1, 1)
        assert wh.query("SELECT run_id FROM runs")["run_id"].to_list() == ["r-old"]  # ledger
    finally:
        wh.close()
    after = path.stat().st_size
    assert after < before / 10, (before, after)


def test_a_warehouse_of_the_copying_format_is_migrated_on_first_open(tmp_path: Path) -> None:
    """Format 1 kept a copy of each entity set per run and flow: they are dropped (the next run
    builds the mirrors), the space goes back, and the ledger stays."""
    path = tmp_path / "p2c.duckdb"
    wh = Warehouse.open(path)
    try:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        _old_run(wh, "r1", at)
        wh.save_counts("r1", FlowCounts("accounts", 3, 0, 1, 2, 0, 0, 0, 0))
        big = pl.DataFrame({"v": [f"{i:08d}" * 16 for i in range(400_000)]})
        wh.save_snapshot("r1", "accounts.source", "crm", "accounts", big, at)
        wh.append(
            "rejects",
            pl.DataFrame(
                {"run_id": ["r1"], "flow": ["accounts"], "reason": ["bad_format"], "message": ["m"]}
            ),
        )
        wh.con.execute("DELETE FROM warehouse_format")  # as a warehouse made before mirrors
        wh.con.execute("DROP TABLE mirrors")
        wh.con.execute("DROP TABLE schema_print")  # made by a release that did not keep it
        wh.con.execute("CHECKPOINT")
    finally:
        wh.close()
    wh = Warehouse.open(path)
    try:
        tables = wh.query("SELECT table_name FROM duckdb_tables()")["table_name"].to_list()
        assert not [t for t in tables if t.startswith("snap_")]
        assert "mirrors" in tables
        assert wh.counts("r1") == (FlowCounts("accounts", 3, 0, 1, 2, 0, 0, 0, 0),)
        assert wh.query("SELECT count(*) AS n FROM rejects")["n"][0] == 1
        assert wh.query("SELECT version FROM warehouse_format")["version"].to_list() == [FORMAT]
    finally:
        wh.close()


def test_a_warehouse_another_release_made_gets_this_releases_tables_on_open(
    tmp_path: Path,
) -> None:
    """Opening does not run the schema again while the warehouse was made by this code (a run
    opens it once per flow); a warehouse of another release (its schema print another) gets
    the tables this release adds, its ledger kept."""
    path = tmp_path / "p2c.duckdb"
    wh = Warehouse.open(path)
    try:
        _old_run(wh, "r1", datetime(2026, 1, 1, tzinfo=UTC))
        wh.con.execute("DROP TABLE settled_lookup_keys")  # as a release before that table
        wh.con.execute("UPDATE schema_print SET print = 'an earlier release'")
    finally:
        wh.close()
    wh = Warehouse.open(path)
    try:
        tables = wh.query("SELECT table_name FROM duckdb_tables()")["table_name"].to_list()
        assert "settled_lookup_keys" in tables
        assert wh.run("r1") is not None
    finally:
        wh.close()


def test_times_read_from_the_warehouse_are_utc_on_a_host_in_another_zone(tmp_path: Path) -> None:
    """The systems send UTC; read back from the warehouse, a time is UTC too, whatever the
    host's zone (DuckDB gives the session's zone, the host's by default): the JSON of the
    values a run compares and remembers does not change with the path that made it."""
    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from pathlib import Path\n"
        "import polars as pl\n"
        "from p2c_etl.warehouse.store import Warehouse\n"
        "wh = Warehouse.open(Path(sys.argv[1]))\n"
        "wh.write_table('t', pl.DataFrame({'at': [datetime(2026, 1, 1, tzinfo=UTC)]}))\n"
        "read = wh.read_table('t')\n"
        "print(read.schema['at'].time_zone, read['at'][0].isoformat())\n"
        "wh.close()\n"
    )
    env = {**os.environ, "TZ": "Asia/Kolkata", "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "p2c.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["UTC", "2026-01-01T00:00:00+00:00"]


def _compressions(con: duckdb.DuckDBPyConnection, table: str, column: str) -> set[str]:
    con.execute("CHECKPOINT")
    rows = con.execute(
        f"SELECT DISTINCT compression FROM pragma_storage_info('{table}') "
        "WHERE column_name = ? AND segment_type = 'VARCHAR'",
        [column],
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_settled_rows_kept_by_their_target_key_text_are_migrated_and_computed_again(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime]
) -> None:
    """A warehouse whose settled rows name their target key as text (before the key's hash)
    opens, and its next night, after changes, equals a fresh warehouse's: those rows are
    computed again, none is settled on a key it no longer holds."""
    _run(demo_dir, clock)
    _run(demo_dir, clock)
    con = duckdb.connect(str(demo_dir / "p2c.duckdb"))
    try:
        held = con.execute("SELECT count(*) FROM settled_rows").fetchall()[0][0]
        con.execute("ALTER TABLE settled_rows DROP COLUMN target_fold")
        con.execute("ALTER TABLE settled_rows ADD COLUMN target_key VARCHAR")
        con.execute("UPDATE settled_rows SET target_key = 'usmf|us-001'")
        con.execute("DROP TABLE schema_print")  # made by a release that did not keep it
    finally:
        con.close()
    assert held > 0
    _edit_both_systems(demo_dir)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    mine = _run(demo_dir, clock)
    _same_result(mine, _run(fresh_dir, clock), demo_dir, fresh_dir)
    con = duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True)
    try:
        columns = {r[0] for r in con.execute("DESCRIBE settled_rows").fetchall()}
    finally:
        con.close()
    assert "target_fold" in columns and "target_key" not in columns
    quiet = _run(demo_dir, clock)
    assert sum(c.inserted + c.updated for c in quiet.flows) == 0


def test_a_warehouse_of_format_2_keeps_its_json_rows_and_stores_them_in_zstd(
    tmp_path: Path,
) -> None:
    """Format 2 stored the JSON of every record written or changed with DuckDB's string
    compression; opened, its tables are rebuilt with those columns in zstd, every row kept."""
    path = tmp_path / "p2c.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE last_written (flow VARCHAR NOT NULL, record_key VARCHAR NOT NULL, "
        "values_json VARCHAR NOT NULL, run_id VARCHAR NOT NULL, written_at TIMESTAMPTZ NOT NULL);"
        "CREATE TABLE changes (run_id VARCHAR NOT NULL, flow VARCHAR NOT NULL, "
        "record_key VARCHAR NOT NULL, kind VARCHAR NOT NULL, changed_fields VARCHAR[], "
        "before_json VARCHAR, after_json VARCHAR);"
        "CREATE TABLE warehouse_format (version INTEGER NOT NULL); "
        "INSERT INTO warehouse_format VALUES (2);"
        "INSERT INTO last_written SELECT 'accounts', 'ACC-' || i, "
        "'{\"name\": \"Account ' || i || '\"}', 'r1', TIMESTAMPTZ '2026-11-30 00:00:00+00' "
        "FROM range(50000) t(i);"
        "INSERT INTO changes SELECT 'r1', 'accounts', 'ACC-' || i, 'update', ['name'], "
        "'{\"name\": \"Old ' || i || '\"}', '{\"name\": \"Account ' || i || '\"}' "
        "FROM range(50000) t(i);"
    )
    assert "ZSTD" not in _compressions(con, "last_written", "values_json")
    con.close()
    wh = Warehouse.open(path)
    try:
        assert wh.query("SELECT version FROM warehouse_format")["version"].to_list() == [FORMAT]
        kept = wh.query(
            "SELECT values_json FROM last_written WHERE record_key = 'ACC-49999'"
        ).to_series()
        assert kept.to_list() == ['{"name": "Account 49999"}']
        assert wh.query("SELECT count(*) AS n FROM changes")["n"][0] == 50_000
        assert _compressions(wh.con, "last_written", "values_json") == {"ZSTD"}
        assert _compressions(wh.con, "changes", "after_json") == {"ZSTD"}
    finally:
        wh.close()


def _nightly_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "nightly_bench.py"
    spec = importlib.util.spec_from_file_location("nightly_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_generated_company_run_from_the_mirrors_equals_a_fresh_warehouse(
    tmp_path: Path, clock: Callable[[], datetime], assert_accounted: Callable[[object], None]
) -> None:
    """The benchmark's company (Parquet, every flow, lookups, derived quote totals) at a small
    size: after a first sync and a quiet night, 1% of records change on both sides."""
    bench = _nightly_bench()
    root = tmp_path / "company"
    bench.build(root, 600)
    _run(root, clock)
    _run(root, clock)
    seed = 20261201
    print(f"random seed of the 1% change: {seed}")
    assert bench.change_one_percent(root, seed) > 0
    fresh_dir = _fresh_copy(root, tmp_path / "fresh")
    mine, fresh = _run(root, clock), _run(fresh_dir, clock)
    assert_accounted(mine.flows)
    _same_result(mine, fresh, root, fresh_dir)
    assert sum(c.inserted + c.updated for c in mine.flows) > 0


def test_a_changed_reference_recomputes_only_the_rows_that_look_it_up(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime]
) -> None:
    """The CRM's Euro record gets a new id: only the products priced in euros and the accounts
    in euros (and the rows rejected last time) are mapped again, and the run equals one on a
    fresh warehouse."""
    _run(demo_dir, clock)
    settled = _run(demo_dir, clock)
    euro_old = "d695ac0c-3ac1-5dd0-b00e-2a264e61841c"

    def new_euro_id(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [
            {**r, "transactioncurrencyid": "0d0a8c1e-3333-4e4e-9999-000000000003"}
            if r["transactioncurrencyid"] == euro_old
            else r
            for r in rows
        ]

    _rewrite(demo_dir / "crm" / "transactioncurrencies.jsonl", new_euro_id)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    said: list[str] = []
    mine = run_batch(load_settings(demo_dir / "p2c.toml"), clock=clock, progress=said.append)
    _same_result(mine, _run(fresh_dir, clock), demo_dir, fresh_dir)
    for flow in ("products", "accounts"):  # two products priced in euros, two accounts
        before = next(c for c in settled.flows if c.flow == flow)
        assert [m for m in said if m.startswith(f"{flow}: computing ")] == [
            f"{flow}: computing {2 + before.rejected} of {before.source_rows} source rows "
            "(the others are as they were)"
        ]
    accounts = next(c for c in mine.flows if c.flow == "accounts")
    assert accounts.rejected == next(c for c in settled.flows if c.flow == "accounts").rejected + 2


def _changes(root: Path, run_id: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT flow, record_key, kind, changed_fields, before_json, after_json FROM changes "
            "WHERE run_id = ? ORDER BY ALL",
            [run_id],
        ).fetchall()
    finally:
        con.close()


def test_a_diff_split_into_parts_by_key_gives_what_one_diff_gives(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A large flow is diffed in parts of keys (bounded memory); the demo's keys spelt two
    ways, twins and claimed keys land in one part each, so the result is the same."""
    whole_dir = _fresh_copy(demo_dir, tmp_path / "whole")
    whole = _run(whole_dir, clock)
    monkeypatch.setattr(compare, "PART", 3)
    parts = _run(demo_dir, clock)
    _same_result(parts, whole, demo_dir, whole_dir)
    assert _changes(demo_dir, parts.run_id) == _changes(whole_dir, whole.run_id)
    assert any(c.rejected for c in parts.flows)


def test_a_changed_input_recomputes_only_the_rows_whose_derived_values_moved(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime]
) -> None:
    """A new account is an input of the contacts' routing (is the company an account?): no
    contact's derived values change, so the contacts flows compute only the rows rejected
    last time, and the run equals one on a fresh warehouse."""
    _run(demo_dir, clock)
    settled = _run(demo_dir, clock)

    def new_account(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        new = {**rows[1], "accountid": "0d0a8c1e-4444-4e4e-9999-000000000004"}
        return [*rows, {**new, "accountnumber": "ACC-09998-LATECO", "name": "Lateco"}]

    _rewrite(demo_dir / "crm" / "accounts.jsonl", new_account)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    said: list[str] = []
    mine = run_batch(load_settings(demo_dir / "p2c.toml"), clock=clock, progress=said.append)
    _same_result(mine, _run(fresh_dir, clock), demo_dir, fresh_dir)
    for flow in ("contacts", "contact_customers"):
        before = next(c for c in settled.flows if c.flow == flow)
        assert [m for m in said if m.startswith(f"{flow}: computing ")] == [
            f"{flow}: computing {before.rejected} of {before.source_rows} source rows "
            "(the others are as they were)"
        ]


def test_a_lookup_scoped_by_company_keeps_its_entries_per_company(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A lookup filtered by the company: after the company changes in p2c.toml, its kept
    entries are the new company's, so a product then removed from that company's catalogue
    is found missing (found by a reviewer: the old company's entries were kept)."""
    import p2c_etl.jobs.wiring as wiring
    from p2c_etl.flows.accounts import ACCOUNTS
    from p2c_etl.flows.contacts import COMPANY
    from p2c_etl.model.flow import Lookup

    product = Lookup(
        "erp", "SellableReleasedProducts", match="ProductNumber", returns="ProductName",
        filters=(COMPANY,), label="product",
    )  # fmt: skip
    fields = tuple(
        replace(f, lookup=product) if f.target == "SalesMemo" else f for f in ACCOUNTS.fields
    )
    monkeypatch.setattr(wiring, "ALL_FLOWS", (replace(ACCOUNTS, fields=fields),))
    named = {"done": False}

    def describe(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        out = []
        for row in rows:
            row = {**row, "description": None}
            if row.get("statecode") == 0 and not named["done"]:
                row["description"], named["done"] = "ZZ1", True
            out.append(row)
        return out

    _rewrite(demo_dir / "crm" / "accounts.jsonl", describe)
    products = demo_dir / "erp" / "SellableReleasedProducts.jsonl"

    def only_in_demf(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        demf = next(r for r in rows if r["dataAreaId"] == "demf")
        return [*rows, {**demf, "ProductNumber": "ZZ1", "ProductName": "Only in demf"}]

    _rewrite(products, only_in_demf)
    settings = demo_dir / "p2c.toml"

    def run() -> RunSummary:
        return run_batch(load_settings(settings), flows=["accounts"], clock=clock)

    run()  # usmf: ZZ1 is not in its catalogue
    settings.write_text(settings.read_text().replace('company = "usmf"', 'company = "demf"'))
    run()  # demf: ZZ1 resolves
    run()
    _rewrite(products, lambda rows: [r for r in rows if r["ProductNumber"] != "ZZ1"])
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    mine = run()
    fresh = run_batch(load_settings(fresh_dir / "p2c.toml"), flows=["accounts"], clock=clock)
    _same_result(mine, fresh, demo_dir, fresh_dir)
    assert any(
        r[4] == "missing_reference" and r[5] == "ZZ1" for r in _rejects(demo_dir, mine.run_id)
    )


def _reading(monkeypatch: MonkeyPatch) -> list[str]:
    """The entity sets the files connector reads record by record from now on."""
    read: list[str] = []
    real = FilesConnector.snapshot

    def snapshot(self: FilesConnector, entity: str, *args: object, **kwargs: object) -> object:
        read.append(f"{self.system}.{entity}")
        return real(self, entity, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FilesConnector, "snapshot", snapshot)
    return read


def test_files_whose_bytes_are_as_they_were_are_not_read_again(
    demo_dir: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A quiet night over files reads no record: each file's bytes are those its mirror was
    made from. A file changed since is read (and its change carried); so is one holding an
    unreadable record, every night, for its reject is reported every night."""
    _run(demo_dir, clock)
    settled = _run(demo_dir, clock)  # reads what the first run wrote
    read = _reading(monkeypatch)
    quiet = _run(demo_dir, clock)
    assert read == []
    assert quiet.flows == settled.flows
    assert _rejects(demo_dir, quiet.run_id) == _rejects(demo_dir, settled.run_id)

    def renamed(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{**rows[0], "name": "Adventure Works Cycles (renamed)"}, *rows[1:]]

    _rewrite(demo_dir / "crm" / "accounts.jsonl", renamed)
    changed = _run(demo_dir, clock)
    assert read[0] == "crm.accounts" and "crm.contacts" not in read
    accounts = next(c for c in changed.flows if c.flow == "accounts")
    assert accounts.updated == 1

    with (demo_dir / "crm" / "accounts.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"accountid": "0d0a8c1e-1111-4e4e-9999-00000000000f", "name": \n')
    _run(demo_dir, clock)
    read.clear()
    again = _run(demo_dir, clock)
    assert read == ["crm.accounts"]
    accounts = next(c for c in again.flows if c.flow == "accounts")
    kept = _rejects(demo_dir, again.run_id)
    assert [r for r in kept if r[0] == "accounts" and r[4] == "not_json"]
    assert accounts.rejected == next(c for c in changed.flows if c.flow == "accounts").rejected + 1


def test_a_file_changed_while_it_is_read_is_read_again_next_night(
    demo_dir: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """The bytes printed before a read may not be those read: a file replaced between its
    print and its read keeps no print, so when it goes back to the printed bytes the next
    night reads it, instead of keeping a mirror of the replacement."""
    _run(demo_dir, clock)
    _run(demo_dir, clock)
    path = demo_dir / "crm" / "accounts.jsonl"
    _rewrite(path, lambda rows: [{**rows[0], "telephone1": "+1 555 0123"}, *rows[1:]])
    printed = path.read_bytes()  # changed since the last read: printed, then read

    def renamed(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{**rows[0], "name": "Adventure Works Cycles (renamed)"}, *rows[1:]]

    real = FilesConnector.snapshot
    swaps = [path]  # once, on the first read of accounts

    def snapshot(self: FilesConnector, entity: str, *args: object, **kwargs: object) -> object:
        if entity == "accounts" and swaps:
            _rewrite(swaps.pop(), renamed)  # after its print, before its read
        return real(self, entity, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FilesConnector, "snapshot", snapshot)
    swapped = _run(demo_dir, clock)
    assert next(c for c in swapped.flows if c.flow == "accounts").updated == 1  # read renamed
    path.write_bytes(printed)  # back to the bytes printed before that read
    back = _run(demo_dir, clock)
    assert next(c for c in back.flows if c.flow == "accounts").updated == 1  # undone
