"""One run at a time: an exclusive lock on `<warehouse>.lock`, held for a whole run.

The operating system releases the lock when its process ends, however it ends, so a lock
left by a killed run is simply taken over by the next one. The file also names the holder,
for the message of a second run (exit 3). Reconciliations do not take it: they read beside a
run, sharing the warehouse a stage at a time.
"""

from __future__ import annotations

import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from p2c_etl.errors import LockedError


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".lock")


class RunLock:
    """`with RunLock(warehouse, "p2c run <id>"):` — or LockedError naming the holder."""

    def __init__(self, warehouse: Path, holder: str) -> None:
        self.path, self.holder = lock_path(warehouse), holder
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LockedError(
                f"another run holds the warehouse: {held}; this one does not start"
            ) from None
        note = f"{self.holder} (pid {os.getpid()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode("utf-8"), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
