"""Compare matches keys the way the targets do (SQL Server: case-insensitive, trailing spaces
ignored) and settles values a target cannot hold (F&O's empty date, 1900-01-01)."""

from dataclasses import replace
from datetime import date

import polars as pl

from p2c_etl.model.flow import EntityRef, Field, Flow
from p2c_etl.model.rejects import KEY, ROW
from p2c_etl.stages.compare import compare_frames

FLOW = Flow(
    name="customers",
    description="test",
    source=EntityRef("crm", "accounts"),
    target=EntityRef("erp", "CustomersV2"),
    source_keys=("accountnumber",),
    keys=("dataAreaId", "CustomerAccount"),
    fields=(
        Field("dataAreaId", default="usmf"),
        Field("CustomerAccount", "accountnumber"),
        Field("OrganizationName", "name"),
    ),
)
SCHEMA = {"dataAreaId": pl.String, "CustomerAccount": pl.String, "OrganizationName": pl.String}


def staged(*rows: tuple[str, str, str]) -> pl.DataFrame:
    frame = pl.DataFrame(list(rows), schema=SCHEMA, orient="row")
    return frame.with_columns(
        pl.int_range(frame.height, dtype=pl.Int64).alias(ROW),
        pl.col("CustomerAccount").alias(KEY),
    )


def target(*rows: tuple[str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SCHEMA, orient="row")


def no_claims() -> pl.DataFrame:
    return pl.DataFrame(schema={"dataAreaId": pl.String, "CustomerAccount": pl.String})


def test_a_key_spelt_differently_is_the_target_record_under_its_spelling() -> None:
    compared = compare_frames(
        "r1",
        FLOW,
        staged(("USMF", "ACC-1", "One"), ("usmf", "ACC-2 ", "Two")),
        target(("usmf", "acc-1", "One"), ("usmf", "acc-2", "Old name")),
        no_claims(),
    )
    info = compared.info
    assert (info.inserts, info.updates, info.unchanged, info.target_only) == (0, 1, 1, 0)
    assert compared.restaged
    assert compared.staged.select("dataAreaId", "CustomerAccount", KEY).rows() == [
        ("usmf", "acc-1", "ACC-1"),
        ("usmf", "acc-2", "ACC-2 "),
    ]
    (change,) = compared.result.changes.rows(named=True)
    assert (change["CustomerAccount"], change["changed_fields"]) == ("acc-2", ["OrganizationName"])


def test_source_records_one_folded_key_apart_are_duplicate_key_rejects() -> None:
    compared = compare_frames(
        "r1",
        FLOW,
        staged(("usmf", "ACC-X", "Upper"), ("usmf", "acc-x ", "Lower"), ("usmf", "B", "Bee")),
        target(("usmf", "acc-x", "Held"), ("usmf", "B", "Bee")),
        no_claims(),
    )
    rejects = compared.rejects
    assert rejects.select("source_row", "reason", "value").rows() == [
        (0, "duplicate_key", "usmf|ACC-X"),
        (1, "duplicate_key", "usmf|acc-x "),
    ]
    assert rejects["message"][0].startswith("2 source records have this key once case")
    info = compared.info
    assert (info.inserts, info.updates, info.unchanged, info.target_only) == (0, 0, 1, 0)
    assert info.rejected == 2
    assert compared.staged["CustomerAccount"].to_list() == ["B"]


def test_a_key_the_target_holds_twice_once_folded_is_a_reject() -> None:
    compared = compare_frames(
        "r1",
        FLOW,
        staged(("usmf", "ACC-Y", "Y")),
        target(("usmf", "ACC-Y", "Y"), ("usmf", "acc-y", "y")),
        no_claims(),
    )
    (message,) = compared.rejects["message"].to_list()
    assert message.startswith("erp.CustomersV2 holds 2 records with this key")
    info = compared.info
    assert (info.inserts, info.updates, info.unchanged, info.target_only, info.rejected) == (
        0,
        0,
        0,
        0,
        1,
    )


def test_a_rejected_source_record_claims_its_target_record_however_spelt() -> None:
    claims = pl.DataFrame({"dataAreaId": ["usmf"], "CustomerAccount": ["ACC-R"]})
    compared = compare_frames(
        "r1", FLOW, staged(), target(("usmf", "acc-r", "Rejected in the source")), claims
    )
    assert compared.info.target_only == 0


def test_finops_dates_treat_1900_01_01_as_empty() -> None:
    dated = Flow(
        name="quotes",
        description="test",
        source=EntityRef("crm", "quotes"),
        target=EntityRef("erp", "CDSSalesQuotationHeaders"),
        source_keys=("quotenumber",),
        keys=("SalesQuotationNumber",),
        fields=(
            Field("SalesQuotationNumber", "quotenumber"),
            Field("RequestedShippingDate", "requestdeliveryby"),
        ),
    )
    schema = {"SalesQuotationNumber": pl.String, "RequestedShippingDate": pl.Date}
    rows = pl.DataFrame([("Q-1", date(1900, 1, 1))], schema=schema, orient="row")
    held = pl.DataFrame([("Q-1", None)], schema=schema, orient="row")
    mapped = rows.with_columns(pl.lit(0, pl.Int64).alias(ROW), pl.lit("Q-1").alias(KEY))
    claims = pl.DataFrame(schema={"SalesQuotationNumber": pl.String})
    assert compare_frames("r1", dated, mapped, held, claims).info.unchanged == 1
    to_dataverse = replace(dated, target=EntityRef("crm", "quotes"))
    assert compare_frames("r1", to_dataverse, mapped, held, claims).info.updates == 1
