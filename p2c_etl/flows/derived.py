"""Derived facts the Prospect to cash solution computed with plug-ins, computed from source data.

Each public function is a pure `Derive` step: (source frame, inputs by name, context) → the
source frame with added columns (named `p2c_…`). Reference section 1.5 lists the plug-ins:
account and contact numbers, "is active customer", "company is an account", "has externally
maintained products only", the discount / sales-charge split and the Freight Tax line.
"""

from __future__ import annotations

import hashlib

import polars as pl

from p2c_etl.model.flow import Context, Derive, Input, Inputs
from p2c_etl.model.money import Rounding, divide

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def generated_number(prefix: str, record_id: str) -> str:
    """`ACC-01000-BVRCPS` / `CON-…` for a record without a number, stable for its GUID.

    The P2C plug-in used a running sequence and a random suffix (reference 3.5); a batch ETL
    has no such counter, so both parts derive from the record's id: the same record gets the
    same number on every run, and two records practically never share one.
    """
    digest = hashlib.sha256(record_id.lower().encode()).digest()
    sequence = int.from_bytes(digest[:4], "big") % 100_000
    suffix = "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[4:10])
    return f"{prefix}-{sequence:05d}-{suffix}"


def with_number(
    frame: pl.DataFrame, number: str, record_id: str, prefix: str, out: str
) -> pl.DataFrame:
    """`frame` plus `out`: `number`, or a generated one where it is blank (only those rows
    are computed); an existing number never changes."""
    blank = pl.col(number).cast(pl.String).str.strip_chars().fill_null("") == ""
    ids = frame.filter(blank & pl.col(record_id).is_not_null())[record_id].unique().to_list()
    generated = {rid: generated_number(prefix, rid) for rid in ids}
    made = pl.col(record_id).replace_strict(generated, default=None, return_dtype=pl.String)
    return frame.with_columns(
        pl.when(blank).then(made).otherwise(pl.col(number).cast(pl.String)).alias(out)
    )


ACCOUNTS_INPUT = Input("crm", "accounts", ("accountid", "accountnumber"))
CONTACTS_INPUT = Input("crm", "contacts", ("contactid", "msdynce_contactnumber"))
PRODUCTS_INPUT = Input(
    "crm", "products", ("productid", "productnumber", "msdynce_ismaintainedexternally")
)
UOMS_INPUT = Input("crm", "uoms", ("uomid", "name"))


def _numbers(
    inputs: Inputs, item: Input, number: str, prefix: str, wanted: pl.Series
) -> pl.DataFrame:
    """`__id` → `__number` of the records of `item` whose id is `wanted` (generated where
    blank); only those are numbered, so a chunk of a migration costs what the chunk needs."""
    record_id = item.columns[0]
    records = inputs[item.name].filter(pl.col(record_id).is_in(wanted.drop_nulls().implode()))
    numbered = with_number(records, number, record_id, prefix, "__number")
    return numbered.select(pl.col(record_id).alias("__id"), "__number")


def _account_numbers(inputs: Inputs, wanted: pl.Series) -> pl.DataFrame:
    return _numbers(inputs, ACCOUNTS_INPUT, "accountnumber", "ACC", wanted)


def _contact_numbers(inputs: Inputs, wanted: pl.Series) -> pl.DataFrame:
    return _numbers(inputs, CONTACTS_INPUT, "msdynce_contactnumber", "CON", wanted)


def _attach(source: pl.DataFrame, table: pl.DataFrame, on: str, out: str) -> pl.DataFrame:
    """Left-join `table` (`__id` → `__number`) on `source[on]`, naming the result `out`."""
    joined = source.join(table, left_on=on, right_on="__id", how="left", maintain_order="left")
    return joined.rename({"__number": out})


# --- account and contact numbers -------------------------------------------------------


def account_number(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """`p2c_accountnumber`: the account number, generated where blank."""
    return with_number(source, "accountnumber", "accountid", "ACC", "p2c_accountnumber")


ACCOUNT_NUMBER = Derive(
    "account number (ACC- when blank)",
    account_number,
    reads=("accountid", "accountnumber"),
    adds=("p2c_accountnumber",),
)


def contact_number(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """`p2c_contactnumber`: the contact number, generated where blank."""
    return with_number(source, "msdynce_contactnumber", "contactid", "CON", "p2c_contactnumber")


CONTACT_NUMBER = Derive(
    "contact number (CON- when blank)",
    contact_number,
    reads=("contactid", "msdynce_contactnumber"),
    adds=("p2c_contactnumber",),
)


def customer_number(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """`p2c_customernumber`: the number of the account or contact `_customerid_value` names."""
    wanted = source["_customerid_value"]
    both = pl.concat([_account_numbers(inputs, wanted), _contact_numbers(inputs, wanted)])
    return _attach(source, both.unique("__id"), "_customerid_value", "p2c_customernumber")


CUSTOMER_NUMBER = Derive(
    "customer number (account or contact)",
    customer_number,
    reads=("_customerid_value",),
    adds=("p2c_customernumber",),
    inputs=(ACCOUNTS_INPUT, CONTACTS_INPUT),
)


# --- contact routing --------------------------------------------------------------------

_CUSTOMER_OF = ("_customerid_value",)
QUOTE_CUSTOMERS = Input("crm", "quotes", _CUSTOMER_OF)
ORDER_CUSTOMERS = Input("crm", "salesorders", _CUSTOMER_OF)
INVOICE_CUSTOMERS = Input("crm", "invoices", _CUSTOMER_OF)


def contact_routing(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """`p2c_isactivecustomer`: the contact is the customer of a quote, order or invoice;
    `p2c_iscompanyanaccount`: its company (`_parentcustomerid_value`) is an account;
    `p2c_parentaccountnumber`: that account's number."""
    # every document's customer, not only the contacts among them: a set of documents is
    # smaller than a million contacts to look each one up in
    customers = pl.concat(
        [
            inputs[i.name]["_customerid_value"]
            for i in (QUOTE_CUSTOMERS, ORDER_CUSTOMERS, INVOICE_CUSTOMERS)
        ]
    ).unique()
    routed = source.with_columns(
        pl.col("contactid").is_in(customers.implode()).alias("p2c_isactivecustomer")
    )
    routed = _attach(
        routed,
        _account_numbers(inputs, source["_parentcustomerid_value"]),
        "_parentcustomerid_value",
        "p2c_parentaccountnumber",
    )
    return routed.with_columns(
        pl.col("p2c_parentaccountnumber").is_not_null().alias("p2c_iscompanyanaccount")
    )


CONTACT_ROUTING = Derive(
    "contact routing (is active customer, company is an account)",
    contact_routing,
    reads=("contactid", "_parentcustomerid_value"),
    adds=("p2c_isactivecustomer", "p2c_iscompanyanaccount", "p2c_parentaccountnumber"),
    inputs=(ACCOUNTS_INPUT, QUOTE_CUSTOMERS, ORDER_CUSTOMERS, INVOICE_CUSTOMERS),
)


# --- documents: externally maintained products only --------------------------------------


def external_products_only(
    lines: pl.DataFrame, products: pl.DataFrame, parent: str
) -> pl.DataFrame:
    """Per parent id: True when it has lines and every line is a product that is externally
    maintained (no write-in products)."""
    flags = products.select(
        pl.col("productid"), pl.col("msdynce_ismaintainedexternally").fill_null(False)
    )
    joined = lines.select(parent, "_productid_value").join(
        flags, left_on="_productid_value", right_on="productid", how="left"
    )
    return joined.group_by(parent).agg(
        pl.col("msdynce_ismaintainedexternally")
        .fill_null(False)
        .all()
        .alias("p2c_externalproductsonly")
    )


def document_flags(lines_input: Input, parent: str, id_column: str) -> Derive:
    """A header's `p2c_externalproductsonly`, computed from its lines."""

    def function(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
        headers_here = source[id_column].drop_nulls().implode()
        lines = inputs[lines_input.name].filter(pl.col(parent).is_in(headers_here))
        flags = external_products_only(lines, inputs[PRODUCTS_INPUT.name], parent)
        out = source.join(
            flags, left_on=id_column, right_on=parent, how="left", maintain_order="left"
        )
        return out.with_columns(pl.col("p2c_externalproductsonly").fill_null(False))

    return Derive(
        "has externally maintained products only",
        function,
        reads=(id_column,),
        adds=("p2c_externalproductsonly",),
        inputs=(lines_input, PRODUCTS_INPUT),
    )


def line_facts(
    header_input: Input, lines_input: Input, parent: str, header_id: str, number: str, state: str
) -> Derive:
    """A line's header number and state, its header's externally-maintained flag (from all
    lines of its header, `lines_input`: a migration reads the lines a chunk at a time), its
    product number and its unit name."""

    def function(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
        products = inputs[PRODUCTS_INPUT.name]
        headers_here = source[parent].drop_nulls().implode()
        lines = inputs.get(lines_input.name, source)
        siblings = lines.filter(pl.col(parent).is_in(headers_here))
        flags = external_products_only(siblings, products, parent)
        headers = inputs[header_input.name].select(
            pl.col(header_id).alias(parent),
            pl.col(number).alias("p2c_headernumber"),
            pl.col(state).alias("p2c_headerstate"),
        )
        out = source.join(headers, on=parent, how="left", maintain_order="left")
        out = out.join(flags, on=parent, how="left", maintain_order="left")
        names = products.select(
            pl.col("productid").alias("__id"), pl.col("productnumber").alias("__number")
        )
        out = _attach(out, names, "_productid_value", "p2c_productnumber")
        units = inputs[UOMS_INPUT.name].select(
            pl.col("uomid").alias("__id"), pl.col("name").alias("__number")
        )
        out = _attach(out, units, "_uomid_value", "p2c_uomname")
        return out.with_columns(pl.col("p2c_externalproductsonly").fill_null(False))

    return Derive(
        "header number and state, externally maintained products only, product and unit",
        function,
        reads=(parent, "_productid_value", "_uomid_value"),
        adds=(
            "p2c_headernumber",
            "p2c_headerstate",
            "p2c_externalproductsonly",
            "p2c_productnumber",
            "p2c_uomname",
        ),
        inputs=(header_input, lines_input, PRODUCTS_INPUT, UOMS_INPUT),
    )


# --- money --------------------------------------------------------------------------------


def discount_split(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """Sales whole-line discount → F&O per-unit discount and a rounding sales charge.

    `p2c_linediscount` = round(manualdiscountamount / quantity, 2);
    `p2c_discountcharge` = quantity x p2c_linediscount - manualdiscountamount, so that
    quantity 3 and discount 10.00 give 3.33 per unit and a -0.01 charge (reference 3.6).
    """
    rounding: Rounding = context.get("rounding", "half_away_from_zero")  # type: ignore[assignment]
    discount = pl.col("manualdiscountamount").fill_null(0)
    per_unit = divide(discount, pl.col("quantity"), 2, rounding).fill_null(0)
    charge = (pl.col("quantity") * per_unit - discount).cast(pl.Decimal(38, 10))
    return source.with_columns(
        per_unit.alias("p2c_linediscount"), charge.alias("p2c_discountcharge")
    )


DISCOUNT_SPLIT = Derive(
    "discount split (per-unit discount + rounding charge)",
    discount_split,
    reads=("manualdiscountamount", "quantity"),
    adds=("p2c_linediscount", "p2c_discountcharge"),
)


def discount_join(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """F&O per-unit discount and charge → Sales whole-line discount:
    `p2c_manualdiscount` = quantity x LineDiscountAmount - FixedPriceCharges (3 x 3.33 -
    (-0.01) = 10.00), the exact reverse of `discount_split`."""
    per_unit = pl.col("LineDiscountAmount").fill_null(0)
    charge = pl.col("FixedPriceCharges").fill_null(0)
    total = pl.col("OrderedSalesQuantity") * per_unit - charge  # validation rejects lost digits
    return source.with_columns(total.alias("p2c_manualdiscount"))


DISCOUNT_JOIN = Derive(
    "discount join (per-unit discount + charge → line discount)",
    discount_join,
    reads=("OrderedSalesQuantity", "LineDiscountAmount", "FixedPriceCharges"),
    adds=("p2c_manualdiscount",),
)
