"""Every flow p2c-etl knows, in declaration order (the run order is the dependency order)."""

from __future__ import annotations

from p2c_etl.flow import Flow
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
