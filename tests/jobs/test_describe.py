import os
from pathlib import Path

from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.flows import ALL_FLOWS
from p2c_etl.jobs.describe import flows_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "flows.md"


def test_flows_show_prints_the_mapping_table() -> None:
    result = CliRunner().invoke(main, ["flows", "show", "accounts"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "accounts: crm.accounts → erp.CustomersV2, keys dataAreaId, CustomerAccount"
    assert "source filter: statecode eq 0" in lines
    rows = {line.split()[0]: line for line in lines if line.startswith(("Cust", "Address"))}
    assert rows["CustomerGroupId"].split()[1:] == ["—", "default", "'10'"]
    assert "value map country → ISO alpha-3, blank → USA" in rows["AddressCountryRegionISOCode"]


def test_flows_show_unknown_flow_exits_2() -> None:
    result = CliRunner().invoke(main, ["flows", "show", "acount"])
    assert result.exit_code == 2
    assert "unknown flow acount" in result.stderr


def test_docs_flows_md_is_current() -> None:
    """Regenerate with P2C_REGEN_GOLDEN=1 after changing a flow."""
    text = flows_markdown(ALL_FLOWS)
    if os.environ.get("P2C_REGEN_GOLDEN") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == text
