"""Sales Orders (Sales to Fin and Ops) and (Fin and Ops to Sales) - Direct.

Reference sections 2.6 and 2.7.

Out (Sales → F&O): activated orders (`msdynce_processingstatus` Active, 647390000) whose lines
are all externally maintained products [R S6, I filter]; customer, product and order must exist
in F&O, as for quotes. The whole-line discount is split into a per-unit discount and a rounding
sales charge (reference 3.6). Once F&O confirms an order and the order comes back, its Sales
processing status is no longer Active, so the two directions never write the same order.

Back (F&O → Sales): orders whose ordering and invoicing customers are both externally
maintained, whose totals are calculated (`AreTotalsUpdated`, the *Calculate sales totals* batch
job) and whose processing status is Confirmed or later [R S6]. Customer, currency, price list
(per currency, template default "CRM Service USA (sample)") and products are looked up in Sales
by natural key; a new order or line gets a GUID derived from its key. F&O's header tax becomes
one write-in line "Freight Tax" (`msdynce_ismisctax`) with sequence number 0, so there is never
a second [R S6, S13]. The per-unit discount and charge become the whole-line discount again.
An order with an F&O invoice is marked Invoiced (statecode 4, statuscode 100003), the
plug-in's behaviour on invoice arrival [R S7]; other orders stay Active / New (0, 1) so later
F&O updates can still be written [R S6]. Processing status: the map of reference 3.3 [I].
"""

from __future__ import annotations

import polars as pl

from p2c_etl.flows.contacts import COMPANY, CUSTOMER_IN_ERP
from p2c_etl.flows.derived import (
    CUSTOMER_NUMBER,
    DISCOUNT_JOIN,
    DISCOUNT_SPLIT,
    document_flags,
    line_facts,
)
from p2c_etl.flows.products import CURRENCY_BY_ISO, UOM_BY_NAME
from p2c_etl.flows.quotes import DOCUMENT_DEPENDENCIES, DOCUMENT_OUT_FIELDS, PRODUCT_IN_ERP
from p2c_etl.flows.valuemaps import (
    FNO_COUNTRY_TO_SALES,
    FNO_PROCESSING_STATUS_TO_SALES,
    FNO_UNIT_TO_SALES_UNIT,
    PRICE_LIST_BY_CURRENCY,
    SALES_UNIT_TO_FNO_UNIT,
)
from p2c_etl.model.flow import (
    Context,
    Derive,
    EntityRef,
    Field,
    Filter,
    Flow,
    FromContext,
    Input,
    Inputs,
    Lookup,
)

ACTIVE = 647390000
YES = "Yes"
ORDER_IN_ERP = Lookup(
    "erp",
    "CDSSalesOrderHeaders",
    match="SalesOrderNumber",
    returns="SalesOrderNumber",
    filters=(COMPANY,),
    label="order",
)
ORDER_IN_CRM = Lookup(
    "crm", "salesorders", match="ordernumber", returns="salesorderid", label="order"
)
ACCOUNT_BY_NUMBER = Lookup(
    "crm", "accounts", match="accountnumber", returns="accountid", label="customer"
)
CONTACT_BY_NUMBER = Lookup(
    "crm", "contacts", match="msdynce_contactnumber", returns="contactid", label="customer"
)
PRODUCT_IN_CRM = Lookup(
    "crm", "products", match="productnumber", returns="productid", label="product"
)
PRICE_LIST_BY_NAME = Lookup(
    "crm", "pricelevels", match="name", returns="pricelevelid", label="price list"
)
CUSTOMER_IN_CRM = (ACCOUNT_BY_NUMBER, CONTACT_BY_NUMBER)
ORDER_LINES = Input("crm", "salesorderdetails", ("_salesorderid_value", "_productid_value"))
ORDER_HEADERS = Input(
    "crm", "salesorders", ("salesorderid", "ordernumber", "msdynce_processingstatus")
)
INVOICE_HEADERS = Input(
    "erp",
    "ExternallyMaintainedCustomerSalesInvoiceHeaders",
    ("dataAreaId", "SalesOrderNumber"),
    filters=(COMPANY,),
)
_BACK_FILTER_COLUMNS = (
    "dataAreaId",
    "SalesOrderNumber",
    "OrderingCustomerIsExternallyMaintained",
    "InvoiceCustomerIsExternallyMaintained",
    "AreTotalsUpdated",
    "SalesOrderProcessingStatus",
    "OrderHeaderTaxAmount",
)
CRM_MISC_TAX_LINES = Input(
    "crm", "salesorderdetails", ("msdynce_ordernumber", "sequencenumber", "msdynce_ismisctax")
)
ERP_HEADERS = Input("erp", "CDSSalesOrderHeaders", _BACK_FILTER_COLUMNS, filters=(COMPANY,))


def comes_back() -> pl.Expr:
    """The F&O → Sales filter on an order header: both customers externally maintained,
    totals calculated, processing status Confirmed or later."""
    return (
        (pl.col("OrderingCustomerIsExternallyMaintained") == YES)
        & (pl.col("InvoiceCustomerIsExternallyMaintained") == YES)
        & (pl.col("AreTotalsUpdated") == YES)
        & ~pl.col("SalesOrderProcessingStatus").is_in(["None", "Active"])
    ).fill_null(False)


def order_status(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """`p2c_comesback`, and `p2c_statecode` / `p2c_statuscode`: Invoiced (4, 100003) when F&O
    holds an invoice for the order, else Active / New (0, 1)."""
    invoiced = inputs[INVOICE_HEADERS.name]["SalesOrderNumber"].drop_nulls().unique()
    has_invoice = pl.col("SalesOrderNumber").is_in(invoiced.implode())
    return source.with_columns(
        comes_back().alias("p2c_comesback"),
        pl.when(has_invoice).then(4).otherwise(0).alias("p2c_statecode"),
        pl.when(has_invoice).then(100003).otherwise(1).alias("p2c_statuscode"),
    )


ORDER_STATUS = Derive(
    "comes back; Invoiced when F&O invoiced it",
    order_status,
    reads=_BACK_FILTER_COLUMNS[:-1],
    inputs=(INVOICE_HEADERS,),
    adds=("p2c_comesback", "p2c_statecode", "p2c_statuscode"),
)


def freight_tax_lines(source: pl.DataFrame, inputs: Inputs, context: Context) -> pl.DataFrame:
    """Each line learns whether its order comes back (`p2c_comesback`); each order with
    header tax gets one more line: the write-in "Freight Tax" (sequence 0, quantity 1, price
    = the tax), marked `p2c_ismisctax`."""
    headers = inputs[ERP_HEADERS.name].with_columns(comes_back().alias("p2c_comesback"))
    lines = source.join(
        headers.select("dataAreaId", "SalesOrderNumber", "p2c_comesback"),
        on=["dataAreaId", "SalesOrderNumber"],
        how="left",
        maintain_order="left",
    ).with_columns(
        pl.col("p2c_comesback").fill_null(False),
        pl.lit(False).alias("p2c_ismisctax"),
        pl.col("ProductNumber").is_null().alias("p2c_writein"),
    )
    # An order keeps its Freight Tax line once it has one: when F&O's header tax drops to
    # nothing, the line comes back with price 0 instead of keeping a stale amount.
    existing = inputs[CRM_MISC_TAX_LINES.name].filter(pl.col("msdynce_ismisctax").fill_null(False))
    has_line = pl.col("SalesOrderNumber").is_in(existing["msdynce_ordernumber"].implode())
    tax = pl.col("OrderHeaderTaxAmount")
    freight = (
        headers.filter((tax.is_not_null() & (tax != 0)) | has_line)
        .with_columns(tax.fill_null(0).alias("OrderHeaderTaxAmount"))
        .select(
            "dataAreaId",
            "SalesOrderNumber",
            "p2c_comesback",
            pl.lit(0, pl.Int64).alias("LineCreationSequenceNumber"),
            pl.lit("Freight Tax").alias("ProductName"),
            pl.lit(1).cast(source.schema["OrderedSalesQuantity"]).alias("OrderedSalesQuantity"),
            tax.cast(source.schema["SalesPrice"]).alias("SalesPrice"),
            tax.cast(source.schema["LineAmount"]).alias("LineAmount"),
            pl.lit(True).alias("p2c_ismisctax"),
            pl.lit(True).alias("p2c_writein"),
        )
    )
    return pl.concat([lines, freight], how="diagonal_relaxed")


FREIGHT_TAX = Derive(
    "Freight Tax line from the header tax",
    freight_tax_lines,
    reads=("dataAreaId", "SalesOrderNumber", "ProductNumber"),
    inputs=(ERP_HEADERS, CRM_MISC_TAX_LINES),
    adds=("p2c_comesback", "p2c_ismisctax", "p2c_writein"),
)


def document_back_fields(customer: str) -> tuple[Field, ...]:
    """Customer, currency and price list of an F&O order or invoice, as Sales references."""
    return (
        Field("_customerid_value", customer, lookup=CUSTOMER_IN_CRM),
        Field("_transactioncurrencyid_value", "CurrencyCode", lookup=CURRENCY_BY_ISO),
        Field(
            "_pricelevelid_value",
            "CurrencyCode",
            value_map=PRICE_LIST_BY_CURRENCY,
            lookup=PRICE_LIST_BY_NAME,
        ),
    )


def sales_address(sales: str, fno: str, state: str) -> tuple[Field, ...]:
    """An F&O address (`fno` prefix) as a Sales document address (`sales` prefix)."""
    return (
        Field(f"{sales}_line1", f"{fno}Street"),
        Field(f"{sales}_city", f"{fno}City"),
        Field(f"{sales}_postalcode", f"{fno}ZipCode"),
        Field(f"{sales}_stateorprovince", state),
        Field(f"{sales}_country", f"{fno}CountryRegionId", value_map=FNO_COUNTRY_TO_SALES),
    )


ORDER_HEADERS_OUT = Flow(
    name="order_headers_out",
    description="Activated Sales orders of externally maintained products go to F&O.",
    notes=__doc__ or "",
    source=EntityRef("crm", "salesorders"),
    dated_by="createdon",
    target=EntityRef("erp", "CDSSalesOrderHeaders"),
    source_keys=("ordernumber",),
    keys=("dataAreaId", "SalesOrderNumber"),
    derive=(CUSTOMER_NUMBER, document_flags(ORDER_LINES, "_salesorderid_value", "salesorderid")),
    source_filters=(
        Filter("msdynce_processingstatus", "eq", ACTIVE),
        Filter("p2c_externalproductsonly", "eq", True),
    ),
    target_filters=(COMPANY,),
    depends_on=DOCUMENT_DEPENDENCIES,
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("SalesOrderNumber", "ordernumber"),
        Field("OrderingCustomerAccountNumber", "p2c_customernumber", lookup=CUSTOMER_IN_ERP),
        Field("InvoiceCustomerAccountNumber", "p2c_customernumber", lookup=CUSTOMER_IN_ERP),
        Field("SalesOrderName", "name"),
        *DOCUMENT_OUT_FIELDS,
        Field("RequestedReceiptDate", "requestdeliveryby"),
    ),
)

ORDER_LINES_OUT = Flow(
    name="order_lines_out",
    description="The lines of those orders, with the discount split into per-unit and charge.",
    notes=__doc__ or "",
    source=EntityRef("crm", "salesorderdetails"),
    dated_by="createdon",
    target=EntityRef("erp", "CDSSalesOrderLines"),
    source_keys=("p2c_headernumber", "sequencenumber"),
    keys=("dataAreaId", "SalesOrderNumber", "LineCreationSequenceNumber"),
    derive=(
        line_facts(
            ORDER_HEADERS,
            ORDER_LINES,
            "_salesorderid_value",
            "salesorderid",
            "ordernumber",
            "msdynce_processingstatus",
        ),
        DISCOUNT_SPLIT,
    ),
    source_filters=(
        Filter("p2c_headerstate", "eq", ACTIVE),
        Filter("p2c_externalproductsonly", "eq", True),
    ),
    target_filters=(COMPANY,),
    depends_on=("order_headers_out",),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("SalesOrderNumber", "p2c_headernumber", lookup=ORDER_IN_ERP),
        Field("LineCreationSequenceNumber", "sequencenumber"),
        Field("ProductNumber", "p2c_productnumber", lookup=PRODUCT_IN_ERP),
        Field("LineDescription", "productdescription"),
        Field("OrderedSalesQuantity", "quantity"),
        Field("SalesUnitSymbol", "p2c_uomname", value_map=SALES_UNIT_TO_FNO_UNIT),
        Field("SalesPrice", "priceperunit"),
        Field("LineDiscountAmount", "p2c_linediscount"),
        Field("FixedPriceCharges", "p2c_discountcharge"),
        Field("RequestedShippingDate", "requestdeliveryby"),
    ),
)


ORDER_HEADERS_BACK = Flow(
    name="order_headers_back",
    description="Confirmed F&O orders with calculated totals update (or create) Sales orders.",
    notes=__doc__ or "",
    source=EntityRef("erp", "CDSSalesOrderHeaders"),
    target=EntityRef("crm", "salesorders"),
    source_keys=("SalesOrderNumber",),
    keys=("ordernumber",),
    target_id="salesorderid",
    derive=(ORDER_STATUS,),
    source_filters=(COMPANY, Filter("p2c_comesback", "eq", True)),
    depends_on=(*DOCUMENT_DEPENDENCIES, "order_headers_out", "order_lines_out"),
    fields=(
        Field("ordernumber", "SalesOrderNumber"),
        Field("name", "SalesOrderName"),
        *document_back_fields("OrderingCustomerAccountNumber"),
        *sales_address("shipto", "DeliveryAddress", "DeliveryAddressStateId"),
        *sales_address("billto", "InvoiceAddress", "InvoiceAddressStateId"),
        Field("requestdeliveryby", "RequestedShippingDate"),
        Field("datefulfilled", "ConfirmedShippingDate"),
        Field(
            "msdynce_processingstatus",
            "SalesOrderProcessingStatus",
            value_map=FNO_PROCESSING_STATUS_TO_SALES,
        ),
        Field("freightamount", "OrderTotalChargesAmount"),
        Field("msdynce_misctax", "OrderHeaderTaxAmount"),
        Field("totaltax", "OrderTotalTaxAmount"),
        Field("totalamount", "OrderTotalAmount"),
        Field("statecode", "p2c_statecode"),
        Field("statuscode", "p2c_statuscode"),
        Field("msdynce_ismaintainedexternally", default=True),
    ),
)

ORDER_LINES_BACK = Flow(
    name="order_lines_back",
    description="Their lines, the discount joined back, plus one Freight Tax line per order.",
    notes=__doc__ or "",
    source=EntityRef("erp", "CDSSalesOrderLines"),
    target=EntityRef("crm", "salesorderdetails"),
    source_keys=("SalesOrderNumber", "LineCreationSequenceNumber"),
    keys=("msdynce_ordernumber", "sequencenumber"),
    target_id="salesorderdetailid",
    derive=(FREIGHT_TAX, DISCOUNT_JOIN),
    source_filters=(COMPANY, Filter("p2c_comesback", "eq", True)),
    depends_on=("order_headers_back",),
    fields=(
        Field("msdynce_ordernumber", "SalesOrderNumber"),
        Field("_salesorderid_value", "SalesOrderNumber", lookup=ORDER_IN_CRM),
        Field("sequencenumber", "LineCreationSequenceNumber"),
        Field("_productid_value", "ProductNumber", lookup=PRODUCT_IN_CRM),
        Field("isproductoverridden", "p2c_writein"),
        Field("productdescription", "ProductName"),
        Field("quantity", "OrderedSalesQuantity"),
        Field(
            "_uomid_value", "SalesUnitSymbol", value_map=FNO_UNIT_TO_SALES_UNIT, lookup=UOM_BY_NAME
        ),
        Field("priceperunit", "SalesPrice"),
        Field("ispriceoverridden", default=True),
        Field("manualdiscountamount", "p2c_manualdiscount"),
        Field("tax", "TotalTaxAmount"),
        Field("extendedamount", "LineAmount"),
        Field("requestdeliveryby", "RequestedShippingDate"),
        Field("msdynce_ismisctax", "p2c_ismisctax"),
        Field("msdynce_ismaintainedexternally", default=True),
    ),
)
