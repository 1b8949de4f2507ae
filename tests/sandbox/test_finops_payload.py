"""`FinOpsWriter.payload`: a body of known fields is read in one go; any other body (an
unknown name, an annotation, a value that does not fit) field by field, so the error names
the first field that fails, in the body's order, whichever way it was read."""

from __future__ import annotations

from decimal import Decimal

import pytest

from p2c_etl.model.contracts import ContractSet
from p2c_etl.resources import contracts_dir
from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.finops_write import FinOpsWriter
from p2c_etl.sandbox.protocol import ODataError
from p2c_etl.sandbox.seed import build_store
from p2c_etl.sandbox.store import Table


@pytest.fixture(scope="module")
def writer() -> FinOpsWriter:
    store = build_store("erp", None, ContractSet.load(contracts_dir()), lambda n: None)
    return FinOpsWriter(store, Faults(), "usmf")


def customers(writer: FinOpsWriter) -> Table:
    table = writer.store.table("CustomersV2")
    assert table is not None
    return table


def test_known_fields_are_read_typed_and_nulls_kept(writer: FinOpsWriter) -> None:
    body = {"CustomerAccount": "C-1", "CreditLimit": Decimal("12.5"), "AddressCounty": None}
    values = writer.payload(customers(writer), body)
    assert values == {
        "CustomerAccount": "C-1",
        "CreditLimit": Decimal("12.50"),
        "AddressCounty": None,
    }
    assert list(values) == list(body)


def test_annotations_are_skipped_and_unknown_names_refused(writer: FinOpsWriter) -> None:
    table = customers(writer)
    assert writer.payload(table, {"@odata.type": "x", "CustomerAccount": "C-1"}) == {
        "CustomerAccount": "C-1"
    }
    with pytest.raises(ODataError, match="property 'Nope' does not exist"):
        writer.payload(table, {"CustomerAccount": "C-1", "Nope": 1})


def test_the_first_field_that_does_not_fit_is_named(writer: FinOpsWriter) -> None:
    table = customers(writer)
    body = {"CustomerAccount": "C-1", "dataAreaId": "toolong", "CreditLimit": "1.0000001"}
    with pytest.raises(ODataError, match="Field dataAreaId of CustomersV2") as raised:
        writer.payload(table, body)
    assert raised.value.status == 400
    with pytest.raises(ODataError, match="Field CreditLimit of CustomersV2"):
        writer.payload(table, {"CreditLimit": "1.0000001", "dataAreaId": "toolong"})
