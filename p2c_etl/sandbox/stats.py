"""What one server was asked and answered: requests per endpoint, records, statuses.

`requests` counts HTTP requests by endpoint key (`GET accounts`, `POST $batch`,
`POST accounts/UpsertMultiple`); the requests inside a `$batch` are counted apart, under
`batch_operations`, so `requests` stays the number of round trips. `records_written` counts
committed record writes only (a rolled-back change set writes none). `records_returned`
counts the records the server returned per entity set (what a delta read saved shows here).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._operations: Counter[str] = Counter()
        self._status: Counter[str] = Counter()
        self._read = 0
        self._returned: Counter[str] = Counter()
        self._written = 0

    def request(self, key: str) -> None:
        with self._lock:
            self._requests[key] += 1

    def operation(self, key: str) -> None:
        with self._lock:
            self._operations[key] += 1

    def status(self, status: int) -> None:
        with self._lock:
            self._status[str(status)] += 1

    def read(self, records: int, entity: str | None = None) -> None:
        with self._lock:
            self._read += records
            if entity is not None:
                self._returned[entity] += records

    def written(self, records: int) -> None:
        with self._lock:
            self._written += records

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "batch_operations": dict(self._operations),
                "records_read": self._read,
                "records_returned": dict(self._returned),
                "records_written": self._written,
                "status": dict(self._status),
            }

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._operations.clear()
            self._status.clear()
            self._returned.clear()
            self._read = self._written = 0
