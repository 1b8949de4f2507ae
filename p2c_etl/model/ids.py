"""Ids of new Dataverse records: derived from the natural key, so a re-run never makes a second."""

from __future__ import annotations

import uuid

from p2c_etl.model.flow import Flow

ID_NAMESPACE = uuid.UUID("6f1c2a4e-8d3b-5e7f-9a0b-1c2d3e4f5a6b")


def stable_id(flow: Flow, key: str) -> str:
    """The GUID a new record of `flow.target` with natural key `key` gets."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{flow.target}/{key}"))
