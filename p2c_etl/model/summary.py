"""The run summary: what `--json` prints, the ledger stores and the report starts from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["running", "ok", "partial", "failed"]
RunMode = Literal["run", "demo", "reconcile", "migrate", "retry"]


@dataclass(frozen=True)
class FlowCounts:
    """Every source row of a flow ends in exactly one of the counts after `source_rows`."""

    flow: str
    source_rows: int = 0
    filtered_out: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    target_only: int = 0
    failed: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    @property
    def accounted(self) -> int:
        """Source rows that ended somewhere; equals `source_rows` for a finished flow."""
        return (
            self.filtered_out
            + self.rejected
            + self.inserted
            + self.updated
            + self.unchanged
            + self.failed
        )


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    mode: RunMode
    status: RunStatus
    dry_run: bool
    flows: tuple[FlowCounts, ...]
    report_html: str | None = None
    report_json: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None
    """An unexpected exception (a bug) that ended the run: printed on stderr, not in JSON."""

    @property
    def written(self) -> int:
        return sum(f.written for f in self.flows)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "dry_run": self.dry_run,
            "flows": [asdict(f) for f in self.flows],
            "report": {"html": self.report_html, "json": self.report_json},
        }
        if self.error:
            out["error"] = self.error
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_json(), indent=2)


def status_of(flows: tuple[FlowCounts, ...]) -> RunStatus:
    """`partial` when any record was rejected or failed to load, else `ok`."""
    return "partial" if any(f.rejected or f.failed for f in flows) else "ok"


def failed_summary(mode: RunMode, error: str, traceback: str | None = None) -> RunSummary:
    """The summary of a command that failed before its run had an id (a configuration it
    could not read, a flow it does not know): status `failed`, no flows, no report."""
    return RunSummary("", mode, "failed", False, (), error=error, traceback=traceback)


@dataclass(frozen=True)
class ReconcileSummary:
    """What `p2c reconcile --json` prints: the verdict, the counts and the evidence's paths.
    A reconciliation that failed has no `data`, its `error` instead (status `failed`)."""

    data: Any
    paths: dict[str, str]
    reconciliation_id: str = ""
    error: str | None = None
    traceback: str | None = None

    @property
    def status(self) -> str:
        return "failed" if self.data is None else str(self.data.status)

    def as_run(self) -> RunSummary:
        """As a run summary (mode `reconcile`), for the alert of a failed reconciliation."""
        status: RunStatus = (
            "ok" if self.status == "agree" else "failed" if self.status == "failed" else "partial"
        )
        paths = self.paths
        return RunSummary(
            self.reconciliation_id,
            "reconcile",
            status,
            True,
            (),
            paths.get("html"),
            paths.get("json"),
            error=self.error,
        )

    def as_json(self) -> dict[str, Any]:
        if self.data is None:
            return {
                "reconciliation_id": self.reconciliation_id or None,
                "status": "failed",
                "error": self.error,
                "report": self.paths,
            }
        full = self.data.as_json()
        return {
            "reconciliation_id": full["reconciliation_id"],
            "status": full["status"],
            "verdicts": full["verdicts"],
            "agree": full["agree"],
            "total": full["total"],
            "flows": [
                {
                    "flow": f["flow"],
                    "records": f["compared"],
                    "agree": f["agree"],
                    "differences": dict(f["by_class"]),
                }
                for f in full["flows"]
            ],
            "money": [
                {
                    "document": m["document"],
                    "agree": m["agree"],
                    "total": m["total"],
                    "unexplained": m["unexplained"],
                }
                for m in full["money"]
            ],
            "scope": full["scope"],
            "tie_out": [
                {k: t[k] for k in ("document", "currency", "difference", "unexplained")}
                | {"items": len(t["items"]), "breaks": len(t["breaks"])}
                for t in full["tie_out"]
            ],
            "report": self.paths,
        }
