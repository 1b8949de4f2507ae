"""A run refuses text the real systems would not take or hold: control and bidi characters
(`bad_format`), and text longer than the target, or the source system itself, holds
(`too_long`); never a raw control character in a report, never the value in the target."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from p2c_etl.config import Settings
from p2c_etl.connectors.files import FilesConnector
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.summary import RunSummary
from p2c_etl.warehouse.store import Warehouse

RAW = ("\x00", "\x1b", "\u202e", "\t")
PLANTED = {  # account number → the fields planted with a refused character
    "ACC-01001-ADVENT": {"name": "Adventure\x00 Works"},
    "ACC-01002-ALPINE": {"accountnumber": "ACC-01002-\u202eALPINE"},
    "ACC-01003-BLUEYO": {"address1_city": "Sea\x1bttle", "telephone1": "+1 555\t0102"},
}
EXPECTED = [  # (record key, field, message start) of the bad_format rejects they become
    ("ACC-01001-ADVENT", "OrganizationName", "OrganizationName holds U+0000 NUL at position 10"),
    ("ACC-01002-\u202eALPINE", "CustomerAccount", "CustomerAccount holds U+202E RIGHT-TO-LEFT"),
    ("ACC-01002-\u202eALPINE", "PartyNumber", "PartyNumber holds U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("ACC-01003-BLUEYO", "AddressCity", "AddressCity holds U+001B ESC at position 4"),
    ("ACC-01003-BLUEYO", "DeliveryAddressCity", "DeliveryAddressCity holds U+001B ESC"),
    ("ACC-01003-BLUEYO", "PrimaryContactPhone", "PrimaryContactPhone holds U+0009 TAB"),
]


def planted(rows: list[dict[str, Any]], edits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, **edits.get(row["accountnumber"], {})} for row in rows]


def plant_jsonl(demo_dir: Path, edits: dict[str, dict[str, Any]]) -> None:
    path = demo_dir / "crm" / "accounts.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # json.dumps writes NUL, ESC and the bidi override as \\u escapes, as any JSON writer does
    path.write_text("".join(json.dumps(r) + "\n" for r in planted(rows, edits)), "utf-8")


def plant_parquet(
    demo_dir: Path,
    contracts: ContractSet,
    edits: dict[str, dict[str, Any]],
    types: dict[str, pl.DataType] | None = None,
) -> None:
    crm = FilesConnector("crm", demo_dir / "crm", contracts)
    lines = (demo_dir / "crm" / "accounts.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    frame = crm.snapshot(
        "accounts", [c for c in contracts.get("crm", "accounts").columns if c in first]
    )
    rows = planted(frame.to_dicts(), edits)
    schema = {**frame.schema, **(types or {})}
    pl.DataFrame(rows, schema=schema).write_parquet(demo_dir / "crm" / "accounts.parquet")
    (demo_dir / "crm" / "accounts.jsonl").unlink()


def accounts_rejects(settings: Settings, run_id: str) -> pl.DataFrame:
    wh = Warehouse.open(settings.warehouse_path)
    try:
        return wh.query(
            "SELECT record_key, field, reason, value, message FROM rejects "
            "WHERE run_id = ? AND flow = 'accounts' ORDER BY record_key, field",
            [run_id],
        )
    finally:
        wh.close()


def assert_no_raw_character_in_the_reports(summary: RunSummary) -> None:
    assert summary.report_html and summary.report_json
    named = {summary.report_html: "ACC-01002-&lt;U+202E&gt;ALPINE"}  # HTML escapes the <>
    for report in (summary.report_html, summary.report_json):
        text = Path(report).read_text(encoding="utf-8")
        assert not [c for c in RAW if c in text], report
        assert named.get(report, "ACC-01002-<U+202E>ALPINE") in text  # the record, named


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_control_and_bidi_characters_are_bad_format_rejects(
    demo_dir: Path,
    demo_settings: Settings,
    contracts: ContractSet,
    expected_first_run: dict[str, dict[str, int]],
    assert_accounted: Callable[[object], None],
    file_format: str,
) -> None:
    if file_format == "jsonl":
        plant_jsonl(demo_dir, PLANTED)
    else:
        plant_parquet(demo_dir, contracts, PLANTED)
    summary = run_batch(demo_settings)

    assert_accounted(summary.flows)
    counts = next(vars(f) for f in summary.flows if f.flow == "accounts")
    expected = expected_first_run["accounts"]
    # three records the demo leaves unchanged are refused; the record whose key was planted
    # no longer matches its F&O customer, which is now found in the target only
    expected.update(
        rejected=expected["rejected"] + 3,
        unchanged=expected["unchanged"] - 3,
        target_only=expected["target_only"] + 1,
    )
    assert counts == {"flow": "accounts", **expected}
    rejects = accounts_rejects(demo_settings, summary.run_id).filter(reason="bad_format")
    found = list(zip(rejects["record_key"], rejects["field"], rejects["message"], strict=True))
    assert [(k, f) for k, f, _ in found] == [(k, f) for k, f, _ in EXPECTED]
    for (_, _, message), (_, _, start) in zip(found, EXPECTED, strict=True):
        assert message.startswith(start)
    assert not [v for v in rejects["value"] if any(c in v for c in RAW)]
    assert_no_raw_character_in_the_reports(summary)
    target = (demo_dir / "erp" / "CustomersV2.jsonl").read_text(encoding="utf-8")
    assert "\\u0000" not in target and "\\u001b" not in target and "\\u202e" not in target
    assert "\\t" not in target


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_a_10_mb_description_is_a_too_long_reject_and_never_reaches_the_erp(
    demo_dir: Path,
    demo_settings: Settings,
    contracts: ContractSet,
    expected_first_run: dict[str, dict[str, int]],
    assert_accounted: Callable[[object], None],
    file_format: str,
) -> None:
    huge = "x" * (10 * 1024 * 1024)
    if file_format == "jsonl":
        plant_jsonl(demo_dir, {"ACC-01001-ADVENT": {"description": huge}})
    else:
        plant_parquet(demo_dir, contracts, {"ACC-01001-ADVENT": {"description": huge}})
    target = demo_dir / "erp" / "CustomersV2.jsonl"
    size = target.stat().st_size
    summary = run_batch(demo_settings)

    assert_accounted(summary.flows)
    counts = next(vars(f) for f in summary.flows if f.flow == "accounts")
    assert counts["rejected"] == expected_first_run["accounts"]["rejected"] + 1
    rejects = accounts_rejects(demo_settings, summary.run_id).filter(reason="too_long")
    row = rejects.filter(record_key="ACC-01001-ADVENT").row(0, named=True)
    assert row["field"] == "description"
    assert row["message"] == (
        "description is 10485760 characters, longer than the 2000 crm.accounts holds: "
        "no real crm.accounts record carries it"
    )
    assert row["value"] == "x" * 200 + "… (first 200 of 10485760 characters)"
    assert target.stat().st_size < size + 1024 * 1024  # the new customers, not the memo
    assert huge[:2001] not in target.read_text(encoding="utf-8")


HIDDEN = {  # account number → its planted key, each one a second F&O customer if let through
    "ACC-01002-ALPINE": "ACC-01002-ALP\u200bINE",  # ZERO WIDTH SPACE
    "ACC-01003-BLUEYO": "ACC-01003-BLUEYO\u00a0",  # NO-BREAK SPACE, trailing
    "ACC-01004-CITYPO": " ACC-01004-CITYPO",  # a leading space
}


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_invisible_key_characters_and_an_int_beyond_32_bits_are_rejects(
    demo_dir: Path,
    demo_settings: Settings,
    contracts: ContractSet,
    expected_first_run: dict[str, dict[str, int]],
    assert_accounted: Callable[[object], None],
    file_format: str,
) -> None:
    edits: dict[str, dict[str, Any]] = {k: {"accountnumber": v} for k, v in HIDDEN.items()}
    if file_format == "jsonl":
        edits["ACC-01001-ADVENT"] = {"numberofemployees": 2**31}
        plant_jsonl(demo_dir, edits)
    else:  # a float column, as a spreadsheet export writes it: 2^53 + 2 is exact as a float
        edits["ACC-01001-ADVENT"] = {"numberofemployees": float(2**53 + 2)}
        plant_parquet(demo_dir, contracts, edits, {"numberofemployees": pl.Float64()})
    target = demo_dir / "erp" / "CustomersV2.jsonl"
    before = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    summary = run_batch(demo_settings)

    assert_accounted(summary.flows)
    counts = next(vars(f) for f in summary.flows if f.flow == "accounts")
    expected = expected_first_run["accounts"]
    expected.update(  # four records refused (CITYPO the demo updates, three it leaves
        # unchanged); the three re-keyed ones leave their F&O customer found in the target only
        rejected=expected["rejected"] + 4,
        updated=expected["updated"] - 1,
        unchanged=expected["unchanged"] - 3,
        target_only=expected["target_only"] + 3,
    )
    assert counts == {"flow": "accounts", **expected}
    rejects = accounts_rejects(demo_settings, summary.run_id)
    planted_keys = {"ACC-01001-ADVENT", *HIDDEN.values()}
    found = rejects.filter(pl.col("record_key").is_in(list(planted_keys)))
    assert found.select("record_key", "field", "reason").rows() == [
        (" ACC-01004-CITYPO", "CustomerAccount", "bad_format"),
        ("ACC-01001-ADVENT", "OrganizationNumberOfEmployees", "out_of_range"),
        ("ACC-01002-ALP\u200bINE", "CustomerAccount", "bad_format"),
        ("ACC-01002-ALP\u200bINE", "PartyNumber", "bad_format"),  # in any single-line text
        ("ACC-01003-BLUEYO\u00a0", "CustomerAccount", "bad_format"),  # NBSP: in keys only
    ]
    assert found["value"].to_list() == [
        " ACC-01004-CITYPO",
        "9007199254740994" if file_format == "parquet" else "2147483648",
        "ACC-01002-ALP<U+200B>INE",
        "ACC-01002-ALP<U+200B>INE",
        "ACC-01003-BLUEYO<U+00A0>",
    ]
    after = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    accounts = {r["CustomerAccount"] for r in after}
    assert not accounts & set(HIDDEN.values())  # no second customer beside the real one
    assert {r["CustomerAccount"] for r in before} <= accounts
    employees = {r["CustomerAccount"]: r["OrganizationNumberOfEmployees"] for r in after}
    assert employees["ACC-01001-ADVENT"] == 420
    assert max(n for n in employees.values() if n is not None) < 2**31
