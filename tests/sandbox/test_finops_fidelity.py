"""The Finance and Operations sandbox against the OData documentation, over raw HTTP (issue 14,
item 9): `<set>/$count`, `$expand` of declared navigation properties, enum types and
`MaxLength` in `$metadata`, change-set parts without `Content-ID`, pages of at most 10,000,
conditional requests."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.server import Sandbox

FO = "/data/"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
ORDER = "CDSSalesOrderHeaders(dataAreaId='usmf',SalesOrderNumber='SO-2010')"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(None, demo_fixtures_dir() / "erp") as sb:
        yield sb


@pytest.fixture(scope="module")
def erp(sandbox: Sandbox, bearer: Callable[..., str]) -> Iterator[httpx.Client]:
    headers = {
        "Authorization": f"Bearer {bearer(sandbox, 'https://usmf.operations.dynamics.com/.default')}",
        "Accept": "application/json",
    }
    with httpx.Client(base_url=sandbox.erp_url + FO, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def metadata(erp: httpx.Client) -> ET.Element:
    return ET.fromstring(erp.get("$metadata").content)


def entity_type(metadata: ET.Element, name: str) -> ET.Element:
    return next(t for t in metadata.iter(f"{EDM}EntityType") if t.get("Name") == name)


def test_count_path(sandbox: Sandbox, erp: httpx.Client) -> None:
    every = sandbox.records("erp", "CustomersV2")
    usmf = sum(r["dataAreaId"] == "usmf" for r in every)
    answer = erp.get("CustomersV2/$count")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert answer.text == str(usmf)
    assert erp.get("CustomersV2/$count?cross-company=true").text == str(len(every))
    yes = sum(r["dataAreaId"] == "usmf" and r["IsExternallyMaintained"] == "Yes" for r in every)
    enum = "IsExternallyMaintained eq Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    assert erp.get("CustomersV2/$count", params={"$filter": enum}).text == str(yes)


def test_expand_lines_under_a_sales_order_header(
    sandbox: Sandbox, erp: httpx.Client, metadata: ET.Element
) -> None:
    header = entity_type(metadata, "CDSSalesOrderHeader")
    navs = {n.get("Name"): n.get("Type") for n in header.iter(f"{EDM}NavigationProperty")}
    lines_type = "Collection(Microsoft.Dynamics.DataEntities.CDSSalesOrderLine)"
    assert navs == {"CDSSalesOrderLines": lines_type}
    expected = sorted(
        r["LineCreationSequenceNumber"]
        for r in sandbox.records("erp", "CDSSalesOrderLines")
        if r["SalesOrderNumber"] == "SO-2010" and r["dataAreaId"] == "usmf"
    )
    one = erp.get(
        ORDER, params={"$expand": "CDSSalesOrderLines($select=LineCreationSequenceNumber)"}
    )
    assert one.status_code == 200, one.text
    lines = one.json()["CDSSalesOrderLines"]
    assert sorted(line["LineCreationSequenceNumber"] for line in lines) == expected and expected
    page = erp.get(
        "CDSSalesOrderHeaders",
        params={"$expand": "CDSSalesOrderLines", "$filter": "SalesOrderNumber eq 'SO-2010'"},
    ).json()["value"]
    assert len(page[0]["CDSSalesOrderLines"]) == len(expected)
    back = erp.get(
        "CDSSalesOrderLines",
        params={"$top": "1", "$expand": "CDSSalesOrderHeader($select=SalesOrderNumber)"},
    ).json()["value"][0]
    assert back["CDSSalesOrderHeader"]["SalesOrderNumber"] == back["SalesOrderNumber"]
    assert erp.get("CustomersV2?$expand=CDSSalesOrderLines").status_code == 400


def test_enum_properties_are_typed_by_their_enum_type(metadata: ET.Element) -> None:
    enums = {
        e.get("Name"): [m.get("Name") for m in e.iter(f"{EDM}Member")]
        for e in metadata.iter(f"{EDM}EnumType")
    }
    assert enums["NoYes"] == ["No", "Yes"]
    customer = entity_type(metadata, "CustomerV2")
    props = {p.get("Name"): p for p in customer.iter(f"{EDM}Property")}
    assert props["IsExternallyMaintained"].get("Type") == "Microsoft.Dynamics.DataEntities.NoYes"
    assert props["CustomerAccount"].get("Type") == "Edm.String"
    assert props["CustomerAccount"].get("MaxLength") == "20"
    assert props["PersonGender"].get("Type") == "Microsoft.Dynamics.DataEntities.Gender"


def test_a_changeset_part_without_content_id_is_accepted(
    sandbox: Sandbox, erp: httpx.Client
) -> None:
    request = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "POST CustomersV2 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        + json.dumps({"CustomerAccount": "NO-CID-1", "CustomerGroupId": "10"})
        + "\r\n"
    )
    body = (
        "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
        f"--c\r\n{request}--c--\r\n--b--\r\n"
    )
    answer = erp.post(
        "$batch", content=body, headers={"Content-Type": "multipart/mixed; boundary=b"}
    )
    assert answer.status_code == 200, answer.text
    assert re.findall(r"HTTP/1\.1 (\d{3})", answer.text) == ["201"]
    assert "NO-CID-1" in {r["CustomerAccount"] for r in sandbox.records("erp", "CustomersV2")}


def test_conditional_requests(erp: httpx.Client) -> None:
    assert (
        erp.post(
            "CustomersV2", json={"CustomerAccount": "ET-1", "CustomerGroupId": "10"}
        ).status_code
        == 201
    )
    url = "CustomersV2(dataAreaId='usmf',CustomerAccount='ET-1')"
    first = erp.get(url)
    tag = first.headers["ETag"]
    assert first.json()["@odata.etag"] == tag
    assert erp.get(url, headers={"If-None-Match": tag}).status_code == 304
    assert erp.patch(url, json={"OrganizationName": "Changed"}).status_code == 204
    assert (
        erp.patch(url, json={"OrganizationName": "x"}, headers={"If-Match": tag}).status_code == 412
    )
    stale = erp.delete(url, headers={"If-Match": tag})
    assert stale.status_code == 412 and "error" in stale.json()
    fresh = erp.get(url).headers["ETag"]
    assert fresh != tag
    assert erp.delete(url, headers={"If-Match": fresh}).status_code == 204


def test_top_is_served_in_pages_of_at_most_10000(
    tmp_path: Path, bearer: Callable[..., str]
) -> None:
    erp = tmp_path / "erp"
    erp.mkdir()
    rows = (
        json.dumps({"dataAreaId": "usmf", "CustomerAccount": f"C-{i:05d}", "CustomerGroupId": "10"})
        for i in range(10_005)
    )
    (erp / "CustomersV2.jsonl").write_text("\n".join(rows) + "\n")
    with Sandbox(None, erp) as sb:
        headers = {
            "Authorization": f"Bearer {bearer(sb, 'https://usmf.operations.dynamics.com/.default')}",
            "Prefer": "odata.maxpagesize=20000",
        }
        url = f"{sb.erp_url}{FO}CustomersV2?$top=10003&$select=CustomerAccount"
        first = httpx.get(url, headers=headers).json()
        assert len(first["value"]) == 10_000
        rest = httpx.get(first["@odata.nextLink"], headers=headers).json()
        assert len(rest["value"]) == 3 and "@odata.nextLink" not in rest


@pytest.mark.parametrize(
    ("account", "shown"),
    [
        ("LOC-1", "CustomerAccount='LOC-1'"),
        ("O'Brien & Co/2", "CustomerAccount='O''Brien%20%26%20Co%2F2'"),
    ],
)
def test_a_created_record_is_located_by_its_quoted_key(
    erp: httpx.Client, account: str, shown: str
) -> None:
    """`Location` and `OData-EntityId` name the new record with every key field; a key with
    characters a URL cannot carry is percent-encoded, a plain one is left as it is. Either
    address reads the record back."""
    created = erp.post("CustomersV2", json={"CustomerAccount": account, "CustomerGroupId": "10"})
    assert created.status_code == 201
    location = created.headers["Location"]
    assert location == created.headers["OData-EntityId"]
    assert location == f"{erp.base_url}CustomersV2(dataAreaId='usmf',{shown})"
    assert erp.get(location).json()["CustomerAccount"] == account


def test_a_create_that_prefers_return_minimal_is_answered_with_its_address_alone(
    erp: httpx.Client,
) -> None:
    """`Prefer: return=minimal` (OData 4.0 part 1, 8.2.8.7): 204 with `OData-EntityId`,
    `Location`, `ETag` and `Preference-Applied`, no body; the record is created all the
    same. Without the preference the record is sent back (201)."""
    record = {"CustomerAccount": "MIN-1", "CustomerGroupId": "10", "OrganizationName": "Min"}
    created = erp.post("CustomersV2", json=record, headers={"Prefer": "return=minimal"})
    assert created.status_code == 204 and created.content == b""
    assert created.headers["Preference-Applied"] == "return=minimal"
    address = created.headers["OData-EntityId"]
    assert address == created.headers["Location"]
    assert address == f"{erp.base_url}CustomersV2(dataAreaId='usmf',CustomerAccount='MIN-1')"
    read = erp.get(address)
    assert read.json()["OrganizationName"] == "Min"
    assert read.headers["ETag"] == created.headers["ETag"]
    again = erp.post("CustomersV2", json={**record, "CustomerAccount": "MIN-2"})
    assert again.status_code == 201 and again.json()["CustomerAccount"] == "MIN-2"
    assert "Preference-Applied" not in again.headers


def test_a_page_read_again_shows_every_write_since(sandbox: Sandbox, erp: httpx.Client) -> None:
    """Pages keep each record's text between reads (`Table.renders`): a record written since
    (PATCH, a change behind the service's back, a delete, a delete and create again) is
    shown as it is now, one a rolled-back change set wrote as it was, and the rest as
    before."""
    params = {"$select": "CustomerAccount,OrganizationName,CreditLimit", "cross-company": "true"}

    def page() -> dict[str, dict[str, object]]:
        answer = erp.get("CustomersV2", params=params)
        assert answer.status_code == 200, answer.text
        return {r["CustomerAccount"]: r for r in answer.json()["value"]}

    assert (
        erp.post(
            "CustomersV2", json={"CustomerAccount": "RC-1", "CustomerGroupId": "10"}
        ).status_code
        == 201
    )
    assert (
        erp.post(
            "CustomersV2", json={"CustomerAccount": "RC-2", "CustomerGroupId": "10"}
        ).status_code
        == 201
    )
    first = page()
    assert page() == first  # read again from the kept text
    url = "CustomersV2(dataAreaId='usmf',CustomerAccount='RC-1')"
    patched = {"OrganizationName": "Patched", "CreditLimit": 12.5}
    assert erp.patch(url, json=patched).status_code == 204
    parts = (  # a change set whose second part fails: the first part's write is undone
        ("CustomersV2(dataAreaId='usmf',CustomerAccount='RC-2')", "Undone"),
        ("CustomersV2(dataAreaId='usmf',CustomerAccount='NO-SUCH')", "x"),
    )
    failing = (
        "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
        + "".join(
            "--c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"PATCH {target} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
            + json.dumps({"OrganizationName": name})
            + "\r\n"
            for target, name in parts
        )
        + "--c--\r\n--b--\r\n"
    )
    batch = {"Content-Type": "multipart/mixed; boundary=b"}
    answer = erp.post("$batch", content=failing, headers=batch)
    assert answer.status_code == 200 and "404" in answer.text
    assert page()["RC-2"]["OrganizationName"] == first["RC-2"]["OrganizationName"] != "Undone"
    record = next(
        r for r in sandbox.records("erp", "CustomersV2") if r["CustomerAccount"] == "RC-2"
    )
    sandbox.plant("erp", "CustomersV2", {**record, "OrganizationName": "Planted"})
    again = page()
    assert again["RC-1"]["OrganizationName"] == "Patched"
    assert again["RC-1"]["CreditLimit"] == 12.5
    assert again["RC-2"]["OrganizationName"] == "Planted"
    assert {k: v for k, v in again.items() if k not in ("RC-1", "RC-2")} == {
        k: v for k, v in first.items() if k not in ("RC-1", "RC-2")
    }
    assert erp.delete(url).status_code == 204
    assert "RC-1" not in page()
    again_made = {"CustomerAccount": "RC-1", "CustomerGroupId": "10", "OrganizationName": "New"}
    assert erp.post("CustomersV2", json=again_made).status_code == 201
    assert page()["RC-1"]["OrganizationName"] == "New"
