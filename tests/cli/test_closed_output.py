"""A reader that closes the output early (`p2c flows show accounts | head -2`) is no bug: the
command ends quietly with 141 (128 + SIGPIPE) and no traceback; a closed stderr (the progress
lines) does not cut a run short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import p2c_etl

ROOT = Path(p2c_etl.__file__).resolve().parent.parent


def closed_pipe() -> int:
    """The write end of a pipe whose read end is already closed: every write to it is EPIPE,
    as after `head` has read its lines and gone (deterministic: no race with a live reader)."""
    read, write = os.pipe()
    os.close(read)
    return write


def p2c(args: list[str], cwd: Path, stdout: int, stderr: int) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "p2c_etl", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=stdout,
            stderr=stderr,
            timeout=600,
            check=False,
        )
    finally:
        for fd in (stdout, stderr):
            if fd >= 0:
                os.close(fd)


@pytest.mark.parametrize("args", [["flows"], ["flows", "show", "accounts"]], ids=" ".join)
def test_a_closed_stdout_ends_the_command_quietly_with_141(tmp_path: Path, args: list[str]) -> None:
    result = p2c(args, tmp_path, closed_pipe(), subprocess.PIPE)
    assert result.returncode == 141
    assert result.stderr == b""  # no traceback, no "a bug", no "Exception ignored"


def test_a_closed_stdout_while_reporting_an_error_is_quiet_too(tmp_path: Path) -> None:
    # the error goes to stderr (kept), the --json summary of the failure to the closed stdout
    result = p2c(
        ["run", "--json", "--config", "nope.toml"], tmp_path, closed_pipe(), subprocess.PIPE
    )
    assert result.returncode == 141
    assert b"Traceback" not in result.stderr and b"a bug" not in result.stderr
    assert result.stderr.startswith(b"p2c: error: ")


def test_a_closed_stderr_does_not_cut_a_run_short(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    config = str(demo_dir / "p2c.toml")
    result = p2c(["run", "--json", "--config", config], demo_dir, subprocess.PIPE, closed_pipe())
    summary = json.loads(result.stdout)
    assert summary["status"] == "partial", summary.get("error")  # the demo's planted rejects
    assert result.returncode == 1
    assert_accounted(summary["flows"])
