from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from p2c_etl.errors import ContractError
from p2c_etl.model.contracts import ContractSet, load_contract, parse_type
from p2c_etl.stages.validate import validate


def staged(**columns: list[object]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    frame = pl.DataFrame(columns, strict=False)
    return frame.with_columns(
        pl.int_range(n).cast(pl.Int64).alias("__row"), pl.lit("k").alias("__key")
    )


def reasons(result_rejects: pl.DataFrame) -> list[tuple[int, str, str]]:
    return sorted(result_rejects.select("__row", "field", "reason").rows())


def test_too_long_is_a_reject_never_a_truncation(contracts: ContractSet) -> None:
    frame = staged(
        dataAreaId=["usmf", "usmf"],
        CustomerAccount=["A1", "A2"],
        CustomerGroupId=["10", "10"],
        OrganizationName=["x" * 100, "y" * 101],
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(1, "OrganizationName", "too_long")]
    assert "101 characters, longer than the 100" in result.rejects["message"][0]
    assert result.valid["OrganizationName"].to_list() == ["x" * 100]


def test_every_row_of_a_duplicate_key_is_rejected(contracts: ContractSet) -> None:
    frame = staged(
        dataAreaId=["usmf"] * 4,
        CustomerAccount=["A1", "A2", "A1", "A3"],
        CustomerGroupId=["10"] * 4,
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [
        (0, "dataAreaId,CustomerAccount", "duplicate_key"),
        (2, "dataAreaId,CustomerAccount", "duplicate_key"),
    ]
    assert result.valid["CustomerAccount"].to_list() == ["A2", "A3"]


def test_casts_exactly_or_rejects(contracts: ContractSet) -> None:
    frame = staged(
        productnumber=["P1", "P2", "P3", "P4"],
        name=["a", "b", "c", None],
        price=[Decimal("1.5"), Decimal("2.12345"), Decimal("3"), Decimal("4")],
        producttypecode=["1", "3", "seven", "9"],
        isstockitem=["true", "false", "yes", "maybe"],
    )
    frame = frame.with_columns(pl.col("price").cast(pl.Decimal(32, 6)))
    result = validate(frame, contracts.get("crm", "products"))
    assert reasons(result.rejects) == [
        (1, "price", "precision_loss"),
        (2, "producttypecode", "wrong_type"),
        (3, "isstockitem", "wrong_type"),
        (3, "name", "null_not_allowed"),
        (3, "producttypecode", "not_allowed_value"),
    ]
    assert result.valid["productnumber"].to_list() == ["P1"]
    assert result.valid.schema["price"] == pl.Decimal(19, 4)
    assert result.valid["price"].to_list() == [Decimal("1.5000")]


def test_parse_type() -> None:
    assert parse_type("decimal(19,4)") == pl.Decimal(19, 4)
    assert parse_type("guid") == pl.String
    with pytest.raises(ValueError, match="unknown type"):
        parse_type("money")


def test_a_broken_contract_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(
        'entity = "x"\nsystem = "crm"\nkeys = ["id"]\n[columns]\nid = { type = "uuid" }\n'
    )
    with pytest.raises(ContractError, match=r"x\.toml: unknown type 'uuid'"):
        load_contract(path)
    path.write_text(
        'entity = "x"\nsystem = "crm"\nkeys = ["nope"]\n[columns]\nid = { type = "guid" }\n'
    )
    with pytest.raises(ContractError, match="has no column 'nope'"):
        load_contract(path)


def test_every_shipped_contract_loads(contracts: ContractSet) -> None:
    names = {(c.system, c.entity) for c in contracts}
    assert {
        ("crm", "accounts"),
        ("crm", "products"),
        ("erp", "CustomersV2"),
        ("erp", "SellableReleasedProducts"),
    } <= names
