"""Reading only what changed, and verifying it: `p2c run --full`, `[run] full_every`, and
F&O high-water marks, end to end over HTTP against the sandbox on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from click.testing import CliRunner

import p2c_etl.resources
from p2c_etl.cli import main
from p2c_etl.config import SANDBOX_SECRET_ENV, Settings, load_settings
from p2c_etl.flows import flow_names
from p2c_etl.jobs.demo import http_config_text
from p2c_etl.jobs.run import run_batch
from p2c_etl.model.summary import RunSummary
from p2c_etl.resources import contracts_dir, demo_fixtures_dir, templates_dir
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox

SECRET = "change-reads-secret"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


@contextmanager
def _over_http(
    tmp_path: Path, extra: str = "", clock: Callable[[], datetime] | None = None
) -> Iterator[tuple[Sandbox, Settings, Path]]:
    """The demo company in a sandbox, and the settings (with `extra` p2c.toml text) of a run
    against it."""
    seed = demo_fixtures_dir()
    timed = {"clock": clock} if clock is not None else {}
    with Sandbox(
        seed / "crm",
        seed / "erp",
        client_secret=SECRET,
        alternate_keys=DEMO_ALTERNATE_KEYS,
        **timed,  # type: ignore[arg-type]
    ) as sandbox:
        config = tmp_path / "p2c.toml"
        text = http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url)
        config.write_text(text + extra)
        settings = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        yield sandbox, settings, config


def _token(sandbox: Sandbox, url: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": "p2c-sandbox",
        "client_secret": SECRET,
        "scope": f"{url}/.default",
    }
    return str(httpx.post(sandbox.token_url, data=form).json()["access_token"])


def _patch_crm(sandbox: Sandbox, record: str, values: dict[str, Any]) -> None:
    """Change one CRM record through the Web API (`accounts(<id>)`), as a user would."""
    token = _token(sandbox, sandbox.crm_url)
    patched = httpx.patch(
        f"{sandbox.crm_url}/api/data/v9.2/{record}",
        json=values,
        headers={"Authorization": f"Bearer {token}", "If-Match": "*"},
    )
    assert patched.status_code == 204, patched.text


def _reads(config: Path, run_id: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(config.parent / "p2c.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT system, entity, kind, records, verified, drifted, reason FROM run_reads "
            "WHERE run_id = ? ORDER BY system, entity",
            [run_id],
        ).fetchall()
    finally:
        con.close()


def _flow(summary: RunSummary, name: str) -> Any:
    return next(c for c in summary.flows if c.flow == name)


def _synced_accounts(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Accounts the demo carries to F&O (their number is a customer account there)."""
    customers = {r["CustomerAccount"] for r in sandbox.records("erp", "CustomersV2")}
    return [a for a in sandbox.records("crm", "accounts") if a["accountnumber"] in customers]


def _customer_name(sandbox: Sandbox, number: str) -> str:
    found = [r for r in sandbox.records("erp", "CustomersV2") if r["CustomerAccount"] == number]
    return str(found[0]["OrganizationName"])


def test_run_full_reports_the_change_tracking_never_saw_and_carries_it(tmp_path: Path) -> None:
    """A change planted behind change tracking's back is missed by the nightly delta read;
    `p2c run --full` reads in full, lists that record as drifted (with the field), carries
    it to F&O, and does not list a change made through the API since the last run."""
    with _over_http(tmp_path) as (sandbox, settings, config):
        run_batch(settings)
        run_batch(settings)
        planted, renamed = _synced_accounts(sandbox)[:2]
        sandbox.plant("crm", "accounts", {**planted, "name": "Planted behind tracking"})
        missed = run_batch(settings)
        assert _flow(missed, "accounts").updated == 0
        assert _customer_name(sandbox, planted["accountnumber"]) != "Planted behind tracking"
        _patch_crm(
            sandbox, f"accounts({renamed['accountid']})", {"name": "Renamed through the Web API"}
        )
        result = CliRunner().invoke(
            main, ["run", "--full", "--config", str(config), "--json", "-q"], env=_env()
        )
        assert result.exit_code == 1, result.output  # the demo's planted rejects
        full = json.loads(result.stdout)
        assert next(f for f in full["flows"] if f["flow"] == "accounts")["updated"] == 2
        assert _customer_name(sandbox, planted["accountnumber"]) == "Planted behind tracking"
        assert _customer_name(sandbox, renamed["accountnumber"]) == "Renamed through the Web API"
        history = CliRunner().invoke(main, ["history", "--config", str(config)], env=_env())
    every = _reads(config, full["run_id"])
    verified_sets = [(r[0], r[1]) for r in every if r[4]]
    assert len(verified_sets) == len(set(verified_sets))  # each entity set verified once
    reads = {(r[0], r[1]): r for r in every}
    accounts = reads[("crm", "accounts")]
    assert accounts[2:6] == ("full", len(sandbox.records("crm", "accounts")), True, 1)
    assert "p2c run --full" in accounts[6]
    assert all(r[4] for (system, _), r in reads.items() if system == "crm")
    report = json.loads(Path(full["report"]["json"]).read_text(encoding="utf-8"))
    assert report["drift"] == [
        {
            "entity": "crm.accounts",
            "record_key": planted["accountid"],
            "kind": "changed",
            "fields": ["name"],
        }
    ]
    flow = next(f for f in report["flows"] if f["flow"] == "accounts")
    assert flow["reads"][0].endswith("records that had drifted: 1 (listed under Verification)")
    html = Path(full["report"]["html"]).read_text(encoding="utf-8")
    assert 'id="verification"' in html and planted["accountid"] in html
    assert history.exit_code == 0, history.output
    lines = history.output.splitlines()
    assert "read" in lines[0].split()
    verified = sum(1 for r in reads.values() if r[4])
    assert full["run_id"] in lines[1] and f"verified {verified} sets: 1 drifted" in lines[1]
    delta = {(r[0], r[1]) for r in _reads(config, missed.run_id) if r[2] == "delta"}
    assert missed.run_id in lines[2] and f"changes ({len(delta)} sets)" in lines[2]


def _env() -> dict[str, str]:
    return {SANDBOX_SECRET_ENV: SECRET}


def test_full_every_makes_a_nightly_run_verify_its_mirrors_when_the_last_full_read_is_old(
    tmp_path: Path,
) -> None:
    """With `full_every = "7d"`, a run 3 days after the first full reads reads the changes
    only; a run 8 days after them reads in full, verifies the mirrors and says why."""
    with _over_http(tmp_path, '\n[run]\nfull_every = "7d"\n') as (_, settings, config):
        first = run_batch(settings, clock=lambda: T0)
        # the target system's references are read with a delta link once they were found
        run_batch(settings, clock=lambda: T0 + timedelta(minutes=1))
        soon = run_batch(settings, clock=lambda: T0 + timedelta(days=3))
        late = run_batch(settings, clock=lambda: T0 + timedelta(days=8))
    assert not any(r[4] for r in _reads(config, first.run_id))
    soon_reads = [r for r in _reads(config, soon.run_id) if r[0] == "crm"]
    assert not any(r[4] for r in soon_reads)
    # read through a link 3 days on; an entity set first read with one then has its first
    # full read then, 5 days before the late run: not due yet
    kept = {r[1] for r in soon_reads if r[2] == "delta"}
    assert "accounts" in kept
    late_reads = [r for r in _reads(config, late.run_id) if r[0] == "crm"]
    assert {r[1] for r in late_reads if r[4]} == kept
    assert all(r[2] == "full" and r[5] == 0 for r in late_reads if r[4])
    late_reads = [r for r in late_reads if r[4]]
    reason = late_reads[0][6]
    assert f"the last full read was on {T0:%Y-%m-%d %H:%M} UTC, 8d ago" in reason
    assert "[run] full_every = '7d'" in reason
    assert late.written == 0


@pytest.fixture
def modified_products(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The contracts with `SellableReleasedProducts` extended by a modification-time column
    the system sets (`ModifiedDateTime`), in place of the shipped ones."""
    installed = tmp_path / "installed"  # laid out as an installed wheel's data folder
    shutil.copytree(contracts_dir(), installed / "contracts")
    (installed / "fixtures").mkdir()
    (installed / "fixtures" / "demo").symlink_to(demo_fixtures_dir())
    (installed / "templates").symlink_to(templates_dir())
    contract = installed / "contracts" / "erp" / "SellableReleasedProducts.toml"
    text = contract.read_text(encoding="utf-8")
    text = text.replace("\n[columns]\n", '\nmodified = "ModifiedDateTime"\n\n[columns]\n', 1)
    contract.write_text(text + 'ModifiedDateTime = { type = "datetime" }\n', encoding="utf-8")
    assert 'modified = "ModifiedDateTime"' in contract.read_text(encoding="utf-8")
    monkeypatch.setattr(p2c_etl.resources, "_INSTALLED", installed)
    return installed


def test_fno_high_water_marks_read_only_the_records_written_since_the_last_mark(
    tmp_path: Path, modified_products: Path
) -> None:
    """An F&O entity with a modification-time column is read in full once, then from its
    high-water mark less the lag: a quiet night reads only the records written at the mark,
    a changed product reaches Sales, and a change planted without moving the time is missed
    until `--full` finds it."""
    now = [T0]
    work = tmp_path / "work"
    work.mkdir()
    with _over_http(work, "", clock=lambda: now[0]) as (sandbox, settings, config):
        now[0] = T0 + timedelta(hours=1)
        first = run_batch(settings)
        products = sandbox.records("erp", "SellableReleasedProducts")
        edited, planted = products[0], products[1]
        now[0] = T0 + timedelta(hours=3)
        token = _token(sandbox, sandbox.erp_url)
        url = (
            f"{sandbox.erp_url}/data/SellableReleasedProducts(dataAreaId='usmf',"
            f"ProductNumber='{edited['ProductNumber']}')"
        )
        patched = httpx.patch(
            url,
            json={"ProductName": "Edited in F&O"},
            headers={"Authorization": f"Bearer {token}"},
            params={"cross-company": "true"},
        )
        assert patched.status_code == 204, patched.text
        now[0] = T0 + timedelta(hours=4)
        edited_night = run_batch(settings)
        now[0] = T0 + timedelta(hours=5)
        sandbox.reset_stats()
        quiet = run_batch(settings)
        quiet_returned = sandbox.stats()["erp"]["records_returned"]
        sandbox.plant(
            "erp", "SellableReleasedProducts", {**planted, "ProductName": "Planted in F&O"}
        )
        missed = run_batch(settings)
        full = run_batch(settings, full=True)
        names = {p["productnumber"]: p["name"] for p in sandbox.records("crm", "products")}

    def how(summary: RunSummary) -> tuple[Any, ...]:
        row = [r for r in _reads(config, summary.run_id) if r[1] == "SellableReleasedProducts"]
        return row[0][2:6]

    assert how(first)[0] == "full"
    assert how(edited_night)[0] == "since" and _flow(edited_night, "products").updated == 1
    assert names[edited["ProductNumber"]] == "Edited in F&O"
    # from the mark (the edit, 3 h after the seed) less 5 minutes: only the edited record
    assert how(quiet) == ("since", 1, False, 0)
    assert quiet_returned["SellableReleasedProducts"] == 1
    assert quiet.written == 0
    assert _flow(missed, "products").updated == 0
    assert how(full) == ("full", len(products), True, 1)
    assert _flow(full, "products").updated == 1
    assert names[planted["ProductNumber"]] == "Planted in F&O"
    report = json.loads(Path(str(full.report_json)).read_text(encoding="utf-8"))
    assert report["drift"] == [
        {
            "entity": "erp.SellableReleasedProducts",
            "record_key": f"dataAreaId=usmf, ProductNumber={planted['ProductNumber']}",
            "kind": "changed",
            "fields": ["ProductName"],
        }
    ]
    flow = next(f for f in report["flows"] if f["flow"] == "products")
    mark = (T0 + timedelta(hours=3)).isoformat()
    night = json.loads(Path(str(quiet.report_json)).read_text(encoding="utf-8"))
    quiet_flow = next(f for f in night["flows"] if f["flow"] == "products")
    assert quiet_flow["reads"][0] == (
        f"erp.SellableReleasedProducts: 1 read from its high-water mark {mark} (less the lag)"
    )
    assert flow["reads"][0].startswith("erp.SellableReleasedProducts: read in full to verify")


HELD_BEFORE_LOAD = """
import sys, threading
from pathlib import Path
from p2c_etl.config import SANDBOX_SECRET_ENV, load_settings
from p2c_etl.flows import flow_names
from p2c_etl.jobs.run import run_batch

def progress(line):
    print(line, flush=True)
    if line.startswith("accounts: writing"):  # the delta is read into the mirror, not loaded
        threading.Event().wait()

settings = load_settings(Path(sys.argv[1]), flow_names(), environ={SANDBOX_SECRET_ENV: sys.argv[2]})
run_batch(settings, progress=progress)
"""


def test_a_run_killed_after_reading_a_delta_reads_it_again_and_ends_as_if_never_killed(
    tmp_path: Path,
) -> None:
    """A run killed (SIGKILL) after it read a delta into the mirror, before it wrote the
    change, has kept no link: the next run reads the same delta again and carries the change.
    Then a run on a fresh warehouse, reading everything in full, finds nothing to write."""
    import subprocess
    import sys

    with _over_http(tmp_path) as (sandbox, settings, config):
        run_batch(settings)
        renamed = _synced_accounts(sandbox)[0]
        token = _token(sandbox, sandbox.crm_url)
        url = f"{sandbox.crm_url}/api/data/v9.2/accounts"
        headers = {"Authorization": f"Bearer {token}"}
        patched = httpx.patch(
            f"{url}({renamed['accountid']})",
            json={"name": "Renamed before the kill"},
            headers={**headers, "If-Match": "*"},
        )
        assert patched.status_code == 204, patched.text
        proc = subprocess.Popen(
            [sys.executable, "-c", HELD_BEFORE_LOAD, str(config), SECRET],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("accounts: writing"):
                break
        proc.kill()
        proc.wait()
        proc.stdout.close()
        assert lines and lines[-1].startswith("accounts: writing 1 records"), lines
        assert _customer_name(sandbox, renamed["accountnumber"]) != "Renamed before the kill"
        again = run_batch(settings)
        assert _flow(again, "accounts").updated == 1
        assert _customer_name(sandbox, renamed["accountnumber"]) == "Renamed before the kill"
        accounts = [r for r in _reads(config, again.run_id) if r[1] == "accounts"]
        assert accounts[0][2:4] == ("delta", 1)  # the same delta, read again
        fresh_dir = tmp_path / "fresh"
        fresh_dir.mkdir()
        fresh_config = fresh_dir / "p2c.toml"
        fresh_config.write_text(config.read_text())
        fresh = load_settings(fresh_config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        assert run_batch(fresh).written == 0


def test_delta_runs_carry_inserts_updates_and_deletes_and_end_where_a_full_run_does(
    tmp_path: Path,
) -> None:
    """Accounts created, changed and deleted through the Web API between runs reach the
    mirror through the deltas; after the series, the target is what a run on a fresh
    warehouse (every entity set read in full) finds nothing to change in."""
    import uuid

    with _over_http(tmp_path) as (sandbox, settings, config):
        run_batch(settings)
        token = _token(sandbox, sandbox.crm_url)
        url = f"{sandbox.crm_url}/api/data/v9.2/accounts"
        headers = {"Authorization": f"Bearer {token}"}
        template = {
            k: v
            for k, v in _synced_accounts(sandbox)[0].items()
            if isinstance(v, str | int) and not k.startswith("_")  # text, numbers, options
        }
        created = []
        for night in range(3):
            new_id = str(uuid.uuid4())
            body = {
                **template,
                "accountid": new_id,
                "accountnumber": f"ACC-NEW-{night}",
                "name": f"Created on night {night}",
            }
            made = httpx.post(url, json=body, headers=headers)
            assert made.status_code == 204, made.text
            created.append(new_id)
            changed = httpx.patch(
                f"{url}({created[0]})",
                json={"name": f"Changed on night {night}"},
                headers={**headers, "If-Match": "*"},
            )
            assert changed.status_code == 204, changed.text
            if night == 2:
                gone = httpx.delete(f"{url}({created[1]})", headers=headers)
                assert gone.status_code == 204, gone.text
            summary = run_batch(settings)
            accounts = [r for r in _reads(config, summary.run_id) if r[1] == "accounts"]
            assert accounts[0][2] == "delta"
        assert _customer_name(sandbox, "ACC-NEW-0") == "Changed on night 2"
        assert _customer_name(sandbox, "ACC-NEW-2") == "Created on night 2"
        con = duckdb.connect(str(config.parent / "p2c.duckdb"), read_only=True)
        try:
            (mirrored,) = con.execute(
                "SELECT count(*) FROM mirror_crm_accounts WHERE accountid = ?", [created[1]]
            ).fetchall()[0]
            deletes = con.execute(
                "SELECT sum(deletes) FROM run_reads WHERE system = 'crm' AND entity = 'accounts'"
            ).fetchall()[0][0]
        finally:
            con.close()
        assert mirrored == 0 and deletes == 1
        fresh_dir = tmp_path / "fresh"
        fresh_dir.mkdir()
        (fresh_dir / "p2c.toml").write_text(config.read_text())
        fresh = load_settings(
            fresh_dir / "p2c.toml", flow_names(), environ={SANDBOX_SECRET_ENV: SECRET}
        )
        assert run_batch(fresh).written == 0


def _reads_line(summary: RunSummary, flow: str) -> str:
    report = json.loads(Path(str(summary.report_json)).read_text(encoding="utf-8"))
    return str(next(f["reads"] for f in report["flows"] if f["flow"] == flow)[0])


def test_an_expired_link_a_new_mapped_column_and_a_table_without_tracking_read_in_full_and_say_so(
    tmp_path: Path,
) -> None:
    """Each falls back to a full read of that entity set, and the report's reads line says
    why, in words a user can act on; the next run reads the changes again. (The override
    maps SalesMemo from a column other flows read already: `description` is read no more.)"""
    with _over_http(tmp_path) as (sandbox, settings, config):
        run_batch(settings)
        sandbox.expire_delta_tokens()
        expired = run_batch(settings)
        assert "the delta link of accounts was refused" in _reads_line(expired, "accounts")
        assert "read in full, with a new link" in _reads_line(expired, "accounts")
        mapped = (
            config.read_text() + '\n[flows.accounts]\nfields = { SalesMemo = "address2_line1" }\n'
        )
        config.write_text(mapped)
        remapped = load_settings(config, flow_names(), environ={SANDBOX_SECRET_ENV: SECRET})
        widened = run_batch(remapped)
        line = _reads_line(widened, "accounts")
        assert "the columns read of accounts changed (no longer read: description)" in line
        after = run_batch(remapped)
        assert _reads_line(after, "accounts").startswith("crm.accounts: 0 changed, 0 deleted")
    seed = demo_fixtures_dir()
    untracked_dir = tmp_path / "untracked"
    untracked_dir.mkdir()
    with Sandbox(
        seed / "crm",
        seed / "erp",
        client_secret=SECRET,
        alternate_keys=DEMO_ALTERNATE_KEYS,
        untracked=("accounts",),
    ) as sandbox:
        (untracked_dir / "p2c.toml").write_text(
            http_config_text(sandbox.crm_url, sandbox.erp_url, sandbox.token_url)
        )
        plain = load_settings(
            untracked_dir / "p2c.toml", flow_names(), environ={SANDBOX_SECRET_ENV: SECRET}
        )
        run_batch(plain)
        night = run_batch(plain)
    assert "change tracking is off for the table account (accounts)" in _reads_line(
        night, "accounts"
    )


def test_a_high_water_mark_never_passes_the_time_its_read_began(
    tmp_path: Path, modified_products: Path
) -> None:
    """A paged read is not a snapshot: a record on page 1 written after page 1 was read,
    and then one on the last page, must not leave a mark past the first write, or the next
    read (mark less the lag) would skip it. The mark stops at the service's time (`Date`)
    when the read began."""
    import dataclasses

    from p2c_etl.jobs.wiring import connector_for
    from p2c_etl.model.contracts import ContractSet

    now = [T0]
    with _over_http(tmp_path, "", clock=lambda: now[0]) as (sandbox, settings, _):
        erp = dataclasses.replace(settings.system("erp"), page_size=3)
        connector = connector_for(erp, ContractSet.load(modified_products / "contracts"))
        entity, columns = "SellableReleasedProducts", ["ProductNumber", "ProductName"]
        first = connector.read_changes(entity, columns, None)
        token = _token(sandbox, sandbox.erp_url)

        def write(key: tuple[str, str], name: str, at: datetime) -> None:
            now[0] = at
            area, number = key
            patched = httpx.patch(
                f"{sandbox.erp_url}/data/{entity}(dataAreaId='{area}',ProductNumber='{number}')",
                json={"ProductName": name},
                headers={"Authorization": f"Bearer {token}"},
                params={"cross-company": "true"},
            )
            assert patched.status_code == 204, patched.text

        keys = list(zip(first.frame["dataAreaId"], first.frame["ProductNumber"], strict=True))
        early, late = keys[0], keys[-1]
        now[0] = T0 + timedelta(minutes=30)  # the second read begins
        pages = connector.odata.pages

        def racing(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for i, page in enumerate(pages(*args, **kwargs)):
                yield page
                if i == 0:  # page 1 is read; then two writes, 20 minutes apart
                    write(early, "Written after its page was read", T0 + timedelta(hours=1))
                    write(late, "Written on the last page", T0 + timedelta(hours=1, minutes=20))

        connector.odata.pages = racing  # type: ignore[method-assign]
        second = connector.read_changes(entity, columns, first.link)
        connector.odata.pages = pages  # type: ignore[method-assign]
        assert datetime.fromisoformat(str(second.link)) <= T0 + timedelta(minutes=30)
        now[0] = T0 + timedelta(hours=2)
        third = connector.read_changes(entity, columns, second.link)
        named = dict(
            zip(
                zip(third.frame["dataAreaId"], third.frame["ProductNumber"], strict=True),
                third.frame["ProductName"],
                strict=True,
            )
        )
        assert named[early] == "Written after its page was read"
        connector.close()


def test_a_run_whose_read_back_fails_is_failed_and_the_next_run_reads_those_changes_again(
    tmp_path: Path,
) -> None:
    """The read back at the end of a run (the entity sets it wrote, read again through their
    links) failing makes the run failed, naming the service and the entity set, though
    every flow wrote; the next run, reading those writes in its delta, has nothing left to
    write."""
    with _over_http(tmp_path) as (sandbox, settings, _config):
        last = flow_names()[-1]

        def progress(message: str) -> None:  # the service breaks once the last flow is done
            if message.startswith(f"{last}: ") and "source rows" in message:
                sandbox.faults.update({"retry_after": 0, "fail_next": 1000})

        failed = run_batch(settings, progress=progress)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.startswith("crm: GET ") and "HTTP 503" in failed.error, failed.error
        assert sum(c.inserted + c.updated for c in failed.flows) > 0  # the flows did write
        sandbox.faults.update({"fail_next": 0})
        again = run_batch(settings)
        assert again.status != "failed", again.error
        assert again.written == 0


def test_the_sandbox_refuses_a_value_for_the_modification_time_the_system_sets(
    tmp_path: Path, modified_products: Path
) -> None:
    """An F&O entity's declared modification time is the system's: a PATCH that writes it is
    refused with an OData error and changes nothing; sent empty (as clients that send every
    field do) it is left as the system keeps it, and moves with the write."""
    now = [T0]
    with _over_http(tmp_path, "", clock=lambda: now[0]) as (sandbox, _settings, _config):
        product = sandbox.records("erp", "SellableReleasedProducts")[0]
        url = (
            f"{sandbox.erp_url}/data/SellableReleasedProducts(dataAreaId='usmf',"
            f"ProductNumber='{product['ProductNumber']}')"
        )
        auth = {"Authorization": f"Bearer {_token(sandbox, sandbox.erp_url)}"}
        params = {"cross-company": "true"}
        body = {"ProductName": "Renamed", "ModifiedDateTime": "2020-01-01T00:00:00Z"}
        now[0] = T0 + timedelta(hours=1)
        refused = httpx.patch(url, json=body, headers=auth, params=params)
        assert refused.status_code == 400
        error = refused.json()["error"]["message"]
        assert "ModifiedDateTime" in error and "set by the system" in error
        unchanged = httpx.get(url, headers=auth, params=params).json()
        assert unchanged["ProductName"] == product["ProductName"]
        now[0] = T0 + timedelta(hours=2)
        body["ModifiedDateTime"] = None
        assert httpx.patch(url, json=body, headers=auth, params=params).status_code == 204
        written = httpx.get(url, headers=auth, params=params).json()
        assert written["ProductName"] == "Renamed"
        assert written["ModifiedDateTime"] == f"{now[0]:%Y-%m-%dT%H:%M:%SZ}"


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pages parsed from now on, by system and path (`erp /data/CustomersV2`)."""
    import p2c_etl.connectors.odata as odata

    parsed: list[str] = []
    real = odata.parse_page

    def counted(content: bytes, dtypes: Any, where: str) -> Any:
        parsed.append(where)
        return real(content, dtypes, where)

    monkeypatch.setattr(odata, "parse_page", counted)
    return parsed


def test_a_quiet_night_parses_no_page_of_a_full_read_and_a_planted_change_is_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F&O entity sets are read in full every night. When a read's bytes are, page for
    page, those its mirror was made from, no page is parsed; a customer changed in F&O
    behind the service's back changes its page, which is parsed, and the run writes the
    customer back from the CRM."""
    parsed = _parses(monkeypatch)
    with _over_http(tmp_path) as (sandbox, settings, _):
        run_batch(settings)
        run_batch(settings)
        parsed.clear()
        quiet = run_batch(settings)  # the demo's planted bad records are rejected every night
        assert quiet.status == "partial" and sum(c.inserted + c.updated for c in quiet.flows) == 0
        assert [w for w in parsed if w.startswith("erp ")] == []
        number = _synced_accounts(sandbox)[0]["accountnumber"]
        name = _customer_name(sandbox, number)
        held = next(
            r for r in sandbox.records("erp", "CustomersV2") if r["CustomerAccount"] == number
        )
        sandbox.plant("erp", "CustomersV2", {**held, "OrganizationName": "Renamed in F&O"})
        carried = run_batch(settings)
        assert carried.status == "partial"
        assert "erp /data/CustomersV2" in parsed
        assert _flow(carried, "accounts").updated == 1
        assert _customer_name(sandbox, number) == name


def test_a_run_reads_back_the_full_read_set_it_filled_and_not_one_it_wrote_a_record_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's F&O holds fewer quotation lines than the first run writes into it (more
    than its mirror held), so that run reads them back and the next night parses none of
    their pages. A run that changes one line of the many does not read them back (the next night
    reads them in full anyway)."""
    parsed = _parses(monkeypatch)
    with _over_http(tmp_path) as (sandbox, settings, _):

        def read_back(said: list[str]) -> list[str]:
            lines = [line for line in said if line.startswith("read back ")]
            return lines[0].split(": ")[1].split(", ") if lines else []

        said: list[str] = []
        first = run_batch(settings, progress=said.append)
        written = _flow(first, "quote_lines").inserted
        assert written > len(sandbox.records("erp", "CDSSalesQuotationLines")) - written
        assert "erp.CDSSalesQuotationLines" in read_back(said)
        parsed.clear()
        run_batch(settings)
        assert "erp /data/CDSSalesQuotationLines" not in parsed
        detail = sandbox.records("crm", "quotedetails")[0]
        record = f"quotedetails({detail['quotedetailid']})"
        _patch_crm(sandbox, record, {"description": "Changed through the Web API"})
        said.clear()
        one = run_batch(settings, progress=said.append)
        assert _flow(one, "quote_lines").updated == 1
        assert "erp.CDSSalesQuotationLines" not in read_back(said)
        parsed.clear()
        run_batch(settings)
        assert "erp /data/CDSSalesQuotationLines" in parsed  # the page the run changed
