"""Runs that compare the way Finance and Operations compares: keys folded as SQL Server folds
them, and its empty date (1900-01-01) the same as no date. Over HTTP against the sandbox,
and over files."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2c_etl.config import SANDBOX_SECRET_ENV, Settings, load_settings
from p2c_etl.flows import flow_names
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.summary import FlowCounts
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "fno-semantics-secret"
Accounted = Callable[[object], None]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _add_account(demo_dir: Path, number: str, name: str) -> None:
    """A copy of the first CRM account under `number`, with an id of its own."""
    path = demo_dir / "crm" / "accounts.jsonl"
    records = _lines(path)
    account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"p2c-test/{number}"))
    records.append({**records[0], "accountid": account_id, "accountnumber": number, "name": name})
    _write(path, records)


def _add_customer(demo_dir: Path, number: str, name: str) -> None:
    """A copy of the first F&O customer under `number` (customer account and party)."""
    path = demo_dir / "erp" / "CustomersV2.jsonl"
    records = _lines(path)
    copy = {**records[0], "CustomerAccount": number, "PartyNumber": number}
    records.append({**copy, "OrganizationName": name})
    _write(path, records)


@contextmanager
def _over_http(demo_dir: Path) -> Iterator[tuple[Sandbox, Settings]]:
    """The demo company's systems served by a sandbox, and settings that reach them."""
    with Sandbox(
        demo_dir / "crm",
        demo_dir / "erp",
        client_secret=SECRET,
        alternate_keys=DEMO_ALTERNATE_KEYS,
    ) as sandbox:
        config = demo_dir / "p2c-http.toml"
        config.write_text(http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url))
        environ = {SANDBOX_SECRET_ENV: SECRET}
        yield sandbox, load_settings(config, flow_names(), environ=environ)


def _flow(counts: tuple[FlowCounts, ...], name: str) -> FlowCounts:
    return next(c for c in counts if c.flow == name)


def _rejects(report_json: str | None, flow: str) -> list[dict[str, Any]]:
    report = json.loads(Path(report_json or "").read_text(encoding="utf-8"))
    return next(f for f in report["flows"] if f["flow"] == flow)["rejects"]


# --- keys: one record however it is spelt -----------------------------------------------------


def test_a_customer_spelt_in_lower_case_is_updated_not_created_over_http(
    demo_dir: Path, assert_accounted: Accounted
) -> None:
    _add_account(demo_dir, "ACC-09001-TEST", "Case Test Ltd")
    _add_customer(demo_dir, "acc-09001-test", "Case Test (old name)")
    with _over_http(demo_dir) as (sandbox, settings):
        first = run_batch(settings, flows=["accounts"])
        assert first.status != "failed", first.error
        assert_accounted(first.flows)
        accounts = _flow(first.flows, "accounts")
        assert accounts.failed == 0
        assert accounts.updated >= 1
        held = [
            r
            for r in sandbox.records("erp", "CustomersV2")
            if r["CustomerAccount"].lower() == "acc-09001-test"
        ]
        assert [(r["CustomerAccount"], r["OrganizationName"]) for r in held] == [
            ("acc-09001-test", "Case Test Ltd")
        ]
        again = run_batch(settings, flows=["accounts"])
        assert_accounted(again.flows)
        assert (_flow(again.flows, "accounts").failed, again.written) == (0, 0)


def test_two_accounts_one_folded_key_apart_are_both_duplicate_key_rejects(
    demo_dir: Path, demo_settings: Settings, assert_accounted: Accounted
) -> None:
    _add_account(demo_dir, "ACC-X", "Upper Case Ltd")
    _add_account(demo_dir, "acc-x ", "Lower Case Ltd")
    summary = run_batch(demo_settings, flows=["accounts"])
    assert_accounted(summary.flows)
    folded = [
        r
        for r in _rejects(summary.report_json, "accounts")
        if r["reason"] == "duplicate_key" and "ACC-X" in str(r).upper()
    ]
    assert sorted(r["record_key"] for r in folded) == ["ACC-X", "acc-x "]
    assert all("once case and trailing spaces are ignored" in r["message"] for r in folded)
    after = (demo_dir / "erp" / "CustomersV2.jsonl").read_text(encoding="utf-8")
    assert '"acc-x' not in after.lower()  # neither was written
    assert _flow(summary.flows, "accounts").failed == 0


# --- F&O's empty date ------------------------------------------------------------------------


def _quote_dated_1900(demo_dir: Path) -> None:
    path = demo_dir / "crm" / "quotes.jsonl"
    records = _lines(path)
    first = next(r for r in records if r["quotenumber"] == "Q-1001")
    first["requestdeliveryby"] = "1900-01-01"
    _write(path, records)


def _settles(settings: Settings, assert_accounted: Accounted) -> tuple[int, int]:
    """What the quote headers flow writes on a run and on the run after it."""
    first = run_batch(settings, flows=["quote_headers"])
    second = run_batch(settings, flows=["quote_headers"])
    for summary in (first, second):
        assert summary.status != "failed", summary.error
        assert_accounted(summary.flows)
    return first.written, second.written


def test_a_quote_dated_1900_01_01_settles_over_http(
    demo_dir: Path, assert_accounted: Accounted
) -> None:
    _quote_dated_1900(demo_dir)
    with _over_http(demo_dir) as (sandbox, settings):
        first, second = _settles(settings, assert_accounted)
        (held,) = [
            r
            for r in sandbox.records("erp", "CDSSalesQuotationHeaders")
            if r["SalesQuotationNumber"] == "Q-1001"
        ]
        assert held["RequestedShippingDate"] is None  # F&O holds its dateNull as no date
    assert first >= 1 and second == 0


def test_a_quote_dated_1900_01_01_settles_over_files(
    demo_dir: Path, demo_settings: Settings, assert_accounted: Accounted
) -> None:
    _quote_dated_1900(demo_dir)
    assert _settles(demo_settings, assert_accounted)[1] == 0


def test_dataverse_keys_fold_too_a_product_spelt_in_lower_case_is_not_created_twice(
    demo_dir: Path, demo_settings: Settings, assert_accounted: Accounted
) -> None:
    """Every Dataverse language collation is case-insensitive (`_CI`): `d0001` is `D0001`."""
    path = demo_dir / "crm" / "products.jsonl"
    records = _lines(path)
    held = next(r for r in records if r["productnumber"] == "D0001")
    held["productnumber"] = "d0001"
    _write(path, records)
    first = run_batch(demo_settings, flows=["products"])
    second = run_batch(demo_settings, flows=["products"])
    for summary in (first, second):
        assert summary.status != "failed", summary.error
        assert_accounted(summary.flows)
    numbers = [r["productnumber"] for r in _lines(path)]
    assert [n for n in numbers if n.lower() == "d0001"] == ["d0001"]
    assert second.written == 0
