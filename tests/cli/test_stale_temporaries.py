"""A `.tmp` file left by a killed write is removed by the next run, even one that writes
nothing (issue 11): opening the files connector clears its folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from p2c_etl.cli import main


def test_a_run_that_writes_nothing_removes_the_temporaries_of_a_killed_write(
    demo_dir: Path, assert_accounted: Callable[[object], None]
) -> None:
    erp = demo_dir / "erp"
    stale = [
        erp / ".CustomersV2.jsonl.k1ll3d.tmp",  # beside a target file
        demo_dir / "crm" / ".accounts.jsonl.x9.tmp",
    ]
    (erp / "CustomersV2Parts").mkdir()  # a folder of parts: its temporaries too
    stale.append(erp / "CustomersV2Parts" / ".part-00001.parquet.a1.tmp")
    kept = [erp / ".notes.tmp", erp / "CustomersV2.jsonl.bak"]  # not the connector's
    for path in (*stale, *kept):
        path.write_bytes(b"half a file")
    before = {p: p.read_bytes() for p in erp.glob("*.jsonl")}

    result = CliRunner().invoke(
        main, ["run", "--dry-run", "--json", "--config", str(demo_dir / "p2c.toml")]
    )

    summary = json.loads(result.stdout)
    assert summary["dry_run"] and result.exit_code == 1, result.stderr  # the demo's rejects
    assert_accounted(summary["flows"])
    assert {p: p.read_bytes() for p in erp.glob("*.jsonl")} == before  # nothing written
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)
