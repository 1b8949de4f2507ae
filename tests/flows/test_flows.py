"""Each flow on a few literal rows: filters, lookups, value maps, derived facts."""

import re
from datetime import date
from decimal import Decimal

import polars as pl

from p2c_etl.flows import ALL_FLOWS
from p2c_etl.flows.contacts import CONTACT_CUSTOMERS, CONTACTS
from p2c_etl.flows.derived import generated_number
from p2c_etl.flows.orders import ORDER_HEADERS_BACK, ORDER_LINES_BACK, ORDER_LINES_OUT
from p2c_etl.flows.quotes import QUOTE_HEADERS_FLOW, QUOTE_LINES_FLOW
from p2c_etl.model.flow import dependency_order
from p2c_etl.stages.transform import transform

CTX = {"company": "usmf", "rounding": "half_away_from_zero"}
ACCOUNTS = pl.DataFrame({"accountid": ["a-1", "a-2"], "accountnumber": ["ACC-1", None]})
CONTACT_IDS = pl.DataFrame(
    {"contactid": ["c-1", "c-2", "c-3"], "msdynce_contactnumber": ["CON-1", "CON-2", "CON-3"]}
)
CUSTOMERS = pl.DataFrame(
    {
        "dataAreaId": ["usmf", "usmf", "demf"],
        "CustomerAccount": ["ACC-1", "CON-1", "CON-2"],
        "PartyNumber": ["P-ACC-1", "P-CON-1", "P-CON-2"],
    }
)
CURRENCIES = pl.DataFrame({"transactioncurrencyid": ["g-usd"], "isocurrencycode": ["USD"]})
PRODUCTS = pl.DataFrame(
    {
        "productid": ["p-1", "p-2", "p-9"],
        "productnumber": ["D1", "D2", "D9"],
        "msdynce_ismaintainedexternally": [True, False, True],
    }
)
UOMS = pl.DataFrame({"uomid": ["u-each", "u-pallet"], "name": ["Each", "Pallet"]})


def with_columns(frame: pl.DataFrame, flow_columns: tuple[str, ...]) -> pl.DataFrame:
    """`frame` plus every other source column the flow reads, all null."""
    extra = {c: pl.lit(None) for c in flow_columns if c not in frame.columns}
    return frame.with_columns(**extra)


def test_flows_run_in_dependency_order() -> None:
    order = [f.name for f in dependency_order(ALL_FLOWS)]
    for flow in ALL_FLOWS:
        for dependency in flow.depends_on:
            assert order.index(dependency) < order.index(flow.name)
    assert len(order) == 12


def test_generated_numbers_are_stable_and_well_formed() -> None:
    number = generated_number("CON", "0b6f8a52-3c1d-4e8f-9a7b-5d4c3b2a1f00")
    assert re.fullmatch(r"CON-\d{5}-[A-Z0-9]{6}", number)
    assert number == generated_number("CON", "0B6F8A52-3C1D-4E8F-9A7B-5D4C3B2A1F00")
    assert number != generated_number("CON", "0b6f8a52-3c1d-4e8f-9a7b-5d4c3b2a1f01")


CONTACT_INPUTS = {
    "crm.accounts": ACCOUNTS,
    "crm.quotes": pl.DataFrame({"_customerid_value": ["c-1"]}),
    "crm.salesorders": pl.DataFrame(
        {"_customerid_value": [None]}, schema={"_customerid_value": pl.String}
    ),
    "crm.invoices": pl.DataFrame({"_customerid_value": ["a-1"]}),
}


def contacts_source() -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "contactid": ["c-1", "c-2", "c-3", "c-4"],
            "msdynce_contactnumber": ["CON-1", "CON-2", "CON-3", None],
            "_parentcustomerid_value": ["a-1", "a-1", "c-2", "a-2"],
            "statecode": [0, 0, 0, 0],
            "gendercode": [1, None, 2, 2],
            "familystatuscode": [4, None, None, 1],
            "firstname": ["Ann", "Bo", "Cy", "Di"],
        }
    )
    return with_columns(frame, CONTACTS.source_columns + CONTACT_CUSTOMERS.source_columns)


def test_contacts_route_by_derived_facts_and_map_enums() -> None:
    refs = {("erp", "CustomersV2"): CUSTOMERS, ("crm", "transactioncurrencies"): CURRENCIES}
    persons = transform(CONTACTS, contacts_source(), refs, CTX, CONTACT_INPUTS)
    customers = transform(CONTACT_CUSTOMERS, contacts_source(), refs, CTX, CONTACT_INPUTS)
    # c-1 buys (a quote), so it is a customer, not a contact person; c-3's company is a
    # contact; c-4's account has no number yet, so its contact gets a generated one and its
    # parent's generated ACC- number is not in F&O yet.
    assert customers.staged.select(
        "CustomerAccount", "PersonGender", "PersonMaritalStatus"
    ).rows() == [("CON-1", "Male", "Widowhood")]
    assert persons.staged.select(
        "ContactPersonPartyNumber", "AssociatedPartyNumber", "Gender", "MaritalStatus"
    ).rows() == [("CON-2", "P-ACC-1", "Unknown", "None")]
    assert persons.filtered_out == 2
    (reject,) = persons.rejects.rows(named=True)
    assert reject["reason"] == "missing_reference"
    assert re.fullmatch(
        r"customer 'ACC-\d{5}-[A-Z0-9]{6}' is not in erp.CustomersV2", reject["message"]
    )
    generated = persons.source.filter(pl.col("contactid") == "c-4")["p2c_contactnumber"][0]
    assert re.fullmatch(r"CON-\d{5}-[A-Z0-9]{6}", generated)


QUOTE_INPUTS = {
    "crm.accounts": ACCOUNTS,
    "crm.contacts": CONTACT_IDS,
    "crm.products": PRODUCTS,
    "crm.uoms": UOMS,
    "crm.quotedetails": pl.DataFrame(
        {
            "_quoteid_value": ["q-1", "q-2", "q-3", "q-3"],
            "_productid_value": ["p-1", "p-2", "p-1", None],
        }
    ),
    "crm.quotes": pl.DataFrame(
        {
            "quoteid": ["q-1", "q-2", "q-3"],
            "quotenumber": ["Q-1", "Q-2", "Q-3"],
            "statecode": [1, 1, 1],
        }
    ),
}
QUOTE_REFS = {
    ("erp", "CustomersV2"): CUSTOMERS,
    ("crm", "transactioncurrencies"): CURRENCIES,
    ("erp", "SellableReleasedProducts"): pl.DataFrame(
        {"dataAreaId": ["usmf"], "ProductNumber": ["D1"]}
    ),
    ("erp", "CDSSalesQuotationHeaders"): pl.DataFrame(
        {"dataAreaId": ["usmf"], "SalesQuotationNumber": ["Q-1"]}
    ),
}


def test_quote_headers_need_external_products_only_and_a_customer_in_the_erp() -> None:
    quotes = with_columns(
        pl.DataFrame(
            {
                "quoteid": ["q-1", "q-2", "q-3", "q-4"],
                "quotenumber": ["Q-1", "Q-2", "Q-3", "Q-4"],
                "statecode": [1, 1, 1, 1],
                "_customerid_value": ["c-1", "a-1", "a-1", "c-2"],
                "_transactioncurrencyid_value": ["g-usd"] * 4,
                "shipto_country": ["Canada", None, None, None],
            }
        ),
        QUOTE_HEADERS_FLOW.source_columns,
    )
    out = transform(QUOTE_HEADERS_FLOW, quotes, QUOTE_REFS, CTX, QUOTE_INPUTS)
    # q-2 has a Sales-only product, q-3 a write-in line, q-4 no lines: filtered out.
    assert out.filtered_out == 3
    assert out.staged.select(
        "SalesQuotationNumber",
        "RequestingCustomerAccountNumber",
        "CurrencyCode",
        "DeliveryAddressCountryRegionISOCode",
    ).rows() == [("Q-1", "CON-1", "USD", "CAN")]


def test_quote_lines_split_discounts_and_reject_missing_products_and_units() -> None:
    lines = with_columns(
        pl.DataFrame(
            {
                "_quoteid_value": ["q-1", "q-1", "q-1"],
                "sequencenumber": [1, 2, 3],
                "_productid_value": ["p-1", "p-9", "p-1"],
                "_uomid_value": ["u-each", "u-each", "u-pallet"],
                "quantity": [Decimal("3"), Decimal("1"), Decimal("2")],
                "manualdiscountamount": [Decimal("10.00"), None, None],
            },
            schema_overrides={
                "quantity": pl.Decimal(23, 5),
                "manualdiscountamount": pl.Decimal(19, 4),
            },
        ),
        QUOTE_LINES_FLOW.source_columns,
    )
    out = transform(QUOTE_LINES_FLOW, lines, QUOTE_REFS, CTX, QUOTE_INPUTS)
    assert out.staged.select(
        "SalesQuotationNumber",
        "LineCreationSequenceNumber",
        "ProductNumber",
        "SalesUnitSymbol",
        "LineDiscountAmount",
        "FixedPriceCharges",
    ).rows() == [("Q-1", 1, "D1", "ea", Decimal("3.33"), Decimal("-0.01"))]
    assert sorted(out.rejects.select("field", "reason", "value").rows()) == [
        ("ProductNumber", "missing_reference", "D9"),
        ("SalesUnitSymbol", "unmapped_value", "Pallet"),
    ]
    assert out.unmapped.rows() == [("SalesUnitSymbol", "Pallet", 1)]


ERP_HEADERS = pl.DataFrame(
    {
        "dataAreaId": ["usmf", "usmf", "usmf"],
        "SalesOrderNumber": ["SO-1", "SO-2", "SO-3"],
        "OrderingCustomerIsExternallyMaintained": ["Yes", "Yes", "Yes"],
        "InvoiceCustomerIsExternallyMaintained": ["Yes", "Yes", "Yes"],
        "AreTotalsUpdated": ["Yes", "Yes", "No"],
        "SalesOrderProcessingStatus": ["Invoiced", "Confirmed", "Confirmed"],
        "OrderHeaderTaxAmount": [Decimal("2.00"), None, Decimal("1.00")],
    },
    schema_overrides={"OrderHeaderTaxAmount": pl.Decimal(32, 6)},
)
BACK_REFS = {
    ("crm", "accounts"): pl.DataFrame({"accountnumber": ["ACC-1"], "accountid": ["a-1"]}),
    ("crm", "contacts"): pl.DataFrame({"msdynce_contactnumber": ["CON-1"], "contactid": ["c-1"]}),
    ("crm", "transactioncurrencies"): CURRENCIES,
    ("crm", "pricelevels"): pl.DataFrame(
        {"name": ["CRM Service USA (sample)"], "pricelevelid": ["pl-1"]}
    ),
    ("crm", "salesorders"): pl.DataFrame(
        {"ordernumber": ["SO-1", "SO-2"], "salesorderid": ["o-1", "o-2"]}
    ),
    ("crm", "products"): PRODUCTS,
    ("crm", "uoms"): UOMS,
}


def test_orders_back_come_back_with_totals_and_are_invoiced_when_the_erp_invoiced_them() -> None:
    headers = with_columns(
        ERP_HEADERS.with_columns(
            OrderingCustomerAccountNumber=pl.Series(["CON-1", "ACC-1", "ACC-1"]),
            CurrencyCode=pl.Series(["usd", "USD", "USD"]),
            DeliveryAddressCountryRegionId=pl.Series(["USA", "CAN", None]),
        ),
        ORDER_HEADERS_BACK.source_columns,
    )
    inputs = {
        "erp.ExternallyMaintainedCustomerSalesInvoiceHeaders": pl.DataFrame(
            {"dataAreaId": ["usmf"], "SalesOrderNumber": ["SO-1"]}
        )
    }
    out = transform(ORDER_HEADERS_BACK, headers, BACK_REFS, CTX, inputs)
    assert out.filtered_out == 1  # SO-3 awaits its totals
    assert out.staged.select(
        "ordernumber",
        "_customerid_value",
        "_pricelevelid_value",
        "shipto_country",
        "msdynce_processingstatus",
        "statecode",
        "statuscode",
    ).rows() == [
        ("SO-1", "c-1", "pl-1", "United States", "647390003", 4, 100003),
        ("SO-2", "a-1", "pl-1", "Canada", "647390001", 0, 1),
    ]


def test_order_lines_back_add_one_freight_tax_line_and_join_the_discount() -> None:
    lines = with_columns(
        pl.DataFrame(
            {
                "dataAreaId": ["usmf", "usmf"],
                "SalesOrderNumber": ["SO-1", "SO-3"],
                "LineCreationSequenceNumber": [1, 1],
                "ProductNumber": ["D1", "D1"],
                "SalesUnitSymbol": ["ea", "ea"],
                "OrderedSalesQuantity": [Decimal("3"), Decimal("1")],
                "SalesPrice": [Decimal("5"), Decimal("5")],
                "LineAmount": [Decimal("5"), Decimal("5")],
                "LineDiscountAmount": [Decimal("3.33"), None],
                "FixedPriceCharges": [Decimal("-0.01"), None],
            },
            schema_overrides={
                c: pl.Decimal(32, 6)
                for c in (
                    "OrderedSalesQuantity",
                    "SalesPrice",
                    "LineAmount",
                    "LineDiscountAmount",
                    "FixedPriceCharges",
                )
            },
        ),
        ORDER_LINES_BACK.source_columns,
    )
    crm_lines = pl.DataFrame(
        {"msdynce_ordernumber": ["SO-2"], "sequencenumber": [0], "msdynce_ismisctax": [True]}
    )
    inputs = {"erp.CDSSalesOrderHeaders": ERP_HEADERS, "crm.salesorderdetails": crm_lines}
    out = transform(ORDER_LINES_BACK, lines, BACK_REFS, CTX, inputs)
    rows = (
        out.staged.select(
            "msdynce_ordernumber",
            "sequencenumber",
            "_productid_value",
            "productdescription",
            "priceperunit",
            "manualdiscountamount",
            "msdynce_ismisctax",
            "isproductoverridden",
        )
        .sort("sequencenumber")
        .rows()
    )
    assert sorted(rows, key=str) == sorted(
        [
            ("SO-1", 0, None, "Freight Tax", Decimal("2.000000"), Decimal("0"), True, True),
            ("SO-1", 1, "p-1", None, Decimal("5.000000"), Decimal("10.0000"), False, False),
            # SO-2's header tax is gone: its existing Freight Tax line comes back at 0
            ("SO-2", 0, None, "Freight Tax", Decimal("0"), Decimal("0"), True, True),
        ],
        key=str,
    )
    assert out.filtered_out == 2  # SO-3's line and its freight line: no totals yet


def test_order_lines_out_take_only_active_orders() -> None:
    lines = with_columns(
        pl.DataFrame(
            {
                "_salesorderid_value": ["o-1", "o-2"],
                "sequencenumber": [1, 1],
                "_productid_value": ["p-1", "p-1"],
                "_uomid_value": ["u-each", "u-each"],
                "quantity": [Decimal("1"), Decimal("1")],
                "requestdeliveryby": [date(2026, 1, 1)] * 2,
            },
            schema_overrides={"quantity": pl.Decimal(23, 5)},
        ),
        ORDER_LINES_OUT.source_columns,
    )
    inputs = {
        "crm.salesorders": pl.DataFrame(
            {
                "salesorderid": ["o-1", "o-2"],
                "ordernumber": ["SO-1", "SO-2"],
                "msdynce_processingstatus": [647390000, 647390001],
            }
        ),
        "crm.products": PRODUCTS,
        "crm.uoms": UOMS,
    }
    refs = {
        ("erp", "CDSSalesOrderHeaders"): pl.DataFrame(
            {"dataAreaId": ["usmf"], "SalesOrderNumber": ["SO-1"]}
        ),
        ("erp", "SellableReleasedProducts"): pl.DataFrame(
            {"dataAreaId": ["usmf"], "ProductNumber": ["D1"]}
        ),
    }
    out = transform(ORDER_LINES_OUT, lines, refs, CTX, inputs)
    assert out.staged["SalesOrderNumber"].to_list() == ["SO-1"]
    assert out.filtered_out == 1
