"""The Prospect to cash flows as declarations, one module per template, with the value maps
the templates ship with (`valuemaps`) and the derived facts their plug-ins computed
(`derived`). `ALL_FLOWS` holds them in declaration order (the run order is the dependency
order). Imports `model` (and `config`, `errors`) only."""

from __future__ import annotations

from p2c_etl.flows.accounts import ACCOUNTS
from p2c_etl.flows.contacts import CONTACT_CUSTOMERS, CONTACTS
from p2c_etl.flows.invoices import INVOICE_HEADERS_FLOW, INVOICE_LINES_FLOW
from p2c_etl.flows.orders import (
    ORDER_HEADERS_BACK,
    ORDER_HEADERS_OUT,
    ORDER_LINES_BACK,
    ORDER_LINES_OUT,
)
from p2c_etl.flows.products import PRODUCTS
from p2c_etl.flows.quotes import QUOTE_HEADERS_FLOW, QUOTE_LINES_FLOW
from p2c_etl.model.flow import Flow

ALL_FLOWS: tuple[Flow, ...] = (
    PRODUCTS,
    ACCOUNTS,
    CONTACTS,
    CONTACT_CUSTOMERS,
    QUOTE_HEADERS_FLOW,
    QUOTE_LINES_FLOW,
    ORDER_HEADERS_OUT,
    ORDER_LINES_OUT,
    ORDER_HEADERS_BACK,
    ORDER_LINES_BACK,
    INVOICE_HEADERS_FLOW,
    INVOICE_LINES_FLOW,
)


def flow_names() -> tuple[str, ...]:
    return tuple(flow.name for flow in ALL_FLOWS)


def get_flow(name: str) -> Flow:
    for flow in ALL_FLOWS:
        if flow.name == name:
            return flow
    raise KeyError(name)
