"""Run report: compute a frozen `ReportData` from the warehouse, then render it last.

The JSON twin is `ReportData` as JSON; the HTML is a Jinja template with autoescaping on
(every value from a CRM is untrusted) and inline CSS, so the file opens from disk anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from p2c_etl.model.flow import EntityRef, Flow
from p2c_etl.model.keys import record_key
from p2c_etl.model.rejects import printable
from p2c_etl.model.summary import FlowCounts
from p2c_etl.resources import templates_dir
from p2c_etl.stages.diff import after_values
from p2c_etl.stages.prepare import staged_table
from p2c_etl.warehouse.private import private_dir, write_private
from p2c_etl.warehouse.store import Warehouse

SAMPLE_CHANGES = 25
_KIND_ORDER = {"update": 0, "insert": 1, "target_only": 2}


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class ChangeSample:
    record_key: str
    kind: str
    fields: tuple[FieldChange, ...]


@dataclass(frozen=True)
class RejectRow:
    record_key: str | None
    reason: str
    field: str | None
    message: str
    line: int | None = None
    """Where the record starts in its export file (a migration)."""


@dataclass(frozen=True)
class UnmappedValue:
    field: str
    value: str | None
    count: int
    policy: str


@dataclass(frozen=True)
class FlowReport:
    flow: str
    description: str
    source: str
    target: str
    counts: FlowCounts
    changed_fields: tuple[tuple[str, int], ...]
    samples: tuple[ChangeSample, ...]
    rejects: tuple[RejectRow, ...]
    reject_reasons: tuple[tuple[str, int], ...]
    unmapped: tuple[UnmappedValue, ...]
    reads: tuple[str, ...] = ()
    """How the source and the target were read in this run: in full, or the changes since
    the last delta link (with how many), and why a read was full when a link was kept."""


@dataclass(frozen=True)
class ChunkTiming:
    """One chunk of a migration: where it lay in its export, and where its time went."""

    flow: str
    chunk: int
    records: int
    first_line: int | None
    last_line: int | None
    read: float
    prepare: float
    compare: float
    load: float

    @property
    def seconds(self) -> float:
        return self.read + self.prepare + self.compare + self.load


@dataclass(frozen=True)
class VerifiedRead:
    """An entity set read in full to verify its mirror: why, and how many records had
    drifted (changed, added or deleted behind change tracking's back)."""

    entity: str
    reason: str
    drifted: int


@dataclass(frozen=True)
class Drift:
    """A record the mirror had wrong: changed (in `fields`), added or deleted."""

    entity: str
    record_key: str
    kind: str
    fields: tuple[str, ...]


DRIFT_SHOWN = 500
"""The drifted records a report lists (all are in the warehouse's `drift` table)."""


@dataclass(frozen=True)
class ReportData:
    run_id: str
    mode: str
    status: str
    dry_run: bool
    company: str
    started_at: str
    ended_at: str
    flows: tuple[FlowReport, ...]
    chunks: tuple[ChunkTiming, ...] = ()
    verified: tuple[VerifiedRead, ...] = ()
    drift: tuple[Drift, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for chunk, timing in zip(data["chunks"], self.chunks, strict=True):
            chunk["seconds"] = timing.seconds
        return data


def build_report_data(
    wh: Warehouse, run: dict[str, Any], flows: Sequence[Flow], company: str, ended_at: str
) -> ReportData:
    run_id = run["run_id"]
    counts = {c.flow: c for c in wh.counts(run_id)}
    verified, drift = _verification(wh, run_id)
    return ReportData(
        run_id=run_id,
        mode=run["mode"],
        status=run["status"],
        dry_run=run["dry_run"],
        company=company,
        started_at=run["started_at"].astimezone(UTC).isoformat(),
        ended_at=ended_at,
        flows=tuple(
            _flow_report(
                wh, run_id, flow, counts.get(flow.name, FlowCounts(flow.name)), flows[: i + 1]
            )
            for i, flow in enumerate(flows)
        ),
        chunks=_chunks(wh, run_id),
        verified=verified,
        drift=drift,
    )


def _chunks(wh: Warehouse, run_id: str) -> tuple[ChunkTiming, ...]:
    rows = wh.query(
        "SELECT flow, chunk, records, first_line, last_line, read_seconds AS read, "
        "prepare_seconds AS prepare, compare_seconds AS compare, load_seconds AS load "
        "FROM migrate_chunks WHERE run_id = ? "
        "ORDER BY list_position((SELECT flows FROM runs WHERE run_id = ?), flow), chunk",
        [run_id, run_id],
    )
    return tuple(ChunkTiming(**row) for row in rows.iter_rows(named=True))


def _flow_report(
    wh: Warehouse, run_id: str, flow: Flow, counts: FlowCounts, upto: Sequence[Flow]
) -> FlowReport:
    """`flow`'s part of the report (`upto`: the flows run before it, and itself)."""
    rejects = wh.for_flow("rejects", run_id, flow.name).sort(
        "source_row", "source_line", "field", nulls_last=True
    )
    details = wh.details_run(run_id, flow.name)
    # counted and sampled in the warehouse: a first sync has millions of changes
    field_counts = wh.query(
        "SELECT f, count(*) AS len FROM (SELECT unnest(changed_fields) AS f FROM changes "
        "WHERE run_id = ? AND flow = ?) WHERE f IS NOT NULL GROUP BY f ORDER BY len DESC, f",
        [details, flow.name],
    )
    order = " ".join(f"WHEN '{k}' THEN {v}" for k, v in _KIND_ORDER.items())
    samples = wh.query(
        "SELECT record_key, kind, changed_fields, before_json, after_json FROM changes "
        f"WHERE run_id = ? AND flow = ? ORDER BY CASE kind {order} END, record_key LIMIT ?",
        [details, flow.name, SAMPLE_CHANGES],
    )
    samples = _with_insert_values(wh, details, flow, samples)
    return FlowReport(
        flow=flow.name,
        description=flow.description,
        source=str(flow.source),
        target=str(flow.target),
        counts=counts,
        changed_fields=tuple(field_counts.iter_rows()),
        samples=tuple(_sample(row) for row in samples.iter_rows(named=True)),
        rejects=tuple(
            RejectRow(
                printable(r["record_key"]),  # no control or bidi character reaches a report
                r["reason"],
                r["field"],
                printable(r["message"]),
                r["source_line"],
            )
            for r in rejects.iter_rows(named=True)
        ),
        reject_reasons=tuple(
            rejects.group_by("reason")
            .len()
            .sort(["len", "reason"], descending=[True, False])
            .iter_rows()
        ),
        unmapped=tuple(
            UnmappedValue(r["field"], r["value"], r["count"], r["policy"])
            for r in wh.for_flow("unmapped_values", run_id, flow.name)
            .sort("field", "value")
            .iter_rows(named=True)
        ),
        reads=tuple(
            _read_how(wh, run_id, side, [f.name for f in upto])
            for side in (flow.source, flow.target)
        ),
    )


def _read_how(wh: Warehouse, run_id: str, side: EntityRef, flows: Sequence[str]) -> str:
    """How the read a flow used was made (the latest made for it or a flow before it, of
    `flows`): `crm.accounts: 3 changed, 1 deleted since the last delta link`, or `... in
    full` and why."""
    rows = wh.con.execute(
        "SELECT kind, records, deletes, mark, reason, verified, drifted, link_kept "
        "FROM run_reads WHERE run_id = ? AND system = ? AND entity = ? AND list_contains(?, flow) "
        "ORDER BY seq DESC LIMIT 1",
        [run_id, side.system, side.entity, list(flows)],
    ).fetchall()
    if not rows:
        return f"{side}: read in full"
    kind, records, deletes, mark, reason, verified, drifted, link_kept = rows[0]
    if kind == "delta":
        return f"{side}: {records} changed, {deletes} deleted since the last delta link"
    if kind == "since":
        return f"{side}: {records} read from its high-water mark {mark} (less the lag)"
    if verified:
        found = "none" if drifted == 0 else f"{drifted} (listed under Verification)"
        return f"{side}: {printable(reason)}; records that had drifted: {found}"
    kept = "a high-water mark" if side.system == "erp" else "a delta link"
    if reason:
        return f"{side}: read in full ({printable(reason)})"
    return f"{side}: read in full" + (f" ({kept} is kept for the next run)" if link_kept else "")


def _verification(wh: Warehouse, run_id: str) -> tuple[tuple[VerifiedRead, ...], tuple[Drift, ...]]:
    """The reads of this run that verified a mirror in full, and the drift they found (at
    most DRIFT_SHOWN records)."""
    reads = wh.query(
        "SELECT system, entity, reason, drifted FROM run_reads WHERE run_id = ? AND verified "
        "ORDER BY system, entity",
        [run_id],
    )
    drift = wh.query(
        "SELECT system, entity, record_key, kind, fields FROM drift WHERE run_id = ? "
        "ORDER BY system, entity, kind, record_key LIMIT ?",
        [run_id, DRIFT_SHOWN],
    )
    return (
        tuple(
            VerifiedRead(f"{r['system']}.{r['entity']}", printable(r["reason"] or ""), r["drifted"])
            for r in reads.iter_rows(named=True)
        ),
        tuple(
            Drift(
                f"{r['system']}.{r['entity']}",
                printable(r["record_key"]),
                r["kind"],
                tuple(r["fields"] or ()),
            )
            for r in drift.iter_rows(named=True)
        ),
    )


def _with_insert_values(
    wh: Warehouse, run_id: str, flow: Flow, samples: pl.DataFrame
) -> pl.DataFrame:
    """`samples` with the values of its inserts, which the changes do not keep (`diff`'s
    `insert_values`), from the rows the run staged (kept until the run is pruned; a
    migration's inserts have none: their export holds them)."""
    wanted = samples.filter((pl.col("kind") == "insert") & pl.col("after_json").is_null())
    stage = staged_table(run_id, flow)
    if wanted.height == 0 or not wh.has_table(stage):
        return samples
    keys = ", ".join(f'"{k}"' for k in flow.keys)
    columns = ", ".join(f'"{c}"' for c in dict.fromkeys([*flow.keys, *flow.compare_columns]))
    places = (
        wh.query(f'SELECT rowid AS __place, {keys} FROM "{stage}"')
        .filter(record_key(flow.keys).is_in(wanted["record_key"].implode()))
        .get_column("__place")
    )
    with wh.registered("__places", places.to_frame()):
        staged = wh.query(
            f'SELECT {columns} FROM "{stage}" WHERE rowid IN (SELECT __place FROM __places)'
        )
    values = after_values(staged, flow.keys, flow.compare_columns, flow.target.empty_date)
    found = values.select(record_key(flow.keys).alias("record_key"), "after").join(
        wanted.select("record_key"), on="record_key", how="semi"
    )
    return (
        samples.join(found.unique("record_key"), on="record_key", how="left", maintain_order="left")
        .select(
            *[c for c in samples.columns if c != "after_json"],
            pl.coalesce("after_json", "after").alias("after_json"),
        )
        .select(samples.columns)
    )


def _sample(row: dict[str, Any]) -> ChangeSample:
    before = json.loads(row["before_json"]) if row["before_json"] else {}
    after = json.loads(row["after_json"]) if row["after_json"] else {}
    if row["kind"] == "update":
        names = row["changed_fields"]
    else:  # a whole record: its non-empty fields
        names = [name for name, value in (after or before).items() if value not in (None, "")]
    return ChangeSample(
        record_key=row["record_key"],
        kind=row["kind"],
        fields=tuple(FieldChange(n, _text(before.get(n)), _text(after.get(n))) for n in names),
    )


def _text(value: Any) -> str | None:
    """JSON values as users read them: text as is, numbers and flags as JSON writes them."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def render_html(data: ReportData) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("run.html").render(report=data)


def write_report(data: ReportData, out_dir: Path) -> tuple[Path, Path]:
    """Write `<run_id>.html` and `<run_id>.json` into `out_dir`; returns both paths."""
    private_dir(out_dir)
    html_path = out_dir / f"{data.run_id}.html"
    json_path = out_dir / f"{data.run_id}.json"
    write_text(json_path, json.dumps(data.as_json(), indent=2) + "\n")
    write_text(html_path, render_html(data))
    return html_path, json_path


def write_text(path: Path, text: str) -> None:
    """A report file, written whole and private (0600: it holds personal data)."""
    write_private(path, text)
