"""The nightly run as an operator needs it: one run at a time, stale runs cleaned up."""

import socketserver
import subprocess
import sys
import threading
from pathlib import Path

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
import sys, time
from pathlib import Path
from p2c_etl.warehouse.lock import RunLock
with RunLock(Path(sys.argv[1]), "p2c run 20261124T010000Z-abcdef"):
    print("holding", flush=True)
    time.sleep(60)
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
        assert wh.query("SELECT count(*) AS n FROM rejects")["n"][0] > 0
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
