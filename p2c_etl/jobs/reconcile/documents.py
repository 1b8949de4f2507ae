"""Where each document type's header totals and lines live in each system: the tables and
columns the money reconciliation reads (orders, invoices; quotes are counted only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentSpec:
    """Where a document type's header totals and lines live in each system."""

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
)
QUOTES = ("quotes", "quotenumber", "CDSSalesQuotationHeaders", "SalesQuotationNumber")
