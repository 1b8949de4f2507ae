"""The reconciliation report in a real browser: headless Chromium (Debian's package), on
screen, at 420 px and in print (PDF), driven over the DevTools protocol where a command-line
switch is not enough."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed here when missing; skipped only if that cannot be done."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "chromium"],
        ):
            subprocess.run(command, capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip(
            "Debian's chromium is missing and could not be installed "
            "(apt-get install chromium needs root and access to the Debian mirrors)"
        )
    return found


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="p2c-chromium-")
    try:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_crm_text_is_shown_as_text_and_never_runs(chromium: str, runs: Any, tmp_path: Path) -> None:
    page = Path(runs.later.paths["html"]).resolve().as_uri()  # an account renamed to EVIL

    dom = _browser(chromium, "--dump-dom", page).stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the name, as text in a cell
    assert dom.count("<script") == 1  # only the report's own search-and-sort script

    shot = tmp_path / "reconcile.png"
    _browser(chromium, "--window-size=1280,2000", f"--screenshot={shot}", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


INTERACT = """(() => {
  const search = document.getElementById("search"), shown = document.getElementById("shown");
  const find = (text) => {
    search.value = text;
    search.dispatchEvent(new Event("input"));
    return shown.textContent;
  };
  const out = { formatted: find("6,667.92"), raw: find("6667.92") };
  find("");
  const select = document.getElementById("classification");
  select.value = "drift";
  select.dispatchEvent(new Event("change"));
  out.drift = shown.textContent;
  select.value = "";
  select.dispatchEvent(new Event("change"));
  document.querySelector('a.drill[data-key="record"][data-value="SO-2010"]').click();
  out.drilled = shown.textContent;
  document.getElementById("undrill").click();
  const table = document.getElementById("rows");
  const column = [...table.tHead.rows[0].cells].findIndex((c) => c.textContent === "Difference");
  table.tHead.rows[0].cells[column].click();
  out.sorted = [table.tHead.rows[0].cells[column].getAttribute("aria-sort"),
                table.tBodies[0].rows[0].cells[column].textContent];
  return out;
})()"""
PAGE_RULE = """[...document.styleSheets].flatMap((s) => [...s.cssRules])
  .filter((r) => r instanceof CSSPageRule).map((r) => r.cssText).join(" ")"""
SECTIONS = ["tie-out", "ageing", "charts", "flows", "money", "discrepancies", "evidence"]
VISIBLE = """(() => {
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).display !== "none";
  const folds = [...document.querySelectorAll(".fold-body")];
  return {
    sections: [...document.querySelectorAll("body > section[id]")].filter(shown).map((s) => s.id),
    folds: folds.length,
    folds_shown: folds.filter(shown).length,
    signoff: shown(document.querySelector(".signoff")),
    search: shown(document.getElementById("search")),
  };
})()"""
OVERFLOW = """(() => {
  const lines = (td) => {  // the lines an amount's text takes: 1 unless it wraps
    const range = document.createRange();
    range.selectNodeContents(td);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  };
  const amounts = [...document.querySelectorAll("td.num")].filter((td) => td.textContent.trim());
  return {
    page: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    wide: [...document.querySelectorAll("body *")]
      .filter((el) => !el.closest(".box") && el.getBoundingClientRect().right > innerWidth + 1)
      .map((el) => el.tagName + (el.id ? "#" + el.id : "")).slice(0, 5),
    amounts: amounts.length,
    wrapped: amounts.filter((td) => lines(td) > 1).map((td) => td.textContent).slice(0, 5),
  };
})()"""


def test_print_shows_every_section_and_a_narrow_screen_does_not_overflow(
    chromium: str, runs: Any
) -> None:
    page = Path(runs.month_end.paths["html"]).resolve().as_uri()
    with DevTools(chromium) as tab:
        tab.open(page)
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=420,
            height=900,
            deviceScaleFactor=1,
            mobile=True,
        )
        narrow = tab.evaluate(OVERFLOW)
        assert narrow["viewport"] == 420
        assert narrow["page"] <= 420, narrow  # tables scroll inside their box, the page does not
        assert narrow["wide"] == [] and narrow["wrapped"] == [] and narrow["amounts"] > 50, narrow
        tab.call("Emulation.clearDeviceMetricsOverride")
        assert tab.evaluate(INTERACT) == {
            "formatted": "1 of 35 shown",  # "6,667.92" as shown...
            "raw": "1 of 35 shown",  # ...and as the raw amount
            "drift": "3 of 35 shown",
            "drilled": "2 of 35 shown",  # SO-2010: its break and its line
            "sorted": ["ascending", "-100.00"],
        }
        screen = tab.evaluate(VISIBLE)
        assert screen["folds_shown"] == 0  # per month and per customer: folded on screen
        tab.call("Emulation.setEmulatedMedia", media="print")
        printed = tab.evaluate(VISIBLE)
        assert printed["sections"] == SECTIONS
        assert printed["folds"] == printed["folds_shown"] == 6  # all of them, in print
        assert printed["signoff"] and not printed["search"]
        page_rule = tab.evaluate(PAGE_RULE)  # as Chromium parsed it: its footer boxes included
        assert "landscape" in page_rule and "counter(page)" in page_rule
        assert runs.month_end.reconciliation_id in page_rule
        pdf = base64.b64decode(tab.call("Page.printToPDF", preferCSSPageSize=True)["data"])
    assert pdf.startswith(b"%PDF")
    sizes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]", pdf)
    assert len(sizes) > 1  # pages
    assert all(round(float(w)) == 842 and round(float(h)) == 595 for w, h in sizes)  # A4 across


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: it
    reads commands on fd 3 and answers on fd 4, each message JSON ended by a NUL)."""

    def __init__(self, chromium: str) -> None:
        self.chromium, self.profile = chromium, tempfile.mkdtemp(prefix="p2c-chromium-")
        self.ids, self.session = 0, ""
        self.buffer = b""

    def __enter__(self) -> DevTools:
        to_browser, self.commands = os.pipe()
        self.answers, from_browser = os.pipe()

        def wire() -> None:  # whatever numbers the pipes got, theirs become 3 and 4
            reads, writes = os.dup(to_browser), os.dup(from_browser)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [self.chromium, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            close_fds=False,
        )
        os.close(to_browser)
        os.close(from_browser)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.commands)
        os.close(self.answers)
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._next()
            if answer.get("id") == self.ids:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.answers], [], [], 60)
            assert ready, "Chromium did not answer within 60 s"
            chunk = os.read(self.answers, 1 << 20)
            assert chunk, "Chromium closed its DevTools pipe"
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        loaded: dict[str, Any] = json.loads(raw)
        return loaded

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        for _ in range(200):
            if self.evaluate("document.readyState") == "complete":
                return
            time.sleep(0.05)
        raise AssertionError(f"{url} did not load")

    def evaluate(self, expression: str) -> Any:
        found = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return found["result"].get("value")
