"""[flows.<name>] overrides in p2c.toml, and records that load once their reference exists."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import Settings, load_settings
from p2c_etl.errors import ConfigError
from p2c_etl.flows import flow_names
from p2c_etl.flows.accounts import ACCOUNTS
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.overrides import apply_overrides, parse_filter


def configure(demo_dir: Path, extra: str) -> Settings:
    config = demo_dir / "p2c.toml"
    config.write_text(config.read_text() + "\n" + extra, encoding="utf-8")
    return load_settings(config, known_flows=flow_names())


def account_rejects(summary_json: str) -> list[dict[str, object]]:
    data = json.loads(Path(json.loads(summary_json)["report"]["json"]).read_text())
    return next(f for f in data["flows"] if f["flow"] == "accounts")["rejects"]


def run_accounts(settings: Settings) -> dict[str, object]:
    summary = run_batch(settings, flows=["accounts"])
    report = json.loads(Path(summary.report_json or "").read_text())
    return next(f for f in report["flows"] if f["flow"] == "accounts")


def test_a_value_map_entry_in_p2c_toml_maps_the_unknown_country(demo_dir: Path) -> None:
    settings = configure(
        demo_dir,
        """
[flows.accounts.value_maps.AddressCountryRegionISOCode]
"Atlantis" = "GRC"
[flows.accounts.value_maps.DeliveryAddressCountryRegionISOCode]
"atlantis " = "GRC"
""",
    )
    flow = run_accounts(settings)
    assert [r["reason"] for r in flow["rejects"]] == ["duplicate_key", "duplicate_key", "too_long"]
    assert flow["counts"]["inserted"] == 7


@pytest.mark.parametrize(("policy", "expected"), [("default", None), ("pass", "Atlantis")])
def test_unmapped_policy_default_or_pass_keeps_the_record_and_lists_the_value(
    demo_dir: Path, policy: str, expected: str | None
) -> None:
    settings = configure(demo_dir, f'[flows.accounts]\nunmapped = "{policy}"\n')
    flow = run_accounts(settings)
    assert "unmapped_value" not in [r["reason"] for r in flow["rejects"]]
    assert {(u["field"], u["value"], u["count"], u["policy"]) for u in flow["unmapped"]} == {
        ("AddressCountryRegionISOCode", "Atlantis", 1, policy),
        ("DeliveryAddressCountryRegionISOCode", "Atlantis", 1, policy),
    }
    oceanic = [s for s in flow["samples"] if s["record_key"].endswith("OCEANI")]
    values = {c["field"]: c["after"] for c in oceanic[0]["fields"]}
    # "default": the field's default applies (none here, and blank is not the same as USA)
    assert values.get("AddressCountryRegionISOCode") == expected


def test_fields_defaults_and_source_filter_override_the_declaration(
    contracts: ContractSet, demo_dir: Path
) -> None:
    settings = configure(
        demo_dir,
        """
[flows.accounts]
source_filter = ["statecode eq 0", "customertypecode eq 3", "name ne 'Wingtip Toys'"]
fields = { SalesMemo = "websiteurl" }
defaults = { CustomerGroupId = "20", SiteId = 2 }
""",
    )
    flow = apply_overrides(ACCOUNTS, settings.flow("accounts"), contracts)
    by_target = {f.target: f for f in flow.fields}
    assert by_target["SalesMemo"].source == "websiteurl"
    assert by_target["CustomerGroupId"].default == "20"
    assert [str(f) for f in flow.source_filters] == [
        "statecode eq 0",
        "customertypecode eq 3",
        "name ne 'Wingtip Toys'",
    ]
    result = CliRunner().invoke(
        main, ["flows", "show", "accounts", "--config", str(demo_dir / "p2c.toml")]
    )
    assert "SalesMemo" in result.stdout and "websiteurl" in result.stdout
    assert "source filter: statecode eq 0 and customertypecode eq 3" in result.stdout


def test_a_field_the_target_lacks_is_a_config_error(contracts: ContractSet, demo_dir: Path) -> None:
    settings = configure(demo_dir, '[flows.accounts]\nfields = { NoSuchColumn = "name" }\n')
    with pytest.raises(ConfigError, match=r"erp\.CustomersV2 has no column 'NoSuchColumn'"):
        apply_overrides(ACCOUNTS, settings.flow("accounts"), contracts)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[flows.accounts]\nunmapped = "ignore"\n', "'flows.accounts.unmapped' must be one of"),
        ('[flows.accounts]\nsource_filter = "statecode eq 0"\n', "must be a list"),
        (
            "[flows.accounts]\nfields = { SalesMemo = 3 }\n",
            "'flows.accounts.fields.SalesMemo' must be a string",
        ),
        ('[money]\nrounding = "banker"\n', "'money.rounding' must be one of"),
    ],
)
def test_wrong_overrides_are_one_line_errors(demo_dir: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configure(demo_dir, extra)


def test_filter_syntax() -> None:
    assert str(parse_filter("f", "dataAreaId eq <company>")) == "dataAreaId eq <company>"
    assert parse_filter("f", "x ne null").value is None
    assert parse_filter("f", "flag eq true").value is True
    with pytest.raises(ConfigError, match=r"is not 'column eq\|ne value'"):
        parse_filter("f", "x gt 3")


def test_a_rejected_record_loads_on_the_next_run_once_its_reference_exists(
    demo_settings: Settings, demo_dir: Path
) -> None:
    first = run_batch(demo_settings)
    counts = {c.flow: c for c in first.flows}
    assert counts["quote_lines"].rejected == 4
    # Someone fixes the account's country in Sales and releases the product again in F&O.
    accounts = demo_dir / "crm" / "accounts.jsonl"
    accounts.write_text(accounts.read_text().replace('"Atlantis"', '"Greece"'))
    products = demo_dir / "erp" / "SellableReleasedProducts.jsonl"
    back = {
        "dataAreaId": "usmf",
        "ProductNumber": "D0099",
        "ProductName": "Retro Turntable",
        "SalesPrice": "299.00",
        "CurrencyCode": "USD",
        "SalesUnitSymbol": "ea",
        "ProductType": "Item",
        "IsSalesStopped": "No",
    }
    products.write_text(products.read_text() + json.dumps(back) + "\n")
    second = run_batch(demo_settings)
    counts = {c.flow: c for c in second.flows}
    # The account, its contact, its quote and the quote's line all arrive in this one run,
    # in dependency order; so does the line whose product was missing. Nothing else is written.
    assert (counts["accounts"].inserted, counts["contacts"].inserted) == (1, 1)
    assert (counts["quote_headers"].inserted, counts["quote_lines"].inserted) == (1, 2)
    assert counts["quote_lines"].rejected == 2  # the Pallet unit is still unmapped
    assert counts["products"].inserted == 0 and counts["products"].target_only == 1


def test_a_source_field_the_source_lacks_is_an_error_naming_p2c_toml_and_the_key(
    contracts: ContractSet, demo_dir: Path
) -> None:
    settings = configure(demo_dir, '[flows.accounts]\nfields = { SalesMemo = "descriptio" }\n')
    with pytest.raises(ConfigError) as info:
        apply_overrides(ACCOUNTS, settings.flow("accounts"), contracts)
    message = str(info.value)
    assert message.startswith("p2c.toml: [flows.accounts] fields.SalesMemo = 'descriptio'")
    assert "crm.accounts has no field 'descriptio'" in message
    assert ".toml" not in message.replace("p2c.toml", "")  # not the package's contract file
    result = CliRunner().invoke(main, ["run", "--config", str(demo_dir / "p2c.toml")])
    assert result.exit_code == 2 and "fields.SalesMemo = 'descriptio'" in result.stderr


def test_check_names_a_wrong_override_as_configuration_not_contract_drift(
    demo_dir: Path,
) -> None:
    configure(demo_dir, '[flows.accounts]\nfields = { SalesMemo = "descriptio" }\n')
    result = CliRunner().invoke(main, ["check", "--config", str(demo_dir / "p2c.toml")])
    assert result.exit_code == 2
    (line,) = [row for row in result.stdout.splitlines() if "descriptio" in row]
    assert line.startswith("p2c.toml") and "overrides accounts" in line and "failed" in line
    assert "drift" not in result.stdout
    assert "contract CustomersV2" in result.stdout  # the other flows are still checked


def test_flows_show_reads_the_p2c_toml_of_the_current_folder(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(demo_dir, '[flows.accounts]\nfields = { CustomerGroupId = "websiteurl" }\n')
    monkeypatch.chdir(demo_dir)
    shown = CliRunner().invoke(main, ["flows", "show", "accounts"])
    assert shown.exit_code == 0, shown.stderr
    assert any(
        row.split()[:2] == ["CustomerGroupId", "websiteurl"] for row in shown.stdout.splitlines()
    )
    monkeypatch.chdir(demo_dir.parent)  # no p2c.toml here: the flow as the package ships it
    plain = CliRunner().invoke(main, ["flows", "show", "accounts"])
    assert plain.exit_code == 0
    assert not any(
        row.split()[:2] == ["CustomerGroupId", "websiteurl"] for row in plain.stdout.splitlines()
    )
