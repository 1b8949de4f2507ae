"""Every flow p2c-etl knows, in declaration order."""

from __future__ import annotations

from p2c_etl.flow import Flow
from p2c_etl.flows.accounts import ACCOUNTS
from p2c_etl.flows.products import PRODUCTS

ALL_FLOWS: tuple[Flow, ...] = (PRODUCTS, ACCOUNTS)


def flow_names() -> tuple[str, ...]:
    return tuple(flow.name for flow in ALL_FLOWS)


def get_flow(name: str) -> Flow:
    for flow in ALL_FLOWS:
        if flow.name == name:
            return flow
    raise KeyError(name)
