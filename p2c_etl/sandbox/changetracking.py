"""Dataverse change tracking: `Prefer: odata.track-changes`, delta links and `$deltatoken`.

    GET accounts?$select=name           Prefer: odata.track-changes
        every record, paged as usual, with `Preference-Applied: odata.track-changes`; the
        last page carries `@odata.deltaLink` (`accounts?$select=name&$deltatoken=<token>`)
    GET accounts?$select=name&$deltatoken=<token>
        the records created or changed since the token (oldest change first), then the
        records deleted since it as `{"@odata.context": ".../$metadata#accounts/$deletedEntity",
        "id": "<guid>", "reason": "deleted"}`; paged too, the last page with a new delta link

As the service documents, `$filter`, `$orderby`, `$expand` and `$top` are refused (400) with
change tracking. A token names the store version it was issued at; a read is bounded by the
version at its first page, so a record written while a client pages is reported by the next
delta, never lost. A token expires (400, "Version stamp associated with the client has
expired. Please perform a full sync.", as the service answers) when `expire_tokens()` was
called after it was issued, or when more than `ttl` record writes were committed since. A
table can be switched out of change tracking (`ChangeTrackingEnabled` false in its
EntityDefinitions): the preference is then not applied (a plain read, no delta link) and a
delta token for it is refused.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from p2c_etl.sandbox.entitynames import logical_name
from p2c_etl.sandbox.jsonout import dataverse_date, dumps
from p2c_etl.sandbox.options import check_options
from p2c_etl.sandbox.protocol import BAD_QUERY, ApiRequest, ApiResponse, ODataError, json_response
from p2c_etl.sandbox.query import Shape
from p2c_etl.sandbox.store import Table

TRACK_CHANGES = "odata.track-changes"
EXPIRED = "Version stamp associated with the client has expired. Please perform a full sync."
_REFUSED_OPTIONS = ("$filter", "$orderby", "$expand", "$top")
_DELTA_OPTIONS = frozenset({"$select", "$deltatoken", "$skiptoken"})
_DEFAULT_PAGE = 5000


class ChangeTracking:
    """Which tables track changes, and which delta tokens still hold (thread-safe)."""

    def __init__(self, ttl: int | None = None, disabled: Iterable[str] = ()) -> None:
        if ttl is not None and ttl < 0:
            raise ValueError("delta_token_ttl must be 0 or more record writes")
        self._lock = threading.Lock()
        self.ttl = ttl
        self._disabled = set(disabled)
        self._serial = 0
        self._floor = 0

    def enabled(self, entity_set: str) -> bool:
        with self._lock:
            return entity_set not in self._disabled

    def switch(self, entity_set: str, on: bool) -> None:
        """Turn change tracking on or off for one entity set."""
        with self._lock:
            (self._disabled.discard if on else self._disabled.add)(entity_set)

    def expire_tokens(self) -> None:
        """Every delta token issued so far is refused from now on."""
        with self._lock:
            self._floor = self._serial + 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"disabled": sorted(self._disabled), "delta_token_ttl": self.ttl}

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `{"enabled": {"accounts": false}, "expire_tokens": true,
        "delta_token_ttl": 5}` (each key optional), as `POST /_sandbox/change-tracking` does."""
        unknown = sorted(set(changes) - {"enabled", "expire_tokens", "delta_token_ttl"})
        if unknown:
            raise ValueError(f"unknown change-tracking setting {unknown[0]!r}")
        enabled = changes.get("enabled", {})
        if not isinstance(enabled, dict) or not all(isinstance(v, bool) for v in enabled.values()):
            raise ValueError("enabled must map entity set names to true or false")
        ttl = changes.get("delta_token_ttl", self.ttl)
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
            raise ValueError("delta_token_ttl must be a whole number of record writes, or null")
        for name, on in enabled.items():
            self.switch(str(name), on)
        with self._lock:
            self.ttl = ttl
        if changes.get("expire_tokens"):
            self.expire_tokens()

    def issue(self, version: int) -> str:
        with self._lock:
            self._serial += 1
            return f"{version}!{self._serial}"

    def redeem(self, token: str, current: int) -> int:
        """The store version `token` was issued at; 400 when it is malformed or expired."""
        version, _, serial = token.partition("!")
        if not (version.isdigit() and serial.isdigit()) or int(version) > current:
            raise ODataError(400, f"The delta token '{token}' is not valid.", BAD_QUERY)
        with self._lock:
            expired = int(serial) < self._floor or (
                self.ttl is not None and current - int(version) > self.ttl
            )
        if expired:
            raise ODataError(400, EXPIRED, BAD_QUERY)
        return int(version)


def applies(req: ApiRequest, table: Table, tracking: ChangeTracking) -> bool:
    """Whether `req` is a tracked read: a delta token or the page token of a tracked read
    (refused if the table does not track changes), or the preference on a table that tracks
    changes (on one that does not, the preference is not applied: a plain read)."""
    if "$deltatoken" in req.query or "!" in req.query.get("$skiptoken", ""):
        return True
    return req.prefers(TRACK_CHANGES) is not None and tracking.enabled(table.name)


def preferences(req: ApiRequest) -> str | None:
    """`Preference-Applied` of a tracked page: the preference (not on a delta) and the
    page size."""
    given = [] if "$deltatoken" in req.query else [TRACK_CHANGES]
    raw = req.prefers("odata.maxpagesize")
    if raw is not None and raw.isdigit() and int(raw) > 0:
        given.append(f"odata.maxpagesize={min(int(raw), _DEFAULT_PAGE)}")
    return ",".join(given) or None


def check_request(req: ApiRequest, table: Table, tracking: ChangeTracking) -> None:
    """Refuse a tracked read of a table that does not track changes, and the query options
    change tracking does not allow (as the service words it)."""
    if not tracking.enabled(table.name):
        message = f"Change tracking is not enabled for the entity '{logical_name(table.name)}'."
        raise ODataError(400, message, BAD_QUERY)
    for name in _REFUSED_OPTIONS:
        if name in req.query:
            message = (
                f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.'
            )
            raise ODataError(400, message, BAD_QUERY)
    check_options(req, _DELTA_OPTIONS)


def tracked_page(
    req: ApiRequest, table: Table, tracking: ChangeTracking, shape: Shape, current: int
) -> tuple[ApiResponse, int]:
    """A page of a tracked read (the first read or a delta) and how many records it holds.
    The caller holds the store's lock and has checked `req` (`check_request`)."""
    delta = req.query.get("$deltatoken")
    since = tracking.redeem(delta, current) if delta is not None else None
    phase, after, upto = _position(req.query.get("$skiptoken"), current, since is not None)
    size = _page_size(req)
    records: list[dict[str, Any]] = []
    if since is None:
        rows = list(itertools.islice(table.rows_after(after), size + 1))
        more = len(rows) > size
        records = [shape(r) for r in rows[:size]]
        next_token = f"r{rows[size - 1].seq}!{upto}" if more else None
    else:
        context = f"{req.root}$metadata#{table.name}/$deletedEntity"
        records, next_token = _delta_records(
            table, shape, (since, upto), (phase, after), size, context
        )
    body: dict[str, Any] = {"@odata.context": _context(req, table, since is not None)}
    body["value"] = records
    if next_token is not None:
        body["@odata.nextLink"] = _link(req, table, {"$skiptoken": next_token})
    else:
        token = tracking.issue(upto)
        body["@odata.deltaLink"] = _link(req, table, {"$deltatoken": token}, drop="$deltatoken")
    return json_response(200, dumps(body, dataverse_date)), len(records)


def _delta_records(
    table: Table,
    shape: Shape,
    window: tuple[int, int],
    position: tuple[str, int],
    size: int,
    context: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """New and changed records first (by version), then deleted ones; a page token names the
    phase and the last version returned."""
    (since, upto), (phase, after) = window, position
    records: list[dict[str, Any]] = []
    if phase == "c":
        changed = table.changed_after(max(since, after), upto)
        for row in changed[:size]:
            records.append(shape(row))
        if len(changed) > size:
            return records, f"c{changed[size - 1].version}!{upto}"
        after = since
    deleted = table.deleted_after(max(since, after), upto)
    room = size - len(records)
    for _, record_id in deleted[:room]:
        records.append({"@odata.context": context, "id": record_id, "reason": "deleted"})
    if len(deleted) > room:
        last = deleted[room - 1][0] if room else max(since, after)
        return records, f"d{last}!{upto}"
    return records, None


def _position(raw: str | None, current: int, delta: bool) -> tuple[str, int, int]:
    """(phase, after, upto) from a tracked page token: `r<seq>` (the first read), `c<version>`
    (changed records) or `d<version>` (deleted ones), then `!<upto>`."""
    if raw is None:
        return ("c" if delta else "r"), 0, current
    head, _, upto = raw.partition("!")
    phase, after = head[:1], head[1:]
    valid = phase in ("c", "d") if delta else phase == "r"
    if not (valid and after.isdigit() and upto.isdigit()):
        raise ODataError(400, f"Invalid $skiptoken {raw!r}", BAD_QUERY)
    return phase, int(after), int(upto)


def _page_size(req: ApiRequest) -> int:
    raw = req.prefers("odata.maxpagesize")
    if raw is None or not raw.isdigit() or int(raw) == 0:
        return _DEFAULT_PAGE
    return min(int(raw), _DEFAULT_PAGE)


def _context(req: ApiRequest, table: Table, delta: bool) -> str:
    return f"{req.root}$metadata#{table.name}" + ("/$delta" if delta else "")


def _link(req: ApiRequest, table: Table, extra: dict[str, str], drop: str = "") -> str:
    kept = {k: v for k, v in req.query.items() if k not in ("$skiptoken", drop)}
    query = urlencode({**kept, **extra}, quote_via=quote, safe="$,'()")
    return f"{req.root}{table.name}?{query}"
