"""Parquet values read for what the file declares them, so that a value gets the same verdict
in Parquet, CSV and JSON Lines: an object, a list or a map is no text, a flag or text is no
int, a date-time is a date only at midnight (or F&O's noon) UTC, and text that is not UTF-8 is
a bad_encoding reject naming row and column, in a single-batch file and a many-batch one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.connectors.exports import read_chunks
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.errors import ConnectorError
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.rejects import LINE

COLUMNS = ["accountnumber", "name", "statecode", "numberofemployees", "creditlimit"]
BAD = b"BAD\xff"  # not UTF-8


def _write(path: Path, **columns: pa.Array) -> Path:
    """Three accounts A1, A2, A3 as Parquet; `columns` replace the plain ones."""
    plain = {
        "accountnumber": pa.array(["A1", "A2", "A3"]),
        "name": pa.array(["One", "Two", "Three"]),
        "statecode": pa.array([0, 0, 1], pa.int64()),
        "numberofemployees": pa.array([1, 2, 3], pa.int64()),
        "creditlimit": pa.array([Decimal(1), Decimal(2), Decimal(3)], pa.decimal128(19, 4)),
    }
    pq.write_table(pa.table({**plain, **columns}), path)
    return path


def _read(path: Path, contracts: ContractSet, chunk_rows: int = 1000) -> tuple[list, list]:
    """(clean (accountnumber, name, statecode), bad (row, field, reason, value, message))."""
    chunks = list(read_chunks(path, contracts.get("crm", "accounts"), COLUMNS, chunk_rows))
    good = [r for c in chunks for r in c.frame.select("accountnumber", "name", "statecode").rows()]
    bad = [
        (r[LINE], r["field"], r["reason"], r["value"], r["message"])
        for c in chunks
        for r in c.bad.iter_rows(named=True)
    ]
    assert sum(c.records for c in chunks) == 3  # every record counted, clean or bad
    return good, bad


def _invalid_text(values: list[bytes | None], dtype: pa.DataType) -> pa.Array:
    """A text column holding bytes that are not UTF-8, as a careless writer leaves them."""
    raw = pa.array(values, pa.large_binary() if dtype == pa.large_string() else pa.binary())
    return raw.view(dtype)


# --- finding 3: an object, a list, a map, bytes where the contract wants text ------------


@pytest.mark.parametrize(
    ("array", "shown", "said"),
    [
        (pa.array([None, {"a": "x"}, None]), '{"a":"x"}', "a struct (an object)"),
        (pa.array([None, ["x", "y"], None]), '["x","y"]', "a list (an array)"),
        (pa.array([None, [("k", "v")], None], pa.map_(pa.string(), pa.string())), '{"k":"v"}',
         "a map (an object)"),
        (pa.array([None, 5, None], pa.int64()), "5", "a whole number"),
        (pa.array([None, True, None]), "true", "a flag (true or false)"),
    ],
    ids=["struct", "list", "map", "int", "bool"],
)  # fmt: skip
def test_a_value_that_is_not_text_in_a_text_column_is_wrong_type(
    tmp_path: Path, contracts: ContractSet, array: pa.Array, shown: str, said: str
) -> None:
    path = _write(tmp_path / "accounts.parquet", name=array)
    for chunk_rows in (1000, 2):  # one batch, and several (polars reads them in slices)
        good, bad = _read(path, contracts, chunk_rows)
        assert good == [("A1", None, 0), ("A3", None, 1)]
        message = (
            f"accounts.parquet row 2: name '{shown}' is {said} in the file, not a valid string"
        )
        assert bad == [(2, "name", "wrong_type", shown, message)]


@pytest.mark.parametrize(
    "array",
    [
        pa.array(["One", "Two", "Three"], pa.large_string()),
        pa.array(["One", "Two", "Three"], pa.string_view()),
        pa.array(["One", "Two", "Three"]).dictionary_encode(),
        pa.array([b"One", b"Two", b"Three"], pa.binary()),  # text stored as plain bytes
        pa.array([b"One", b"Two", b"Three"], pa.large_binary()),
    ],
    ids=["large_string", "string_view", "dictionary", "binary", "large_binary"],
)
def test_text_of_every_arrow_text_type_and_utf8_bytes_read_as_text(
    tmp_path: Path, contracts: ContractSet, array: pa.Array
) -> None:
    path = _write(tmp_path / "accounts.parquet", name=array)
    for chunk_rows in (1000, 2):
        assert _read(path, contracts, chunk_rows) == (
            [("A1", "One", 0), ("A2", "Two", 0), ("A3", "Three", 1)],
            [],
        )


# --- finding 7: text that is not UTF-8 ----------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        pa.array([b"One", BAD, b"Three"], pa.binary()),
        pa.array([b"One", BAD, b"Three"], pa.large_binary()),
        _invalid_text([b"One", BAD, b"Three"], pa.string()),
        _invalid_text([b"One", BAD, b"Three"], pa.large_string()),
        pa.array([b"One", "Blue \ud800".encode("utf-8", "surrogatepass"), b"Three"]),
    ],
    ids=["binary", "large_binary", "string", "large_string", "surrogate"],
)
@pytest.mark.parametrize("chunk_rows", [1000, 1, 2], ids=["one batch", "rows", "pairs"])
def test_text_that_is_not_utf8_is_bad_encoding_naming_row_and_column(
    tmp_path: Path, contracts: ContractSet, array: pa.Array, chunk_rows: int
) -> None:
    path = _write(tmp_path / "accounts.parquet", name=array)
    good, bad = _read(path, contracts, chunk_rows)
    assert good == [("A1", "One", 0), ("A3", "Three", 1)]
    ((row, field, reason, value, message),) = bad
    assert (row, field, reason) == (2, "name", "bad_encoding")
    assert message == "accounts.parquet row 2: name is not UTF-8 text"
    assert "\ufffd" in value  # shown, the bytes that are not UTF-8 as U+FFFD


def test_a_bad_encoding_reject_still_names_its_record(
    tmp_path: Path, contracts: ContractSet
) -> None:
    path = _write(
        tmp_path / "accounts.parquet", name=_invalid_text([b"One", BAD, None], pa.string())
    )
    bad: list[pl.DataFrame] = []
    FilesConnector("crm", tmp_path, contracts).snapshot("accounts", COLUMNS, on_bad=bad.append)
    (row,) = pl.concat(bad).iter_rows(named=True)
    assert json.loads(row["record"])["accountnumber"] == "A2"  # the source key of the reject
    assert row["source_file"] == str(path)


# --- finding 15: the file's declared type decides, as in JSON Lines ------------------------


@pytest.mark.parametrize(
    ("array", "said", "shown"),
    [
        (pa.array([False, None, True]), "a flag (true or false)", ("false", "true")),
        (pa.array(["0", None, "1"]), "text", ("0", "1")),
    ],
    ids=["bool", "string"],
)
def test_a_flag_or_text_in_an_int_column_is_wrong_type(
    tmp_path: Path, contracts: ContractSet, array: pa.Array, said: str, shown: tuple[str, str]
) -> None:
    path = _write(tmp_path / "accounts.parquet", statecode=array)
    for chunk_rows in (1000, 2):
        good, bad = _read(path, contracts, chunk_rows)
        assert good == [("A2", "Two", None)]
        assert [(r[0], r[1], r[2], r[3]) for r in bad] == [
            (1, "statecode", "wrong_type", shown[0]),
            (3, "statecode", "wrong_type", shown[1]),
        ]
        assert f"statecode '{shown[0]}' is {said} in the file, not a valid int" in bad[0][4]


@pytest.mark.parametrize("dtype", [pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint32()])
def test_a_narrower_int_column_reads_exactly(
    tmp_path: Path, contracts: ContractSet, dtype: pa.DataType
) -> None:
    path = _write(tmp_path / "accounts.parquet", statecode=pa.array([0, None, 1], dtype))
    assert _read(path, contracts) == (
        [("A1", "One", 0), ("A2", "Two", None), ("A3", "Three", 1)],
        [],
    )


def test_the_same_statecode_gets_the_same_verdict_in_every_format(
    tmp_path: Path, contracts: ContractSet
) -> None:
    """JSON Lines `false` and `"0"`, a Parquet bool and string column: wrong_type; the text 0 of
    a CSV (where every value is text) and a JSON or Parquet number 0: the int 0."""

    def verdict(name: str, write: Callable[[Path], None]) -> list[tuple[int | None, str | None]]:
        folder = tmp_path / name
        folder.mkdir()
        write(folder)
        bad: list[pl.DataFrame] = []
        conn = FilesConnector("crm", folder, contracts)
        frame = conn.snapshot("accounts", ["accountnumber", "statecode"], on_bad=bad.append)
        reasons = pl.concat(bad)["reason"].to_list() if bad else []
        return [(v, None) for v in frame["statecode"]] + [(None, r) for r in reasons]

    def jsonl(value: object) -> Callable[[Path], None]:
        line = json.dumps({"accountnumber": "A1", "statecode": value}) + "\n"
        return lambda folder: (folder / "accounts.jsonl").write_text(line)

    def parquet(array: pa.Array) -> Callable[[Path], None]:
        table = pa.table({"accountnumber": ["A1"], "statecode": array})
        return lambda folder: pq.write_table(table, folder / "accounts.parquet")

    def csv(folder: Path) -> None:
        (folder / "accounts.csv").write_text("accountnumber,statecode\nA1,0\n")

    refused = [(None, "wrong_type")]
    assert verdict("jsonl_false", jsonl(False)) == refused
    assert verdict("parquet_bool", parquet(pa.array([False]))) == refused
    assert verdict("jsonl_text", jsonl("0")) == refused
    assert verdict("parquet_text", parquet(pa.array(["0"]))) == refused
    assert verdict("csv", csv) == [(0, None)]
    assert verdict("jsonl_number", jsonl(0)) == [(0, None)]
    assert verdict("parquet_int8", parquet(pa.array([0], pa.int8()))) == [(0, None)]


# --- finding 9: a date-time in a date column ---------------------------------------------


@pytest.mark.parametrize("dtype", [pa.timestamp("us"), pa.timestamp("ms", "UTC")])
@pytest.mark.parametrize("chunk_rows", [1000, 2])
def test_a_parquet_timestamp_is_a_date_only_at_midnight_or_noon_utc(
    tmp_path: Path, contracts: ContractSet, dtype: pa.DataType, chunk_rows: int
) -> None:
    stamps = [
        datetime(2026, 10, 5, 0, 0),  # Dataverse's date-only value
        datetime(2026, 10, 5, 12, 0),  # F&O's date field, as its OData serves it
        datetime(2026, 10, 5, 13, 45),
        datetime(2026, 10, 5, 0, 0, 0, 500_000),
        datetime(2026, 10, 5, 23, 30),
    ]
    path = tmp_path / "quotes.parquet"
    numbers = [f"Q-{i}" for i in range(1, 6)]
    pq.write_table(
        pa.table({"quotenumber": numbers, "requestdeliveryby": pa.array(stamps, dtype)}), path
    )
    columns = ["quotenumber", "requestdeliveryby"]
    chunks = list(read_chunks(path, contracts.get("crm", "quotes"), columns, chunk_rows))
    good = [r for c in chunks for r in c.frame.select(columns).rows()]
    bad = [(r[LINE], r["field"], r["reason"]) for c in chunks for r in c.bad.iter_rows(named=True)]
    day = date(2026, 10, 5)
    assert good == [("Q-1", day), ("Q-2", day)]
    assert bad == [(n, "requestdeliveryby", "wrong_type") for n in (3, 4, 5)]


# --- through `p2c run`: a reject naming file, row and column; a target refused whole ------


def _accounts_as_parquet(crm: Path, contracts: ContractSet, **columns: pa.Array) -> Path:
    """The demo's crm/accounts as Parquet (typed by the contract), `columns` replaced."""
    source = crm / "accounts.jsonl"
    held = {k for line in source.read_text(encoding="utf-8").splitlines() for k in json.loads(line)}
    names = [c for c in contracts.get("crm", "accounts").columns if c in held]
    table = FilesConnector("crm", crm, contracts).snapshot("accounts", names).to_arrow()
    for name, array in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, array)
    source.unlink()
    pq.write_table(table, crm / "accounts.parquet")
    return crm / "accounts.parquet"


def _third(table_rows: int, value: object, dtype: pa.DataType | None = None) -> pa.Array:
    """A column of nulls but the third value (the demo's Blue Yonder Airlines)."""
    values = [None] * table_rows
    values[2] = value
    return pa.array(values, dtype)


def _run(demo_dir: Path, flows: str) -> tuple[int, dict]:
    config = str(demo_dir / "p2c.toml")
    result = CliRunner().invoke(main, ["run", "--config", config, "--flows", flows, "--json"])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, json.loads(result.stdout)


def _rejects(demo_dir: Path, field: str) -> list[tuple]:
    with duckdb.connect(str(demo_dir / "p2c.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT record_key, reason, field, source_file, source_line, message FROM rejects "
            "WHERE field = ? ORDER BY source_line",
            [field],
        ).fetchall()


def _line_of(path: Path, key: str) -> list[dict[str, object]]:
    """The records of a JSON Lines target whose line holds `key`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if key in line]


@pytest.mark.parametrize(
    ("column", "array", "reason"),
    [
        ("name", _third(40, {"x": "Blue Yonder"}), "wrong_type"),
        ("name", _third(40, BAD, pa.binary()), "bad_encoding"),
        ("statecode", _third(40, False), "wrong_type"),
        ("statecode", _third(40, "0"), "wrong_type"),
    ],
    ids=["struct name", "name not UTF-8", "bool statecode", "text statecode"],
)
def test_a_damaged_parquet_source_is_a_reject_naming_file_row_and_column(
    demo_dir: Path,
    contracts: ContractSet,
    assert_accounted: Callable[[object], None],
    column: str,
    array: pa.Array,
    reason: str,
) -> None:
    path = _accounts_as_parquet(demo_dir / "crm", contracts, **{column: array})
    customers = demo_dir / "erp" / "CustomersV2.jsonl"
    before = _line_of(customers, "ACC-01003-BLUEYO")
    code, summary = _run(demo_dir, "accounts")
    assert code == 1, summary.get("error")
    assert_accounted(summary["flows"])
    assert summary["flows"][0]["source_rows"] == 40
    ((key, got, field, source_file, line, message),) = _rejects(demo_dir, column)
    assert (key, got, field, source_file, line) == (
        "ACC-01003-BLUEYO", reason, column, str(path), 3
    )  # fmt: skip
    assert message.startswith(f"accounts.parquet row 3: {column} ")
    assert _line_of(customers, "ACC-01003-BLUEYO") == before  # not written with a changed value


@pytest.mark.parametrize(
    "value", ["2026-10-05T13:45:00", "2026-10-05T23:30:00+05:00", "2026-10-05T00:00:00.5Z"]
)
def test_a_date_time_in_a_json_lines_date_column_is_wrong_type_not_its_date(
    demo_dir: Path, assert_accounted: Callable[[object], None], value: str
) -> None:
    quotes = demo_dir / "crm" / "quotes.jsonl"
    records = [json.loads(line) for line in quotes.read_text(encoding="utf-8").splitlines()]
    (first,) = [r for r in records if r["quotenumber"] == "Q-1001"]
    first["requestdeliveryby"] = value
    quotes.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    headers = demo_dir / "erp" / "CDSSalesQuotationHeaders.jsonl"
    before = _line_of(headers, '"Q-1001"')
    code, summary = _run(demo_dir, "quote_headers")
    assert code == 1, summary.get("error")
    assert_accounted(summary["flows"])
    found = _rejects(demo_dir, "requestdeliveryby")
    assert [(r[0], r[1], r[4]) for r in found] == [("Q-1001", "wrong_type", 1)]
    assert f"requestdeliveryby '{value}' is not a valid date" in found[0][5]
    assert _line_of(headers, '"Q-1001"') == before  # not sent as 2026-10-05


def test_a_parquet_target_holding_an_object_as_text_is_refused_in_one_line(
    demo_dir: Path, contracts: ContractSet, assert_accounted: Callable[[object], None]
) -> None:
    erp = demo_dir / "erp"
    lines = (erp / "CustomersV2.jsonl").read_text(encoding="utf-8").splitlines()
    held = {k for line in lines for k in json.loads(line)}
    names = [c for c in contracts.get("erp", "CustomersV2").columns if c in held]
    table = FilesConnector("erp", erp, contracts).snapshot("CustomersV2", names).to_arrow()
    at = table.schema.get_field_index("OrganizationName")
    names = [{"x": n} if n is not None else None for n in table.column(at).to_pylist()]
    (erp / "CustomersV2.jsonl").unlink()
    pq.write_table(table.set_column(at, "OrganizationName", pa.array(names)),
                   erp / "CustomersV2.parquet")  # fmt: skip
    before = {p: p.read_bytes() for p in sorted(erp.iterdir())}
    code, summary = _run(demo_dir, "accounts")
    assert code == 2
    assert_accounted(summary["flows"])
    (error,) = summary["error"].splitlines()
    assert "CustomersV2.parquet: row 1: column OrganizationName:" in error
    assert "wrong_type" in error
    assert {p: p.read_bytes() for p in sorted(erp.iterdir())} == before


def test_a_parquet_target_read_whole_refuses_an_object_as_text(
    tmp_path: Path, contracts: ContractSet
) -> None:
    pq.write_table(pa.table({"accountnumber": ["A1"], "name": [{"x": "y"}]}),
                   tmp_path / "accounts.parquet")  # fmt: skip
    with pytest.raises(ConnectorError, match=r"accounts\.parquet: row 1: column name:"):
        FilesConnector("crm", tmp_path, contracts).snapshot("accounts", ["accountnumber", "name"])
