from decimal import Decimal

import polars as pl

from p2c_etl.flows.accounts import ACCOUNTS
from p2c_etl.flows.valuemaps import COUNTRY_TO_ISO3_BLANK_USA
from p2c_etl.model.flow import EntityRef, Field, Filter, Flow, FromContext, Lookup, ValueMap
from p2c_etl.stages.transform import transform

CURRENCIES = pl.DataFrame(
    {"transactioncurrencyid": ["g-usd", "g-eur"], "isocurrencycode": ["USD", "EUR"]}
)
REFS = {("crm", "transactioncurrencies"): CURRENCIES}
SIZES = ValueMap("sizes", {"Small": "S", "large ": "L", "": "M"})

FLOW = Flow(
    name="t",
    description="test",
    source=EntityRef("crm", "things"),
    target=EntityRef("erp", "Things"),
    source_keys=("id",),
    keys=("dataAreaId", "Id"),
    source_filters=(Filter("state", "eq", 0),),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("Id", "id"),
        Field("Size", "size", value_map=SIZES),
        Field(
            "Currency",
            "cur",
            lookup=Lookup(
                "crm", "transactioncurrencies", "transactioncurrencyid", "isocurrencycode"
            ),
        ),
        Field("Group", "group", default="10"),
        Field("Amount", "amount"),
    ),
)


def source(**columns: list[object]) -> pl.DataFrame:
    base: dict[str, list[object]] = {
        "id": ["A", "B", "C"],
        "state": [0, 0, 0],
        "size": ["small", None, "LARGE"],
        "cur": ["g-usd", "g-eur", None],
        "group": ["20", "  ", None],
        "amount": [Decimal("1.10"), Decimal("2.00"), None],
    }
    base.update(columns)
    return pl.DataFrame(base, schema_overrides={"amount": pl.Decimal(19, 2)}, strict=False)


def test_renames_maps_defaults_and_looks_up() -> None:
    out = transform(FLOW, source(), REFS, {"company": "usmf"})
    assert out.rejects.height == 0
    assert out.staged.select("dataAreaId", "Id", "Size", "Currency", "Group").rows() == [
        ("usmf", "A", "S", "USD", "20"),
        ("usmf", "B", "M", "EUR", "10"),
        ("usmf", "C", "L", None, "10"),
    ]
    assert out.staged["Amount"].to_list() == [Decimal("1.10"), Decimal("2.00"), None]
    assert out.staged.schema["Amount"] == pl.Decimal(19, 2)


def test_filtered_rows_are_counted_not_mapped() -> None:
    out = transform(FLOW, source(state=[0, 1, 0]), REFS, {"company": "usmf"})
    assert out.filtered_out == 1
    assert out.staged["Id"].to_list() == ["A", "C"]


def test_unmapped_value_and_missing_reference_become_rejects_naming_record_and_field() -> None:
    out = transform(
        FLOW,
        source(size=["huge", None, None], cur=["g-usd", "g-xxx", None]),
        REFS,
        {"company": "usmf"},
    )
    assert out.staged["Id"].to_list() == ["C"]
    rejects = out.rejects.sort("__row").select("__row", "field", "reason").rows()
    assert rejects == [(0, "Size", "unmapped_value"), (1, "Currency", "missing_reference")]
    messages = out.rejects.sort("__row")["message"].to_list()
    assert "'huge' is not in value map 'sizes'" in messages[0]
    assert "transactioncurrencyid 'g-xxx' is not in crm.transactioncurrencies" in messages[1]
    # Rejected rows still claim their target key, so the diff does not call them target-only.
    assert out.claimed["Id"].to_list() == ["A", "B", "C"]


def test_country_value_map_takes_names_iso2_iso3_and_blank_is_usa() -> None:
    flow = Flow(
        name="c",
        description="",
        source=EntityRef("crm", "a"),
        target=EntityRef("erp", "B"),
        source_keys=("id",),
        keys=("Id",),
        fields=(
            Field("Id", "id"),
            Field("Country", "country", value_map=COUNTRY_TO_ISO3_BLANK_USA),
        ),
    )
    frame = pl.DataFrame(
        {
            "id": list("abcdefg"),
            "country": ["Germany", "ca", " GBR ", "", None, "United States of America", "u.s.a."],
        }
    )
    out = transform(flow, frame, {}, {})
    assert out.staged["Country"].to_list() == ["DEU", "CAN", "GBR", "USA", "USA", "USA", "USA"]


def test_accounts_flow_sets_the_template_defaults() -> None:
    frame = pl.DataFrame(
        {
            "accountnumber": ["ACC-1"],
            "name": ["Fourth Coffee"],
            "statecode": [0],
            "_transactioncurrencyid_value": ["g-usd"],
            "address1_country": [None],
        }
    )
    columns = {
        c: pl.lit(None, pl.String) for c in ACCOUNTS.source_columns if c not in frame.columns
    }
    out = transform(ACCOUNTS, frame.with_columns(**columns), REFS, {"company": "usmf"})
    row = out.staged.row(0, named=True)
    assert {
        k: row[k]
        for k in (
            "dataAreaId",
            "CustomerAccount",
            "PartyNumber",
            "PartyType",
            "CustomerGroupId",
            "LanguageId",
            "SiteId",
            "WarehouseId",
            "IsExternallyMaintained",
            "SalesCurrencyCode",
            "AddressCountryRegionISOCode",
        )
    } == {
        "dataAreaId": "usmf",
        "CustomerAccount": "ACC-1",
        "PartyNumber": "ACC-1",
        "PartyType": "Organization",
        "CustomerGroupId": "10",
        "LanguageId": "en-us",
        "SiteId": "1",
        "WarehouseId": "13",
        "IsExternallyMaintained": "Yes",
        "SalesCurrencyCode": "USD",
        "AddressCountryRegionISOCode": "USA",
    }
    assert row["InvoiceAddressCountryRegionISOCode"] is None
