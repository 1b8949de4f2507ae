import unicodedata
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


def customers(**columns: list[object]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return staged(
        dataAreaId=["usmf"] * n,
        CustomerAccount=[f"A{i}" for i in range(n)],
        CustomerGroupId=["10"] * n,
        **columns,
    )


def test_control_and_bidi_characters_are_bad_format_named_never_echoed(
    contracts: ContractSet,
) -> None:
    frame = customers(
        OrganizationName=["Fabrikam\x00 Inc", "Contoso \x1b[31m", "Tailspin\u202egnp.exe"],
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    rejects = result.rejects.sort("__row")
    assert reasons(rejects) == [(i, "OrganizationName", "bad_format") for i in range(3)]
    assert rejects["message"].to_list() == [
        "OrganizationName holds U+0000 NUL at position 9: control and bidi characters are "
        "refused in text (no one could type it)",
        "OrganizationName holds U+001B ESC at position 9: control and bidi characters are "
        "refused in text (no one could type it)",
        "OrganizationName holds U+202E RIGHT-TO-LEFT OVERRIDE at position 9: control and bidi "
        "characters are refused in text (no one could type it)",
    ]
    assert rejects["value"].to_list() == [
        "Fabrikam<U+0000> Inc",
        "Contoso <U+001B>[31m",
        "Tailspin<U+202E>gnp.exe",
    ]
    assert result.valid.height == 0


@pytest.mark.parametrize(
    "char", ["\x01", "\x0b", "\x7f", "\x85", "\x9f", "\u061c", "\u200e", "\u200f", "\u2066"]
)
def test_every_refused_character_is_bad_format_even_in_a_multiline_column(
    contracts: ContractSet, char: str
) -> None:
    frame = customers(SalesMemo=["line 1\nline 2", f"line 1{char}", None])
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(1, "SalesMemo", "bad_format")]
    assert f"U+{ord(char):04X}" in result.rejects["message"][0]
    assert char not in result.rejects["message"][0] + result.rejects["value"][0]


def test_line_breaks_and_tabs_only_in_multiline_columns(contracts: ContractSet) -> None:
    frame = customers(
        OrganizationName=["Fabrikam", "Fabrikam\r\nInc\x00", "Fabrikam\tInc"],
        AddressStreet=["1 Main St\nSuite 2", "1 Main St", "1 Main St\tSuite 2"],
        SalesMemo=["a\r\nb\tc", None, "x\u2028y"],
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [
        (1, "OrganizationName", "bad_format"),
        (2, "OrganizationName", "bad_format"),
    ]
    assert result.rejects.sort("__row")["message"].to_list() == [
        "OrganizationName holds U+000D CR at position 9: a single-line column (a key, a name, "
        "a code) holds no line break or tab",
        "OrganizationName holds U+0009 TAB at position 9: a single-line column (a key, a name, "
        "a code) holds no line break or tab",
    ]
    assert result.valid["AddressStreet"].to_list() == ["1 Main St\nSuite 2"]


def test_a_key_holds_no_line_break_or_control(contracts: ContractSet) -> None:
    frame = staged(
        dataAreaId=["usmf"] * 3,
        CustomerAccount=["ACC-1", "ACC-2\n", "ACC-3"],
        CustomerGroupId=["10"] * 3,
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(1, "CustomerAccount", "bad_format")]
    assert result.rejects["value"][0] == "ACC-2<U+000A>"
    assert result.valid["CustomerAccount"].to_list() == ["ACC-1", "ACC-3"]


KEY_INVISIBLE = [
    *("\u00a0", "\u00ad", "\u1680", "\u180e", "\u2000", "\u2009", "\u200a", "\u200b"),
    *("\u200c", "\u200d", "\u202f", "\u205f", "\u2060", "\u2063", "\u3000", "\ufeff"),
]


@pytest.mark.parametrize("char", KEY_INVISIBLE, ids=[f"U+{ord(c):04X}" for c in KEY_INVISIBLE])
def test_a_key_holds_no_invisible_character_and_no_space_but_ascii(
    contracts: ContractSet, char: str
) -> None:
    # ACC-01003-BLU<ZWSP>EYO beside ACC-01003-BLUEYO would be a second F&O customer
    frame = staged(
        dataAreaId=["usmf"] * 3,
        CustomerAccount=["ACC-1", f"ACC-01003-BLU{char}EYO", f"ACC-3{char}"],
        CustomerGroupId=["10"] * 3,
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    rejects = result.rejects.sort("__row")
    assert reasons(rejects) == [
        (1, "CustomerAccount", "bad_format"),
        (2, "CustomerAccount", "bad_format"),
    ]
    point = f"U+{ord(char):04X}"
    assert rejects["message"][0].startswith(f"CustomerAccount holds {point} ")
    assert "at position 14" in rejects["message"][0]
    assert rejects["value"].to_list() == [f"ACC-01003-BLU<{point}>EYO", f"ACC-3<{point}>"]
    assert result.valid["CustomerAccount"].to_list() == ["ACC-1"]


def test_a_key_starts_with_no_space(contracts: ContractSet) -> None:
    frame = staged(
        dataAreaId=["usmf", " usm", "usmf", "usmf"],
        CustomerAccount=["ACC-1", "ACC-2", " ACC-3", "ACC-4 "],
        CustomerGroupId=["10"] * 4,
        OrganizationName=[" Leading spaces in a name are the name's own"] * 4,
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    rejects = result.rejects.sort("__row")
    assert reasons(rejects) == [
        (1, "dataAreaId", "bad_format"),
        (2, "CustomerAccount", "bad_format"),
    ]
    assert rejects["message"][1] == (
        "CustomerAccount ' ACC-3' starts with a space: a key never does (no one would find the "
        "record by typing its key)"
    )
    # a trailing space is ignored by both systems (SQL Server compares so): compare folds it
    assert result.valid["CustomerAccount"].to_list() == ["ACC-1", "ACC-4 "]


@pytest.mark.parametrize("char", ["\u200b", "\u2060", "\ufeff"])
def test_a_zero_width_character_or_bom_is_refused_in_every_single_line_column(
    contracts: ContractSet, char: str
) -> None:
    frame = customers(
        OrganizationName=[f"Blue{char} Yonder", "Blue Yonder"],
        SalesMemo=[f"a memo{char}", f"a memo{char}"],  # multi-line text keeps what it is given
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(0, "OrganizationName", "bad_format")]
    assert result.rejects["message"][0] == (
        f"OrganizationName holds U+{ord(char):04X} {unicodedata.name(char)} at position 5: an "
        "invisible character is refused in single-line text (no one could type it)"
    )
    assert result.rejects["value"][0] == f"Blue<U+{ord(char):04X}> Yonder"


def test_a_name_keeps_the_spaces_and_joiners_of_real_text(contracts: ContractSet) -> None:
    names = [
        "Soci\u00e9t\u00e9\u00a0G\u00e9n\u00e9rale",  # NBSP, as French typesetting puts it
        "M\u00fcller\u202fGmbH",  # NARROW NO-BREAK SPACE
        "\u0645\u06cc\u200c\u0631\u0648\u062f",  # Persian: ZWNJ is part of the spelling
        "\U0001f469\u200d\U0001f4bb Studio",  # an emoji sequence joined by ZWJ
        "\u682a\u5f0f\u4f1a\u793e\u3000\u30b5\u30f3\u30d7\u30eb",  # IDEOGRAPHIC SPACE
    ]
    result = validate(customers(OrganizationName=names), contracts.get("erp", "CustomersV2"))
    assert result.rejects.height == 0
    assert result.valid["OrganizationName"].to_list() == names


def test_an_int_outside_32_bits_is_out_of_range(contracts: ContractSet) -> None:
    lowest, highest = -(2**31), 2**31 - 1
    frame = customers(
        OrganizationNumberOfEmployees=[highest, highest + 1, lowest, lowest - 1, None, 2**53 + 2]
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    rejects = result.rejects.sort("__row")
    assert reasons(rejects) == [
        (1, "OrganizationNumberOfEmployees", "out_of_range"),
        (3, "OrganizationNumberOfEmployees", "out_of_range"),
        (5, "OrganizationNumberOfEmployees", "out_of_range"),
    ]
    assert rejects["value"].to_list() == ["2147483648", "-2147483649", "9007199254740994"]
    assert rejects["message"][0] == (
        "OrganizationNumberOfEmployees 2147483648 is outside what erp.CustomersV2 holds: a "
        "32-bit whole number, -2147483648 to 2147483647"
    )
    assert result.valid["OrganizationNumberOfEmployees"].to_list() == [highest, lowest, None]


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(pl.Float64, 9007199254740994.0), (pl.String, "2147483648"), (pl.Decimal(38, 2), 2**40)],
)
def test_an_int_read_from_a_float_text_or_decimal_is_held_to_32_bits(
    contracts: ContractSet, dtype: pl.DataType, value: object
) -> None:
    frame = customers(OrganizationNumberOfEmployees=[value, 12]).with_columns(
        pl.col("OrganizationNumberOfEmployees").cast(dtype)
    )
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(0, "OrganizationNumberOfEmployees", "out_of_range")]
    assert result.valid["OrganizationNumberOfEmployees"].to_list() == [12]


def test_an_int_with_allowed_values_is_checked_once(contracts: ContractSet) -> None:
    frame = staged(productnumber=["P1", "P2"], name=["a", "b"], producttypecode=[1, 2**32 + 1])
    result = validate(frame, contracts.get("crm", "products"))
    assert reasons(result.rejects) == [(1, "producttypecode", "not_allowed_value")]


def test_length_is_counted_in_utf16_code_units_as_the_systems_count(
    contracts: ContractSet,
) -> None:
    emoji = "\U0001f600"
    frame = customers(OrganizationName=[emoji * 50, emoji * 51, "é" * 100])
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(1, "OrganizationName", "too_long")]
    assert result.rejects["message"][0] == (
        "OrganizationName is 51 characters (102 UTF-16 code units, as the systems count them), "
        "longer than the 100 the target holds"
    )


def test_a_too_long_value_is_shown_cut_and_says_so(contracts: ContractSet) -> None:
    frame = customers(OrganizationName=["a" * 100, "b" * 5000, None])
    result = validate(frame, contracts.get("erp", "CustomersV2"))
    assert reasons(result.rejects) == [(1, "OrganizationName", "too_long")]
    assert result.rejects["value"][0] == "b" * 200 + "… (first 200 of 5000 characters)"
    assert result.rejects["message"][0] == (
        "OrganizationName is 5000 characters, longer than the 100 the target holds"
    )


def test_source_text_longer_than_the_source_system_holds_is_too_long(
    contracts: ContractSet,
) -> None:
    source = pl.DataFrame(
        {
            "accountnumber": ["ACC-1", "ACC-2", "ACC-3"],
            "description": ["short", "d" * 2001, "x" * 3000],
            "p2c_accountnumber": ["ACC-1", "ACC-2", "ACC-3" * 1000],  # derived: no contract
        }
    )
    frame = customers(SalesMemo=["short", "d" * 2001]).with_columns(pl.Series("__row", [0, 1]))
    result = validate(
        frame,
        contracts.get("erp", "CustomersV2"),
        source=source,
        source_contract=contracts.get("crm", "accounts"),
    )
    # row 2 is not staged (filtered out or rejected earlier): it is not counted twice
    assert reasons(result.rejects) == [(1, "description", "too_long")]
    assert result.rejects["message"][0] == (
        "description is 2001 characters, longer than the 2000 crm.accounts holds: "
        "no real crm.accounts record carries it"
    )
    assert result.valid["__row"].to_list() == [0]
