"""The run report: a golden JSON of the demo; HTML that shows everything and escapes CRM data."""

import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from p2c_etl.config import Settings
from p2c_etl.jobs.run import run_batch

GOLDEN = Path(__file__).parent / "golden" / "demo_report.json"


def test_demo_report_matches_the_golden_file(
    demo_settings: Settings, clock: Callable[[], datetime]
) -> None:
    """Regenerate on purpose with P2C_REGEN_GOLDEN=1 and review the diff."""
    summary = run_batch(demo_settings, mode="demo", run_id="golden-run", clock=clock)
    assert summary.report_json is not None
    report = json.loads(Path(summary.report_json).read_text(encoding="utf-8"))
    if os.environ.get("P2C_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert report == json.loads(GOLDEN.read_text(encoding="utf-8"))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_shows_both_flows_counts_and_rejects_and_escapes_crm_text(
    demo_dir: Path, demo_settings: Settings
) -> None:
    accounts = demo_dir / "crm" / "accounts.jsonl"
    evil = "<script>alert(1)</script>"
    accounts.write_text(accounts.read_text().replace("Northwind Traders", evil, 1))
    summary = run_batch(demo_settings)
    assert summary.report_html is not None
    html = Path(summary.report_html).read_text(encoding="utf-8")
    parser = _Text()
    parser.feed(html)
    text = re.sub(r"\s+", " ", " ".join(parser.text))
    assert parser.scripts == 0
    assert evil in text  # shown as text, after the parser unescaped it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for flow in ("products", "accounts"):
        assert f'id="flow-{flow}"' in html
    assert "duplicate_key" in text and "too_long" in text and "unmapped_value" in text
    assert "'Atlantis' is not in value map" in text
    assert "<link" not in html and "src=" not in html  # self-contained: opens from disk
