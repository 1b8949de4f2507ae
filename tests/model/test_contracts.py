"""The shipped contracts say what the real systems allow, and a contract file is read strictly."""

from __future__ import annotations

from pathlib import Path

import pandera.errors
import polars as pl
import pytest

from p2c_etl.errors import ContractError
from p2c_etl.model.contracts import ContractSet, load_contract, utf16_length
from p2c_etl.resources import contracts_dir


def test_every_text_column_of_every_contract_is_bounded(contracts: ContractSet) -> None:
    unbounded = [
        f"{c.system}/{c.entity}.{s.name}"
        for c in contracts
        for s in c.columns.values()
        if s.type == "string" and s.max_length is None and not s.allowed
    ]
    assert unbounded == []


def test_every_contract_file_says_where_its_lengths_come_from() -> None:
    files = sorted(contracts_dir().glob("*/*.toml"))
    assert len(files) == 22
    silent = [f.name for f in files if "# Lengths:" not in f.read_text(encoding="utf-8")]
    assert silent == []


def test_no_key_and_no_name_is_multiline(contracts: ContractSet) -> None:
    multiline = {
        f"{c.system}/{c.entity}.{s.name}"
        for c in contracts
        for s in c.columns.values()
        if s.multiline
    }
    assert all(
        any(word in name.lower() for word in ("description", "memo", "street", "line1"))
        for name in multiline
    ), multiline
    assert "erp/CustomersV2.SalesMemo" in multiline
    assert "erp/CustomersV2.OrganizationName" not in multiline


def test_the_memo_an_account_description_goes_to_is_bounded_by_sql_server(
    contracts: ContractSet,
) -> None:
    memo = contracts.get("erp", "CustomersV2").column("SalesMemo")
    assert memo.max_length == 2**30 - 1  # nvarchar(max): 2^31 - 1 bytes, two a code unit
    assert contracts.get("crm", "accounts").column("description").max_length == 2000


def contract_file(tmp_path: Path, columns: str, keys: str = '["id"]') -> Path:
    path = tmp_path / "x.toml"
    path.write_text(f'entity = "x"\nsystem = "erp"\nkeys = {keys}\n[columns]\n{columns}\n')
    return path


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ('id = { type = "string", max_length = 0 }', "max_length must be a whole number above 0"),
        ('id = { type = "string", max_length = "20" }', "max_length must be a whole number"),
        ('id = { type = "string", max_length = true }', "max_length must be a whole number"),
        ('id = { type = "int", multiline = true }', "multiline is true or false, on text"),
        ('id = { type = "string", multiline = "yes" }', "multiline is true or false"),
        ('id = { type = "string", max_length = 5, multiline = true }', "cannot be multiline"),
        ('id = { type = "int", allowed = [1, 2147483648] }', "allowed values of an int are 32"),
        ('id = { type = "int", allowed = [1, "2"] }', "allowed values of an int are 32-bit"),
    ],
)
def test_a_contract_file_is_read_strictly(tmp_path: Path, columns: str, message: str) -> None:
    with pytest.raises(ContractError, match=rf"x\.toml: .*{message}"):
        load_contract(contract_file(tmp_path, columns))


def test_utf16_length_counts_a_character_beyond_the_bmp_twice() -> None:
    frame = pl.DataFrame({"t": ["abc", "\U0001f600x", "é", None]})
    assert frame.select(utf16_length(pl.col("t")))["t"].to_list() == [3, 3, 1, None]


def test_every_contract_file_with_integers_says_they_are_32_bit() -> None:
    files = sorted(contracts_dir().glob("*/*.toml"))
    with_ints = [f for f in files if '"int"' in f.read_text(encoding="utf-8")]
    assert len(with_ints) == 13
    silent = [
        f.name
        for f in with_ints
        if "# Integers: every `int` column is 32-bit" not in f.read_text(encoding="utf-8")
    ]
    assert silent == []


def test_an_int_column_holds_32_bits(contracts: ContractSet) -> None:
    schema = contracts.get("erp", "CustomersV2").pandera_schema(
        ["dataAreaId", "CustomerAccount", "CustomerGroupId", "OrganizationNumberOfEmployees"]
    )
    frame = pl.DataFrame(
        {
            "dataAreaId": ["usmf"] * 3,
            "CustomerAccount": ["A", "B", "C"],
            "CustomerGroupId": ["10"] * 3,
            "OrganizationNumberOfEmployees": [2**31 - 1, 2**31, None],
        }
    )
    with pytest.raises(pandera.errors.SchemaError, match="in_range"):
        schema.validate(frame)
    schema.validate(frame.head(1))


@pytest.mark.parametrize(
    ("modified", "message"),
    [
        ("at", "'modified' column 'at' must be a datetime"),
        ("id", "'modified' column 'id' cannot be a key"),
        ("gone", "has no column 'gone'"),
    ],
)
def test_a_modification_time_column_is_a_datetime_that_is_not_a_key(
    tmp_path: Path, modified: str, message: str
) -> None:
    path = tmp_path / "x.toml"
    path.write_text(
        f'entity = "x"\nsystem = "erp"\nkeys = ["id"]\nmodified = "{modified}"\n[columns]\n'
        'id = { type = "int" }\nat = { type = "date" }\nwhen = { type = "datetime" }\n'
    )
    with pytest.raises(ContractError, match=rf"x\.toml: .*{message}"):
        load_contract(path)
    path.write_text(path.read_text().replace(f'modified = "{modified}"', 'modified = "when"'))
    assert load_contract(path).modified == "when"
