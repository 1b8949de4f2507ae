from pathlib import Path

import pytest

from p2c_etl.config import load_settings
from p2c_etl.errors import ConfigError

GOOD = """
[warehouse]
path = "wh/p2c.duckdb"
[systems.crm]
kind = "files"
path = "crm"
[systems.erp]
kind = "files"
path = "erp"
company = "USMF"
[report]
dir = "out"
[flows.accounts]
enabled = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_paths_are_relative_to_the_file_and_company_is_lower_case(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), known_flows=("products", "accounts"))
    assert settings.warehouse_path == tmp_path.resolve() / "wh" / "p2c.duckdb"
    assert settings.crm.path == tmp_path.resolve() / "crm"
    assert settings.report_dir == tmp_path.resolve() / "out"
    assert settings.company == "usmf"
    assert not settings.flow("accounts").enabled
    assert settings.flow("products").enabled


def test_defaults_apply_when_optional_sections_are_missing(tmp_path: Path) -> None:
    text = '[systems.crm]\nkind = "files"\npath = "c"\n[systems.erp]\nkind = "files"\npath = "e"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.company == "usmf"
    assert settings.warehouse_path.name == "p2c.duckdb"
    assert settings.report_dir.name == "reports"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('path = "crm"', 'pth = "crm"'), "unknown key 'systems.crm.pth'"),
        (GOOD.replace('path = "erp"\n', ""), "missing key 'systems.erp.path'"),
        (
            GOOD.replace('kind = "files"\npath = "crm"', 'kind = "ftp"\npath = "crm"'),
            "'systems.crm.kind' must be one of",
        ),
        (
            GOOD.replace("enabled = false", 'enabled = "no"'),
            "'flows.accounts.enabled' must be a bool",
        ),
        (GOOD.replace("[flows.accounts]", "[flows.acounts]"), "unknown flow [flows.acounts]"),
        (GOOD.replace("[systems.erp]", "[systems.erp"), "not valid TOML"),
        (GOOD.replace("[warehouse]", "[warehouses]"), "unknown key 'warehouses'"),
        (GOOD + '[run]\nfull_every = "a week"\n', "'run.full_every' must be a whole number and"),
        (GOOD + '[run]\nfull_every = "7"\n', 'like "7d" or "5m", got \'7\''),
        (GOOD + "[run]\nfull_every = 7\n", "'run.full_every' must be a str"),
        (GOOD + '[run]\nfull_evry = "7d"\n', "unknown key 'run.full_evry'"),
        (GOOD + '[run]\nfull_every = "1000000000d"\n', "'run.full_every' is too long a time"),
        (
            GOOD.replace('company = "USMF"', 'company = "USMF"\nhigh_water_lag = "5m"'),
            "unknown key 'systems.erp.high_water_lag'",  # files read in full: no mark
        ),
    ],
)
def test_wrong_or_missing_keys_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), known_flows=("products", "accounts"))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_full_every_and_the_high_water_lag_are_durations(tmp_path: Path) -> None:
    from datetime import timedelta

    default = load_settings(write(tmp_path, GOOD), known_flows=("products", "accounts"))
    assert default.full_every == timedelta(days=7)
    assert default.erp.high_water_lag == timedelta(minutes=5)
    text = GOOD + '[run]\nfull_every = "36h"\n'
    assert load_settings(write(tmp_path, text), ("accounts",)).full_every == timedelta(hours=36)
    finops = (
        '[systems.crm]\nkind = "files"\npath = "c"\n[systems.erp]\nkind = "finops"\n'
        'url = "https://fo"\ntenant = "t"\nclient_id = "c"\nsecret_env = "S"\n'
        'high_water_lag = "90s"\n'
    )
    assert load_settings(write(tmp_path, finops)).erp.high_water_lag == timedelta(seconds=90)


def test_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.toml")
