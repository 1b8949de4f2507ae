"""A second opinion on the wire format: python-odata, a generic OData v4 client from PyPI
written by others, reflects both sandboxes' `$metadata` and reads, pages, counts, creates,
updates and deletes through them (issue 14, "How to prove it").

python-odata has no `$batch`; batches are checked over raw HTTP in the other suites.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from odata import ODataService

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", seed / "erp", alternate_keys=DEMO_ALTERNATE_KEYS) as sb:
        yield sb


def _session(sb: Sandbox, token: str, page_size: int) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    # the client reads the created record from the answer, as Dataverse gives it on request
    session.headers["Prefer"] = f"odata.maxpagesize={page_size},return=representation"
    return session


def test_a_generic_client_reads_pages_and_writes_dataverse(
    sandbox: Sandbox, bearer: Callable[..., str]
) -> None:
    service = ODataService(
        f"{sandbox.crm_url}/api/data/v9.2/",
        session=_session(sandbox, bearer(sandbox), 7),
        reflect_entities=True,
    )
    contacts = service.entities["contacts"]
    every = [c.contactid for c in service.query(contacts)]  # follows @odata.nextLink
    expected = {r["contactid"] for r in sandbox.records("crm", "contacts")}
    assert len(every) == len(expected) == len(set(every)) and set(every) == expected
    assert service.query(contacts).count() == len(expected)
    accounts = service.entities["accounts"]
    active = service.query(accounts).filter(accounts.statecode == 0).select(accounts.name).all()
    assert len(active) == sum(r["statecode"] == 0 for r in sandbox.records("crm", "accounts"))
    record = accounts()
    record.accountnumber, record.name = "IC-1", "Independent"
    service.save(record)
    record.name = "Independent, renamed"
    service.save(record)
    (held,) = [r for r in sandbox.records("crm", "accounts") if r["accountnumber"] == "IC-1"]
    assert held["name"] == "Independent, renamed" and held["accountid"] == record.accountid
    service.delete(record)
    assert "IC-1" not in {r["accountnumber"] for r in sandbox.records("crm", "accounts")}


def test_a_generic_client_reads_pages_and_writes_finops(
    sandbox: Sandbox, bearer: Callable[..., str]
) -> None:
    service = ODataService(
        f"{sandbox.erp_url}/data/",
        session=_session(
            sandbox, bearer(sandbox, "https://usmf.operations.dynamics.com/.default"), 20
        ),
        reflect_entities=True,
    )
    lines = service.entities["CDSSalesOrderLines"]
    every = list(service.query(lines))
    usmf = [r for r in sandbox.records("erp", "CDSSalesOrderLines") if r["dataAreaId"] == "usmf"]
    assert len(every) == len(usmf) > 20
    customers = service.entities["CustomersV2"]
    no_yes = service.types["Microsoft.Dynamics.DataEntities.NoYes"]
    external = service.query(customers).filter(customers.IsExternallyMaintained == no_yes.Yes)
    held_yes = [
        r
        for r in sandbox.records("erp", "CustomersV2")
        if r["dataAreaId"] == "usmf" and r["IsExternallyMaintained"] == "Yes"
    ]
    assert len(external.all()) == len(held_yes) > 0
    record = customers()
    record.CustomerAccount, record.CustomerGroupId = "IC-FO-1", "10"
    record.IsExternallyMaintained = no_yes.Yes
    service.save(record)
    record.OrganizationName = "Independent F&O"
    service.save(record)
    (held,) = [
        r for r in sandbox.records("erp", "CustomersV2") if r["CustomerAccount"] == "IC-FO-1"
    ]
    assert held["OrganizationName"] == "Independent F&O" and held["dataAreaId"] == "usmf"
    assert held["IsExternallyMaintained"] == "Yes"
    service.delete(record)
    assert "IC-FO-1" not in {r["CustomerAccount"] for r in sandbox.records("erp", "CustomersV2")}
