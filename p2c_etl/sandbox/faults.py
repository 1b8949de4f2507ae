"""Switchable faults: throttling, server errors, slow pages and refused records.

`Faults` is what a test or `POST /_sandbox/faults` sets; both servers share one object and
read it on every data request, so a change takes effect at once. `FaultGate` is one server's
running state of those faults (its request count, throttle window and random stream). Faults
apply to the data endpoints only, never to the token endpoint or `/_sandbox/*`. Tests use
the counted faults, which refuse the same requests on a fast machine and on a loaded one.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from p2c_etl.sandbox.values import text


@dataclass
class Faults:
    """What goes wrong, and how often.

    Counted faults (what tests use: the same requests are refused however fast the machine):

    - `throttle_every` / `fail_every`: every n-th data request a server receives (the n-th,
      2n-th, …, counted from when the value was set) is answered 429 / 503. 0 = off.
    - `throttle_next` / `fail_next`: the next n data requests (both servers together) are
      answered 429 / 503; the count goes down as they are used. 0 = off.
    - `retry_after`: the `Retry-After` (whole seconds) of those answers and of `error_rate`.

    Timed and random faults (for people trying things out):

    - `throttle_requests` / `throttle_window`: after N data requests within a window of that
      many seconds, answer 429 with `Retry-After` (whole seconds to the window's end, at
      least 1) until the window has passed. 0 = off.
    - `error_rate`: this fraction of data requests is answered 503 with `Retry-After`,
      drawn from `random.Random(seed)`.
    - `page_delay`: seconds to wait before answering a GET.

    And `reject`: field → value; a record written with that field equal to that value is
    refused with 400 naming the field and value (the record as it would be stored is
    compared as text: `Yes`, `42`, `true`, a decimal(19,4) as `12.5000`). In a change set
    or `UpsertMultiple` the refusal fails the whole request, as any failing record does.
    """

    throttle_every: int = 0
    fail_every: int = 0
    throttle_next: int = 0
    fail_next: int = 0
    retry_after: int = 1
    throttle_requests: int = 0
    throttle_window: float = 1.0
    error_rate: float = 0.0
    seed: int = 0
    page_delay: float = 0.0
    reject: dict[str, str] = field(default_factory=dict)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set the given fields; a wrong name or type is a ValueError and changes nothing."""
        checked = {name: _checked(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rejection(self, record: Mapping[str, Any]) -> str | None:
        """Why `record` is refused by the `reject` fault, or None."""
        for name, value in dict(self.reject).items():
            if name in record and record[name] is not None and text(record[name]) == value:
                return f"Record refused by the sandbox reject fault: {name} = {value!r}"
        return None


_NUMBERS: dict[str, type] = {
    "throttle_every": int,
    "fail_every": int,
    "throttle_next": int,
    "fail_next": int,
    "retry_after": int,
    "throttle_requests": int,
    "seed": int,
    "throttle_window": float,
    "error_rate": float,
    "page_delay": float,
}


def _checked(name: str, value: Any) -> Any:
    if name == "reject":
        if not isinstance(value, Mapping):
            raise ValueError("reject must be an object of field name to value")
        return {str(k): v if isinstance(v, str) else text(v) for k, v in value.items()}
    if name not in _NUMBERS:
        known = ", ".join(f.name for f in fields(Faults))
        raise ValueError(f"unknown fault {name!r} (known: {known})")
    kind = _NUMBERS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number")
    if value < 0 or (name == "error_rate" and value > 1):
        raise ValueError(f"{name} is out of range: {value}")
    return kind(value)


@dataclass(frozen=True)
class Refusal:
    """A data request answered by a fault instead of the service."""

    status: int
    retry_after: int
    message: str


_NEXT = threading.Lock()
"""Guards the `*_next` counts, which both servers' gates use up."""
_UNAVAILABLE = "The service is temporarily unavailable (sandbox fault)."


class FaultGate:
    """One server's request count, throttle window and random stream over the shared
    `Faults`."""

    def __init__(self, faults: Faults, clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = faults
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -math.inf
        self._count = 0
        self._every = (faults.throttle_every, faults.fail_every)
        self._seen = 0
        self._seed = faults.seed
        self._random = random.Random(faults.seed)

    def check(self) -> Refusal | None:
        """Count one data request; a Refusal when a fault answers it."""
        with self._lock:
            return self._throttled() or self._counted() or self._failed()

    def _counted(self) -> Refusal | None:
        """The counted faults: the next n requests, every n-th request."""
        faults = self.faults
        every = (faults.throttle_every, faults.fail_every)
        if every != self._every:
            self._every, self._seen = every, 0
        self._seen += 1
        wait = faults.retry_after
        with _NEXT:
            if faults.throttle_next > 0:
                faults.throttle_next -= 1
                return Refusal(429, wait, "Rate limit is exceeded (sandbox fault: throttle_next).")
            if faults.fail_next > 0:
                faults.fail_next -= 1
                return Refusal(503, wait, _UNAVAILABLE)
        if faults.throttle_every and self._seen % faults.throttle_every == 0:
            return Refusal(429, wait, "Rate limit is exceeded (sandbox fault: throttle_every).")
        if faults.fail_every and self._seen % faults.fail_every == 0:
            return Refusal(503, wait, _UNAVAILABLE)
        return None

    def _throttled(self) -> Refusal | None:
        limit, window = self.faults.throttle_requests, self.faults.throttle_window
        if limit <= 0:
            self._window_start, self._count = -math.inf, 0
            return None
        now = self._clock()
        if now - self._window_start >= window:
            self._window_start, self._count = now, 0
        self._count += 1
        if self._count <= limit:
            return None
        wait = max(1, math.ceil(self._window_start + window - now))
        message = (
            f"Number of requests exceeded the limit of {limit} over time window of "
            f"{window:g} seconds."
        )
        return Refusal(429, wait, message)

    def _failed(self) -> Refusal | None:
        rate = self.faults.error_rate
        if rate <= 0:
            return None
        if self.faults.seed != self._seed:
            self._seed = self.faults.seed
            self._random = random.Random(self._seed)
        if self._random.random() < rate:
            return Refusal(503, self.faults.retry_after, _UNAVAILABLE)
        return None
