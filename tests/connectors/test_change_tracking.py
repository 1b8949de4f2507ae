"""`DataverseConnector.read_changes` against the sandbox on loopback: a first read gives a
delta link; the next read gives exactly what changed through the Web API, deletes included;
an expired link, a table without change tracking and other columns each read in full and
say why."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import polars as pl
import pytest

from p2c_etl.config import Secret, SystemSettings
from p2c_etl.connectors.base import ChangeRead
from p2c_etl.connectors.dataverse import DataverseConnector
from p2c_etl.connectors.odata import RetryPolicy
from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox
from tests.sandbox.conftest import bearer_token

SECRET = "sandbox-secret"
COLUMNS = ["accountnumber", "name", "statecode", "creditlimit", "createdon"]
SEEDED = 40


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", None, client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sb:
        yield sb


@pytest.fixture(scope="module")
def web(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """A plain Web API client, for changes made behind the connector's back."""
    headers = {"Authorization": f"Bearer {bearer_token(sandbox)}", "Accept": "application/json"}
    with httpx.Client(base_url=f"{sandbox.crm_url}/api/data/v9.2/", headers=headers) as client:
        yield client


@pytest.fixture
def crm(sandbox: Sandbox, contracts: ContractSet) -> Iterator[DataverseConnector]:
    settings = SystemSettings(
        name="crm",
        kind="dataverse",
        url=sandbox.crm_url,
        tenant="sandbox",
        client_id="p2c-sandbox",
        secret_env="X",
        secret=Secret(SECRET),
        token_url=sandbox.token_url,
        page_size=7,
    )
    connector = DataverseConnector(settings, contracts, retry=RetryPolicy(attempts=2))
    yield connector
    connector.close()


def create(web: httpx.Client, number: str, **values: object) -> str:
    answer = web.post("accounts", json={"accountnumber": number, "name": number, **values})
    assert answer.status_code == 204, answer.text
    return answer.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def first_link(crm: DataverseConnector) -> str:
    read = crm.read_changes("accounts", COLUMNS, None)
    assert read.kind == "full" and read.link is not None
    return read.link


def test_a_first_read_is_full_with_a_delta_link(crm: DataverseConnector) -> None:
    read = crm.read_changes("accounts", COLUMNS, None)
    snapshot = crm.snapshot("accounts", COLUMNS)
    assert read.kind == "full" and read.reason is None
    assert read.link is not None and "$deltatoken=" in read.link
    assert read.frame.columns == [*COLUMNS, "accountid"]
    assert read.frame.drop("accountid").sort("accountnumber").equals(snapshot.sort("accountnumber"))
    assert read.frame.schema["creditlimit"] == snapshot.schema["creditlimit"]
    assert read.frame["accountid"].n_unique() == read.frame.height
    assert read.deleted.dtype == pl.String and read.deleted.len() == 0


def test_a_delta_read_gives_exactly_the_changes_and_deletes(
    crm: DataverseConnector, web: httpx.Client
) -> None:
    doomed = create(web, "CT-C-DOOMED")
    link = first_link(crm)
    made = create(web, "CT-C-NEW", creditlimit=1234.5)
    edited = next(r for r in crm.snapshot("accounts", ["accountid", "name"]).iter_rows())[0]
    assert web.patch(f"accounts({edited})", json={"name": "Edited"}).status_code == 204
    assert web.delete(f"accounts({doomed})").status_code == 204

    read = crm.read_changes("accounts", COLUMNS, link)

    assert read.kind == "delta" and read.reason is None
    assert read.frame["accountid"].to_list() == [made, edited]
    assert read.frame.schema == crm.read_changes("accounts", COLUMNS, None).frame.schema
    rows = {r["accountid"]: r for r in read.frame.iter_rows(named=True)}
    assert rows[made]["creditlimit"] == Decimal("1234.5000")
    assert rows[edited]["name"] == "Edited"
    assert read.deleted.to_list() == [doomed]
    assert read.link is not None and read.link != link


def test_no_change_gives_an_empty_delta_and_the_next_link(
    crm: DataverseConnector, web: httpx.Client
) -> None:
    link = first_link(crm)
    quiet = crm.read_changes("accounts", COLUMNS, link)
    assert quiet.kind == "delta" and quiet.frame.height == 0 and quiet.deleted.len() == 0
    assert quiet.frame.columns == [*COLUMNS, "accountid"]
    assert quiet.link is not None
    made = create(web, "CT-C-NEXT")
    following = crm.read_changes("accounts", COLUMNS, quiet.link)
    assert following.frame["accountid"].to_list() == [made]


def test_a_delta_larger_than_a_page_is_read_whole(
    crm: DataverseConnector, web: httpx.Client
) -> None:
    link = first_link(crm)
    made = [create(web, f"CT-C-PAGE-{i}") for i in range(10)]
    for guid in made[7:]:
        assert web.delete(f"accounts({guid})").status_code == 204
    read = crm.read_changes("accounts", COLUMNS, link)  # page size 7: two pages
    assert read.frame["accountid"].to_list() == made[:7]
    assert read.deleted.to_list() == made[7:]


def test_an_expired_link_is_a_full_read_that_says_so(
    crm: DataverseConnector, sandbox: Sandbox
) -> None:
    link = first_link(crm)
    sandbox.expire_delta_tokens()
    read = crm.read_changes("accounts", COLUMNS, link)
    assert read.kind == "full" and read.deleted.len() == 0
    assert read.frame.height == len(sandbox.records("crm", "accounts"))
    assert read.reason is not None and "refused" in read.reason and "expired" in read.reason
    assert (
        read.link is not None and crm.read_changes("accounts", COLUMNS, read.link).kind == "delta"
    )


def test_a_table_without_change_tracking_is_read_in_full(
    crm: DataverseConnector, sandbox: Sandbox
) -> None:
    link = first_link(crm)
    sandbox.tracking.switch("accounts", False)
    try:
        fresh = DataverseConnector(crm.settings, crm.contracts, retry=RetryPolicy(attempts=2))
        read = fresh.read_changes("accounts", COLUMNS, None)
        again = fresh.read_changes("accounts", COLUMNS, link)
        fresh.close()
    finally:
        sandbox.tracking.switch("accounts", True)
    assert read.kind == "full" and read.link is None and read.deleted.len() == 0
    assert read.frame.height == len(sandbox.records("crm", "accounts"))
    assert read.reason is not None and "change tracking is off" in read.reason
    assert again.kind == "full" and again.link is None
    assert again.reason is not None and "refused" in again.reason and "is off" in again.reason


def test_a_link_for_other_columns_is_a_full_read_that_says_so(crm: DataverseConnector) -> None:
    link = first_link(crm)
    read = crm.read_changes("accounts", [*COLUMNS, "telephone1"], link)
    assert read.kind == "full" and read.link is not None
    assert read.reason is not None and "added telephone1" in read.reason
    assert "telephone1" in read.frame.columns


def test_the_service_returns_only_the_delta(
    crm: DataverseConnector, web: httpx.Client, sandbox: Sandbox
) -> None:
    link = first_link(crm)
    create(web, "CT-C-STATS-1")
    create(web, "CT-C-STATS-2")
    sandbox.reset_stats()
    read: ChangeRead = crm.read_changes("accounts", COLUMNS, link)
    stats = sandbox.stats()["crm"]
    assert read.frame.height == 2
    assert stats["records_returned"] == {"accounts": 2}
    assert stats["requests"] == {"GET accounts": 1}  # EntityDefinitions is not asked again
    full = crm.read_changes("accounts", COLUMNS, None)
    assert sandbox.stats()["crm"]["records_returned"]["accounts"] == 2 + full.frame.height
    assert full.frame.height > SEEDED
