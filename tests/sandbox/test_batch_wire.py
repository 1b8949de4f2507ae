"""The write path at wire speed keeps its exactness (issue 12, item 6): JSON written by orjson
with decimals as their own digits, column readers made once per table, lookups of an
`UpsertMultiple` resolved once per request, and `$batch` bodies of a thousand change sets
written by the connector, answered by the sandbox and read back by the connector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import polars as pl
import pytest

from p2c_etl.connectors.odata import BatchRequest, batch_body, json_object, parse_batch
from p2c_etl.model.contracts import ColumnSpec
from p2c_etl.sandbox.jsonout import dataverse_date, dumps, finops_date
from p2c_etl.sandbox.server import Sandbox
from p2c_etl.sandbox.values import reader
from tests.sandbox.conftest import CRM_SCOPE, ERP_SCOPE, Bearer

DV = "/api/data/v9.2/"
FO = "/data/"
EACH = "e1ec6da2-9d8d-5f90-b77a-3dda49a66422"
SCHEDULE = "59f0e86e-3dc4-5c4b-86c0-3b0192eb21f7"
USD = "e41e0412-30b0-5558-9163-aba72f877897"


# --- JSON out -------------------------------------------------------------------------------


def test_decimals_are_written_as_their_own_digits() -> None:
    values = {
        "money": Decimal("1234.5000"),
        "tiny": Decimal("-0.000001"),
        "wide": Decimal("123456789012345678901234567890.123456"),
        "whole": Decimal("100"),
        "list": [Decimal("0.10"), None, True, 7],
    }
    text = dumps(values, dataverse_date).decode()
    assert text == (
        '{"money":1234.5000,"tiny":-0.000001,"wide":123456789012345678901234567890.123456,'
        '"whole":100,"list":[0.10,null,true,7]}'
    )
    assert json.loads(text, parse_float=Decimal)["wide"] == values["wide"]


def test_text_dates_and_mappings_are_written_as_each_service_writes_them() -> None:
    record = MappingProxyType(
        {
            "name": 'Zoë "quoted" \x00 \u2028',
            "day": date(2026, 3, 1),
            "at": datetime(2026, 3, 1, 8, 30, 15, 999, tzinfo=UTC),
        }
    )
    dataverse = json.loads(dumps({"value": [record]}, dataverse_date))["value"][0]
    assert dataverse == {
        "name": 'Zoë "quoted" \x00 \u2028',
        "day": "2026-03-01",
        "at": "2026-03-01T08:30:15Z",
    }
    assert json.loads(dumps(record, finops_date))["day"] == "2026-03-01T12:00:00Z"
    assert "Zoë".encode() in dumps(record, finops_date)  # UTF-8, not \\u escapes


def test_what_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        dumps({"money": Decimal("NaN")}, dataverse_date)
    with pytest.raises(TypeError):
        dumps({"money": 1 + 2j}, dataverse_date)


def test_the_connector_writes_records_exactly() -> None:
    record = {
        "CreditLimit": Decimal("98765432109876.543210"),
        "Name": "O'Brien & Zoë",
        "Day": date(2026, 3, 1),
        "At": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
        "Count": 3,
        "Flag": False,
        "Empty": None,
    }
    text = json_object(record)
    assert text == (
        '{"CreditLimit":98765432109876.543210,"Name":"O\'Brien & Zoë","Day":"2026-03-01",'
        '"At":"2026-03-01T08:30:00+00:00","Count":3,"Flag":false,"Empty":null}'
    )
    assert json.loads(text, parse_float=Decimal)["CreditLimit"] == record["CreditLimit"]


# --- column readers -------------------------------------------------------------------------


def test_a_column_reader_refuses_what_does_not_fit_and_keeps_what_does() -> None:
    name = reader(ColumnSpec("name", "string", pl.String(), max_length=3))
    assert name("abc") == "abc" and name(None) is None
    with pytest.raises(ValueError, match="exceeds the maximum allowed length of 3"):
        name("abcd")
    with pytest.raises(ValueError, match="expected text"):
        name(12)
    code = reader(ColumnSpec("statecode", "int", pl.Int32(), allowed=(0, 1)))
    assert code(1) == 1
    with pytest.raises(ValueError, match=r"'2' is not one of the allowed values \(0, 1\)"):
        code(2)
    price = reader(ColumnSpec("price", "decimal(19,4)", pl.Decimal(19, 4)))
    assert str(price(Decimal("12.5"))) == "12.5000"
    with pytest.raises(ValueError, match="more than 4 decimal places"):
        price(Decimal("1.23456"))


# --- a thousand change sets through the connector and the sandbox --------------------------


@pytest.fixture(scope="module")
def sandbox(keyed_seed: Path) -> Iterator[Sandbox]:
    with Sandbox(keyed_seed / "crm", keyed_seed / "erp") as sb:
        yield sb


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture(scope="module")
def erp(sandbox: Sandbox, bearer: Bearer) -> Iterator[httpx.Client]:
    with _client(sandbox.erp_url + FO, bearer(sandbox, ERP_SCOPE)) as client:
        yield client


@pytest.fixture(scope="module")
def crm(sandbox: Sandbox, bearer: Bearer) -> Iterator[httpx.Client]:
    with _client(sandbox.crm_url + DV, bearer(sandbox, CRM_SCOPE)) as client:
        yield client


def _customer(number: str, limit: Decimal) -> dict[str, Any]:
    return {
        "dataAreaId": "usmf",
        "CustomerAccount": number,
        "CustomerGroupId": "10",
        "OrganizationName": f"Customer {number}",
        "CreditLimit": limit,
    }


def test_a_batch_of_a_thousand_creates_is_answered_and_stored_exactly(
    sandbox: Sandbox, erp: httpx.Client
) -> None:
    limits = [Decimal(i) / 1000 + Decimal("1000000000.000001") for i in range(1000)]
    customers = [_customer(f"WIRE-{i:04d}", limit) for i, limit in enumerate(limits)]
    customers[500]["CustomerGroupId"] = None  # must be filled in: this change set alone fails
    requests = [
        BatchRequest("POST", f"{erp.base_url}CustomersV2", json_object(c)) for c in customers
    ]
    content_type, body = batch_body(requests)
    response = erp.post("$batch", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200
    answers = parse_batch(response.headers["Content-Type"], response.content)
    assert [a.status for a in answers] == [201] * 500 + [400] + [201] * 499
    assert "CustomerGroupId" in answers[500].message
    shown = json.loads(answers[999].body, parse_float=Decimal)
    assert shown["CustomerAccount"] == "WIRE-0999" and shown["CreditLimit"] == limits[999]
    assert '"CreditLimit":1000000000.999001' in answers[999].body  # decimal(32,6), as stored
    stored = {
        r["CustomerAccount"]: r["CreditLimit"]
        for r in sandbox.records("erp", "CustomersV2")
        if r["CustomerAccount"].startswith("WIRE-")
    }
    assert len(stored) == 999 and "WIRE-0500" not in stored
    assert stored["WIRE-0001"] == Decimal("1000000000.001001")
    assert all(isinstance(v, Decimal) for v in stored.values())


def _product(number: str, uom: str = EACH) -> dict[str, Any]:
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.product",
        "productnumber": number,
        "name": f"Product {number}",
        "price": "12.3400",
        "defaultuomid@odata.bind": f"/uoms({uom})",
        "defaultuomscheduleid@odata.bind": f"/uomschedules({SCHEDULE})",
        "transactioncurrencyid@odata.bind": f"/transactioncurrencies({USD})",
    }


def test_targets_bound_to_one_record_are_all_written_with_its_id(
    sandbox: Sandbox, crm: httpx.Client
) -> None:
    targets = [_product(f"WIRE-P{i:03d}") for i in range(300)]
    action = "products/Microsoft.Dynamics.CRM.UpsertMultiple"
    assert crm.post(action, json={"Targets": targets}).status_code == 204
    written = [r for r in sandbox.records("crm", "products") if r["productnumber"][:6] == "WIRE-P"]
    assert len(written) == 300
    assert {r["_defaultuomid_value"] for r in written} == {EACH}
    assert {r["_defaultuomscheduleid_value"] for r in written} == {SCHEDULE}
    assert {r["price"] for r in written} == {Decimal("12.3400")}

    missing = "00000000-0000-4000-8000-000000000001"
    dangling = [_product("WIRE-Q1"), _product("WIRE-Q2", uom=missing)]
    refused = crm.post(action, json={"Targets": dangling})
    assert refused.status_code == 400
    assert "Target 2" in refused.json()["error"]["message"]
    numbers = {r["productnumber"] for r in sandbox.records("crm", "products")}
    assert not {"WIRE-Q1", "WIRE-Q2"} & numbers
