import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from p2c_etl.connectors.base import WriteBatch
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import ContractSet

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


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_an_entity_set_kept_as_a_folder_of_parts_reads_and_writes_as_one(
    tmp_path: Path, contracts: ContractSet, fmt: str
) -> None:
    conn = FilesConnector("crm", tmp_path, contracts, new_file_format=fmt, new_layout="folder")
    price = pl.Decimal(19, 4)

    def products(numbers: list[str], prices: list[str]) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "productid": [f"00000000-0000-0000-0000-{n[1:]:0>12}" for n in numbers],
                "productnumber": numbers,
                "name": [f"Name {n}" for n in numbers],
                "price": [Decimal(p) for p in prices],
            },
            schema_overrides={"price": price},
        )

    first = conn.upsert(
        "products", WriteBatch(("productnumber",), products(["P1", "P2"], ["1", "2"]))
    )
    second = conn.upsert(
        "products",
        WriteBatch(
            ("productnumber",),
            products(["P3", "P1"], ["3", "9"]),
            updates=(
                pl.DataFrame(
                    {"productnumber": ["P2", "P8"], "price": [Decimal("2.5"), Decimal("8")]},
                    schema_overrides={"price": price},
                ),
            ),
        ),
    )
    assert first["status"].to_list() == ["ok", "ok"]
    assert sorted(second.select("record_key", "op", "status").rows()) == [
        ("P1", "insert", "failed"),  # it exists, in the first part
        ("P2", "update", "ok"),
        ("P3", "insert", "ok"),
        ("P8", "update", "failed"),
    ]
    assert conn.path("products") == tmp_path / "products"
    parts = sorted(p.name for p in (tmp_path / "products").iterdir())
    assert len(parts) == 2 and all(p.endswith(f".{fmt}") for p in parts)
    rows = conn.snapshot("products", ["productnumber", "price"]).sort("productnumber")
    assert rows.rows() == [("P1", Decimal("1")), ("P2", Decimal("2.5")), ("P3", Decimal("3"))]
    pages = list(conn.pages("products", ["productnumber"]))
    assert [p.height for p in pages] == [2, 1]
    # A fresh connector (another run) knows nothing in memory and still refuses P3 twice.
    again = FilesConnector("crm", tmp_path, contracts).upsert(
        "products", WriteBatch(("productnumber",), products(["P3"], ["3"]))
    )
    assert again["status"].to_list() == ["failed"]
