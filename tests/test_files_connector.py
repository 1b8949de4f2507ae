import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from p2c_etl.connectors.base import WriteBatch
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.contracts import ContractSet
from p2c_etl.errors import ConnectorError

COLUMNS = ["productnumber", "name", "price", "isstockitem"]
ROWS = [
    {
        "productid": "00000000-0000-0000-0000-000000000001",
        "productnumber": "P1",
        "name": "One",
        "price": "1.50",
        "isstockitem": True,
        "extra": "kept",
    },
    {
        "productid": "00000000-0000-0000-0000-000000000002",
        "productnumber": "P2",
        "name": "Two",
        "price": 20,
        "isstockitem": False,
        "extra": "kept too",
    },
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def connector(root: Path, contracts: ContractSet) -> FilesConnector:
    return FilesConnector("crm", root, contracts)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_reads_every_format_typed_by_the_contract(
    tmp_path: Path, contracts: ContractSet, fmt: str
) -> None:
    frame = pl.DataFrame(ROWS).with_columns(pl.col("price").cast(pl.String))
    path = tmp_path / f"products.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    elif fmt == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    snap = connector(tmp_path, contracts).snapshot("products", COLUMNS)
    assert snap.schema["price"] == pl.Decimal(19, 4)
    assert snap.schema["isstockitem"] == pl.Boolean
    assert snap.rows() == [("P1", "One", Decimal("1.5"), True), ("P2", "Two", Decimal("20"), False)]


def test_a_bad_value_names_file_line_and_column(tmp_path: Path, contracts: ContractSet) -> None:
    (tmp_path / "products.csv").write_text(
        "productnumber,name,price,isstockitem\nP1,One,1.50,true\nP2,Two,12.345678,false\n"
    )
    with pytest.raises(ConnectorError, match=r"products\.csv: line 3: column price: '12\.345678'"):
        connector(tmp_path, contracts).snapshot("products", COLUMNS)


def test_missing_entity_file_is_an_error_unless_allowed(
    tmp_path: Path, contracts: ContractSet
) -> None:
    conn = connector(tmp_path, contracts)
    with pytest.raises(ConnectorError, match="no file for entity set 'products'"):
        conn.snapshot("products", COLUMNS)
    assert conn.snapshot("products", COLUMNS, missing_ok=True).height == 0


def test_two_files_for_one_entity_set_is_an_error(tmp_path: Path, contracts: ContractSet) -> None:
    write_jsonl(tmp_path / "products.jsonl", ROWS)
    pl.DataFrame(ROWS).write_parquet(tmp_path / "products.parquet")
    with pytest.raises(ConnectorError, match="keep only one"):
        connector(tmp_path, contracts).snapshot("products", COLUMNS)


def test_upsert_updates_only_sent_columns_and_keeps_the_rest(
    tmp_path: Path, contracts: ContractSet
) -> None:
    write_jsonl(tmp_path / "products.jsonl", ROWS)
    conn = connector(tmp_path, contracts)
    price = pl.Decimal(19, 4)
    batch = WriteBatch(
        keys=("productnumber",),
        inserts=pl.DataFrame(
            {
                "productid": ["00000000-0000-0000-0000-000000000003"],
                "productnumber": ["P3"],
                "name": ["Three"],
                "price": [Decimal("3.25")],
            },
            schema_overrides={"price": price},
        ),
        updates=(
            pl.DataFrame(
                {"productnumber": ["P1"], "price": [Decimal("1.75")]},
                schema_overrides={"price": price},
            ),
            pl.DataFrame({"productnumber": ["P2", "P9"], "name": [None, "Nine"]}),
        ),
    )
    results = conn.upsert("products", batch)
    assert sorted(results.rows()) == [
        ("P1", "update", "ok", None),
        ("P2", "update", "ok", None),
        ("P3", "insert", "ok", None),
        ("P9", "update", "failed", "no record with this key"),
    ]
    lines = [json.loads(x) for x in (tmp_path / "products.jsonl").read_text().splitlines()]
    assert [(r["productnumber"], r["name"], r["extra"]) for r in lines] == [
        ("P1", "One", "kept"),
        ("P2", None, "kept too"),
        ("P3", "Three", None),
    ]
    snap = conn.snapshot("products", COLUMNS)
    assert snap["price"].to_list() == [Decimal("1.75"), Decimal("20"), Decimal("3.25")]
    assert list(tmp_path.iterdir()) == [tmp_path / "products.jsonl"]  # no temporary files left


def test_a_failed_write_leaves_the_old_file_whole(
    tmp_path: Path, contracts: ContractSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "products.jsonl", ROWS)
    before = (tmp_path / "products.jsonl").read_bytes()

    def crash(self: pl.DataFrame, handle: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_ndjson", crash)
    batch = WriteBatch(keys=("productnumber",), inserts=pl.DataFrame({"productnumber": ["P3"]}))
    with pytest.raises(ConnectorError, match=r"products\.jsonl: cannot write: disk full"):
        connector(tmp_path, contracts).upsert("products", batch)
    assert (tmp_path / "products.jsonl").read_bytes() == before
    assert list(tmp_path.iterdir()) == [tmp_path / "products.jsonl"]
