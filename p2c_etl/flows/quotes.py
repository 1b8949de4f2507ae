"""Sales Quotes (Sales to Fin and Ops) - Direct, tasks QuoteHeader and QuoteLine.

Reference section 2.5. Only active quotes (statecode 1) whose lines are all externally
maintained products are sent [R S5]; that fact is computed from the quote's lines and the
Sales products (derived.document_flags / line_facts) instead of the P2C plug-in. The customer
is the account or contact the quote names, by its number, and must exist in F&O; each line's
product must exist among the company's sellable released products, and its quote among the
F&O quotations (written by quote_headers earlier in the run). The Sales whole-line discount
becomes F&O's per-unit discount rounded to 2 places, the remainder a sales charge (reference
3.6; rounding `[money] rounding`, half away from zero by default). Prices stay owned by F&O
and are not sent [R S5]. A blank delivery country becomes USA (the template said `US`; F&O's
ISO column holds alpha-3 here, like the accounts flow) [I].
"""

from __future__ import annotations

from p2c_etl.flows.accounts import ISO_BY_CURRENCY_ID
from p2c_etl.flows.contacts import COMPANY, CUSTOMER_IN_ERP
from p2c_etl.flows.derived import CUSTOMER_NUMBER, DISCOUNT_SPLIT, document_flags, line_facts
from p2c_etl.flows.valuemaps import COUNTRY_TO_ISO3_BLANK_USA, SALES_UNIT_TO_FNO_UNIT
from p2c_etl.model.flow import EntityRef, Field, Filter, Flow, FromContext, Input, Lookup

PRODUCT_IN_ERP = Lookup(
    "erp",
    "SellableReleasedProducts",
    match="ProductNumber",
    returns="ProductNumber",
    filters=(COMPANY,),
    label="product",
)
QUOTE_IN_ERP = Lookup(
    "erp",
    "CDSSalesQuotationHeaders",
    match="SalesQuotationNumber",
    returns="SalesQuotationNumber",
    filters=(COMPANY,),
    label="quote",
)
QUOTE_LINES = Input("crm", "quotedetails", ("_quoteid_value", "_productid_value"))
QUOTE_HEADERS = Input("crm", "quotes", ("quoteid", "quotenumber", "statecode"))
ACTIVE = 1
DOCUMENT_DEPENDENCIES = ("products", "accounts", "contacts", "contact_customers")

DOCUMENT_OUT_FIELDS = (
    Field("CurrencyCode", "_transactioncurrencyid_value", lookup=ISO_BY_CURRENCY_ID),
    Field("LanguageId", default="en-us"),
    Field("DeliveryAddressStreet", "shipto_line1"),
    Field("DeliveryAddressCity", "shipto_city"),
    Field("DeliveryAddressZipCode", "shipto_postalcode"),
    Field("DeliveryAddressStateId", "shipto_stateorprovince"),
    Field(
        "DeliveryAddressCountryRegionISOCode", "shipto_country", value_map=COUNTRY_TO_ISO3_BLANK_USA
    ),
)
"""Currency, language and delivery address of a Sales quote or order, for F&O."""

QUOTE_HEADERS_FLOW = Flow(
    name="quote_headers",
    description="Active Sales quotes of externally maintained products become F&O quotations.",
    notes=__doc__ or "",
    source=EntityRef("crm", "quotes"),
    dated_by="createdon",
    target=EntityRef("erp", "CDSSalesQuotationHeaders"),
    source_keys=("quotenumber",),
    keys=("dataAreaId", "SalesQuotationNumber"),
    derive=(CUSTOMER_NUMBER, document_flags(QUOTE_LINES, "_quoteid_value", "quoteid")),
    source_filters=(
        Filter("statecode", "eq", ACTIVE),
        Filter("p2c_externalproductsonly", "eq", True),
    ),
    target_filters=(COMPANY,),
    depends_on=DOCUMENT_DEPENDENCIES,
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("SalesQuotationNumber", "quotenumber"),
        Field("RequestingCustomerAccountNumber", "p2c_customernumber", lookup=CUSTOMER_IN_ERP),
        Field("InvoiceCustomerAccountNumber", "p2c_customernumber", lookup=CUSTOMER_IN_ERP),
        Field("SalesQuotationName", "name"),
        *DOCUMENT_OUT_FIELDS,
        Field("RequestedShippingDate", "requestdeliveryby"),
        Field("SalesQuotationExpiryDate", "effectiveto"),
    ),
)

QUOTE_LINES_FLOW = Flow(
    name="quote_lines",
    description="The lines of those quotes, with the discount split into per-unit and charge.",
    notes=__doc__ or "",
    source=EntityRef("crm", "quotedetails"),
    dated_by="createdon",
    target=EntityRef("erp", "CDSSalesQuotationLines"),
    source_keys=("p2c_headernumber", "sequencenumber"),
    keys=("dataAreaId", "SalesQuotationNumber", "LineCreationSequenceNumber"),
    derive=(
        line_facts(
            QUOTE_HEADERS, QUOTE_LINES, "_quoteid_value", "quoteid", "quotenumber", "statecode"
        ),
        DISCOUNT_SPLIT,
    ),
    source_filters=(
        Filter("p2c_headerstate", "eq", ACTIVE),
        Filter("p2c_externalproductsonly", "eq", True),
    ),
    target_filters=(COMPANY,),
    depends_on=("quote_headers",),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("SalesQuotationNumber", "p2c_headernumber", lookup=QUOTE_IN_ERP),
        Field("LineCreationSequenceNumber", "sequencenumber"),
        Field("ProductNumber", "p2c_productnumber", lookup=PRODUCT_IN_ERP),
        Field("LineDescription", "description"),
        Field("RequestedSalesQuantity", "quantity"),
        Field("SalesUnitSymbol", "p2c_uomname", value_map=SALES_UNIT_TO_FNO_UNIT),
        Field("LineDiscountAmount", "p2c_linediscount"),
        Field("FixedPriceCharges", "p2c_discountcharge"),
        Field("RequestedShippingDate", "requestdeliveryby"),
    ),
)
