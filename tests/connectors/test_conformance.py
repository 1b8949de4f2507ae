"""One conformance suite for every connector: files, Dataverse and F&O (both over the sandbox).

Each case runs against a Sales entity set (`products`, keyed by product number, with a GUID
primary id) or a Finance and Operations one (`CustomersV2`, keyed by company and account).
"""

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from p2c_etl.config import Secret, SystemSettings
from p2c_etl.connectors.base import Connector, WriteBatch
from p2c_etl.connectors.dataverse import DataverseConnector
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.connectors.finops import FinOpsConnector
from p2c_etl.connectors.odata import RetryPolicy
from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import demo_fixtures_dir
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "conformance-secret"


@dataclass
class Case:
    connector: Connector
    entity: str
    keys: tuple[str, ...]
    value: str  # a text column to write
    seed_rows: int
    sleeps: list[float]
    sandbox: Sandbox | None = None

    def record(self, key: str, value: str) -> dict[str, object]:
        if self.entity == "products":
            return {
                "productid": _guid(key),
                "productnumber": key,
                "name": value,
                **_REFERENCES,
                "price": Decimal("12.3400"),
            }
        return {
            "dataAreaId": "usmf",
            "CustomerAccount": key,
            "OrganizationName": value,
            "CustomerGroupId": "10",
            "CreditLimit": Decimal("1000.50"),
        }

    def key_of(self, key: str) -> dict[str, object]:
        base = (
            {"productnumber": key}
            if self.entity == "products"
            else {"dataAreaId": "usmf", "CustomerAccount": key}
        )
        if self.entity == "products":
            base["productid"] = _guid(key)
        return base

    def read(self) -> pl.DataFrame:
        columns = [*self.keys, self.value]
        return self.connector.snapshot(self.entity, columns)


def _guid(key: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def _first(entity: str, column: str) -> str:
    path = demo_fixtures_dir() / "crm" / f"{entity}.jsonl"
    return str(json.loads(path.read_text(encoding="utf-8").splitlines()[0])[column])


# A product needs its unit, unit group and currency (required lookups in Sales).
_REFERENCES = {
    "_defaultuomid_value": _first("uoms", "uomid"),
    "_defaultuomscheduleid_value": _first("uomschedules", "uomscheduleid"),
    "_transactioncurrencyid_value": _first("transactioncurrencies", "transactioncurrencyid"),
}


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    seed = demo_fixtures_dir()
    with Sandbox(
        seed / "crm", seed / "erp", client_secret=SECRET, alternate_keys=DEMO_ALTERNATE_KEYS
    ) as sb:
        yield sb


def _http_settings(kind: str, url: str, token_url: str) -> SystemSettings:
    return SystemSettings(
        name="crm" if kind == "dataverse" else "erp",
        kind=kind,
        url=url,  # type: ignore[arg-type]
        tenant="sandbox",
        client_id="p2c-sandbox",
        secret_env="X",
        secret=Secret(SECRET),
        token_url=token_url,
        page_size=7,
        concurrency=4,
        company="usmf",
    )


@pytest.fixture(params=["files-crm", "files-erp", "dataverse", "finops"])
def case(request: pytest.FixtureRequest, tmp_path: Path, contracts: ContractSet) -> Iterator[Case]:
    seed = demo_fixtures_dir()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    retry = RetryPolicy(attempts=12, sleep=sleep)
    kind = request.param
    if kind.startswith("files"):
        system = "crm" if kind == "files-crm" else "erp"
        shutil.copytree(seed / system, tmp_path / system)
        conn: Connector = FilesConnector(system, tmp_path / system, contracts)  # type: ignore[arg-type]
        sb = None
    else:
        sb = request.getfixturevalue("sandbox")
        system = "crm" if kind == "dataverse" else "erp"
        url = sb.crm_url if kind == "dataverse" else sb.erp_url
        settings = _http_settings(kind, url, sb.token_url)
        cls = DataverseConnector if kind == "dataverse" else FinOpsConnector
        conn = cls(settings, contracts, retry=retry)
    if system == "crm":
        made = Case(
            conn,
            "products",
            ("productnumber",),
            "name",
            _lines(seed / "crm" / "products.jsonl"),
            sleeps,
            sb,
        )
    else:
        made = Case(
            conn,
            "CustomersV2",
            ("dataAreaId", "CustomerAccount"),
            "OrganizationName",
            _lines(seed / "erp" / "CustomersV2.jsonl"),
            sleeps,
            sb,
        )
    yield made
    conn.close()


def test_a_full_snapshot_reads_every_record_once_across_pages(case: Case) -> None:
    frame = case.connector.snapshot(case.entity, list(case.keys))
    existing = frame.filter(~pl.col(case.keys[-1]).str.starts_with("CONF-"))
    assert existing.height == case.seed_rows
    assert frame.select(case.keys).is_unique().all()


def test_only_the_selected_columns_come_back(case: Case) -> None:
    frame = case.read()
    assert frame.columns == [*case.keys, case.value]


def test_an_upsert_sent_twice_writes_each_record_once(
    case: Case, request: pytest.FixtureRequest
) -> None:
    key = f"CONF-{request.node.callspec.id}-1"
    batch = WriteBatch(keys=case.keys, inserts=pl.DataFrame([case.record(key, "First")]))
    case.connector.upsert(case.entity, batch)
    case.connector.upsert(case.entity, batch)  # a retry after a crash sends it again
    update = pl.DataFrame([{**case.key_of(key), case.value: "Second"}])
    for _ in range(2):
        results = case.connector.upsert(
            case.entity, WriteBatch(case.keys, pl.DataFrame(), (update,))
        )
        assert results["status"].to_list() == ["ok"]
    mine = case.read().filter(pl.col(case.keys[-1]) == key)
    assert mine[case.value].to_list() == ["Second"]


def test_one_failing_record_fails_alone_with_the_server_message(
    case: Case, request: pytest.FixtureRequest
) -> None:
    key = f"CONF-{request.node.callspec.id}-2"
    case.connector.upsert(case.entity, WriteBatch(case.keys, pl.DataFrame([case.record(key, "A")])))
    updates = pl.DataFrame(
        [{**case.key_of(key), case.value: "B"}, {**case.key_of(f"{key}-missing"), case.value: "C"}]
    )
    results = case.connector.upsert(case.entity, WriteBatch(case.keys, pl.DataFrame(), (updates,)))
    by_key = {r["record_key"]: r for r in results.iter_rows(named=True)}
    assert [r["status"] for r in by_key.values()] == ["ok", "failed"]
    failed = next(r for r in by_key.values() if r["status"] == "failed")
    assert failed["message"]
    assert case.read().filter(pl.col(case.keys[-1]) == key)[case.value].to_list() == ["B"]


def test_a_key_with_a_quote_round_trips(case: Case) -> None:
    key = "CONF-O'Brien & Sons"
    case.connector.upsert(case.entity, WriteBatch(case.keys, pl.DataFrame([case.record(key, "Q")])))
    update = pl.DataFrame([{**case.key_of(key), case.value: "Q2"}])
    results = case.connector.upsert(case.entity, WriteBatch(case.keys, pl.DataFrame(), (update,)))
    assert results["status"].to_list() == ["ok"]
    assert case.read().filter(pl.col(case.keys[-1]) == key)[case.value].to_list() == ["Q2"]


def test_429_is_honoured(case: Case) -> None:
    if case.sandbox is None:
        pytest.skip("the files connector makes no requests")
    case.sandbox.faults.throttle_every = 2  # counted: every other request, on any machine
    try:
        frame = case.connector.snapshot(case.entity, list(case.keys))
    finally:
        case.sandbox.faults.throttle_every = 0
    assert frame.height >= case.seed_rows
    assert case.sleeps and min(case.sleeps) >= 1.0  # every 429 waited its Retry-After


def test_stats_count_the_requests(case: Case) -> None:
    if case.sandbox is None:
        pytest.skip("the files connector makes no requests")
    before = case.sandbox.stats()
    case.connector.snapshot(case.entity, list(case.keys))
    after = case.sandbox.stats()
    system = "crm" if case.entity == "products" else "erp"
    assert sum(after[system]["requests"].values()) > sum(before[system]["requests"].values())
    assert json.dumps(after)  # plain JSON for benchmarks
    assert isinstance(Faults(), Faults)
