"""Settle shares work between flows within a run: one derivation pass for flows with the same
derivations of the same source (contacts and contact_customers), one set of lookup entries
per reference as it is (accounts and contact_customers look up currencies the same way), and
on a first sync the derived hashes come from prepare's rows. Each gives exactly what each
flow computing alone gives, and a fresh warehouse."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from pytest import MonkeyPatch

from p2c_etl.config import load_settings
from p2c_etl.flows.accounts import ISO_BY_CURRENCY_ID
from p2c_etl.flows.derived import ACCOUNTS_INPUT
from p2c_etl.jobs import run as run_module
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.flow import Context, Flow, Inputs, Lookup
from p2c_etl.model.summary import RunSummary
from p2c_etl.stages import settle
from p2c_etl.stages.extract import EntityReads
from tests.warehouse.test_mirror_runs import _fresh_copy, _rewrite, _same_result

EURO = "d695ac0c-3ac1-5dd0-b00e-2a264e61841c"


def _run(root: Path, clock: Callable[[], datetime], said: list[str] | None = None) -> RunSummary:
    progress = said.append if said is not None else (lambda _: None)
    return run_batch(load_settings(root / "p2c.toml"), clock=clock, progress=progress)


def _computing(said: list[str], flow: str) -> list[str]:
    return [m for m in said if m.startswith(f"{flow}: computing ")]


class _Forgetful(dict[object, object]):
    """A cache that keeps nothing: every flow makes its own pass."""

    def __setitem__(self, key: object, value: object) -> None:
        return None


def _count_passes(monkeypatch: MonkeyPatch) -> Counter[str]:
    """Per flow, the derivation passes settle makes from now on."""
    passes: Counter[str] = Counter()
    derive = settle.derived_columns

    def counted(flow: Flow, source: pl.DataFrame, inputs: Inputs, context: Context) -> Any:
        passes[flow.name] += 1
        return derive(flow, source, inputs, context)

    monkeypatch.setattr(settle, "derived_columns", counted)
    return passes


def _new_account(root: Path) -> None:
    """A new account: an input of the contacts' routing (is the company an account?)."""

    def add(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        new = {**rows[1], "accountid": "0d0a8c1e-5555-4e4e-9999-000000000005"}
        return [*rows, {**new, "accountnumber": "ACC-09997-SHARECO", "name": "Shareco"}]

    _rewrite(root / "crm" / "accounts.jsonl", add)


def test_flows_sharing_a_derivation_pass_get_what_each_gets_alone(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    _run(demo_dir, clock)
    _run(demo_dir, clock)
    _new_account(demo_dir)
    alone_dir = tmp_path / "alone"
    shutil.copytree(demo_dir, alone_dir)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    passes = _count_passes(monkeypatch)
    said: list[str] = []
    shared = _run(demo_dir, clock, said)
    assert passes["contacts"] == 1 and passes["contact_customers"] == 0  # one pass, shared

    passes.clear()
    monkeypatch.setattr(settle, "_PASSES", _Forgetful())
    said_alone: list[str] = []
    alone = _run(alone_dir, clock, said_alone)
    assert passes["contacts"] == 1 and passes["contact_customers"] == 1
    _same_result(shared, alone, demo_dir, alone_dir)
    for flow in ("contacts", "contact_customers"):
        assert _computing(said, flow) == _computing(said_alone, flow)
        before = next(c for c in shared.flows if c.flow == flow)
        assert _computing(said, flow) == [
            f"{flow}: computing {before.rejected} of {before.source_rows} source rows "
            "(the others are as they were)"
        ]
    _same_result(shared, _run(fresh_dir, clock), demo_dir, fresh_dir)


def test_a_changed_reference_recomputes_the_rows_that_look_it_up_in_each_flow_sharing_it(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """Accounts and contact_customers look up currencies by id the same way: the entries of
    the changed reference are made once, and each flow maps again exactly its rows priced
    in euros (and those rejected last time)."""

    def one_contact_in_euros(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        at = next(i for i, r in enumerate(rows) if r.get("_transactioncurrencyid_value"))
        euros = {**rows[at], "_transactioncurrencyid_value": EURO}
        return [*rows[:at], euros, *rows[at + 1 :]]

    _rewrite(demo_dir / "crm" / "contacts.jsonl", one_contact_in_euros)
    _run(demo_dir, clock)
    settled = _run(demo_dir, clock)

    def new_euro_id(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        new = "0d0a8c1e-6666-4e4e-9999-000000000006"
        euro = {"transactioncurrencyid": new}
        return [{**r, **euro} if r["transactioncurrencyid"] == EURO else r for r in rows]

    _rewrite(demo_dir / "crm" / "transactioncurrencies.jsonl", new_euro_id)
    made: Counter[Lookup] = Counter()
    mapping = settle.reference_mapping

    def counted(lookup: Lookup, ref: pl.DataFrame, context: Context) -> pl.DataFrame:
        made[lookup] += 1
        return mapping(lookup, ref, context)

    monkeypatch.setattr(settle, "reference_mapping", counted)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    said: list[str] = []
    mine = _run(demo_dir, clock, said)
    assert made[ISO_BY_CURRENCY_ID] == 1  # for both flows
    _same_result(mine, _run(fresh_dir, clock), demo_dir, fresh_dir)
    for flow, euros in (("accounts", 2), ("contact_customers", 1)):
        before = next(c for c in settled.flows if c.flow == flow)
        assert _computing(said, flow) == [
            f"{flow}: computing {euros + before.rejected} of {before.source_rows} source rows "
            "(the others are as they were)"
        ]


def test_a_first_sync_keeps_the_derived_hashes_of_prepares_rows(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A first sync makes no derivation pass of settle's own: the hashes it keeps, made from
    prepare's rows, are those a pass makes, so the next night (its inputs as they were: no
    flow that writes them runs) reads them back and computes only the rows rejected."""
    flows = ["accounts", "contacts"]  # nothing writes what contacts reads after it
    passes = _count_passes(monkeypatch)

    def run(root: Path, said: list[str] | None = None) -> RunSummary:
        progress = said.append if said is not None else (lambda _: None)
        settings = load_settings(root / "p2c.toml")
        return run_batch(settings, flows=flows, clock=clock, progress=progress)

    run(demo_dir)
    assert not passes
    kept = _derived_hashes(demo_dir)
    said: list[str] = []
    quiet = run(demo_dir, said)
    assert not passes  # read back, not made again
    assert _derived_hashes(demo_dir) == kept
    _new_account(demo_dir)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    said = []
    again = run(demo_dir, said)
    assert passes["contacts"] == 1  # its inputs changed: a pass, with the same hashes
    made = _derived_hashes(demo_dir)
    assert made["contacts"] == kept["contacts"]
    assert made["accounts"][: len(kept["accounts"])] == kept["accounts"]  # and one new
    _same_result(again, run(fresh_dir), demo_dir, fresh_dir)
    before = next(c for c in quiet.flows if c.flow == "contacts")
    assert _computing(said, "contacts") == [
        f"contacts: computing {before.rejected} of {before.source_rows} source rows "
        "(the others are as they were)"
    ]


def _derived_hashes(root: Path) -> dict[str, list[tuple[int, int]]]:
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT flow, __ord, __hash FROM derived_hashes ORDER BY ALL").fetchall()
    finally:
        con.close()
    found: dict[str, list[tuple[int, int]]] = {}
    for flow, place, value in rows:
        found.setdefault(str(flow), []).append((int(place), int(value)))
    return found


def _folds(root: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        return con.execute("SELECT * FROM target_folds ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_a_run_confirms_what_it_wrote_so_the_next_night_confirms_and_folds_nothing(
    demo_dir: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A first sync reads back the targets it wrote (files: the next night finds the same
    bytes) and finds the records it wrote holding what it sent; the next night reads no
    target, checks no written values and folds no target record again."""
    said: list[str] = []
    first = _run(demo_dir, clock, said)
    wrote = {c.flow for c in first.flows if c.inserted + c.updated}
    back = [line for line in said if line.startswith("read back ")]
    assert back == [
        "read back 4 written entity sets: crm.invoicedetails, crm.salesorderdetails, "
        "erp.CDSContactPersons, erp.CDSSalesQuotationLines"
    ]
    confirmed = {}
    for line in [m for m in said if m.endswith(" records written read back as sent")]:
        flow, _, figures = line.partition(": ")
        held, _, written = figures.removesuffix(" records written read back as sent").split()
        confirmed[flow] = (int(held), int(written))
    # every flow that wrote but order_lines_back, whose derivation adds rows (freight tax
    # lines): its rows are computed every night, none is kept
    assert set(confirmed) == wrote - {"order_lines_back"}
    assert all(held == written > 0 for held, written in confirmed.values()), confirmed
    # the back flows wrote CRM documents after the contacts ran: their routing is derived
    # again from them now, not by the next night
    again = [m for m in said if ": settled again from what later flows wrote (" in m]
    assert {"contacts", "contact_customers"} <= {m.partition(":")[0] for m in again}, again
    folds = _folds(demo_dir)
    checked: list[str] = []
    values = settle.held_values

    def counted(wh: object, system: str, entity: str, *args: Any) -> Any:
        checked.append(f"{system}.{entity}")
        return values(wh, system, entity, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(settle, "held_values", counted)
    passes = _count_passes(monkeypatch)
    said.clear()
    second = _run(demo_dir, clock, said)
    assert second.status == first.status and sum(c.inserted + c.updated for c in second.flows) == 0
    assert checked == []  # no written record left to confirm
    assert not passes  # no derivation made again
    assert _folds(demo_dir) == folds  # every target record still folded as the first run left it
    assert not [m for m in said if "read back" in m]


def test_a_flows_inputs_are_read_once_for_its_derivation_pass_and_its_rows(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A new account (an input of the contacts' routing) makes settle derive every contact
    again and prepare compute the contacts whose routing moved: both use one read of the
    accounts' numbers, and the result is a fresh warehouse's."""
    _run(demo_dir, clock)
    _run(demo_dir, clock)
    _new_account(demo_dir)
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    whole: Counter[str | None] = Counter()
    frame = EntityReads.frame

    def counted(
        reads: EntityReads, wh: Any, entity: Any, columns: Any, *args: Any, **kw: Any
    ) -> Any:
        ords = args[0] if args else kw.get("ords")
        accounts = (ACCOUNTS_INPUT.system, ACCOUNTS_INPUT.entity)
        if entity == accounts and list(columns) == list(ACCOUNTS_INPUT.columns):
            whole[reads.reading_for] += ords is None
        return frame(reads, wh, entity, columns, *args, **kw)

    monkeypatch.setattr(EntityReads, "frame", counted)
    said: list[str] = []
    mine = _run(demo_dir, clock, said)
    assert _computing(said, "contacts")  # some contacts computed, not all settled
    assert whole["contacts"] == 1
    _same_result(mine, _run(fresh_dir, clock), demo_dir, fresh_dir)


def _settled_contacts(root: Path) -> int:
    con = duckdb.connect(str(root / "p2c.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT count(*) FROM settled_rows WHERE flow = 'contacts'")
        return int(rows.fetchall()[0][0])
    finally:
        con.close()


def test_a_lookup_written_after_its_flow_ran_is_settled_again_and_its_rows_computed_next(
    demo_dir: Path, tmp_path: Path, clock: Callable[[], datetime], monkeypatch: MonkeyPatch
) -> None:
    """A customer's party changes in the ERP while the run goes on, after the contacts ran
    (seen when a later flow reads the customers `contact_customers` wrote): the run keeps
    the contacts' lookup of customers as it now is, and no longer keeps the contacts of that
    customer settled. The next night computes them and ends as a fresh warehouse does."""
    customers = demo_dir / "erp" / "CustomersV2.jsonl"
    load = run_module.load_flow

    def edited_after(wh: Any, run_id: str, flow: Flow, *args: Any) -> Any:
        loaded = load(wh, run_id, flow, *args)
        if flow.name == "contact_customers":  # the flow after the contacts that writes it

            def party(rows: list[dict[str, object]]) -> list[dict[str, object]]:
                advent = "ACC-01001-ADVENT"
                return [
                    {**r, "PartyNumber": "PTY-ADVENT-2"} if r["CustomerAccount"] == advent else r
                    for r in rows
                ]

            _rewrite(customers, party)
        return loaded

    monkeypatch.setattr(run_module, "load_flow", edited_after)
    said: list[str] = []
    _run(demo_dir, clock, said)
    monkeypatch.setattr(run_module, "load_flow", load)
    again = [m for m in said if m.startswith("contacts: settled again from what later flows")]
    assert again and again[0].endswith(", 3 to compute next run)"), again
    # Adventure Works' three contact persons: staged and written, no longer kept settled
    assert _settled_contacts(demo_dir) == _settled_contacts(_fresh_first(tmp_path)) - 3
    fresh_dir = _fresh_copy(demo_dir, tmp_path / "fresh")
    said.clear()
    mine = _run(demo_dir, clock, said)
    assert _computing(said, "contacts"), said
    fresh = _run(fresh_dir, clock)
    _same_result(mine, fresh, demo_dir, fresh_dir)


def _fresh_first(tmp_path: Path) -> Path:
    """A demo company after its first sync, with nothing changed while it ran."""
    from p2c_etl.jobs.demo import demo_config_text
    from p2c_etl.resources import demo_fixtures_dir

    root = tmp_path / "plain"
    for system in ("crm", "erp"):
        shutil.copytree(demo_fixtures_dir() / system, root / system)
    (root / "p2c.toml").write_text(demo_config_text(), encoding="utf-8")
    run_batch(load_settings(root / "p2c.toml"))
    return root
