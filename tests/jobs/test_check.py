"""`p2c check`: the pre-flight, on files and over HTTP."""

from pathlib import Path

from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import SANDBOX_SECRET_ENV
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox


def check(config: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, ["check", "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


def test_the_demo_passes_every_check(demo_dir: Path) -> None:
    code, out, _ = check(demo_dir / "p2c.toml")
    assert code == 0, out
    assert "contract CustomersV2" in out and "reference pricelevels" in out
    assert "failed" not in out


def test_a_column_gone_from_a_system_is_named_contract_drift(demo_dir: Path) -> None:
    accounts = demo_dir / "crm" / "accounts.jsonl"
    accounts.write_text(accounts.read_text().replace('"websiteurl"', '"website"'))
    (demo_dir / "crm" / "pricelevels.jsonl").write_text("")
    code, out, err = check(demo_dir / "p2c.toml")
    assert code == 2
    drift = next(line for line in out.splitlines() if "contract accounts" in line)
    assert "failed" in drift and "contract drift: accounts has no column websiteurl" in drift
    assert "pricelevels is empty" in out
    assert "checks failed" in err


def test_check_over_http_authenticates_and_reads_the_metadata(tmp_path: Path) -> None:
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret="right", alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        config = tmp_path / "p2c.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        code, out, _ = check(config, {SANDBOX_SECRET_ENV: "right"})
        assert code == 0, out
        assert "contract SellableReleasedProducts" in out
        code, out, err = check(config, {SANDBOX_SECRET_ENV: "wrong"})
        assert code == 2
        assert "refused client p2c-sandbox" in out
        assert "wrong" not in out + err
