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


@dataclass(frozen=True)
class ReconcileSummary:
    """What `p2c reconcile --json` prints: the verdict, the counts and the evidence's paths."""

    data: Any
    paths: dict[str, str]

    def as_json(self) -> dict[str, Any]:
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
            "report": self.paths,
        }
