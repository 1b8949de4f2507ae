"""`p2c migrate`: exports in every format, malformed records as rejects, resumable chunks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner, Result

from p2c_etl.cli import main
from p2c_etl.config import SANDBOX_SECRET_ENV, load_settings
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.flows import flow_names
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.jobs.migrate.job import run_migrate
from p2c_etl.jobs.migrate.options import MigrateOptions
from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "migrate-secret"
CRM_FLOWS = ("accounts", "contacts", "contact_customers", "quote_headers", "quote_lines")
ERP_TARGETS = (
    "CustomersV2",
    "CDSContactPersons",
    "CDSSalesQuotationHeaders",
    "CDSSalesQuotationLines",
)


def _demo(entity: str) -> pl.DataFrame:
    return pl.read_ndjson(demo_fixtures_dir() / "crm" / f"{entity}.jsonl", infer_schema_length=None)


def make_migration(root: Path, formats: dict[str, str] | None = None) -> Path:
    """A p2c.toml whose ERP holds no customers, contacts or quotes yet, and an export folder
    of the demo CRM (accounts as CSV with `;` and a BOM, quotes as Parquet, the rest JSONL)."""
    formats = formats or {"accounts": "csv", "quotes": "parquet"}
    for system in ("crm", "erp"):
        (root / system).mkdir(parents=True)
        for src in (demo_fixtures_dir() / system).iterdir():
            if not any(src.name.startswith(t + ".") for t in ERP_TARGETS):
                (root / system / src.name).write_bytes(src.read_bytes())
    export = root / "export"
    export.mkdir()
    for src in (demo_fixtures_dir() / "crm").glob("*.jsonl"):
        entity = src.stem
        kind = formats.get(entity, "jsonl")
        if kind == "jsonl":
            (export / src.name).write_bytes(src.read_bytes())
        elif kind == "parquet":
            _demo(entity).write_parquet(export / f"{entity}.parquet")
        else:
            text = _demo(entity).write_csv(separator=";")
            (export / f"{entity}.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (root / "p2c.toml").write_text(
        '[warehouse]\npath = "wh.duckdb"\n[systems.crm]\nkind = "files"\npath = "crm"\n'
        '[systems.erp]\nkind = "files"\npath = "erp"\n[report]\ndir = "reports"\n',
        encoding="utf-8",
    )
    return export


def migrate_cli(root: Path, source: Path, *args: str) -> Result:
    """`p2c migrate` through the command line, with the p2c.toml of `root`."""
    config = str(root / "p2c.toml")
    return CliRunner().invoke(main, ["migrate", "--config", config, "--from", str(source), *args])


def target_rows(root: Path, contracts: ContractSet) -> dict[str, pl.DataFrame]:
    """Every migrated target entity set, sorted by its key."""
    erp = FilesConnector("erp", root / "erp", contracts)
    out = {}
    for entity in ERP_TARGETS:
        contract = contracts.get("erp", entity)
        frame = erp.snapshot(entity, list(contract.columns), missing_ok=True)
        out[entity] = frame.sort(list(contract.keys), nulls_last=True)
    return out


def test_a_migration_writes_each_record_once_and_a_rerun_writes_nothing(
    tmp_path: Path, contracts: ContractSet
) -> None:
    export = make_migration(tmp_path)
    settings = load_settings(tmp_path / "p2c.toml")
    first = run_migrate(settings, MigrateOptions(export, CRM_FLOWS, chunk_rows=7))
    assert first.status == "partial"  # the demo export has records to reject
    by_flow = {c.flow: c for c in first.flows}
    assert by_flow["accounts"].inserted > 30 and by_flow["quote_lines"].inserted > 50
    for counts in first.flows:
        assert counts.accounted == counts.source_rows, counts
    rows = target_rows(tmp_path, contracts)
    for entity, frame in rows.items():
        keys = list(contracts.get("erp", entity).keys)
        assert frame.height > 0 and not frame.select(keys).is_duplicated().any(), entity
    assert (
        rows["CustomersV2"].height
        == by_flow["accounts"].inserted + by_flow["contact_customers"].inserted
    )

    again = run_migrate(settings, MigrateOptions(export, CRM_FLOWS, chunk_rows=7))
    assert sum(c.written for c in again.flows) == 0
    assert target_rows(tmp_path, contracts)["CustomersV2"].equals(rows["CustomersV2"])


def test_a_dry_run_writes_nothing_and_counts_what_a_real_migration_writes(
    tmp_path: Path,
) -> None:
    dry_root, real_root = tmp_path / "dry", tmp_path / "real"
    dry_export, real_export = make_migration(dry_root), make_migration(real_root)
    dry = run_migrate(
        load_settings(dry_root / "p2c.toml"),
        MigrateOptions(dry_export, CRM_FLOWS, chunk_rows=9, dry_run=True),
    )
    real = run_migrate(
        load_settings(real_root / "p2c.toml"), MigrateOptions(real_export, CRM_FLOWS, chunk_rows=9)
    )
    assert dry.dry_run and not any((dry_root / "erp" / e).exists() for e in ERP_TARGETS)
    assert [(c.flow, c.rejected, c.inserted) for c in dry.flows] == [
        (c.flow, c.rejected, c.inserted) for c in real.flows
    ]


def test_the_report_shows_each_chunk_with_its_timings(tmp_path: Path) -> None:
    export = make_migration(tmp_path)
    settings = load_settings(tmp_path / "p2c.toml")
    summary = run_migrate(settings, MigrateOptions(export, ("accounts",), chunk_rows=10))
    report = json.loads(Path(summary.report_json or "").read_text(encoding="utf-8"))
    chunks = [c for c in report["chunks"] if c["flow"] == "accounts"]
    assert [c["chunk"] for c in chunks] == [0, 1, 2, 3]
    assert sum(c["records"] for c in chunks) == 40
    assert all(c["seconds"] > 0 for c in chunks)
    html = Path(summary.report_html or "").read_text(encoding="utf-8")
    assert "Chunks" in html and "rows/s" in html


def test_since_and_until_select_records_by_their_creation_day(tmp_path: Path) -> None:
    export = make_migration(tmp_path, {"accounts": "jsonl"})
    accounts = _demo("accounts")
    days = [f"2019-0{1 + i % 3}-15T08:00:00Z" for i in range(accounts.height)]
    accounts.with_columns(pl.Series("createdon", days)).write_ndjson(export / "accounts.jsonl")
    settings = load_settings(tmp_path / "p2c.toml")
    options = MigrateOptions(export, ("accounts",), since=date(2019, 2, 1), until=date(2019, 2, 28))
    counts = run_migrate(settings, options).flows[0]
    in_february = sum(1 for d in days if d.startswith("2019-02"))
    assert counts.source_rows == accounts.height
    assert counts.filtered_out >= accounts.height - in_february
    assert counts.inserted <= in_february


@pytest.mark.parametrize("chunk_rows", [3, 1000])
def test_of_two_records_with_one_key_the_first_is_migrated_whatever_the_chunks(
    tmp_path: Path, contracts: ContractSet, chunk_rows: int
) -> None:
    """The demo export has ACC-01006-CONTOS on lines 6 and 37 (JSON Lines)."""
    export = make_migration(tmp_path, {"accounts": "jsonl"})
    settings = load_settings(tmp_path / "p2c.toml")
    summary = run_migrate(settings, MigrateOptions(export, ("accounts",), chunk_rows=chunk_rows))
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rejects = con.execute(
            "SELECT source_line, message FROM rejects WHERE run_id = ? "
            "AND reason = 'duplicate_key'",
            [summary.run_id],
        ).fetchall()
    assert rejects == [(37, "the record at line 6 has the same key and was taken; this one is not")]
    customers = target_rows(tmp_path, contracts)["CustomersV2"]
    first = _demo("accounts").row(5, named=True)
    taken = customers.filter(pl.col("CustomerAccount") == "ACC-01006-CONTOS")
    assert taken["OrganizationName"].to_list() == [first["name"]]


# --- malformed exports -------------------------------------------------------------------

BAD_ID = "99999999-9999-9999-9999-9999999999"


def test_malformed_records_in_every_format_become_rejects_with_file_and_line(
    tmp_path: Path,
) -> None:
    export = make_migration(tmp_path, {"accounts": "csv", "contacts": "jsonl"})
    accounts = _demo("accounts")
    columns = accounts.columns
    good = accounts.height  # lines 2 … good + 1; the malformed ones follow

    def csv_row(n: int, **values: str) -> str:
        base = {"accountid": f"{BAD_ID}{n:02d}", "accountnumber": f"BAD-{n}", "name": "Bad"}
        base["statecode"] = "0"
        return ";".join({**base, **values}.get(c, "") for c in columns)

    bad_lines = [
        ("wrong_field_count", "x;y;z"),
        ("wrong_type", csv_row(1, statecode="seven")),
        ("wrong_type", csv_row(2, creditlimit="12,5x")),
        ("too_long", csv_row(3, name="N" * 300)),
        (
            "unmapped_value",
            csv_row(4, address1_country="Atlantis"),
        ),
        ("bad_encoding", csv_row(5, name="\udcff")),
        ("broken_quoting", csv_row(6, name='"unclosed')),
    ]
    path = export / "accounts.csv"
    with path.open("ab") as handle:
        for _, line in bad_lines:
            handle.write(line.encode("utf-8", "surrogateescape") + b"\n")
    contacts = (export / "contacts.jsonl").read_text(encoding="utf-8").splitlines()
    contact_good = len(contacts)
    contacts += [
        '{"contactid": "not closed',
        "[1, 2, 3]",
        json.dumps({"contactid": f"{BAD_ID}07", "fullname": 12, "statecode": "x"}),
    ]
    (export / "contacts.jsonl").write_text("\n".join(contacts) + "\n", encoding="utf-8")

    settings = load_settings(tmp_path / "p2c.toml")
    summary = run_migrate(settings, MigrateOptions(export, ("accounts", "contacts"), chunk_rows=16))
    assert summary.status == "partial"
    for counts in summary.flows:
        assert counts.accounted == counts.source_rows, counts
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rejects = con.sql(
            "SELECT flow, reason, source_file, source_line, message FROM rejects "
            "WHERE run_id = ? ORDER BY flow, source_line",
            params=[summary.run_id],
        ).pl()
    accounts_rejects = rejects.filter(
        pl.col("flow") == "accounts", pl.col("source_line") > good + 1
    )
    found = {(r["source_line"], r["reason"]) for r in accounts_rejects.iter_rows(named=True)}
    for offset, (reason, _) in enumerate(bad_lines):
        assert (good + 2 + offset, reason) in found, (good + 2 + offset, reason, found)
    assert set(accounts_rejects["source_file"]) == {str(path)}
    wrong_type = accounts_rejects.filter(pl.col("source_line") == good + 3)["message"][0]
    assert "accounts.csv line" in wrong_type and "statecode 'seven'" in wrong_type

    contact_rejects = rejects.filter(
        pl.col("flow") == "contacts", pl.col("source_line") > contact_good
    )
    assert contact_rejects.select("source_line", "reason").rows() == [
        (contact_good + 1, "not_json"),
        (contact_good + 2, "not_json"),
        (contact_good + 3, "wrong_type"),
    ]


def test_a_quoted_value_over_several_lines_keeps_the_line_count(tmp_path: Path) -> None:
    export = make_migration(tmp_path, {"accounts": "csv"})
    accounts = _demo("accounts").with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("first line\nsecond line\nthird line"))
        .otherwise(pl.col("description"))
        .alias("description")
    )
    text = accounts.write_csv(separator=",") + "short,row\n"
    (export / "accounts.csv").write_text(text, encoding="utf-8")
    settings = load_settings(tmp_path / "p2c.toml")
    summary = run_migrate(settings, MigrateOptions(export, ("accounts",)))
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        line = con.execute(
            "SELECT source_line FROM rejects WHERE run_id = ? AND reason = 'wrong_field_count'",
            [summary.run_id],
        ).fetchall()
    # header 1, first record lines 2 to 4, then one line per record
    assert line == [(accounts.height + 2 + 2,)]


def test_an_export_folder_without_any_flow_is_a_clear_error(tmp_path: Path) -> None:
    make_migration(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = migrate_cli(tmp_path, empty)
    assert result.exit_code == 2
    assert "holds no export for any flow" in result.output


# --- kill -9 and resume ------------------------------------------------------------------


def _migrate_process(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2c_etl",
            "migrate",
            "--config",
            str(root / "p2c.toml"),
            "--from",
            str(root / "export"),
            "--chunk-rows",
            "3",
            "--json",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
    )


def _progress(root: Path) -> tuple[str, int]:
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        run = con.execute(
            "SELECT run_id FROM runs WHERE mode = 'migrate' ORDER BY started_at DESC LIMIT 1"
        ).fetchall()
        if not run:
            return "", 0
        done = con.execute(
            "SELECT count(*) FROM migrate_chunks WHERE run_id = ?", [run[0][0]]
        ).fetchall()
    return str(run[0][0]), int(done[0][0])


def _kill_after_chunks(proc: subprocess.Popen[bytes], lines: int) -> list[str]:
    """Read `proc`'s progress on stderr until its `lines`-th committed-chunk line, then kill
    it with SIGKILL; returns the lines read (every one, if it ended first)."""
    assert proc.stderr is not None
    seen: list[str] = []
    chunks = 0
    while chunks < lines:
        raw = proc.stderr.readline()
        if not raw:
            break  # it ended before: the test below says so
        seen.append(raw.decode("utf-8", "replace").rstrip())
        chunks += " records done, " in seen[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return seen


def test_kill_9_at_chunk_commits_then_resume_ends_as_an_uninterrupted_migration(
    tmp_path: Path, contracts: ContractSet
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for root in (whole, killed):
        make_migration(root)
    done = _migrate_process(whole)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 1, err.decode()
    expected = target_rows(whole, contracts)
    total = sum(" records done, " in line for line in err.decode().splitlines())
    assert total > 6, err.decode()  # one progress line per committed chunk (3 records each)

    seed = int(os.environ.get("P2C_KILL_SEED", time.time_ns() % 10_000))
    print(f"kill seed {seed} (P2C_KILL_SEED={seed} repeats this test)")
    rng = random.Random(seed)
    # Three kills, each a random number of chunks after the last committed one: a resume
    # first passes the chunks committed before it (one line each), then commits new ones.
    points: list[int] = []
    run_id = ""
    for _ in range(3):
        committed = points[-1] if points else 0
        if committed + 1 >= total:
            break
        after = committed + rng.randint(1, max(1, (total - committed) // 3))
        proc = _migrate_process(killed, *(["--resume", run_id] if run_id else []))
        seen = _kill_after_chunks(proc, after)
        assert proc.returncode == -signal.SIGKILL, (seed, seen[-3:])
        run_id, chunks = _progress(killed)
        assert run_id and chunks >= after, (seed, after, chunks)
        points.append(chunks)
    assert len(points) == 3, f"kill seed {seed}: killed at {points} of {total} chunks"
    final = _migrate_process(killed, "--resume", run_id)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 1, err.decode()
    summary = json.loads(out)
    assert summary["run_id"] == run_id and summary["status"] == "partial"
    with duckdb.connect(str(whole / "wh.duckdb"), read_only=True) as con:
        whole_counts = con.execute(
            "SELECT flow, source_rows, rejected FROM run_flows ORDER BY flow"
        ).fetchall()
    assert [
        (f["flow"], f["source_rows"], f["rejected"])
        for f in sorted(summary["flows"], key=lambda f: f["flow"])
    ] == whole_counts
    for counts in summary["flows"]:
        ends = ("filtered_out", "rejected", "inserted", "updated", "unchanged", "failed")
        assert sum(counts[k] for k in ends) == counts["source_rows"], counts

    got = target_rows(killed, contracts)
    for entity, frame in expected.items():
        assert got[entity].equals(frame), f"{entity} differs (kill seed {seed}, at {points})"
    print(f"killed after {points} committed chunks (seed {seed})")


# --- over HTTP ---------------------------------------------------------------------------


def test_a_migration_over_http_through_a_429_storm_writes_each_record_once(
    tmp_path: Path,
) -> None:
    files, http = tmp_path / "files", tmp_path / "http"
    export = make_migration(files)
    make_migration(http)
    by_files = run_migrate(
        load_settings(files / "p2c.toml"), MigrateOptions(export, CRM_FLOWS, chunk_rows=10)
    )
    with Sandbox(
        http / "crm", http / "erp", client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        # counted, so that the storm happens however fast or loaded the machine is
        sandbox.faults.update({"throttle_every": 4, "fail_every": 9, "retry_after": 0})
        config = http / "p2c.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        summary = run_migrate(settings, MigrateOptions(export, CRM_FLOWS, chunk_rows=10))
        statuses = {code for system in sandbox.stats().values() for code in system["status"]}
        assert {"429", "503"} <= statuses  # the storm did happen
        customers = sandbox.records("erp", "CustomersV2")
        again = run_migrate(settings, MigrateOptions(export, CRM_FLOWS, chunk_rows=10))
    assert summary.status == "partial", summary.error
    assert [(c.flow, c.source_rows, c.rejected, c.inserted) for c in summary.flows] == [
        (c.flow, c.source_rows, c.rejected, c.inserted) for c in by_files.flows
    ]
    keys = [r["CustomerAccount"] for r in customers]
    assert (
        len(keys)
        == len(set(keys))
        == sum(c.inserted for c in summary.flows if c.flow in ("accounts", "contact_customers"))
    )
    assert sum(c.written for c in again.flows) == 0


def test_the_cli_prints_one_json_summary_and_exits_1_on_rejects(tmp_path: Path) -> None:
    export = make_migration(tmp_path)
    result = migrate_cli(tmp_path, export, "--flows", "accounts", "--chunk-rows", "8", "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "migrate" and summary["status"] == "partial"
    assert [f["flow"] for f in summary["flows"]] == ["accounts"]
    assert Path(summary["report"]["html"]).is_file()
    history = CliRunner().invoke(main, ["history", "--config", str(tmp_path / "p2c.toml")])
    assert summary["run_id"] in history.output and "migrate" in history.output


def test_resuming_after_the_export_changed_is_refused(tmp_path: Path) -> None:
    export = make_migration(tmp_path)
    settings = load_settings(tmp_path / "p2c.toml")
    first = run_migrate(settings, MigrateOptions(export, ("accounts",), chunk_rows=10))
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as con:  # as if it had been killed
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", [first.run_id])
    with (export / "accounts.csv").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    result = migrate_cli(tmp_path, export, "--resume", first.run_id)
    assert result.exit_code == 2
    assert "accounts.csv" in result.output and "changed since it started" in result.output


def test_a_target_record_spelt_in_another_case_is_found_not_inserted_again(
    tmp_path: Path, contracts: ContractSet, assert_accounted: Callable[[object], None]
) -> None:
    """F&O compares keys as SQL Server does: the customer `acc-01001-advent` it holds is the
    export's `ACC-01001-ADVENT`, updated under its own spelling, never a second record."""
    export = make_migration(tmp_path)
    held = pl.read_ndjson(
        demo_fixtures_dir() / "erp" / "CustomersV2.jsonl", infer_schema_length=None
    )
    held = held.filter(pl.col("CustomerAccount") == "ACC-01001-ADVENT").with_columns(
        pl.lit("acc-01001-advent").alias("CustomerAccount"),
        pl.lit("Old name").alias("OrganizationName"),
    )
    held.write_ndjson(tmp_path / "erp" / "CustomersV2.jsonl")
    settings = load_settings(tmp_path / "p2c.toml")
    summary = run_migrate(settings, MigrateOptions(export, ("accounts",), chunk_rows=5))
    assert_accounted(summary.flows)
    (accounts,) = summary.flows
    assert accounts.failed == 0 and accounts.updated == 1
    customers = target_rows(tmp_path, contracts)["CustomersV2"]
    advent = customers.filter(pl.col("CustomerAccount").str.to_lowercase() == "acc-01001-advent")
    assert advent["CustomerAccount"].to_list() == ["acc-01001-advent"]
    assert advent["OrganizationName"].to_list() == ["Adventure Works Cycles"]
    again = run_migrate(settings, MigrateOptions(export, ("accounts",), chunk_rows=5))
    assert sum(c.written for c in again.flows) == 0
