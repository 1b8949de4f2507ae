"""The Dataverse sandbox against Microsoft's documentation, over raw HTTP (issue 14, items 1-8).

Each test follows one documented behaviour ("Query table definitions using the Web API",
"Query data using the Web API", "Use bulk operation messages", "Perform conditional
operations using the Web API", "Execute batch operations using the Web API", "WhoAmI
Function") and checks status, headers and body shape as a client written from those pages
would read them. No project code is used on the client side.
"""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2c_etl.errors import ConnectorError, ContractError
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

DV = "/api/data/v9.2/"
ADVENT = "72fb2ffc-e9fd-5d17-a983-b1fccbb565f6"  # account ACC-01001-ADVENT of the demo data
USD = "e41e0412-30b0-5558-9163-aba72f877897"
ALEX = "a20b45f9-c464-5024-bfd4-5e6e2683fa2f"  # contact CON-02001-SMITHA, parent ADVENT
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
LOOKUP = "@Microsoft.Dynamics.CRM.lookuplogicalname"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def sandbox(keyed_seed: Path) -> Iterator[Sandbox]:
    """The demo company, keyed by account number (see `keyed_demo`)."""
    with Sandbox(keyed_seed / "crm", None) as sb:
        yield sb


@pytest.fixture(scope="module")
def crm(sandbox: Sandbox, bearer: Callable[..., str]) -> Iterator[httpx.Client]:
    headers = {
        "Authorization": f"Bearer {bearer(sandbox)}",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "Accept": "application/json",
    }
    with httpx.Client(base_url=sandbox.crm_url + DV, headers=headers) as client:
        yield client


def odata_error(response: httpx.Response, *statuses: int) -> str:
    """The message of an OData error answer with one of `statuses`."""
    assert response.status_code in statuses, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return str(error["message"])


def new_account(crm: httpx.Client, number: str) -> str:
    created = crm.post("accounts", json={"accountnumber": number, "name": f"Account {number}"})
    assert created.status_code == 204, created.text
    return created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


# --- 1. table definitions ----------------------------------------------------------------------


def test_entity_definitions_have_the_properties_clients_select(crm: httpx.Client) -> None:
    select = (
        "LogicalName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,ObjectTypeCode,"
        "IsPrivate,ChangeTrackingEnabled,MetadataId"
    )
    answer = crm.get(
        "EntityDefinitions", params={"$select": select, "$filter": "IsPrivate eq false"}
    )
    assert answer.status_code == 200, answer.text
    found = {d["LogicalName"]: d for d in answer.json()["value"]}
    account = found["account"]
    assert account["@odata.type"] == "#Microsoft.Dynamics.CRM.EntityMetadata"
    assert account["EntitySetName"] == "accounts" and account["PrimaryIdAttribute"] == "accountid"
    assert account["PrimaryNameAttribute"] == "name" and account["ObjectTypeCode"] == 1
    assert account["IsPrivate"] is False and account["ChangeTrackingEnabled"] is True
    assert GUID.match(account["MetadataId"])
    assert found["contact"]["PrimaryNameAttribute"] == "fullname"
    assert found["contact"]["ObjectTypeCode"] == 2
    private = crm.get("EntityDefinitions", params={"$filter": "IsPrivate eq true"})
    assert private.json()["value"] == []


def test_attributes_carry_their_documented_types(crm: httpx.Client) -> None:
    url = "EntityDefinitions(LogicalName='account')/Attributes"
    answer = crm.get(url, params={"$select": "LogicalName,AttributeType,AttributeTypeName"})
    assert answer.status_code == 200, answer.text
    kinds = {a["LogicalName"]: a for a in answer.json()["value"]}
    assert kinds["statecode"]["AttributeType"] == "State"
    assert kinds["statuscode"]["AttributeType"] == "Status"
    assert kinds["customertypecode"]["AttributeType"] == "Picklist"
    assert kinds["creditlimit"]["AttributeType"] == "Money"
    assert kinds["name"]["AttributeTypeName"] == {"Value": "StringType"}
    assert kinds["name"]["@odata.type"] == "#Microsoft.Dynamics.CRM.StringAttributeMetadata"
    full = {a["LogicalName"]: a for a in crm.get(url).json()["value"]}
    assert full["name"]["MaxLength"] == 160 and full["name"]["IsPrimaryName"] is True
    assert full["transactioncurrencyid"]["AttributeType"] == "Lookup"
    assert full["transactioncurrencyid"]["Targets"] == ["transactioncurrency"]
    assert full["modifiedon"]["AttributeType"] == "DateTime"
    contact = crm.get(
        "EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='parentcustomerid')"
    )
    assert contact.status_code == 200, contact.text
    assert contact.json()["AttributeType"] == "Customer"
    assert contact.json()["Targets"] == ["account", "contact"]


def test_type_cast_segments_and_option_sets(crm: httpx.Client) -> None:
    base = "EntityDefinitions(LogicalName='account')/Attributes/Microsoft.Dynamics.CRM."
    picklists = crm.get(
        base + "PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet($select=Options),GlobalOptionSet"},
    )
    assert picklists.status_code == 200, picklists.text
    (relationship,) = picklists.json()["value"]
    assert relationship["LogicalName"] == "customertypecode"
    assert relationship["GlobalOptionSet"] is None
    labels = {
        o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"]
        for o in relationship["OptionSet"]["Options"]
    }
    assert labels[3] == "Customer" and labels[12] == "Other"
    state = crm.get(base + "StateAttributeMetadata", params={"$expand": "OptionSet"}).json()
    (statecode,) = state["value"]
    assert [o["Value"] for o in statecode["OptionSet"]["Options"]] == [0, 1]
    status = crm.get(base + "StatusAttributeMetadata", params={"$expand": "OptionSet"}).json()
    assert status["value"][0]["OptionSet"]["Options"][1]["State"] == 1
    strings = crm.get(base + "StringAttributeMetadata", params={"$select": "LogicalName,MaxLength"})
    assert all(a["MaxLength"] for a in strings.json()["value"])
    assert "name" in {a["LogicalName"] for a in strings.json()["value"]}
    lookups = crm.get(base + "LookupAttributeMetadata").json()["value"]
    assert [a["LogicalName"] for a in lookups] == ["transactioncurrencyid"]
    booleans = crm.get(
        "EntityDefinitions(LogicalName='contact')/Attributes/"
        "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
        params={"$expand": "OptionSet"},
    ).json()["value"]
    true = booleans[0]["OptionSet"]["TrueOption"]["Label"]["UserLocalizedLabel"]["Label"]
    assert true == "Yes"
    one = crm.get(
        "EntityDefinitions(LogicalName='account')/Attributes(LogicalName='statecode')/"
        "Microsoft.Dynamics.CRM.StateAttributeMetadata",
        params={"$expand": "OptionSet($select=Options)"},
    )
    assert one.status_code == 200 and one.json()["OptionSet"]["Options"][0]["Value"] == 0


def test_alternate_keys_under_each_entity_definition(crm: httpx.Client) -> None:
    keys = crm.get("EntityDefinitions(LogicalName='account')/Keys")
    assert keys.status_code == 200, keys.text
    (key,) = keys.json()["value"]
    assert key["KeyAttributes"] == ["accountnumber"] and key["EntityLogicalName"] == "account"
    assert key["@odata.type"] == "#Microsoft.Dynamics.CRM.EntityKeyMetadata"
    expanded = crm.get(
        "EntityDefinitions",
        params={"$select": "LogicalName", "$expand": "Keys($select=KeyAttributes)"},
    ).json()["value"]
    lines = next(d for d in expanded if d["LogicalName"] == "quotedetail")
    assert lines["Keys"][0]["KeyAttributes"] == ["quoteid", "sequencenumber"]


# --- 2. annotations --------------------------------------------------------------------------


def test_formatted_values_and_lookup_names_when_preferred(crm: httpx.Client) -> None:
    url = f"accounts({ADVENT})"
    params = {"$select": "name,statecode,customertypecode,creditlimit,_transactioncurrencyid_value"}
    plain = crm.get(url, params=params)
    assert not [k for k in plain.json() if "@OData.Community" in k or "@Microsoft" in k]
    every = crm.get(url, params=params, headers={"Prefer": 'odata.include-annotations="*"'})
    assert every.status_code == 200
    assert every.headers["Preference-Applied"] == 'odata.include-annotations="*"'
    body = every.json()
    assert body["statecode" + FORMATTED] == "Active"
    assert body["customertypecode" + FORMATTED] == "Customer"
    assert body["creditlimit" + FORMATTED] == "$50,000.00"
    assert body["_transactioncurrencyid_value" + FORMATTED] == "US Dollar"
    assert body["_transactioncurrencyid_value" + LOOKUP] == "transactioncurrency"
    keys = list(body)
    assert keys.index("statecode" + FORMATTED) == keys.index("statecode") - 1
    only = crm.get(
        "contacts",
        params={"$select": "_parentcustomerid_value,createdon", "$filter": f"contactid eq {ALEX}"},
        headers={"Prefer": 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'},
    ).json()["value"][0]
    assert only["_parentcustomerid_value" + FORMATTED] == "Adventure Works Cycles"
    assert "_parentcustomerid_value" + LOOKUP not in only
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2} [AP]M", only["createdon" + FORMATTED])
    lookups = crm.get(
        f"contacts({ALEX})?$select=_parentcustomerid_value",
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.*"'},
    ).json()
    assert lookups["_parentcustomerid_value" + LOOKUP] == "account"
    navigation = "_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"
    assert lookups[navigation] == "parentcustomerid_account"
    assert "_parentcustomerid_value" + FORMATTED not in lookups


# --- 3. bulk messages ------------------------------------------------------------------------


def _targets(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account", **r} for r in records]}


def test_create_update_and_upsert_multiple_as_documented(
    sandbox: Sandbox, crm: httpx.Client
) -> None:
    action = "accounts/Microsoft.Dynamics.CRM."
    created = crm.post(
        action + "CreateMultiple",
        json=_targets(
            {"accountnumber": "BM-1", "name": "One"}, {"accountnumber": "BM-2", "name": "Two"}
        ),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["@odata.context"].endswith(
        "$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
    )
    assert len(body["Ids"]) == 2 and all(GUID.match(i) for i in body["Ids"])
    updated = crm.post(
        action + "UpdateMultiple",
        json=_targets({"accountid": body["Ids"][0], "name": "One again"}),
    )
    assert updated.status_code == 204 and updated.content == b""
    upserted = crm.post(
        action + "UpsertMultiple",
        json=_targets(
            {"@odata.id": "accounts(accountnumber='BM-2')", "name": "Two by key"},
            {"@odata.id": "accounts(accountnumber='BM-3')", "name": "Three by key"},
        ),
    )
    assert upserted.status_code == 204 and upserted.content == b""
    names = {r["accountnumber"]: r["name"] for r in sandbox.records("crm", "accounts")}
    assert (names["BM-1"], names["BM-2"], names["BM-3"]) == (
        "One again",
        "Two by key",
        "Three by key",
    )
    missing = crm.post(
        action + "UpdateMultiple",
        json=_targets({"@odata.id": "accounts(accountnumber='BM-NONE')", "name": "x"}),
    )
    assert "Does Not Exist" in odata_error(missing, 400, 404)
    wrong = crm.post(
        action + "UpsertMultiple",
        json=_targets({"@odata.id": "contacts(msdynce_contactnumber='X')"}),
    )
    odata_error(wrong, 400)


def test_bulk_delete_is_refused_as_not_implemented(crm: httpx.Client) -> None:
    answer = crm.post("BulkDelete", json={"JobName": "x", "QuerySet": []})
    assert "not implemented" in odata_error(answer, 501)


# --- 4. query options --------------------------------------------------------------------------


def test_expand_single_valued_navigation(crm: httpx.Client) -> None:
    page = crm.get(
        "contacts",
        params={
            "$select": "lastname,_parentcustomerid_value",
            "$expand": "parentcustomerid_account($select=name),transactioncurrencyid",
            "$filter": f"contactid eq {ALEX}",
        },
    )
    assert page.status_code == 200, page.text
    (alex,) = page.json()["value"]
    assert alex["parentcustomerid_account"]["name"] == "Adventure Works Cycles"
    assert alex["parentcustomerid_account"]["accountid"] == ADVENT
    assert "@odata.etag" in alex["parentcustomerid_account"]
    assert alex["transactioncurrencyid"]["isocurrencycode"] == "USD"
    one = crm.get(f"contacts({ALEX})?$select=lastname&$expand=parentcustomerid_contact").json()
    assert one["parentcustomerid_contact"] is None  # the parent is an account
    unknown = crm.get("contacts?$expand=nothing_here")
    odata_error(unknown, 400)
    nested_filter = crm.get("contacts?$expand=parentcustomerid_account($filter=name eq 'x')")
    odata_error(nested_filter, 501)
    document = ET.fromstring(crm.get("$metadata").content)
    edm = "{http://docs.oasis-open.org/odata/ns/edm}"
    contact = next(t for t in document.iter(f"{edm}EntityType") if t.get("Name") == "contact")
    navs = {n.get("Name"): n.get("Type") for n in contact.iter(f"{edm}NavigationProperty")}
    assert navs["parentcustomerid_account"] == "Microsoft.Dynamics.CRM.account"
    assert navs["transactioncurrencyid"] == "Microsoft.Dynamics.CRM.transactioncurrency"


def test_count_option_and_count_path(sandbox: Sandbox, crm: httpx.Client) -> None:
    total = len(sandbox.records("crm", "contacts"))
    page = crm.get(
        "contacts?$select=lastname&$count=true", headers={"Prefer": "odata.maxpagesize=5"}
    )
    assert page.json()["@odata.count"] == total and len(page.json()["value"]) == 5
    path = crm.get("contacts/$count")
    assert path.status_code == 200 and path.headers["content-type"].startswith("text/plain")
    assert path.text == str(total)
    active = sum(1 for r in sandbox.records("crm", "contacts") if r["statecode"] == 0)
    assert crm.get("contacts/$count?$filter=statecode eq 0").text == str(active)


def test_in_operator_and_query_functions(sandbox: Sandbox, crm: httpx.Client) -> None:
    records = sandbox.records("crm", "accounts")

    def numbers(query: str) -> set[str]:
        answer = crm.get("accounts", params={"$select": "accountnumber", "$filter": query})
        assert answer.status_code == 200, answer.text
        return {r["accountnumber"] for r in answer.json()["value"]}

    two = ["ACC-01001-ADVENT", "ACC-01002-ALPINE"]
    assert numbers("accountnumber in ('ACC-01001-ADVENT','acc-01002-alpine')") == set(two)
    crm_in = (
        "Microsoft.Dynamics.CRM.In(PropertyName='accountnumber',"
        "PropertyValues=['ACC-01001-ADVENT','ACC-01002-ALPINE'])"
    )
    assert numbers(crm_in) == set(two)
    not_in = "Microsoft.Dynamics.CRM.NotIn(PropertyName='statecode',PropertyValues=['0'])"
    assert numbers(not_in) == {
        r["accountnumber"] for r in records if r["statecode"] not in (0, None)
    }
    between = (
        "Microsoft.Dynamics.CRM.Between(PropertyName='numberofemployees',"
        "PropertyValues=['100','500'])"
    )
    expected = {
        r["accountnumber"]
        for r in records
        if r["numberofemployees"] is not None and 100 <= r["numberofemployees"] <= 500
    }
    assert numbers(between) == expected and expected
    mine = new_account(crm, "FN-1")
    created = crm.get(f"accounts({mine})?$select=createdon").json()["createdon"][:10]
    on = f"Microsoft.Dynamics.CRM.On(PropertyName='createdon',PropertyValue='{created}')"
    assert "FN-1" in numbers(on)
    relative = crm.get(
        "accounts",
        params={
            "$filter": "Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=7)"
        },
    )
    odata_error(relative, 501)
    odata_error(crm.get("accounts", params={"$filter": "tolower(name) eq 'x'"}), 501)
    odata_error(
        crm.get("accounts", params={"$filter": "Microsoft.Dynamics.CRM.Nope(PropertyName='name')"}),
        400,
    )


# --- 5. conditional operations ------------------------------------------------------------------


def test_conditional_requests(crm: httpx.Client) -> None:
    guid = new_account(crm, "CO-1")
    first = crm.get(f"accounts({guid})?$select=name")
    tag = first.json()["@odata.etag"]
    assert first.headers["ETag"] == tag
    unchanged = crm.get(f"accounts({guid})?$select=name", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert crm.patch(f"accounts({guid})", json={"name": "Changed"}).status_code == 204
    second = crm.get(f"accounts({guid})?$select=name", headers={"If-None-Match": tag})
    assert second.status_code == 200 and second.json()["@odata.etag"] != tag
    stale = crm.patch(f"accounts({guid})", json={"name": "Lost"}, headers={"If-Match": tag})
    odata_error(stale, 412)
    assert odata_error(crm.delete(f"accounts({guid})", headers={"If-Match": tag}), 412)
    assert crm.get(f"accounts({guid})").status_code == 200
    fresh = second.json()["@odata.etag"]
    same = crm.patch(f"accounts({guid})", json={"name": "x"}, headers={"If-None-Match": fresh})
    odata_error(same, 412)
    assert (
        crm.patch(
            f"accounts({guid})", json={"name": "Kept"}, headers={"If-Match": fresh}
        ).status_code
        == 204
    )
    third = crm.get(f"accounts({guid})").json()["@odata.etag"]
    assert len({tag, fresh, third}) == 3
    assert crm.delete(f"accounts({guid})", headers={"If-Match": third}).status_code == 204


# --- 6. $batch ---------------------------------------------------------------------------------


def _batch(crm: httpx.Client, parts: list[str], prefer: str | None) -> list[int]:
    body = "".join(f"--b\r\n{p}" for p in parts) + "--b--\r\n"
    headers = {"Content-Type": "multipart/mixed; boundary=b"}
    if prefer:
        headers["Prefer"] = prefer
    answer = crm.post("$batch", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    if prefer:
        assert answer.headers["Preference-Applied"] == "odata.continue-on-error"
    return [int(s) for s in re.findall(r"HTTP/1\.1 (\d{3})", answer.text)]


def _part(method: str, url: str, body: dict[str, Any] | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    if body is None:
        return f"{head}{method} {url} HTTP/1.1\r\n\r\n"
    request = f"{method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
    return f"{head}{request}{json.dumps(body)}\r\n"


def test_batch_stops_at_the_first_failure_unless_continue_on_error(
    sandbox: Sandbox, crm: httpx.Client
) -> None:
    parts = [
        _part("POST", "accounts", {"accountnumber": "BS-1", "name": "One"}),
        _part("POST", "accounts", {"accountnumber": "BS-2", "bogus": 1}),
        _part("POST", "accounts", {"accountnumber": "BS-3", "name": "Three"}),
    ]
    assert _batch(crm, parts, None) == [204, 400]
    numbers = {r["accountnumber"] for r in sandbox.records("crm", "accounts")}
    assert "BS-1" in numbers and "BS-3" not in numbers
    parts[0] = _part("POST", "accounts", {"accountnumber": "BS-4", "name": "Four"})
    assert _batch(crm, parts, "odata.continue-on-error") == [204, 400, 204]
    numbers = {r["accountnumber"] for r in sandbox.records("crm", "accounts")}
    assert {"BS-3", "BS-4"} <= numbers


def test_a_batch_in_the_json_format_is_refused_before_it_runs(
    sandbox: Sandbox, crm: httpx.Client
) -> None:
    """Dataverse's batch format is multipart/mixed (OData 4.0); the JSON batch format of
    OData 4.01 (a body with "requests") is refused with an OData error, running nothing."""
    create = {"id": "1", "method": "POST", "url": "accounts", "body": {"accountnumber": "JB-1"}}
    headers = {"Content-Type": "application/json; odata.metadata=minimal"}
    answer = crm.post("$batch", content=json.dumps({"requests": [create]}), headers=headers)
    assert "JSON batch format" in odata_error(answer, 415)
    assert answer.headers["Content-Type"].startswith("application/json")
    assert "JB-1" not in {r["accountnumber"] for r in sandbox.records("crm", "accounts")}
    plain = crm.post("$batch", content=b"GET accounts", headers={"Content-Type": "text/plain"})
    assert "multipart/mixed" in odata_error(plain, 415)
    no_boundary = crm.post("$batch", content=b"", headers={"Content-Type": "multipart/mixed"})
    odata_error(no_boundary, 400)


# --- 7. WhoAmI ---------------------------------------------------------------------------------


def test_who_am_i(crm: httpx.Client) -> None:
    plain, called = crm.get("WhoAmI"), crm.get("WhoAmI()")
    assert plain.status_code == called.status_code == 200
    body = plain.json()
    assert body == called.json()
    assert body["@odata.context"].endswith("$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse")
    ids = [body["UserId"], body["BusinessUnitId"], body["OrganizationId"]]
    assert all(GUID.match(i) for i in ids) and len(set(ids)) == 3
    odata_error(crm.post("WhoAmI", json={}), 405)
    document = ET.fromstring(crm.get("$metadata").content)
    edm = "{http://docs.oasis-open.org/odata/ns/edm}"
    (function,) = [f for f in document.iter(f"{edm}Function") if f.get("Name") == "WhoAmI"]
    returns = function.find(f"{edm}ReturnType")
    assert returns is not None
    assert returns.get("Type") == "Microsoft.Dynamics.CRM.WhoAmIResponse"
    assert [i.get("Name") for i in document.iter(f"{edm}FunctionImport")] == ["WhoAmI"]


# --- 8. data rules -----------------------------------------------------------------------------


def test_server_sets_createdon_modifiedon_and_versionnumber(crm: httpx.Client) -> None:
    guid = new_account(crm, "DR-1")
    select = "$select=createdon,modifiedon,versionnumber"
    first = crm.get(f"accounts({guid})?{select}").json()
    assert first["createdon"] and first["modifiedon"] >= first["createdon"]
    assert first["@odata.etag"] == f'W/"{first["versionnumber"]}"'
    assert crm.patch(f"accounts({guid})", json={"name": "Later"}).status_code == 204
    second = crm.get(f"accounts({guid})?{select}").json()
    assert second["versionnumber"] > first["versionnumber"]
    assert second["createdon"] == first["createdon"] and second["modifiedon"] >= first["modifiedon"]
    newest = crm.get("accounts?$select=accountnumber&$orderby=versionnumber desc&$top=1").json()
    assert newest["value"][0]["accountnumber"] == "DR-1"
    since = f"modifiedon ge {first['modifiedon']} and accountnumber eq 'DR-1'"
    assert len(crm.get("accounts", params={"$filter": since}).json()["value"]) == 1


def test_errors_name_the_entity_type(crm: httpx.Client) -> None:
    every = crm.get(f"accounts({ADVENT})?$select=*").json()
    assert every["accountnumber"] == "ACC-01001-ADVENT" and "versionnumber" in every
    message = odata_error(crm.get("accounts?$select=nope"), 400)
    assert "'Microsoft.Dynamics.CRM.account'" in message and "accounts'" not in message


def test_a_seed_with_one_alternate_key_value_twice_is_refused(tmp_path: Path) -> None:
    crm = tmp_path / "crm"
    crm.mkdir()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    rows = [
        {"accountid": first, "accountnumber": "A-1", "name": "First"},
        {"accountid": str(uuid.uuid4()), "accountnumber": "B-1", "name": "Other"},
        {"accountid": second, "accountnumber": "a-1 ", "name": "Second"},
    ]
    (crm / "accounts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConnectorError) as refused:
        Sandbox(crm, None)
    message = str(refused.value)
    assert message.startswith(f"{crm / 'accounts.jsonl'}: ")
    assert f"record 1 (accountid {first})" in message
    assert f"record 3 (accountid {second}, as 'a-1 ')" in message
    assert "alternate key accountnumber = 'A-1'" in message
    # off on purpose, the same file is served with the key (both records under it)
    assert len(Sandbox(crm, None, unique_alternate_keys=False).records("crm", "accounts")) == 3
    with pytest.raises(ContractError, match="no Dataverse entity set acounts"):
        Sandbox(crm, None, alternate_keys={"acounts": ()})


def test_the_demo_company_declares_no_account_number_key(bearer: Callable[..., str]) -> None:
    """The demo plants ACC-01006-CONTOS on two accounts (records 6 and 37): a tenant with
    an alternate key on accountnumber could not hold them, so the sandbox refuses them with
    that key and serves them as a tenant without it."""
    crm = demo_fixtures_dir() / "crm"
    with pytest.raises(ConnectorError, match=r"record 6 \(accountid e926d856.*record 37 "):
        Sandbox(crm, None)
    with Sandbox(crm, None, alternate_keys=DEMO_ALTERNATE_KEYS) as sb:
        headers = {"Authorization": f"Bearer {bearer(sb)}"}
        root = f"{sb.crm_url}{DV}"
        keys = httpx.get(root + "EntityDefinitions(LogicalName='account')/Keys", headers=headers)
        assert keys.status_code == 200 and keys.json()["value"] == []
        expanded = httpx.get(
            root + "EntityDefinitions",
            params={"$select": "LogicalName", "$expand": "Keys($select=KeyAttributes)"},
            headers=headers,
        ).json()["value"]
        declared = {d["LogicalName"]: [k["KeyAttributes"] for k in d["Keys"]] for d in expanded}
        assert declared["account"] == [] and declared["contact"] == [["msdynce_contactnumber"]]
        by_key = httpx.get(root + "accounts(accountnumber='ACC-01006-CONTOS')", headers=headers)
        assert "is not a key of" in odata_error(by_key, 400)
        target = {"@odata.type": "Microsoft.Dynamics.CRM.account", "accountnumber": "N-1"}
        upsert = httpx.post(
            root + "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
            json={"Targets": [target]},
            headers=headers,
        )
        assert "account has no alternate key" in odata_error(upsert, 400)
        same = httpx.get(
            root + "accounts",
            params={"$filter": "accountnumber eq 'ACC-01006-CONTOS'", "$select": "name"},
            headers=headers,
        ).json()["value"]
        assert sorted(r["name"] for r in same) == [
            "Contoso Pharmaceuticals",
            "Contoso Pharmaceuticals East",
        ]


def test_apply_groupby_and_aggregate(sandbox: Sandbox, crm: httpx.Client) -> None:
    records = [r for r in sandbox.records("crm", "accounts") if r["statecode"] is not None]
    grouped = crm.get(
        "accounts",
        params={
            "$apply": "groupby((statecode),aggregate(creditlimit with sum as total,"
            "$count as n,accountnumber with countdistinct as numbers,"
            "numberofemployees with max as most,numberofemployees with min as least))"
        },
    )
    assert grouped.status_code == 200, grouped.text
    rows = {r["statecode"]: r for r in grouped.json()["value"]}
    active = [r for r in records if r["statecode"] == 0]
    assert rows[0]["n"] == len(active)
    assert Decimal(str(rows[0]["total"])) == sum(r["creditlimit"] or 0 for r in active)
    employees = [r["numberofemployees"] for r in active if r["numberofemployees"] is not None]
    assert (rows[0]["most"], rows[0]["least"]) == (max(employees), min(employees))
    whole = crm.get(
        "accounts",
        params={"$apply": "filter(statecode eq 0)/aggregate(creditlimit with average as mean)"},
    ).json()["value"]
    limits = [r["creditlimit"] for r in active if r["creditlimit"] is not None]
    assert abs(Decimal(str(whole[0]["mean"])) - sum(limits) / len(limits)) < Decimal("0.0001")
    odata_error(crm.get("accounts", params={"$apply": "topcount(2,creditlimit)"}), 501)
    odata_error(crm.get("accounts", params={"$apply": "aggregate($count as n)", "$top": "1"}), 501)


def test_documented_limits_of_count_and_aggregate(
    crm: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`$count` counts up to 5,000 and an aggregation takes up to 50,000 records; the limits
    are lowered here so that the demo data crosses them."""
    from dataclasses import replace

    from p2c_etl.sandbox import aggregate, dataverse

    monkeypatch.setattr(dataverse, "PAGING", replace(dataverse.PAGING, count_limit=5))
    monkeypatch.setattr(aggregate, "RECORD_LIMIT", 5)
    totals = (
        'odata.include-annotations="Microsoft.Dynamics.CRM.totalrecordcount,'
        'Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"'
    )
    counted = crm.get("accounts?$select=name&$count=true&$top=1", headers={"Prefer": totals}).json()
    assert counted["@odata.count"] == 5
    assert counted["@Microsoft.Dynamics.CRM.totalrecordcount"] == 5
    assert counted["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is True
    few = crm.get(
        "accounts?$select=name&$count=true&$filter=accountnumber eq 'ACC-01001-ADVENT'",
        headers={"Prefer": totals},
    ).json()
    assert few["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is False
    assert crm.get("accounts/$count").text == "5"
    over = crm.get("accounts", params={"$apply": "aggregate($count as n)"})
    assert "50000" not in odata_error(over, 400) and "record limit" in over.text
    one = crm.get(
        "accounts",
        params={"$apply": "filter(accountnumber eq 'ACC-01001-ADVENT')/aggregate($count as n)"},
    )
    assert one.json()["value"] == [{"n": 1}]
