"""The sandbox servers, driven with raw httpx requests as a connector would send them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2c_etl.config import SANDBOX_SECRET_ENV
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.server import Sandbox

DV = "/api/data/v9.2/"
FO = "/data/"
SECRET = "sandbox-secret"
USD = "e41e0412-30b0-5558-9163-aba72f877897"


@pytest.fixture(scope="module")
def seeds(keyed_seed: Path) -> Path:
    """The demo company, keyed by account number (see `keyed_demo`)."""
    return keyed_seed


@pytest.fixture(scope="module")
def sandbox(seeds: Path) -> Iterator[Sandbox]:
    with Sandbox(seeds / "crm", seeds / "erp") as sb:
        yield sb


@pytest.fixture(autouse=True)
def no_faults(sandbox: Sandbox) -> Iterator[None]:
    yield
    sandbox.faults.update(Faults().as_dict())


def token_form(secret: str = SECRET) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": "p2c-sandbox",
        "client_secret": secret,
        "scope": "https://org.crm.dynamics.com/.default",
    }


def get_token(sb: Sandbox, secret: str = SECRET) -> httpx.Response:
    return httpx.post(sb.token_url, data=token_form(secret))


def admin(sb: Sandbox) -> dict[str, str]:
    """The headers `/_sandbox/*` needs: the same bearer token as the APIs."""
    return {"Authorization": f"Bearer {get_token(sb).json()['access_token']}"}


@pytest.fixture(scope="module")
def crm(sandbox: Sandbox) -> Iterator[httpx.Client]:
    token = get_token(sandbox).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "OData-MaxVersion": "4.0"}
    with httpx.Client(base_url=sandbox.crm_url + DV, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def erp(sandbox: Sandbox) -> Iterator[httpx.Client]:
    token = get_token(sandbox).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=sandbox.erp_url + FO, headers=headers) as client:
        yield client


def new_id() -> str:
    return str(uuid.uuid4())


def account(number: str, **values: Any) -> dict[str, Any]:
    return {"accountnumber": number, "name": f"Account {number}", **values}


# --- multipart answers of $batch, read the way a client reads them ---------------------------


@dataclass
class Part:
    status: int
    content_id: str | None
    body: str


def read_batch(response: httpx.Response) -> list[Part | list[Part]]:
    return _read_multipart(response.headers["content-type"], response.content.decode())


def _read_multipart(content_type: str, text: str) -> list[Part | list[Part]]:
    boundary = content_type.split("boundary=")[1].strip()
    items: list[Part | list[Part]] = []
    for chunk in text.split("--" + boundary)[1:]:
        if chunk.startswith("--"):
            break
        head, _, rest = chunk.strip("\r\n").partition("\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n"))
        if headers["Content-Type"].startswith("multipart/mixed"):
            nested = _read_multipart(headers["Content-Type"], rest)
            items.append([p for p in nested if isinstance(p, Part)])
        else:
            status_line, _, answer = rest.partition("\r\n")
            body = answer.partition("\r\n\r\n")[2]
            items.append(Part(int(status_line.split()[1]), headers.get("Content-ID"), body))
    return items


def batch_body(boundary: str, items: list[str | tuple[str, list[str]]]) -> str:
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(f"--{boundary}\r\n{item}")
        else:
            name, requests = item
            nested = "".join(f"--{name}\r\n{r}" for r in requests) + f"--{name}--\r\n"
            header = f"Content-Type: multipart/mixed; boundary={name}\r\n\r\n"
            parts.append(f"--{boundary}\r\n{header}{nested}")
    return "".join(parts) + f"--{boundary}--\r\n"


def http_part(method: str, url: str, body: dict[str, Any] | None = None, cid: str = "") -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    head += f"Content-ID: {cid}\r\n" if cid else ""
    request = f"{method} {url} HTTP/1.1\r\n"
    if body is None:
        return f"{head}\r\n{request}\r\n"
    payload = json.dumps(body)
    return f"{head}\r\n{request}Content-Type: application/json\r\n\r\n{payload}\r\n"


# --- token ------------------------------------------------------------------------------------


def test_token_endpoint_and_bearer_check(sandbox: Sandbox, crm: httpx.Client) -> None:
    ok = get_token(sandbox)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer" and ok.json()["expires_in"] == 3599
    erp_token = httpx.post(
        f"{sandbox.erp_url}/{sandbox.tenant}/oauth2/v2.0/token", data=token_form()
    )
    assert erp_token.status_code == 200
    wrong = get_token(sandbox, secret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert SECRET not in wrong.text
    missing = httpx.get(f"{sandbox.crm_url}{DV}accounts")
    assert missing.status_code == 401 and "message" in missing.json()["error"]
    bogus = httpx.get(f"{sandbox.erp_url}{FO}CustomersV2", headers={"Authorization": "Bearer x"})
    assert bogus.status_code == 401
    # a token of the one server is valid on the other
    token = erp_token.json()["access_token"]
    other = httpx.get(f"{sandbox.crm_url}{DV}uoms", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 200 and other.headers["OData-Version"] == "4.0"


# --- reading ----------------------------------------------------------------------------------


def test_paging_returns_every_record_exactly_once(sandbox: Sandbox, crm: httpx.Client) -> None:
    seen: list[str] = []
    url: str | None = "contacts?$select=lastname"
    pages = 0
    while url is not None:
        response = crm.get(url, headers={"Prefer": "odata.maxpagesize=7"})
        assert response.status_code == 200
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=7"
        body = response.json()
        assert len(body["value"]) <= 7
        seen += [r["contactid"] for r in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    expected = [r["contactid"] for r in sandbox.records("crm", "contacts")]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen)) == 62
    assert pages == 9


def test_finops_pages_with_top_and_count(erp: httpx.Client) -> None:
    first = erp.get(
        "CDSSalesOrderLines?$top=30&$count=true", headers={"Prefer": "odata.maxpagesize=20"}
    ).json()
    assert first["@odata.count"] == 68 and len(first["value"]) == 20
    second = erp.get(first["@odata.nextLink"]).json()
    assert len(second["value"]) == 10 and "@odata.nextLink" not in second


def test_select_and_filter(sandbox: Sandbox, crm: httpx.Client) -> None:
    records = sandbox.records("crm", "accounts")
    selected = crm.get("accounts?$select=name,accountnumber").json()["value"]
    assert set(selected[0]) == {"@odata.etag", "accountid", "name", "accountnumber"}

    def ids(query: str) -> set[str]:
        response = crm.get("accounts", params={"$filter": query, "$select": "name"})
        assert response.status_code == 200, response.text
        return {r["accountid"] for r in response.json()["value"]}

    usa = {"usa", "united states"}
    expected = {
        r["accountid"]
        for r in records
        if r["statecode"] == 0 and (r["address1_country"] or "").lower() in usa
    }
    query = "statecode eq 0 and (address1_country eq 'USA' or address1_country eq 'united states')"
    assert ids(query) == expected and expected
    no_country = {r["accountid"] for r in records if r["address1_country"] is None}
    assert ids("address1_country eq null") == no_country
    assert ids("not (address1_country eq null)") == {r["accountid"] for r in records} - no_country
    assert ids("statecode ne 0") == {r["accountid"] for r in records if r["statecode"] != 0}
    big = {r["accountid"] for r in records if (r["creditlimit"] or 0) >= Decimal("50000")}
    assert ids("creditlimit ge 50000.00") == big
    quoted = new_id()
    crm.patch(f"accounts({quoted})", json=account("Q-1", name="O'Brien Bikes"))
    assert ids("name eq 'O''Brien Bikes'") == {quoted}
    assert ids(f"accountid eq {quoted}") == {quoted}
    assert crm.get("accounts?$select=nope").status_code == 400
    assert crm.get("accounts?$filter=nope eq 1").status_code == 400
    assert crm.get("accounts?$filter=name eq").status_code == 400


def test_skip_is_refused_by_dataverse_and_honoured_by_finops(
    sandbox: Sandbox, crm: httpx.Client, erp: httpx.Client
) -> None:
    refused = crm.get("accounts?$skip=1")
    assert refused.status_code == 400 and "$skip" in refused.json()["error"]["message"]
    numbers = sorted(
        r["CustomerAccount"].lower()
        for r in sandbox.records("erp", "CustomersV2")
        if r["dataAreaId"] == "usmf"
    )
    skipped = erp.get("CustomersV2?$skip=3&$top=5&$orderby=CustomerAccount&$select=CustomerAccount")
    assert [r["CustomerAccount"].lower() for r in skipped.json()["value"]] == numbers[3:8]
    natural = erp.get("CustomersV2?$skip=35&$select=CustomerAccount").json()["value"]
    assert len(natural) == len(numbers) - 35


def test_finops_filters_enum_literals_and_dates(sandbox: Sandbox, erp: httpx.Client) -> None:
    enum = "IsExternallyMaintained eq Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    yes = erp.get("CustomersV2", params={"$filter": enum}).json()["value"]
    assert yes and all(r["IsExternallyMaintained"] == "Yes" for r in yes)
    invoices = erp.get(
        "ExternallyMaintainedCustomerSalesInvoiceHeaders",
        params={"$filter": "InvoiceDate eq 2026-10-08T12:00:00Z"},
    ).json()["value"]
    assert invoices and all(r["InvoiceDate"] == "2026-10-08T12:00:00Z" for r in invoices)


# --- Dataverse writes -------------------------------------------------------------------------


def test_patch_upserts_by_id_and_alternate_key(sandbox: Sandbox, crm: httpx.Client) -> None:
    guid = new_id()
    created = crm.patch(f"accounts({guid})", json=account("UP-1"))
    assert created.status_code == 204
    assert created.headers["OData-EntityId"].endswith(f"{DV}accounts({guid})")
    assert crm.patch(f"accounts({guid})", json={"name": "Renamed"}).status_code == 204
    assert crm.get(f"accounts({guid})?$select=name").json()["name"] == "Renamed"

    by_key = crm.patch("accounts(accountnumber='UP-2')", json={"name": "By key"})
    assert by_key.status_code == 204
    again = crm.patch(
        "accounts(accountnumber='UP-2')",
        json={"telephone1": "555"},
        headers={"Prefer": "return=representation"},
    )
    assert again.status_code == 200 and again.json()["name"] == "By key"
    rows = [r for r in sandbox.records("crm", "accounts") if r["accountnumber"] == "UP-2"]
    assert len(rows) == 1 and rows[0]["telephone1"] == "555"

    missing = crm.patch(f"accounts({new_id()})", json={"name": "x"}, headers={"If-Match": "*"})
    assert missing.status_code == 404
    exists = crm.patch(f"accounts({guid})", json={"name": "x"}, headers={"If-None-Match": "*"})
    assert exists.status_code == 412
    fresh = crm.patch(
        "accounts(accountnumber='UP-3')", json={"name": "New"}, headers={"If-None-Match": "*"}
    )
    assert fresh.status_code == 204
    assert crm.delete(f"accounts({guid})").status_code == 204
    assert crm.get(f"accounts({guid})").status_code == 404


def test_post_and_lookups(sandbox: Sandbox, crm: httpx.Client) -> None:
    parent = crm.post("accounts", json=account("LK-1"), headers={"Prefer": "return=representation"})
    assert parent.status_code == 201
    parent_id = parent.json()["accountid"]
    contact = {
        "msdynce_contactnumber": "CON-LK-1",
        "lastname": "Lookup",
        "parentcustomerid_account@odata.bind": f"/accounts({parent_id})",
        "transactioncurrencyid@odata.bind": f"{crm.base_url}transactioncurrencies({USD})",
    }
    created = crm.post("contacts", json=contact)
    assert created.status_code == 204
    contact_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    stored = next(r for r in sandbox.records("crm", "contacts") if r["contactid"] == contact_id)
    assert stored["_parentcustomerid_value"] == parent_id
    assert stored["_transactioncurrencyid_value"] == USD
    by_key = {"parentcustomerid_account@odata.bind": "/accounts(accountnumber='LK-1')"}
    assert crm.patch(f"contacts({contact_id})", json=by_key).status_code == 204

    dangling = {"parentcustomerid_account@odata.bind": f"/accounts({new_id()})"}
    assert crm.patch(f"contacts({contact_id})", json=dangling).status_code == 400
    raw_lookup = crm.patch(f"contacts({contact_id})", json={"_parentcustomerid_value": parent_id})
    assert raw_lookup.status_code == 400
    unknown = crm.post("accounts", json=account("LK-2", colour="red"))
    assert unknown.status_code == 400
    assert "Invalid property 'colour'" in unknown.json()["error"]["message"]
    too_long = crm.post("accounts", json=account("LK-3", name="x" * 161))
    assert too_long.status_code == 400


def test_upsert_multiple_is_all_or_nothing(sandbox: Sandbox, crm: httpx.Client) -> None:
    def targets(*names: str) -> dict[str, Any]:
        kind = {"@odata.type": "Microsoft.Dynamics.CRM.account"}
        return {"Targets": [kind | account(f"UM-{i}", name=n) for i, n in enumerate(names)]}

    sandbox.faults.reject = {"name": "Refuse Me"}
    failed = crm.post(
        "accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json=targets("A", "Refuse Me", "C")
    )
    assert failed.status_code == 400
    message = failed.json()["error"]["message"]
    assert "UM-1" in message and "Refuse Me" in message
    numbers = {r["accountnumber"] for r in sandbox.records("crm", "accounts")}
    assert not {"UM-0", "UM-1", "UM-2"} & numbers

    sandbox.faults.reject = {}
    ok = crm.post("accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json=targets("A", "B", "C"))
    assert ok.status_code == 204 and ok.content == b""  # UpsertMultiple answers 204
    ids = {r["accountnumber"]: r["accountid"] for r in sandbox.records("crm", "accounts")}
    again = crm.post("accounts/Microsoft.Dynamics.CRM.UpsertMultiple", json=targets("A2", "B", "C"))
    assert again.status_code == 204
    records = sandbox.records("crm", "accounts")
    assert {r["accountnumber"]: r["accountid"] for r in records} == ids
    names = {r["accountnumber"]: r["name"] for r in records}
    assert names["UM-0"] == "A2"
    twice = crm.post("accounts/Microsoft.Dynamics.CRM.CreateMultiple", json=targets("A"))
    assert twice.status_code == 400
    assert sandbox.stats()["crm"]["requests"]["POST accounts/UpsertMultiple"] == 3


# --- F&O writes -------------------------------------------------------------------------------


def test_finops_composite_key_with_a_quote(sandbox: Sandbox, erp: httpx.Client) -> None:
    customer = {"CustomerAccount": "O'Brien", "CustomerGroupId": "10", "OrganizationName": "OB"}
    created = erp.post("CustomersV2", json=customer)
    assert created.status_code == 201 and created.json()["dataAreaId"] == "usmf"
    assert erp.post("CustomersV2", json=customer).status_code == 400
    url = "CustomersV2(dataAreaId='usmf',CustomerAccount='O''Brien')"
    assert erp.get(url).json()["OrganizationName"] == "OB"
    encoded = "CustomersV2(dataAreaId=%27usmf%27,CustomerAccount=%27O%27%27Brien%27)"
    assert erp.patch(encoded, json={"OrganizationName": "O'Brien Ltd"}).status_code == 204
    assert erp.get(url + "?$select=OrganizationName").json()["OrganizationName"] == "O'Brien Ltd"
    assert erp.get("CustomersV2(CustomerAccount='O''Brien')").status_code == 400
    assert erp.patch(url, json={"CustomerAccount": "Other"}).status_code == 400
    assert erp.patch(url, json={"PartyType": "Robot"}).status_code == 400
    assert erp.delete(url).status_code == 204
    assert erp.get(url).status_code == 404
    assert erp.patch(url, json={"OrganizationName": "x"}).status_code == 404


def test_finops_keys_compare_like_sql_server(sandbox: Sandbox, erp: httpx.Client) -> None:
    """Case-insensitive, trailing spaces ignored: one record however its key is spelt."""
    customer = {"CustomerAccount": "ACC-FOLD-1", "CustomerGroupId": "10"}
    assert erp.post("CustomersV2", json=customer).status_code == 201
    for spelling in ("acc-fold-1", "acc-fold-1 ", "ACC-FOLD-1  "):
        twin = erp.post("CustomersV2", json={**customer, "CustomerAccount": spelling})
        assert twin.status_code == 400 and "already exists" in twin.text, spelling
    url = "CustomersV2(dataAreaId='USMF',CustomerAccount='acc-fold-1 ')"
    assert erp.get(url).json()["CustomerAccount"] == "ACC-FOLD-1"
    assert erp.patch(url, json={"OrganizationName": "Folded"}).status_code == 204
    assert erp.patch(url, json={"CustomerAccount": "Acc-Fold-1"}).status_code == 204
    held = [
        r
        for r in sandbox.records("erp", "CustomersV2")
        if r["CustomerAccount"].rstrip().lower() == "acc-fold-1"
    ]
    assert [(r["CustomerAccount"], r["OrganizationName"]) for r in held] == [
        ("ACC-FOLD-1", "Folded")
    ]
    assert erp.delete(url).status_code == 204


def test_finops_holds_1900_01_01_as_no_date_and_shows_no_date_as_it(
    sandbox: Sandbox, erp: httpx.Client
) -> None:
    """F&O's dateNull: a date written as 1900-01-01 is empty; an empty date reads as it."""
    quote = {
        "SalesQuotationNumber": "Q-DATENULL",
        "RequestingCustomerAccountNumber": "ACC-01001-ADVENT",
        "CurrencyCode": "USD",
        "RequestedShippingDate": "1900-01-01T12:00:00Z",
        "SalesQuotationExpiryDate": None,
    }
    assert erp.post("CDSSalesQuotationHeaders", json=quote).status_code == 201
    (held,) = [
        r
        for r in sandbox.records("erp", "CDSSalesQuotationHeaders")
        if r["SalesQuotationNumber"] == "Q-DATENULL"
    ]
    assert held["RequestedShippingDate"] is None and held["SalesQuotationExpiryDate"] is None
    url = "CDSSalesQuotationHeaders(dataAreaId='usmf',SalesQuotationNumber='Q-DATENULL')"
    one = erp.get(url).json()
    page = erp.get(
        "CDSSalesQuotationHeaders", params={"$filter": "SalesQuotationNumber eq 'Q-DATENULL'"}
    ).json()["value"]
    for shown in (one, *page):
        assert shown["RequestedShippingDate"] == "1900-01-01T12:00:00Z"
        assert shown["SalesQuotationExpiryDate"] == "1900-01-01T12:00:00Z"
    assert erp.delete(url).status_code == 204


def test_cross_company(sandbox: Sandbox, erp: httpx.Client) -> None:
    every = sandbox.records("erp", "SellableReleasedProducts")
    default = erp.get("SellableReleasedProducts").json()["value"]
    assert {r["dataAreaId"] for r in default} == {"usmf"}
    assert len(default) == sum(r["dataAreaId"] == "usmf" for r in every)
    cross = erp.get("SellableReleasedProducts?cross-company=true").json()["value"]
    assert len(cross) == len(every)
    demf = next(r for r in every if r["dataAreaId"] == "demf")
    url = f"SellableReleasedProducts(dataAreaId='demf',ProductNumber='{demf['ProductNumber']}')"
    assert erp.get(url).status_code == 404
    assert erp.get(url + "?cross-company=true").status_code == 200
    only = erp.get(
        "SellableReleasedProducts?cross-company=true&$filter=dataAreaId eq 'demf'"
    ).json()["value"]
    assert {r["dataAreaId"] for r in only} == {"demf"}


# --- $batch -----------------------------------------------------------------------------------


def test_dataverse_batch_rolls_back_only_the_failing_changeset(
    sandbox: Sandbox, crm: httpx.Client
) -> None:
    body = batch_body(
        "batch_1",
        [
            (
                "changeset_a",
                [
                    http_part("POST", f"{crm.base_url}accounts", account("BA-1"), cid="1"),
                    http_part("PATCH", "accounts(accountnumber='BA-2')", {"name": "Two"}, cid="2"),
                    http_part("PATCH", "$1", {"telephone1": "555 0199"}, cid="3"),
                ],
            ),
            (
                "changeset_b",
                [
                    http_part("POST", f"{DV}accounts", account("BB-1"), cid="1"),
                    http_part("PATCH", "accounts(accountnumber='BB-2')", {"bogus": 1}, cid="2"),
                ],
            ),
            http_part("GET", "accounts?$select=name&$filter=accountnumber%20eq%20'BA-1'"),
        ],
    )
    headers = {
        "Content-Type": "multipart/mixed; boundary=batch_1",
        "Prefer": "odata.continue-on-error",
    }
    response = crm.post("$batch", content=body, headers=headers)
    assert response.status_code == 200
    first, second, read = read_batch(response)
    assert isinstance(first, list) and [p.status for p in first] == [204, 204, 204]
    assert isinstance(second, Part) and second.status == 400 and second.content_id == "2"
    assert isinstance(read, Part) and read.status == 200
    assert len(json.loads(read.body)["value"]) == 1
    phones = {r["accountnumber"]: r["telephone1"] for r in sandbox.records("crm", "accounts")}
    assert phones["BA-1"] == "555 0199" and "BA-2" in phones
    assert not {"BB-1", "BB-2"} & set(phones)
    assert sandbox.stats()["crm"]["batch_operations"]["POST accounts"] == 2


def test_finops_batch_answers_every_request_of_a_failed_changeset(
    sandbox: Sandbox, erp: httpx.Client
) -> None:
    def customer(number: str) -> dict[str, Any]:
        return {"CustomerAccount": number, "CustomerGroupId": "10"}

    body = batch_body(
        "b",
        [
            ("c1", [http_part("POST", "CustomersV2", customer("FB-1"), cid="1")]),
            (
                "c2",
                [
                    http_part("POST", "CustomersV2", customer("FB-2"), cid="1"),
                    http_part("POST", "CustomersV2", customer("FB-1"), cid="2"),
                ],
            ),
        ],
    )
    response = erp.post(
        "$batch", content=body, headers={"Content-Type": "multipart/mixed; boundary=b"}
    )
    kept, failed = read_batch(response)
    assert isinstance(kept, list) and [p.status for p in kept] == [201]
    assert isinstance(failed, list) and [p.status for p in failed] == [424, 400]
    numbers = {r["CustomerAccount"] for r in sandbox.records("erp", "CustomersV2")}
    assert "FB-1" in numbers and "FB-2" not in numbers


def test_batch_limit(crm: httpx.Client) -> None:
    body = batch_body("b", [http_part("GET", "uoms?$top=1")] * 1001)
    response = crm.post(
        "$batch", content=body, headers={"Content-Type": "multipart/mixed; boundary=b"}
    )
    assert response.status_code == 400


# --- faults -----------------------------------------------------------------------------------


def test_throttle_answers_429_with_retry_after(sandbox: Sandbox, crm: httpx.Client) -> None:
    sandbox.faults.throttle_window = 3600  # five requests fit in it on the slowest machine
    sandbox.faults.throttle_requests = 3
    statuses = [crm.get("uoms?$top=1") for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert 1 <= int(statuses[3].headers["Retry-After"]) <= 3600
    assert get_token(sandbox).status_code == 200
    assert httpx.get(f"{sandbox.crm_url}/_sandbox/stats", headers=admin(sandbox)).is_success
    assert sandbox.stats()["crm"]["status"]["429"] >= 2


def test_counted_faults_refuse_the_same_requests_on_any_machine(
    sandbox: Sandbox, crm: httpx.Client, erp: httpx.Client
) -> None:
    sandbox.faults.update({"throttle_every": 3, "fail_every": 4, "retry_after": 0})
    codes = [crm.get("uoms?$top=1") for _ in range(8)]
    assert [r.status_code for r in codes] == [200, 200, 429, 503, 200, 429, 200, 503]
    assert {r.headers["Retry-After"] for r in codes if r.status_code != 200} == {"0"}
    assert erp.get("CustomersV2?$top=1").status_code == 200  # each server counts its own
    sandbox.faults.update({"throttle_every": 0, "fail_every": 0, "throttle_next": 2})
    sandbox.faults.fail_next = 1
    codes = [r.status_code for r in (crm.get("uoms?$top=1"), erp.get("CustomersV2?$top=1"))]
    codes += [crm.get("uoms?$top=1").status_code, erp.get("CustomersV2?$top=1").status_code]
    assert codes == [429, 429, 503, 200]  # the next n, both servers together
    assert sandbox.faults.throttle_next == sandbox.faults.fail_next == 0


def test_the_admin_endpoints_need_the_token(sandbox: Sandbox) -> None:
    for method, path in (("GET", "stats"), ("GET", "faults"), ("POST", "faults")):
        url = f"{sandbox.crm_url}/_sandbox/{path}"
        bare = httpx.request(method, url, json={"error_rate": 1.0})
        assert bare.status_code == 401 and "WWW-Authenticate" in bare.headers, path
        wrong = httpx.request(method, url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
    assert httpx.post(f"{sandbox.erp_url}/_sandbox/reset-stats").status_code == 401
    assert sandbox.faults.error_rate == 0.0  # nothing was switched on


def test_error_rate_gives_503s_set_over_http(sandbox: Sandbox, erp: httpx.Client) -> None:
    changed = httpx.post(
        f"{sandbox.erp_url}/_sandbox/faults",
        json={"error_rate": 0.5, "seed": 7},
        headers=admin(sandbox),
    )
    assert changed.status_code == 200 and sandbox.faults.error_rate == 0.5
    answers = [erp.get("CustomersV2?$top=1") for _ in range(30)]
    failed = [r for r in answers if r.status_code == 503]
    assert 0 < len(failed) < 30 and all(r.headers["Retry-After"] == "1" for r in failed)
    assert {r.status_code for r in answers} == {200, 503}
    bad = httpx.post(
        f"{sandbox.erp_url}/_sandbox/faults", json={"error_rate": "often"}, headers=admin(sandbox)
    )
    assert bad.status_code == 400


def test_page_delay(sandbox: Sandbox, crm: httpx.Client) -> None:
    sandbox.faults.page_delay = 0.2
    started = time.monotonic()
    assert crm.get("uoms").status_code == 200
    assert time.monotonic() - started >= 0.2


# --- metadata ---------------------------------------------------------------------------------


def test_entity_definitions(crm: httpx.Client) -> None:
    query = "EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$expand=Keys"
    definitions = {d["EntitySetName"]: d for d in crm.get(query).json()["value"]}
    assert len(definitions) == 13
    assert definitions["accounts"]["PrimaryIdAttribute"] == "accountid"
    assert definitions["transactioncurrencies"]["LogicalName"] == "transactioncurrency"
    assert definitions["quotedetails"]["Keys"][0]["KeyAttributes"] == ["quoteid", "sequencenumber"]
    one = crm.get("EntityDefinitions(LogicalName='account')").json()
    assert one["EntitySetName"] == "accounts"
    attributes = crm.get(
        "EntityDefinitions(LogicalName='quotedetail')/Attributes?$select=LogicalName,AttributeType"
    ).json()["value"]
    types = {a["LogicalName"]: a["AttributeType"] for a in attributes}
    assert types["quoteid"] == "Lookup" and types["quotedetailid"] == "Uniqueidentifier"
    assert "Decimal" in types.values() or "Money" in types.values()


def test_finops_metadata(erp: httpx.Client) -> None:
    document = ET.fromstring(erp.get("$metadata").content)
    edm = "{http://docs.oasis-open.org/odata/ns/edm}"
    sets = {s.get("Name") for s in document.iter(f"{edm}EntitySet")}
    assert "CustomersV2" in sets and len(sets) == 9
    customer = next(t for t in document.iter(f"{edm}EntityType") if t.get("Name") == "CustomerV2")
    keys = [r.get("Name") for r in customer.iter(f"{edm}PropertyRef")]
    assert keys == ["dataAreaId", "CustomerAccount"]
    types = {p.get("Name"): p.get("Type") for p in customer.iter(f"{edm}Property")}
    assert types["CreditLimit"] == "Edm.Decimal"


# --- values -----------------------------------------------------------------------------------


def test_decimals_round_trip_exactly(
    sandbox: Sandbox, crm: httpx.Client, erp: httpx.Client
) -> None:
    guid = new_id()
    raw = '{"accountnumber": "DEC-1", "name": "Decimal", "creditlimit": 12345678901234.5678}'
    written = crm.patch(
        f"accounts({guid})", content=raw, headers={"Content-Type": "application/json"}
    )
    assert written.status_code == 204
    read = crm.get(f"accounts({guid})?$select=creditlimit")
    assert '"creditlimit":12345678901234.5678' in read.text
    stored = next(r for r in sandbox.records("crm", "accounts") if r["accountid"] == guid)
    assert stored["creditlimit"] == Decimal("12345678901234.5678")
    as_text = crm.patch(f"accounts({guid})", json={"creditlimit": "0.1000"})
    assert as_text.status_code == 204
    assert '"creditlimit":0.1000' in crm.get(f"accounts({guid})?$select=creditlimit").text
    assert crm.patch(f"accounts({guid})", json={"creditlimit": "1.23456"}).status_code == 400

    body = (
        '{"CustomerAccount": "DEC-1", "CustomerGroupId": "1", "CreditLimit": 98765432109876.54321}'
    )
    created = erp.post("CustomersV2", content=body, headers={"Content-Type": "application/json"})
    assert '"CreditLimit":98765432109876.543210' in created.text  # decimal(32,6)


def test_dates_by_service(crm: httpx.Client, erp: httpx.Client) -> None:
    order = crm.get(
        "salesorders?$select=requestdeliveryby&$filter=requestdeliveryby ne null&$top=1"
    )
    assert len(order.json()["value"][0]["requestdeliveryby"]) == 10
    invoice = erp.get("ExternallyMaintainedCustomerSalesInvoiceHeaders?$top=1").json()["value"][0]
    assert invoice["InvoiceDate"].endswith("T12:00:00Z")


# --- seeding, admin, TLS ----------------------------------------------------------------------


def test_seed_keeps_other_columns_and_serves_sets_without_a_file(tmp_path: Path) -> None:
    crm = tmp_path / "crm"
    crm.mkdir()
    row = {"uomscheduleid": "0C1D0000-0000-0000-0000-000000000001", "name": "Unit", "note": 1.50}
    (crm / "uomschedules.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    sb = Sandbox(crm, None)
    [record] = sb.records("crm", "uomschedules")
    assert record["uomscheduleid"] == "0c1d0000-0000-0000-0000-000000000001"
    assert record["note"] == Decimal("1.5")
    assert sb.records("crm", "accounts") == [] and sb.records("erp", "CustomersV2") == []


def test_admin_stats_and_reset(sandbox: Sandbox, crm: httpx.Client) -> None:
    crm.get("uoms")
    stats = httpx.get(f"{sandbox.crm_url}/_sandbox/stats", headers=admin(sandbox)).json()
    assert stats == sandbox.stats() and stats["crm"]["requests"]["GET uoms"] >= 1
    assert stats["crm"]["records_read"] >= 8
    reset = httpx.post(f"{sandbox.erp_url}/_sandbox/reset-stats", headers=admin(sandbox)).json()
    assert reset["crm"]["requests"] == {} and reset["erp"]["records_written"] == 0


def test_tls(seeds: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", key, "-out", cert], check=True, capture_output=True
    )
    with Sandbox(None, seeds / "erp", tls_cert=cert, tls_key=key) as sb:
        assert sb.erp_url.startswith("https://")
        token = httpx.post(sb.token_url, data=token_form(), verify=False).json()["access_token"]
        answer = httpx.get(
            f"{sb.erp_url}{FO}CustomersV2?$top=1",
            headers={"Authorization": f"Bearer {token}"},
            verify=False,
        )
        assert answer.status_code == 200


def test_serve_prints_its_urls_and_stops_on_sigterm(seeds: Path) -> None:
    erp = str(seeds / "erp")
    code = (
        f"from pathlib import Path; from p2c_etl.sandbox import serve; serve(None, Path({erp!r}))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(3)]
        token_url = lines[2].split()[-1]
        assert lines[1].split()[-1].endswith("/data/") and "secret" not in "".join(lines)
        assert httpx.post(token_url, data=token_form()).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0  # a bound for a loaded machine, not a timing


SERVE = [sys.executable, "-m", "p2c_etl", "sandbox", "serve", "--crm-port", "0", "--erp-port", "0"]
PLAIN_ENV = {k: v for k, v in os.environ.items() if k != SANDBOX_SECRET_ENV}  # sandbox-secret


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SERVE, *args], stderr=subprocess.PIPE, text=True, env=PLAIN_ENV)


def _account_keys(process: subprocess.Popen[str]) -> list[list[str]]:
    """The alternate keys `p2c sandbox serve` declares on accounts; stops it."""
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(3)]
        root, token_url = lines[0].split()[-1], lines[2].split()[-1]
        token = httpx.post(token_url, data=token_form()).json()["access_token"]
        keys = httpx.get(
            root + "EntityDefinitions(LogicalName='account')/Keys",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert keys.status_code == 200, keys.text
        return [k["KeyAttributes"] for k in keys.json()["value"]]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0  # a bound for a loaded machine, not a timing


def test_serve_cli_declares_no_account_number_key_for_the_demo_data(tmp_path: Path) -> None:
    """`p2c sandbox serve` of the demo company serves accounts without an alternate key (it
    plants one account number twice); another folder holding that is refused, naming the
    file, unless `--no-alternate-key accounts` says the tenant has none."""
    assert _account_keys(_serve()) == []
    copy = tmp_path / "crm"
    shutil.copytree(demo_fixtures_dir() / "crm", copy)
    refused = subprocess.run(
        [*SERVE, "--crm", str(copy)], capture_output=True, text=True, timeout=120, env=PLAIN_ENV
    )
    assert refused.returncode == 2, refused.stderr
    assert str(copy / "accounts.jsonl") in refused.stderr
    assert "alternate key accountnumber = 'ACC-01006-CONTOS'" in refused.stderr
    assert _account_keys(_serve("--crm", str(copy), "--no-alternate-key", "accounts")) == []
