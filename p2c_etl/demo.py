"""The demo company's month end: three things people do by hand after the nightly sync, which
`p2c reconcile` must find and classify (`p2c demo --month-end`).

1. In Sales, someone changes the total of invoice INV-3005 by hand (+100.00).
2. In F&O, line 2 of order SO-2010 is deleted.
3. In F&O, someone raises Fourth Coffee's credit limit by hand.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl

from p2c_etl.connectors.files import FilesConnector, read_all, write_atomic
from p2c_etl.contracts import ContractSet

INVOICE, ORDER, LINE, CUSTOMER = "INV-3005", "SO-2010", 2, "Fourth Coffee"


def month_end_edits(directory: Path, contracts: ContractSet) -> list[str]:
    """Apply the three edits to the demo's files; returns what was done, for the user."""
    crm = FilesConnector("crm", directory / "crm", contracts)
    erp = FilesConnector("erp", directory / "erp", contracts)
    _edit(
        crm,
        "invoices",
        pl.col("invoicenumber") == INVOICE,
        {"totalamount": pl.col("totalamount") + Decimal("100.00")},
    )
    _drop(
        erp,
        "CDSSalesOrderLines",
        (pl.col("SalesOrderNumber") == ORDER) & (pl.col("LineCreationSequenceNumber") == LINE),
    )
    _edit(
        erp,
        "CustomersV2",
        pl.col("OrganizationName") == CUSTOMER,
        {"CreditLimit": pl.col("CreditLimit") + Decimal("5000")},
    )
    return [
        f"Sales: invoice {INVOICE}'s total raised by 100.00 by hand",
        f"F&O: line {LINE} of order {ORDER} deleted",
        f"F&O: {CUSTOMER}'s credit limit raised by 5,000.00 by hand",
    ]


def _edit(conn: FilesConnector, entity: str, where: pl.Expr, values: dict[str, pl.Expr]) -> None:
    frame, path = _whole(conn, entity)
    updated = frame.with_columns(
        [
            pl.when(where).then(v).otherwise(pl.col(c)).cast(frame.schema[c]).alias(c)
            for c, v in values.items()
        ]
    )
    _save(updated, path)


def _drop(conn: FilesConnector, entity: str, where: pl.Expr) -> None:
    frame, path = _whole(conn, entity)
    _save(frame.filter(~where), path)


def _whole(conn: FilesConnector, entity: str) -> tuple[pl.DataFrame, Path]:
    path = conn.path(entity)
    assert path is not None, f"the demo has no {entity}"
    contract = conn.contracts.get(conn.system, entity)
    return read_all(path, contract.dtypes(contract.columns)), path


def _save(frame: pl.DataFrame, path: Path) -> None:
    write_atomic(frame, path)
