"""Dataverse change tracking in the sandbox, as Microsoft Learn documents it ("Use change
tracking to synchronize data with external systems"), read with a plain HTTP client."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox import Sandbox
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from tests.sandbox.conftest import Bearer

TRACK = {"Prefer": "odata.track-changes"}
DELETED = "$deletedEntity"
EDM = "http://docs.oasis-open.org/odata/ns/edm"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    seed = demo_fixtures_dir()
    with Sandbox(seed / "crm", None, alternate_keys=DEMO_ALTERNATE_KEYS) as sb:
        yield sb


@pytest.fixture(scope="module")
def crm(sandbox: Sandbox, bearer: Bearer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {bearer(sandbox)}", "Accept": "application/json"}
    with httpx.Client(base_url=f"{sandbox.crm_url}/api/data/v9.2/", headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def admin(sandbox: Sandbox, bearer: Bearer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {bearer(sandbox)}"}
    with httpx.Client(base_url=f"{sandbox.crm_url}/_sandbox/", headers=headers) as client:
        yield client


def read_all(crm: httpx.Client, url: str, **headers: str) -> tuple[list[dict[str, Any]], str]:
    """Every record of a tracked read or a delta, following nextLinks; and the delta link."""
    records: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        answer = crm.get(next_url, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        records += body["value"]
        next_url = body.get("@odata.nextLink")
        if next_url is None:
            return records, body["@odata.deltaLink"]
        assert "@odata.deltaLink" not in body
    raise AssertionError("unreachable")


def delta_link(crm: httpx.Client, select: str = "name,accountnumber") -> str:
    return read_all(crm, f"accounts?$select={select}", Prefer="odata.track-changes")[1]


def new_account(crm: httpx.Client, number: str) -> str:
    answer = crm.post("accounts", json={"accountnumber": number, "name": f"Account {number}"})
    assert answer.status_code == 204, answer.text
    return answer.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_track_changes_returns_every_record_and_a_delta_link(crm: httpx.Client) -> None:
    answer = crm.get("accounts?$select=name", headers=TRACK)
    assert answer.status_code == 200
    assert "odata.track-changes" in answer.headers["Preference-Applied"]
    body = answer.json()
    assert len(body["value"]) == 40 and "@odata.nextLink" not in body
    link = body["@odata.deltaLink"]
    assert link.startswith(str(crm.base_url) + "accounts?") and "$deltatoken=" in link
    assert "$select=name" in link
    assert set(body["value"][0]) == {"@odata.etag", "name", "accountid"}


def test_the_delta_link_is_on_the_last_page_only(crm: httpx.Client) -> None:
    headers = {"Prefer": "odata.track-changes,odata.maxpagesize=15"}
    first = crm.get("accounts?$select=name", headers=headers)
    assert "odata.track-changes" in first.headers["Preference-Applied"]
    assert "@odata.nextLink" in first.json() and "@odata.deltaLink" not in first.json()
    records, link = read_all(crm, "accounts?$select=name", **headers)
    assert len(records) == 40 and len({r["accountid"] for r in records}) == 40
    assert "$deltatoken=" in link


def test_a_delta_holds_new_and_changed_records(crm: httpx.Client) -> None:
    link = delta_link(crm)
    created = new_account(crm, "CT-NEW-1")
    changed = crm.get("accounts?$select=accountid&$top=1").json()["value"][0]["accountid"]
    assert crm.patch(f"accounts({changed})", json={"name": "Renamed"}).status_code == 204
    answer = crm.get(link)
    body = answer.json()
    assert answer.status_code == 200
    assert body["@odata.context"].endswith("$metadata#accounts/$delta")
    assert [r["accountid"] for r in body["value"]] == [created, changed]
    assert body["value"][1]["name"] == "Renamed"
    assert set(body["value"][0]) == {"@odata.etag", "name", "accountnumber", "accountid"}
    assert body["@odata.deltaLink"] != link and "$select=name,accountnumber" in link


def test_a_delta_holds_deleted_records_as_deleted_entities(crm: httpx.Client) -> None:
    gone = new_account(crm, "CT-DEL-1")
    link = delta_link(crm)
    assert crm.delete(f"accounts({gone})").status_code == 204
    (entry,) = crm.get(link).json()["value"]
    assert entry["@odata.context"].endswith("$metadata#accounts/$deletedEntity")
    assert entry["id"] == gone and entry["reason"] == "deleted"


def test_changes_come_first_then_deletes(crm: httpx.Client) -> None:
    doomed = new_account(crm, "CT-ORDER-1")
    link = delta_link(crm)
    assert crm.delete(f"accounts({doomed})").status_code == 204
    created = new_account(crm, "CT-ORDER-2")
    kinds = [DELETED in r.get("@odata.context", "") for r in crm.get(link).json()["value"]]
    assert kinds == [False, True]
    assert created


def test_a_record_created_and_deleted_since_the_token_is_reported_deleted(
    crm: httpx.Client,
) -> None:
    link = delta_link(crm)
    brief = new_account(crm, "CT-BRIEF-1")
    assert crm.delete(f"accounts({brief})").status_code == 204
    assert [(r["id"], r["reason"]) for r in crm.get(link).json()["value"]] == [(brief, "deleted")]


def test_no_change_gives_an_empty_delta_and_a_new_link(crm: httpx.Client) -> None:
    link = delta_link(crm)
    body = crm.get(link).json()
    assert body["value"] == [] and "$deltatoken=" in body["@odata.deltaLink"]
    assert crm.get(body["@odata.deltaLink"]).json()["value"] == []


def test_a_delta_pages_through_changes_and_deletes(crm: httpx.Client) -> None:
    made = [new_account(crm, f"CT-PAGE-{i}") for i in range(5)]
    link = delta_link(crm)
    for guid in made[:3]:
        assert crm.patch(f"accounts({guid})", json={"name": "paged"}).status_code == 204
    for guid in made[3:]:
        assert crm.delete(f"accounts({guid})").status_code == 204
    records, following = read_all(crm, link, Prefer="odata.maxpagesize=2")
    assert [r.get("accountid") or r["id"] for r in records] == made
    assert [DELETED in r.get("@odata.context", "") for r in records] == [False] * 3 + [True] * 2
    assert crm.get(following).json()["value"] == []


def test_a_write_while_paging_the_first_read_is_in_the_next_delta(crm: httpx.Client) -> None:
    headers = {"Prefer": "odata.track-changes,odata.maxpagesize=10"}
    first = crm.get("accounts?$select=name", headers=headers).json()
    passed = first["value"][0]["accountid"]
    assert crm.patch(f"accounts({passed})", json={"name": "while paging"}).status_code == 204
    rest, link = read_all(crm, first["@odata.nextLink"], **headers)
    assert passed not in {r["accountid"] for r in rest}
    (entry,) = crm.get(link).json()["value"]
    assert entry["accountid"] == passed and entry["name"] == "while paging"


@pytest.mark.parametrize(
    ("option", "value"),
    [("$filter", "name eq 'x'"), ("$orderby", "name"), ("$top", "1"), ("$expand", "x")],
)
def test_filter_orderby_expand_and_top_are_refused_with_change_tracking(
    crm: httpx.Client, option: str, value: str
) -> None:
    answer = crm.get(f"accounts?$select=name&{option}={value}", headers=TRACK)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert (
        message
        == f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.'
    )
    link = delta_link(crm)
    assert crm.get(f"{link}&{option}={value}").status_code == 400


def test_an_expired_token_is_refused(crm: httpx.Client, sandbox: Sandbox) -> None:
    link = delta_link(crm)
    sandbox.expire_delta_tokens()
    answer = crm.get(link)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "Version stamp associated with the client has expired. Please perform a full sync."
    )
    assert crm.get(delta_link(crm)).status_code == 200  # a new first read gives a good link


def test_a_token_expires_after_its_lifetime_in_writes(
    crm: httpx.Client, admin: httpx.Client
) -> None:
    assert admin.post("change-tracking", json={"delta_token_ttl": 1}).status_code == 200
    try:
        link = delta_link(crm)
        new_account(crm, "CT-TTL-1")
        assert crm.get(link).status_code == 200  # one write since: still good
        new_account(crm, "CT-TTL-2")
        assert crm.get(link).status_code == 400  # two: expired
    finally:
        admin.post("change-tracking", json={"delta_token_ttl": None})


def test_a_token_that_is_not_one_is_refused(crm: httpx.Client) -> None:
    for token in ("1", "abc", "999999999!1"):
        answer = crm.get(f"accounts?$select=name&$deltatoken={token}")
        assert answer.status_code == 400 and answer.json()["error"]["code"], token


def test_change_tracking_enabled_is_in_entity_definitions_and_switchable(
    crm: httpx.Client, admin: httpx.Client
) -> None:
    def enabled() -> bool:
        url = "EntityDefinitions(LogicalName='account')?$select=ChangeTrackingEnabled"
        return bool(crm.get(url).json()["ChangeTrackingEnabled"])

    link = delta_link(crm)
    assert enabled()
    off = admin.post("change-tracking", json={"enabled": {"accounts": False}})
    assert off.json()["disabled"] == ["accounts"]
    try:
        assert not enabled()
        listed = crm.get(
            "EntityDefinitions?$select=LogicalName&$filter=ChangeTrackingEnabled eq true"
        )
        assert "account" not in {d["LogicalName"] for d in listed.json()["value"]}
        plain = crm.get("accounts?$select=name", headers=TRACK)
        assert plain.status_code == 200 and "Preference-Applied" not in plain.headers
        assert "@odata.deltaLink" not in plain.json() and len(plain.json()["value"]) >= 40
        refused = crm.get(link)
        assert refused.status_code == 400 and refused.json()["error"]["message"]
    finally:
        admin.post("change-tracking", json={"enabled": {"accounts": True}})
    assert enabled() and crm.get(link).status_code == 200


def test_stats_count_the_records_returned_per_entity_set(
    crm: httpx.Client, admin: httpx.Client
) -> None:
    link = delta_link(crm)
    new_account(crm, "CT-STATS-1")
    assert admin.post("reset-stats").json()["crm"]["records_returned"] == {}
    assert len(crm.get(link).json()["value"]) == 1
    assert admin.get("stats").json()["crm"]["records_returned"] == {"accounts": 1}
    delta_link(crm)
    assert admin.get("stats").json()["crm"]["records_returned"]["accounts"] > 40


def test_a_planted_change_is_not_in_a_delta(crm: httpx.Client, sandbox: Sandbox) -> None:
    link = delta_link(crm)
    record = next(r for r in sandbox.records("crm", "accounts") if r["accountnumber"])
    sandbox.plant("crm", "accounts", {**record, "name": "behind its back"})
    assert crm.get(link).json()["value"] == []
    shown = crm.get(f"accounts({record['accountid']})?$select=name").json()
    assert shown["name"] == "behind its back"


def test_delta_token_is_still_refused_where_it_reads_no_entity_set(crm: httpx.Client) -> None:
    guid = str(uuid.uuid4())
    assert crm.get(f"accounts({guid})?$deltatoken=1").status_code == 501
    assert crm.get("accounts/$count?$deltatoken=1").status_code == 501


def test_metadata_annotates_the_entity_sets_that_track_changes(
    crm: httpx.Client, admin: httpx.Client
) -> None:
    term = "Org.OData.Capabilities.V1.ChangeTracking"

    def annotated() -> set[str]:
        answer = crm.get("$metadata?annotations=true")
        assert answer.status_code == 200
        document = ET.fromstring(answer.content)
        return {
            s.get("Name", "")
            for s in document.iter(f"{{{EDM}}}EntitySet")
            if any(a.get("Term") == term for a in s.iter(f"{{{EDM}}}Annotation"))
        }

    assert {"accounts", "contacts"} <= annotated()
    assert term not in crm.get("$metadata").text
    admin.post("change-tracking", json={"enabled": {"accounts": False}})
    try:
        assert "accounts" not in annotated() and "contacts" in annotated()
    finally:
        admin.post("change-tracking", json={"enabled": {"accounts": True}})


def test_a_rolled_back_change_set_is_not_in_a_delta(crm: httpx.Client) -> None:
    kept = new_account(crm, "CT-ROLLBACK-1")
    link = delta_link(crm)
    root = str(crm.base_url)
    requests = [
        f"DELETE {root}accounts({kept}) HTTP/1.1\r\n\r\n",
        f"PATCH {root}accounts({uuid.uuid4()}) HTTP/1.1\r\nIf-Match: *\r\n"
        'Content-Type: application/json\r\n\r\n{"name": "nobody"}\r\n',
    ]
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    parts = "".join(f"--cs\r\n{head}Content-ID: {i}\r\n\r\n{r}" for i, r in enumerate(requests, 1))
    body = f"--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n{parts}--cs--\r\n--b--\r\n"
    answer = crm.post(
        "$batch", content=body, headers={"Content-Type": "multipart/mixed; boundary=b"}
    )
    assert answer.status_code == 200 and "404" in answer.text
    assert crm.get(f"accounts({kept})").status_code == 200
    assert crm.get(link).json()["value"] == []
