"""No request the sandbox does not implement gets a 200 (issue 14, "Done when").

Every option, function, message and path below is documented for Dataverse or Finance and
Operations but not implemented by the sandbox (501), or not allowed where it is sent (4xx);
each answer must carry an OData error body, so a client can never mistake a refusal for a
result that ignored part of its request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

ADVENT = "72fb2ffc-e9fd-5d17-a983-b1fccbb565f6"
CUSTOMER = "CustomersV2(dataAreaId='usmf',CustomerAccount='ACC-01001-ADVENT')"

DATAVERSE: list[tuple[str, str, int]] = [
    ("GET", "accounts?fetchXml=<fetch><entity name='account'/></fetch>", 501),
    ("GET", "accounts?sql=SELECT name FROM account", 501),
    ("GET", f"accounts?savedQuery={ADVENT}", 501),
    ("GET", f"accounts?userQuery={ADVENT}", 501),
    ("GET", "accounts?$search=bike", 501),
    ("GET", "accounts?$compute=name as n", 501),
    ("GET", "accounts?$filter=name eq @p1&@p1='x'", 501),
    ("GET", "accounts?$filter=tolower(name) eq 'x'", 501),
    ("GET", "accounts?$filter=contact_customer_accounts/any(c: c.lastname eq 'x')", 501),
    (
        "GET",
        "accounts?$filter=Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=3)",
        501,
    ),
    (
        "GET",
        "accounts?$filter=Microsoft.Dynamics.CRM.Under(PropertyName='accountid',PropertyValue='x')",
        501,
    ),
    ("GET", "accounts?$expand=*", 501),
    ("GET", "accounts?$expand=transactioncurrencyid($expand=x)", 501),
    ("GET", "accounts?$expand=transactioncurrencyid($top=1)", 501),
    ("GET", f"accounts({ADVENT})/name", 501),
    ("GET", f"accounts({ADVENT})/$ref", 501),
    ("GET", f"accounts({ADVENT})/transactioncurrencyid", 501),
    ("POST", "BulkDelete", 501),
    ("GET", "RetrieveTotalRecordCount(EntityNames=['account'])", 501),
    ("GET", "RetrieveVersion()", 501),
    ("GET", "GlobalOptionSetDefinitions", 501),
    ("GET", "RelationshipDefinitions", 501),
    ("GET", "EntityDefinitions(LogicalName='account')/OneToManyRelationships", 501),
    ("GET", "EntityDefinitions(LogicalName='account')/ManyToManyRelationships", 501),
    ("POST", "accounts/Microsoft.Dynamics.CRM.DeleteMultiple", 501),
    ("POST", "$batch", 415),  # a JSON-format batch (OData 4.01): {} as application/json
    ("GET", "accounts?$deltatoken=1", 400),
    ("GET", "accounts/$count?$deltatoken=1", 501),
    ("GET", "accounts?$filter=name eq 'x'&$deltatoken=1", 400),
    ("GET", "accounts?$skip=1", 400),
    ("GET", "accounts?$format=atom", 400),
    ("GET", "accounts?colour=red", 400),
    ("GET", "accounts?$levels=2", 501),
    ("GET", "accounts?$count=yes", 400),
    ("GET", f"accounts({ADVENT})?$filter=name eq 'x'", 400),
    ("GET", f"accounts({ADVENT})?$top=1", 400),
    ("GET", "accounts/$count?$top=1", 400),
    ("GET", "EntityDefinitions?$top=1", 400),
    ("GET", "EntityDefinitions?$orderby=LogicalName", 400),
    ("GET", "EntityDefinitions(LogicalName='account')/Attributes?$expand=OptionSet", 400),
    ("GET", "WhoAmI?$select=UserId", 400),
    ("POST", "$metadata", 405),
    ("GET", "$metadata?$top=1", 400),
    ("DELETE", "", 405),
    ("OPTIONS", "accounts", 405),
]
FINOPS: list[tuple[str, str, int]] = [
    ("GET", "CustomersV2?$apply=groupby((CustomerGroupId))", 501),
    ("GET", "CustomersV2?$search=bike", 501),
    ("GET", "CustomersV2?$filter=year(CreditLimit) eq 1", 501),
    ("GET", "CustomersV2?$expand=Nothing", 400),
    ("GET", "CustomersV2?$expand=*", 501),
    ("GET", "CustomersV2?company=usmf", 400),
    ("GET", f"{CUSTOMER}?$filter=CustomerGroupId eq '10'", 400),
    ("GET", f"{CUSTOMER}/OrganizationName", 404),
    ("GET", "CustomersV2/$count?$top=1", 400),
    ("POST", "$batch", 415),
    ("POST", "$metadata", 405),
]


@pytest.fixture(scope="module")
def clients(bearer: Callable[..., str]) -> Iterator[dict[str, httpx.Client]]:
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", seed / "erp", alternate_keys=DEMO_ALTERNATE_KEYS) as sb:
        headers = {"Authorization": f"Bearer {bearer(sb)}", "Accept": "application/json"}
        with (
            httpx.Client(base_url=f"{sb.crm_url}/api/data/v9.2/", headers=headers) as crm,
            httpx.Client(base_url=f"{sb.erp_url}/data/", headers=headers) as erp,
        ):
            yield {"crm": crm, "erp": erp}


def _refused(client: httpx.Client, method: str, url: str, status: int) -> None:
    answer = client.request(method, url, json={} if method == "POST" else None)
    assert answer.status_code == status, (url, answer.status_code, answer.text)
    error = answer.json()["error"]
    assert error["code"] and error["message"], url


@pytest.mark.parametrize(("method", "url", "status"), DATAVERSE)
def test_dataverse_refuses_what_it_does_not_implement(
    clients: dict[str, httpx.Client], method: str, url: str, status: int
) -> None:
    _refused(clients["crm"], method, url, status)


@pytest.mark.parametrize(("method", "url", "status"), FINOPS)
def test_finops_refuses_what_it_does_not_implement(
    clients: dict[str, httpx.Client], method: str, url: str, status: int
) -> None:
    _refused(clients["erp"], method, url, status)
