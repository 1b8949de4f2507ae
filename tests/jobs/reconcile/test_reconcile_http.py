"""`p2c reconcile` over HTTP: the same month-end edits, made through the Web APIs, are found."""

from decimal import Decimal
from pathlib import Path

import httpx

from p2c_etl.config import SANDBOX_SECRET_ENV, load_settings
from p2c_etl.flows import flow_names
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.jobs.reconcile.job import run_reconcile
from p2c_etl.jobs.run import run_batch
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "reconcile-secret"


def _token(sandbox: Sandbox) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": "p2c-sandbox",
        "client_secret": SECRET,
        "scope": "api://sandbox/.default",
    }
    token = httpx.post(sandbox.token_url, data=form).json()["access_token"]
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _month_end_by_hand(sandbox: Sandbox) -> None:
    auth = _token(sandbox)
    crm = f"{sandbox.crm_url}/api/data/v9.2/"
    found = httpx.get(
        crm + "invoices",
        headers=auth,
        params={"$select": "invoiceid,totalamount", "$filter": "invoicenumber eq 'INV-3005'"},
    ).json()
    invoice = found["value"][0]
    total = Decimal(str(invoice["totalamount"])) + Decimal("100.00")
    answer = httpx.patch(
        f"{crm}invoices({invoice['invoiceid']})",
        headers=auth,
        content=f'{{"totalamount": {total}}}'.encode(),
        params=None,
    )
    assert answer.status_code == 204, answer.text
    erp = f"{sandbox.erp_url}/data/"
    line = (
        "CDSSalesOrderLines(dataAreaId='usmf',SalesOrderNumber='SO-2010',"
        "LineCreationSequenceNumber=2)"
    )
    assert httpx.delete(erp + line, headers=auth).status_code == 204
    customer = "CustomersV2(dataAreaId='usmf',CustomerAccount='ACC-01008-FOURTH')"
    answer = httpx.patch(erp + customer, headers=auth, json={"CreditLimit": 13000})
    assert answer.status_code == 204, answer.text


def test_the_month_end_edits_are_found_over_http(tmp_path: Path) -> None:
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sandbox:
        config = tmp_path / "p2c.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        run_batch(settings)
        _month_end_by_hand(sandbox)
        written = sandbox.stats()
        summary = run_reconcile(settings)
        after = sandbox.stats()
    found = {(d.flow, d.record_key): d.classification for d in summary.data.discrepancies}
    assert found[("invoice_headers", "INV-3005")] == "drift"
    assert found[("accounts", "usmf|ACC-01008-FOURTH")] == "drift"
    assert found[("order_lines_back", "SO-2010|2")] == "only in target"
    invoices = next(t for t in summary.data.tie_out if t.document == "invoices")
    assert [(i.number, i.item_class) for i in invoices.items] == [("INV-3005", "drift")]
    assert invoices.unexplained == 0 and invoices.difference == -100
    for system in ("crm", "erp"):  # read-only: the reconciliation wrote nothing
        assert after[system]["records_written"] == written[system]["records_written"]
