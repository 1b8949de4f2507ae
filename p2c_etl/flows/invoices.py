"""Sales Invoices (Fin and Ops to Sales) - Direct, tasks SalesInvoiceHeader and SalesInvoiceLine.

Reference section 2.8. The F&O entities hold only invoices of externally maintained customers
[R S2, S7]; the company's invoices are taken. The invoice links to its Sales order by order
number (written by order_headers_back earlier in the run) and to its customer, currency, price
list, products and units by natural key, like orders coming back. Totals are copied as F&O
computed them; header-level tax on charges is not synchronised [R S7]. Marking the Sales order
Invoiced happens in order_headers_back, from the same F&O invoice headers.
"""

from __future__ import annotations

from p2c_etl.flows.contacts import COMPANY
from p2c_etl.flows.orders import ORDER_IN_CRM, PRODUCT_IN_CRM, document_back_fields, sales_address
from p2c_etl.flows.products import UOM_BY_NAME
from p2c_etl.flows.valuemaps import FNO_UNIT_TO_SALES_UNIT
from p2c_etl.model.flow import EntityRef, Field, Flow, Lookup

INVOICE_IN_CRM = Lookup(
    "crm", "invoices", match="invoicenumber", returns="invoiceid", label="invoice"
)

INVOICE_HEADERS_FLOW = Flow(
    name="invoice_headers",
    description="F&O invoices of externally maintained customers become Sales invoices.",
    notes=__doc__ or "",
    source=EntityRef("erp", "ExternallyMaintainedCustomerSalesInvoiceHeaders"),
    dated_by="InvoiceDate",
    target=EntityRef("crm", "invoices"),
    source_keys=("InvoiceNumber",),
    keys=("invoicenumber",),
    target_id="invoiceid",
    source_filters=(COMPANY,),
    depends_on=("order_headers_back",),
    fields=(
        Field("invoicenumber", "InvoiceNumber"),
        Field("name", "InvoiceNumber"),
        Field("msdynce_invoicedate", "InvoiceDate"),
        Field("_salesorderid_value", "SalesOrderNumber", lookup=ORDER_IN_CRM),
        *document_back_fields("InvoiceCustomerAccountNumber"),
        *sales_address("billto", "InvoiceAddress", "InvoiceAddressState"),
        Field("totalamount", "TotalInvoiceAmount"),
        Field("totaltax", "TotalTaxAmount"),
        Field("freightamount", "TotalChargeAmount"),
        Field("totaldiscountamount", "TotalDiscountAmount"),
        Field("description", "CustomersOrderReference"),
        Field("msdynce_ismaintainedexternally", default=True),
    ),
)

INVOICE_LINES_FLOW = Flow(
    name="invoice_lines",
    description="Their lines.",
    notes=__doc__ or "",
    source=EntityRef("erp", "ExternallyMaintainedCustomerSalesInvoiceLines"),
    dated_by="InvoiceDate",
    target=EntityRef("crm", "invoicedetails"),
    source_keys=("InvoiceNumber", "LineCreationSequenceNumber"),
    keys=("msdynce_invoicenumber", "sequencenumber"),
    target_id="invoicedetailid",
    source_filters=(COMPANY,),
    depends_on=("invoice_headers",),
    fields=(
        Field("msdynce_invoicenumber", "InvoiceNumber"),
        Field("_invoiceid_value", "InvoiceNumber", lookup=INVOICE_IN_CRM),
        Field("msdynce_invoicedate", "InvoiceDate"),
        Field("sequencenumber", "LineCreationSequenceNumber"),
        Field("_productid_value", "ProductNumber", lookup=PRODUCT_IN_CRM),
        Field("productdescription", "ProductName"),
        Field("quantity", "InvoicedQuantity"),
        Field(
            "_uomid_value", "SalesUnitSymbol", value_map=FNO_UNIT_TO_SALES_UNIT, lookup=UOM_BY_NAME
        ),
        Field("priceperunit", "SalesPrice"),
        Field("ispriceoverridden", default=True),
        Field("extendedamount", "LineAmount"),
        Field("manualdiscountamount", "LineTotalDiscountAmount"),
        Field("tax", "LineTotalTaxAmount"),
        Field("msdynce_ismaintainedexternally", default=True),
    ),
)
