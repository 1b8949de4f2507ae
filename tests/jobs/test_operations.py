"""The nightly run as an operator needs it: one run at a time, stale runs cleaned up."""

import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from p2c_etl.cli import main
from p2c_etl.config import Settings
from p2c_etl.warehouse.lock import lock_path
from p2c_etl.warehouse.store import Warehouse

KILLED = """
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from p2c_etl.warehouse.lock import RunLock
from p2c_etl.warehouse.lock import lock_path
from p2c_etl.warehouse.store import Warehouse
path = Path(sys.argv[1])
with RunLock(path, "p2c run killed-run"):
    wh = Warehouse.open(path)
    wh.start_run("killed-run", "run", False, ["products"], datetime(2026, 1, 1, tzinfo=UTC))
    wh.close()
    os.kill(os.getpid(), signal.SIGKILL)
"""

HOLD = """
import sys, threading
from pathlib import Path
from p2c_etl.warehouse.lock import RunLock
with RunLock(Path(sys.argv[1]), "p2c run 20261124T010000Z-abcdef"):
    print("holding", flush=True)
    threading.Event().wait()  # until the test kills it: no time window to outlast
"""


def test_a_second_run_exits_3_naming_the_run_that_holds_the_warehouse(
    demo_dir: Path, demo_settings: Settings
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_settings.warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(main, ["run", "--config", str(demo_dir / "p2c.toml")])
        assert result.exit_code == 3
        assert "another run holds the warehouse: p2c run 20261124T010000Z-abcdef (pid" in (
            result.stderr
        )
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_run_left_by_a_killed_process_is_taken_over(
    demo_dir: Path, demo_settings: Settings
) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(demo_settings.warehouse_path)], check=False
    )
    assert killed.returncode == -9  # died holding the run lock, its run left "running"
    assert lock_path(demo_settings.warehouse_path).read_text().startswith("p2c run killed-run")
    result = CliRunner().invoke(main, ["run", "--config", str(demo_dir / "p2c.toml"), "-q"])
    assert result.exit_code == 1  # ran normally (the demo's planted rejects)
    history = CliRunner().invoke(main, ["history", "--config", str(demo_dir / "p2c.toml")])
    line = next(row for row in history.stdout.splitlines() if row.startswith("killed-run"))
    assert " failed " in line


def test_prune_drops_old_snapshots_and_keeps_the_ledger(
    demo_dir: Path, demo_settings: Settings
) -> None:
    from p2c_etl.jobs.reconcile.job import run_reconcile
    from p2c_etl.jobs.run import run_batch

    run_batch(demo_settings)
    run_reconcile(demo_settings, flows=["products"])
    config = str(demo_dir / "p2c.toml")
    kept = CliRunner().invoke(main, ["prune", "--config", config, "--keep-days", "1"])
    assert kept.exit_code == 0 and "Pruned 0 runs" in kept.stdout
    result = CliRunner().invoke(main, ["prune", "--config", config, "--keep-days", "0"])
    assert result.exit_code == 0
    assert "Pruned 2 runs" in result.stdout
    wh = Warehouse.open(demo_settings.warehouse_path)
    try:
        left = wh.query(
            "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, 'snap_')"
        )
        assert left.height == 0
        assert wh.query("SELECT count(*) AS n FROM runs")["n"][0] == 2
        assert wh.query("SELECT count(*) AS n FROM reconciliations")["n"][0] == 1
        assert wh.query("SELECT count(*) AS n FROM run_flows")["n"][0] == 12
        # the audit's evidence stays, and so do the details of the run that flows which
        # found nothing to write point at (a later run that finds the same shows them)
        kept = wh.query(
            "SELECT DISTINCT r.mode, r.run_id IN (SELECT run_id FROM settled_flows "
            "WHERE fingerprint IS NOT NULL) AS pointed_at "
            "FROM rejects j JOIN runs r USING (run_id) ORDER BY ALL"
        )
        assert kept.rows() in ([("reconcile", False)], [("reconcile", False), ("run", True)])
    finally:
        wh.close()


def _serve(server: socketserver.BaseServer) -> socketserver.BaseServer:
    """Serve `server` (bound to loopback) in a background thread until `_stop`."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stop(server: socketserver.BaseServer) -> None:
    server.shutdown()
    server.server_close()


class _Receiver:
    """A webhook receiver on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        _stop(self.server)


def test_a_partial_run_sends_one_alert_with_its_counts_and_report(demo_dir: Path) -> None:
    receiver = _Receiver()
    try:
        config = demo_dir / "p2c.toml"
        config.write_text(config.read_text() + f'\n[alerts]\nwebhook = "{receiver.url}"\n')
        result = CliRunner().invoke(main, ["run", "--config", str(config), "-q"])
        assert result.exit_code == 1
        assert len(receiver.received) == 1
        alert = receiver.received[0]
        assert alert["run"]["status"] == "partial"
        assert "- accounts: 4 rejected, 0 failed" in alert["text"]
        assert alert["run"]["report"]["html"] in alert["text"]
        again = CliRunner().invoke(
            main, ["run", "--config", str(config), "--flows", "accounts", "-q"]
        )
        assert again.exit_code == 1 and len(receiver.received) == 2
    finally:
        receiver.stop()


def test_an_unreachable_webhook_warns_and_the_run_goes_on(demo_dir: Path) -> None:
    config = demo_dir / "p2c.toml"
    config.write_text(config.read_text() + '\n[alerts]\nwebhook = "http://127.0.0.1:9/hook"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(config), "-q", "--flows", "products"])
    assert result.exit_code == 1
    assert "alert not delivered: webhook unreachable" in result.stderr


def test_json_logs_are_one_object_per_event(demo_dir: Path) -> None:
    import json

    result = CliRunner().invoke(
        main,
        [
            "--log-format",
            "json",
            "run",
            "--config",
            str(demo_dir / "p2c.toml"),
            "--flows",
            "products",
        ],
    )
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert all({"ts", "level", "message"} <= set(e) for e in events)
    assert any(e["message"].startswith("products: 18 source rows") for e in events)
    missing = CliRunner().invoke(main, ["--log-format", "json", "run", "--config", "nope.toml"])
    (error,) = [json.loads(line) for line in missing.stderr.splitlines()]
    assert error["level"] == "error" and error["exit_code"] == 2


class _Smtp:
    """A minimal SMTP server on loopback that keeps the messages it is sent."""

    def __init__(self) -> None:
        messages = self.messages = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.say("220 localhost p2c test SMTP")
                data: list[str] = []
                while line := self.rfile.readline().decode():
                    verb = line[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        self.say("250 localhost")
                    elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                        self.say("250 OK")
                    elif verb == "DATA":
                        self.say("354 go on")
                        while (body := self.rfile.readline().decode()) not in (".\r\n", ""):
                            data.append(body)
                        messages.append("".join(data))
                        self.say("250 queued")
                    elif verb == "QUIT":
                        self.say("221 bye")
                        return
                    else:
                        self.say("502 not here")

            def say(self, text: str) -> None:
                self.wfile.write(f"{text}\r\n".encode())

        self.server = _serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        _stop(self.server)


def test_a_failed_run_sends_one_mail(demo_dir: Path) -> None:
    smtp = _Smtp()
    try:
        config = demo_dir / "p2c.toml"
        (demo_dir / "crm" / "accounts.jsonl").write_text(
            '{"accountid": "x", "creditlimit": "lots"}\n'
        )
        config.write_text(
            config.read_text()
            + (
                f'\n[alerts]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\n'
                'smtp_from = "p2c@example.com"\nsmtp_to = ["ops@example.com"]\n'
            )
        )
        result = CliRunner().invoke(main, ["run", "--config", str(config), "-q"])
        assert result.exit_code == 2
        (message,) = smtp.messages
        assert "Subject: p2c-etl run " in message and ": failed" in message
        assert "To: ops@example.com" in message
        assert "extract of flow 'accounts' failed" in message
    finally:
        smtp.stop()


# --- a crash is a failure ------------------------------------------------------------------


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom")


def _with_webhook(demo_dir: Path, receiver: _Receiver) -> str:
    config = demo_dir / "p2c.toml"
    config.write_text(config.read_text() + f'\n[alerts]\nwebhook = "{receiver.url}"\n')
    return str(config)


def _ledger(config: str, run_id: str) -> tuple[str, str]:
    from p2c_etl.config import load_settings

    wh = Warehouse.open(load_settings(Path(config)).warehouse_path)
    try:
        row = wh.run(run_id)
    finally:
        wh.close()
    assert row is not None, run_id
    return row["status"], row["error"]


def test_a_crash_in_a_stage_exits_2_with_its_traceback_a_failed_ledger_entry_and_an_alert(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch, assert_accounted: Callable[[object], None]
) -> None:
    import p2c_etl.jobs.run

    real = p2c_etl.jobs.run.compare_flow

    def compare(wh: Warehouse, run_id: str, flow: Any, target: Any, rows: Any) -> Any:
        if flow.name == "contacts":
            raise RuntimeError("boom")
        return real(wh, run_id, flow, target, rows)

    monkeypatch.setattr(p2c_etl.jobs.run, "compare_flow", compare)
    receiver = _Receiver()
    try:
        config = _with_webhook(demo_dir, receiver)
        result = CliRunner().invoke(
            main, ["run", "--config", config, "--json", "-q"], catch_exceptions=False
        )
        assert result.exit_code == 2  # failed: never 1, "finished with rejects"
        assert "Traceback (most recent call last)" in result.stderr
        assert "RuntimeError: boom" in result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "failed"
        assert (
            "compare of flow 'contacts' failed: unexpected RuntimeError: boom" in (summary["error"])
        )
        assert [f["flow"] for f in summary["flows"]] == ["products", "accounts"]
        assert_accounted(summary["flows"])
        assert Path(summary["report"]["html"]).is_file()  # the report of what was done
        status, error = _ledger(config, summary["run_id"])
        assert status == "failed" and "unexpected RuntimeError: boom" in error
        (alert,) = receiver.received
        assert alert["run"]["status"] == "failed" and "RuntimeError: boom" in alert["text"]
    finally:
        receiver.stop()


@pytest.mark.parametrize(
    ("target", "stage_words"),
    [
        ("p2c_etl.jobs.run.write_report", "the report failed: unexpected RuntimeError"),
        ("p2c_etl.jobs.run.connectors_for", "unexpected RuntimeError: boom"),
    ],
)
def test_a_crash_outside_the_stages_is_a_failure_too(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch, target: str, stage_words: str
) -> None:
    monkeypatch.setattr(target, _boom)
    receiver = _Receiver()
    try:
        config = _with_webhook(demo_dir, receiver)
        result = CliRunner().invoke(
            main, ["run", "--config", config, "--flows", "products", "--json", "-q"]
        )
        assert result.exit_code == 2
        assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "failed" and stage_words in summary["error"]
        if summary["run_id"]:  # the run had started: its ledger entry is failed
            assert _ledger(config, summary["run_id"])[0] == "failed"
        (alert,) = receiver.received
        assert alert["run"]["status"] == "failed"
    finally:
        receiver.stop()


def test_a_crash_in_a_migration_or_a_demo_exits_2(
    tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2c_etl.jobs.migrate.flow_job import FlowJob

    monkeypatch.setattr(FlowJob, "_chunk", _boom)
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(demo_dir / "crm" / "accounts.jsonl", export / "accounts.jsonl")
    config = str(demo_dir / "p2c.toml")
    migrated = CliRunner().invoke(
        main, ["migrate", "--config", config, "--from", str(export), "--json", "-q"]
    )
    assert migrated.exit_code == 2 and "Traceback" in migrated.stderr
    summary = json.loads(migrated.stdout)
    assert (
        "migration of flow 'accounts' failed: unexpected RuntimeError: boom" in (summary["error"])
    )
    assert _ledger(config, summary["run_id"])[0] == "failed"

    monkeypatch.setattr("p2c_etl.jobs.run.compare_flow", _boom)
    demo = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "d"), "--json", "-q"])
    assert demo.exit_code == 2 and "Traceback" in demo.stderr
    assert json.loads(demo.stdout)["status"] == "failed"


def test_a_crash_in_a_reconciliation_exits_2_fails_its_entry_and_alerts(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("p2c_etl.jobs.reconcile.job.reconcile_money", _boom)
    receiver = _Receiver()
    try:
        config = _with_webhook(demo_dir, receiver)
        result = CliRunner().invoke(
            main, ["reconcile", "--config", config, "--flows", "products", "--json", "-q"]
        )
        assert result.exit_code == 2
        assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "failed" and "unexpected RuntimeError" in summary["error"]
        assert _ledger(config, summary["reconciliation_id"])[0] == "failed"
        (alert,) = receiver.received
        assert alert["run"]["mode"] == "reconcile" and alert["run"]["status"] == "failed"
    finally:
        receiver.stop()


def _fake_failed_write(config: str) -> str:
    """A clean products run, then one of its writes recorded as failed (as an HTTP 400 would)."""
    first = CliRunner().invoke(
        main, ["run", "--config", config, "--flows", "products", "--json", "-q"]
    )
    run_id = str(json.loads(first.stdout)["run_id"])
    from p2c_etl.config import load_settings

    wh = Warehouse.open(load_settings(Path(config)).warehouse_path)
    try:
        wh.con.execute(
            "UPDATE load_results SET status = 'failed', message = 'HTTP 400' WHERE rowid = "
            "(SELECT min(rowid) FROM load_results WHERE run_id = ?)",
            [run_id],
        )
        wh.con.execute("UPDATE run_flows SET failed = 1 WHERE run_id = ?", [run_id])
    finally:
        wh.close()
    return run_id


def test_a_crash_in_a_retry_exits_2_and_fails_its_entry(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(demo_dir / "p2c.toml")
    _fake_failed_write(config)
    monkeypatch.setattr("p2c_etl.jobs.retry.retry_flow", _boom)
    result = CliRunner().invoke(main, ["retry", "--config", config, "--json", "-q"])
    assert result.exit_code == 2 and "Traceback" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "retry" and summary["status"] == "failed"
    assert "retry of flow 'products' failed: unexpected RuntimeError: boom" in summary["error"]
    assert _ledger(config, summary["run_id"])[0] == "failed"


def test_retry_with_nothing_to_retry_exits_0_with_a_message(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    config = str(demo_dir / "p2c.toml")
    empty = CliRunner().invoke(main, ["retry", "--config", config])
    assert empty.exit_code == 0, empty.stderr
    assert "Nothing to retry" in empty.stdout
    failed_run = _fake_failed_write(config)
    retried = CliRunner().invoke(main, ["retry", "--config", config, "--json", "-q"])
    assert retried.exit_code == 0, retried.stderr
    assert json.loads(retried.stdout)["status"] == "ok"
    assert_accounted(json.loads(retried.stdout)["flows"])
    again = CliRunner().invoke(main, ["retry", "--config", config, "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["status"] == "nothing_to_retry"
    named = CliRunner().invoke(main, ["retry", "--config", config, "--run", retried_id(retried)])
    assert named.exit_code == 0 and "has no failed writes" in named.stdout
    assert failed_run != retried_id(retried)


def retried_id(result: Any) -> str:
    return str(json.loads(result.stdout)["run_id"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "missing.toml", "--json"], "configuration file not found"),
        (["reconcile", "--config", "missing.toml", "--json"], "configuration file not found"),
        (["migrate", "--config", "broken.toml", "--from", ".", "--json"], "not valid TOML"),
        (["retry", "--config", "broken.toml", "--json"], "not valid TOML"),
        (["run", "--flows", "acounts", "--json"], "unknown flow acounts"),
    ],
)
def test_json_prints_a_failed_summary_when_the_config_is_missing_or_broken(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(demo_dir)
    (demo_dir / "broken.toml").write_text("[warehouse\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed" and message in summary["error"]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


HELD_RUN = """
import signal, sys, threading
import p2c_etl.jobs.run as run
from p2c_etl.cli import main

# Ctrl-C as a terminal gives it, even where this test runs in the background (whose
# children start with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)

def held(*args, **kwargs):
    print("held in compare", file=sys.stderr, flush=True)
    threading.Event().wait()  # until a signal ends the process

run.compare_flow = held
main(["run", "--config", sys.argv[1], "--flows", "products", "--json"])
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_mark_the_run_failed(
    demo_dir: Path, sig: signal.Signals, code: int
) -> None:
    config = str(demo_dir / "p2c.toml")
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    while "held in compare" not in (line := proc.stderr.readline()):
        assert line, "".join(lines)  # the process ended before it reached the stage
        lines.append(line)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert json.loads(out)["status"] == "failed"
    history = CliRunner().invoke(main, ["history", "--config", config])
    (row,) = history.stdout.splitlines()[1:]
    assert " failed " in row
    run_id = row.split()[0]
    status, error = _ledger(config, run_id)
    expected = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert status == "failed" and expected in error


# --- the ledger while something runs, and reconciliations that died ------------------------

HELD_IN_STAGE = """
import sys, threading
from pathlib import Path
from p2c_etl.config import load_settings
from p2c_etl.jobs.run import run_batch

def progress(line):
    if line.startswith("products: extracting"):  # inside the warehouse, holding the run lock
        print("inside", flush=True)
        threading.Event().wait()

run_batch(load_settings(Path(sys.argv[1])), flows=["products"], progress=progress)
"""

HELD_RECONCILE = """
import sys, threading
from pathlib import Path
from p2c_etl.config import load_settings
from p2c_etl.jobs.reconcile.job import run_reconcile

def progress(line):
    if line.startswith("reconcile "):  # started: its ledger entry is `running`
        print(line.split()[1].rstrip(":"), flush=True)
        threading.Event().wait()

run_reconcile(load_settings(Path(sys.argv[1])), flows=["products"], progress=progress)
"""


def _held(script: str, config: Path) -> tuple[subprocess.Popen[str], str]:
    """`script` in a process of its own, held at the progress point it reports."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(config)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    said = proc.stdout.readline().strip()
    assert said, "the process ended before its progress point"
    return proc, said


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_history_answers_at_once_while_a_run_is_inside_the_warehouse(demo_dir: Path) -> None:
    config = demo_dir / "p2c.toml"
    CliRunner().invoke(main, ["run", "--config", str(config), "--flows", "products", "-q"])
    proc, _ = _held(HELD_IN_STAGE, config)
    try:
        history = subprocess.run(  # in a process of its own, as a user runs it
            [sys.executable, "-m", "p2c_etl", "history", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,  # before: it waited up to 15 minutes for the run
            check=False,
        )
        assert history.returncode == 0, history.stderr
        (line,) = history.stdout.splitlines()
        assert line.startswith("A run is in progress (p2c run ") and f"pid {proc.pid}" in line
    finally:
        _end(proc)


def test_history_names_the_run_that_holds_the_lock(demo_dir: Path, demo_settings: Settings) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_settings.warehouse_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        history = CliRunner().invoke(main, ["history", "--config", str(demo_dir / "p2c.toml")])
        assert history.exit_code == 0
        assert "No runs yet." in history.stdout
        assert "In progress: p2c run 20261124T010000Z-abcdef (pid" in history.stdout
    finally:
        holder.kill()
        holder.wait()
    after = CliRunner().invoke(main, ["history", "--config", str(demo_dir / "p2c.toml")])
    assert "In progress" not in after.stdout  # the note of a dead holder is not believed


def _status(config: Path, run_id: str) -> str:
    return _ledger(str(config), run_id)[0]


def test_a_reconciliation_killed_mid_way_is_failed_by_the_next_command(demo_dir: Path) -> None:
    config = demo_dir / "p2c.toml"
    alive, alive_id = _held(HELD_RECONCILE, config)
    try:
        killed, killed_id = _held(HELD_RECONCILE, config)
        killed.send_signal(signal.SIGKILL)
        assert killed.wait() == -signal.SIGKILL
        assert killed.stdout is not None
        killed.stdout.close()
        assert _status(config, killed_id) == "running"  # what it left behind
        result = CliRunner().invoke(main, ["run", "--config", str(config), "-q"])
        assert result.exit_code == 1, result.stderr
        assert _status(config, killed_id) == "failed"
        assert _status(config, alive_id) == "running"  # its lock says it is still going
    finally:
        _end(alive)
    again = CliRunner().invoke(
        main, ["reconcile", "--config", str(config), "--flows", "products", "-q"]
    )
    assert again.exit_code in (0, 1), again.stderr
    assert _status(config, alive_id) == "failed"
    history = CliRunner().invoke(main, ["history", "--config", str(config)]).stdout
    assert " running " not in history


# --- private files ---------------------------------------------------------------------


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_files_holding_personal_data_are_private(demo_dir: Path, demo_settings: Settings) -> None:
    from p2c_etl.jobs.reconcile.job import run_reconcile
    from p2c_etl.jobs.run import run_batch

    before = os.umask(0o022)  # what most machines have: new files 0644 unless made private
    try:
        summary = run_batch(demo_settings)
        reconciled = run_reconcile(demo_settings, flows=["products"])
        wh = Warehouse.open(demo_settings.warehouse_path)
        try:
            wh.con.execute("CREATE TABLE wal_probe AS SELECT 1 AS x")
            wal = demo_settings.warehouse_path.with_name("p2c.duckdb.wal")
            assert wal.exists() and _mode(wal) == 0o600
        finally:
            wh.close()
        assert os.umask(0o022) == 0o022  # the umask is put back when the warehouse closes
    finally:
        os.umask(before)
    assert _mode(demo_settings.warehouse_path) == 0o600
    assert _mode(lock_path(demo_settings.warehouse_path)) == 0o600
    reports = demo_settings.report_dir
    assert _mode(reports) == 0o700 and _mode(reports / "reconcile") == 0o700
    made = [Path(summary.report_html or ""), Path(summary.report_json or "")]
    made += [Path(p) for p in reconciled.paths.values()]
    made.append(reports / "reconcile" / "index.html")
    assert {p.suffix for p in made} == {".html", ".json", ".csv", ".xlsx"}
    assert {str(p): _mode(p) for p in made} == {str(p): 0o600 for p in made}
    assert not list(reports.rglob("*.tmp"))
