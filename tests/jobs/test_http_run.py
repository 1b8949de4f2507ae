"""The nightly batch end to end over HTTP, against the sandbox on loopback."""

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import SANDBOX_SECRET_ENV, Settings, load_settings
from p2c_etl.flows import ALL_FLOWS, flow_names
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.jobs.run import run_batch
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "http-run-secret"


def test_demo_over_http_has_the_files_demo_summary(
    tmp_path: Path, expected_first_run: dict[str, dict[str, int]]
) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--http", "--dir", str(tmp_path), "--json", "-q"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {f.pop("flow"): f for f in summary["flows"]} == expected_first_run
    assert Path(summary["report"]["html"]).is_file()


@contextmanager
def _demo_over_http(tmp_path: Path) -> Iterator[tuple[Sandbox, Settings]]:
    """A sandbox seeded with the demo company, and the settings of a run against it."""
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        tmp_path.mkdir(parents=True, exist_ok=True)
        config = tmp_path / "p2c.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        yield sandbox, load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})


def _targets() -> set[tuple[str, str]]:
    return {(f.target.system, f.target.entity) for f in ALL_FLOWS}


def _sync(tmp_path: Path, faults: Faults | None) -> tuple[dict[Any, list[str]], dict[str, Any]]:
    """Run the demo over a fresh sandbox; the target entity sets afterwards, and the stats."""
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        if faults is not None:
            sandbox.faults.update(faults.as_dict())
        tmp_path.mkdir(parents=True, exist_ok=True)
        config = tmp_path / "p2c.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        summary = run_batch(settings)
        assert summary.status == "partial", summary.error  # the demo's planted rejects
        state = {t: sorted(_canonical(r) for r in sandbox.records(*t)) for t in _targets()}
        return state, sandbox.stats()


def _canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def test_a_429_storm_and_random_503s_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    clean, _ = _sync(tmp_path / "clean", None)
    # Counted, not timed: every 5th request of each server is throttled, every 7th fails, on
    # a fast machine or a loaded one (a timed throttle saw no 429 on a slow machine).
    storm = Faults(throttle_every=5, fail_every=7, retry_after=0)
    stormy, stats = _sync(tmp_path / "storm", storm)

    def answered(code: str) -> int:
        return sum(system["status"].get(code, 0) for system in stats.values())

    assert answered("429") > 0 and answered("503") > 0  # the storm did happen
    assert stormy == clean


def test_https_against_a_self_signed_sandbox_trusts_only_the_given_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm",
        seed / "erp",
        client_secret=SECRET,
        tls_cert=cert,
        tls_key=key,
        alternate_keys=DEMO_ALTERNATE_KEYS,
    ) as sandbox:
        assert sandbox.crm_url.startswith("https://")
        config = tmp_path / "p2c.toml"
        text = http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url)
        config.write_text(text)
        env = {SANDBOX_SECRET_ENV: SECRET}
        untrusted = run_batch(load_settings(config, flow_names(), environ=env), flows=["products"])
        assert untrusted.status == "failed"
        assert "TLS certificate this machine does not trust" in (untrusted.error or "")
        trusted = text.replace('secret_env = "', f'ca_file = "{cert}"\nsecret_env = "')
        config.write_text(trusted)
        summary = run_batch(load_settings(config, flow_names(), environ=env), flows=["products"])
        assert summary.status == "partial", summary.error  # the demo's planted reject
        assert summary.written == 3


def test_retry_sends_again_only_the_writes_that_failed(tmp_path: Path) -> None:
    config = tmp_path / "p2c.toml"
    with _demo_over_http(tmp_path) as (sandbox, settings):
        sandbox.faults.reject = {"name": "Outdoor Speaker Pair"}  # D0014, a new product
        first = run_batch(settings, flows=["products"])
        (counts,) = first.flows
        assert (counts.inserted, counts.updated, counts.failed) == (1, 1, 1)
        sandbox.faults.reject = {}
        runner = CliRunner(env={SANDBOX_SECRET_ENV: SECRET})
        result = runner.invoke(main, ["retry", "--config", str(config), "--json", "-q"])
        assert result.exit_code == 0, result.output
        retried = json.loads(result.stdout)
        assert retried["mode"] == "retry"
        assert [
            (f["flow"], f["source_rows"], f["inserted"], f["failed"]) for f in retried["flows"]
        ] == [("products", 1, 1, 0)]
        nothing = runner.invoke(main, ["retry", "--config", str(config)])
        assert nothing.exit_code == 0 and "Nothing to retry" in nothing.stdout  # it was sent
        again = run_batch(settings, flows=["products"])
        assert again.written == 0
        missing = runner.invoke(main, ["retry", "--config", str(config), "--run", "no-such-run"])
        assert missing.exit_code == 2 and "there is no run no-such-run" in missing.stderr


def test_a_night_reads_only_what_changed_in_dataverse_through_its_delta_link(
    tmp_path: Path,
) -> None:
    """The first run reads Dataverse with change tracking and keeps each entity set's delta
    link; after an account is renamed through the Web API, the next run reads that one
    account (not all of them) and carries the change to F&O."""
    import duckdb
    import httpx

    seed = demo_fixtures_dir()
    first = json.loads((seed / "crm" / "accounts.jsonl").read_text().splitlines()[0])
    with _demo_over_http(tmp_path) as (sandbox, settings):
        run_batch(settings)
        run_batch(settings)
        form = {
            "grant_type": "client_credentials",
            "client_id": "p2c-sandbox",
            "client_secret": SECRET,
            "scope": f"{sandbox.crm_url}/.default",
        }
        token = httpx.post(sandbox.token_url, data=form).json()["access_token"]
        renamed = httpx.patch(
            f"{sandbox.crm_url}/api/data/v9.2/accounts({first['accountid']})",
            json={"name": "Renamed through the Web API"},
            headers={"Authorization": f"Bearer {token}", "If-Match": "*"},
        )
        assert renamed.status_code == 204, renamed.text
        sandbox.reset_stats()
        night = run_batch(settings)
        returned = sandbox.stats()["crm"]["records_returned"]
        held = [r for r in sandbox.records("erp", "CustomersV2")]
    accounts = next(c for c in night.flows if c.flow == "accounts")
    assert accounts.updated == 1 and returned.get("accounts") == 1
    number = first["accountnumber"]
    assert any(
        r["CustomerAccount"] == number and r["OrganizationName"] == "Renamed through the Web API"
        for r in held
    )
    con = duckdb.connect(str(tmp_path / "p2c.duckdb"), read_only=True)
    try:
        how = con.execute(
            "SELECT kind, changes, deletes FROM delta_links WHERE system = 'crm' "
            "AND entity = 'accounts' AND run_id = ?",
            [night.run_id],
        ).fetchall()
    finally:
        con.close()
    assert how == [("delta", 1, 0)]
    report = json.loads(Path(str(night.report_json)).read_text(encoding="utf-8"))
    reads = next(f["reads"] for f in report["flows"] if f["flow"] == "accounts")
    assert reads[0] == "crm.accounts: 1 changed, 0 deleted since the last delta link"
    assert reads[1] == "erp.CustomersV2: read in full"  # F&O has no delta links
