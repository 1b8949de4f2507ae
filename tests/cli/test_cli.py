"""End to end through the `p2c` command, on the demo company in a temporary folder."""

import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from p2c_etl.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def flows_of(result: Result) -> dict[str, dict[str, int]]:
    summary = json.loads(result.stdout)
    return {f.pop("flow"): f for f in summary["flows"]}


def test_demo_runs_twice_and_the_second_run_writes_nothing(
    tmp_path: Path, expected_first_run: dict[str, dict[str, int]]
) -> None:
    first = invoke("demo", "--dir", str(tmp_path / "d"), "--json")
    assert first.exit_code == 0, first.stderr
    assert flows_of(first) == expected_first_run
    summary = json.loads(first.stdout)
    assert summary["status"] == "partial" and summary["mode"] == "demo"
    assert Path(summary["report"]["html"]).is_file()

    second = invoke("demo", "--dir", str(tmp_path / "d"))
    assert second.exit_code == 0
    assert "0 records written." in second.stdout
    assert "Report: " in second.stdout


def test_every_source_row_is_accounted_for(tmp_path: Path) -> None:
    result = invoke("demo", "--dir", str(tmp_path / "d"), "--json")
    for counts in flows_of(result).values():
        ends = ("filtered_out", "rejected", "inserted", "updated", "unchanged", "failed")
        assert sum(counts[k] for k in ends) == counts["source_rows"]


def test_run_exits_1_on_the_demo_rejects_and_prints_only_json(demo_dir: Path) -> None:
    result = invoke("run", "--config", str(demo_dir / "p2c.toml"), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert set(summary) == {"run_id", "mode", "status", "dry_run", "flows", "report"}
    assert summary["status"] == "partial"
    assert set(summary["flows"][0]) == {
        "flow",
        "source_rows",
        "filtered_out",
        "rejected",
        "inserted",
        "updated",
        "unchanged",
        "target_only",
        "failed",
    }
    assert set(summary["report"]) == {"html", "json"}
    assert "accounts: 40 source rows" in result.stderr


def test_run_exits_0_when_every_record_is_clean(demo_dir: Path) -> None:
    products = demo_dir / "erp" / "SellableReleasedProducts.jsonl"
    products.write_text("\n".join(x for x in products.read_text().splitlines() if '"plt"' not in x))
    config = str(demo_dir / "p2c.toml")
    result = invoke("run", "--config", config, "--flows", "products", "--json")
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["status"] == "ok"


def test_dry_run_computes_everything_and_writes_nothing(
    demo_dir: Path, expected_first_run: dict[str, dict[str, int]]
) -> None:
    files = sorted(p for p in demo_dir.rglob("*.jsonl"))
    before = {p: p.read_bytes() for p in files}
    result = invoke("run", "--config", str(demo_dir / "p2c.toml"), "--dry-run", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    # What would be written, rejected or left alone is what a real run does. Only flows that
    # read what earlier flows would write (orders coming back read the orders sent) see fewer
    # source rows, and so claim fewer target records: those records do not exist yet.
    outcome = ("rejected", "inserted", "updated", "unchanged", "failed")
    assert {f: {k: c[k] for k in outcome} for f, c in flows_of(result).items()} == {
        f: {k: c[k] for k in outcome} for f, c in expected_first_run.items()
    }
    assert {p: p.read_bytes() for p in files} == before
    again = invoke("run", "--config", str(demo_dir / "p2c.toml"), "--json")
    assert flows_of(again) == expected_first_run  # the dry run changed nothing


def test_flows_option_runs_only_those_flows(demo_dir: Path) -> None:
    result = invoke("run", "--config", str(demo_dir / "p2c.toml"), "--flows", "accounts", "--json")
    assert [f["flow"] for f in json.loads(result.stdout)["flows"]] == ["accounts"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "missing.toml"], "configuration file not found"),
        (["run", "--flows", "acounts"], "unknown flow acounts"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(demo_dir)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_bad_value_in_a_source_record_is_a_reject_naming_file_line_and_column(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    accounts = demo_dir / "crm" / "accounts.jsonl"
    lines = accounts.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    record["creditlimit"] = "lots"
    lines[2] = json.dumps(record)
    accounts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = str(demo_dir / "p2c.toml")
    result = invoke("run", "--config", config, "--flows", "accounts", "--json")
    assert result.exit_code == 1, result.stdout  # the run goes on with every good record
    summary = json.loads(result.stdout)
    assert summary["status"] == "partial"
    assert_accounted(summary["flows"])
    assert summary["flows"][0]["source_rows"] == 40
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT record_key, field, reason, message, source_file, source_line FROM rejects "
            "WHERE reason = 'wrong_type'"
        ).fetchall()
    assert rows == [
        (
            record["accountnumber"],
            "creditlimit",
            "wrong_type",
            "accounts.jsonl line 3: creditlimit 'lots' is not a valid decimal(19,4)",
            str(accounts),
            3,
        )
    ]


def test_a_source_file_that_is_not_of_its_format_fails_the_run_with_exit_2(
    demo_dir: Path,
) -> None:
    (demo_dir / "crm" / "accounts.jsonl").unlink()
    (demo_dir / "crm" / "accounts.parquet").write_bytes(b"PAR1 this is no Parquet file")
    result = invoke("run", "--config", str(demo_dir / "p2c.toml"), "--json")
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed"
    assert "extract of flow 'accounts' failed" in summary["error"]
    assert "accounts.parquet: not a readable Parquet file" in summary["error"]
    assert "Traceback" not in result.stderr


def test_flows_lists_direction_source_target_and_keys() -> None:
    result = invoke("flows")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["flow", "direction", "source", "target", "keys", "after"]
    assert any(
        line.startswith("products")
        and "erp.SellableReleasedProducts" in line
        and "crm.products" in line
        and "productnumber" in line
        for line in lines
    )
    assert any(
        line.startswith("accounts") and "dataAreaId, CustomerAccount" in line for line in lines
    )


def test_history_lists_runs_newest_first(demo_dir: Path) -> None:
    config = str(demo_dir / "p2c.toml")
    first = json.loads(invoke("run", "--config", config, "--json").stdout)["run_id"]
    second = json.loads(invoke("run", "--config", config, "--dry-run", "--json").stdout)["run_id"]
    result = invoke("history", "--config", config)
    assert result.exit_code == 0
    rows = result.stdout.splitlines()[1:]
    assert rows[0].startswith(second) and "run (dry)" in rows[0]
    assert rows[1].startswith(first) and "partial" in rows[1]
