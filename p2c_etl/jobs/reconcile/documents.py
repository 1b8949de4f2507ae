"""Where each document type's header totals and lines live in each system: the tables and
columns the money reconciliation reads (quotes, orders, invoices)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentSpec:
    """Where a document type's header totals and lines live in each system.

    `crm_only` keeps the Sales headers whose column holds the value (quotes: active ones, the
    only ones the quote flow carries); `erp_totals_ready` names the F&O header column that
    says "Yes" once F&O has calculated the document's totals (orders: the *Calculate sales
    totals* batch job); `lines` is false where no header-against-lines check is made."""

    name: str
    crm_header: str
    crm_number: str
    crm_total: str
    crm_date: str
    crm_lines: str
    crm_line_parent: str
    crm_header_id: str
    crm_header_parts: tuple[str, ...]  # header columns added to the lines' sum
    crm_line_parts: tuple[str, ...]
    erp_header: str
    erp_number: str
    erp_total: str
    erp_date: str
    erp_customer: str
    erp_lines: str
    erp_header_parts: tuple[str, ...]
    erp_line_parts: tuple[str, ...]
    crm_only: tuple[str, int] | None = None
    erp_totals_ready: str | None = None
    lines: bool = True
    by_presence: bool = False

    def entities(self) -> frozenset[str]:
        """The header entity sets, qualified as a flow names them (`crm.salesorders`)."""
        return frozenset({f"crm.{self.crm_header}", f"erp.{self.erp_header}"})

    def line_entities(self) -> frozenset[str]:
        return frozenset({f"crm.{self.crm_lines}", f"erp.{self.erp_lines}"})


DOCUMENTS = (
    DocumentSpec(
        "orders",
        "salesorders",
        "ordernumber",
        "totalamount",
        "requestdeliveryby",
        "salesorderdetails",
        "_salesorderid_value",
        "salesorderid",
        ("freightamount",),
        ("extendedamount", "tax"),
        "CDSSalesOrderHeaders",
        "SalesOrderNumber",
        "OrderTotalAmount",
        "RequestedShippingDate",
        "OrderingCustomerAccountNumber",
        "CDSSalesOrderLines",
        ("OrderTotalChargesAmount", "OrderHeaderTaxAmount"),
        ("LineAmount", "TotalTaxAmount"),
        erp_totals_ready="AreTotalsUpdated",
    ),
    DocumentSpec(
        "invoices",
        "invoices",
        "invoicenumber",
        "totalamount",
        "msdynce_invoicedate",
        "invoicedetails",
        "_invoiceid_value",
        "invoiceid",
        ("freightamount", "totaltax"),
        ("extendedamount",),
        "ExternallyMaintainedCustomerSalesInvoiceHeaders",
        "InvoiceNumber",
        "TotalInvoiceAmount",
        "InvoiceDate",
        "InvoiceCustomerAccountNumber",
        "ExternallyMaintainedCustomerSalesInvoiceLines",
        ("TotalChargeAmount", "TotalTaxAmount"),
        ("LineAmount",),
    ),
    DocumentSpec(
        "quotes",
        "quotes",
        "quotenumber",
        "totalamount",
        "requestdeliveryby",
        "quotedetails",
        "_quoteid_value",
        "quoteid",
        (),
        ("extendedamount",),
        "CDSSalesQuotationHeaders",
        "SalesQuotationNumber",
        "QuotationTotalAmount",
        "RequestedShippingDate",
        "RequestingCustomerAccountNumber",
        "CDSSalesQuotationLines",
        (),
        ("LineAmount",),
        crm_only=("statecode", 1),
        lines=False,
        by_presence=True,
    ),
)
