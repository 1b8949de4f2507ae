"""One run at a time: an exclusive lock on `<warehouse>.lock`, held for a whole run.

The operating system releases the lock when its process ends, however it ends, so a lock
left by a killed run is simply taken over by the next one. The file also names the holder,
for the message of a second run (exit 3) and for `p2c history`. Reconciliations do not take
it: they read beside a run, sharing the warehouse a stage at a time. Each holds a lock of its
own instead, `<warehouse>.<reconciliation id>.lock`, so that a later command can tell a
reconciliation whose process died (its lock is free) from one still going.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from p2c_etl.errors import LockedError
from p2c_etl.warehouse.private import PRIVATE_FILE, private_dir


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".lock")


def reconcile_lock_path(warehouse: Path, reconciliation_id: str) -> Path:
    return warehouse.with_name(f"{warehouse.name}.{reconciliation_id}.lock")


class RunLock:
    """`with RunLock(warehouse, "p2c run <id>"):` — or LockedError naming the holder.

    With `path`, the lock is that file instead of the run lock, and it is removed on exit
    (a reconciliation's own lock)."""

    def __init__(self, warehouse: Path, holder: str, path: Path | None = None) -> None:
        self.path, self.holder = path or lock_path(warehouse), holder
        self._remove = path is not None
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
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
            if self._remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def held_by(path: Path) -> str | None:
    """Who holds the lock file `path` (its note), or None when no live process does.

    Asks with a shared lock for a moment: use it on a reconciliation's lock, which no one
    takes but its reconciliation, never on the run lock (a run starting at that very moment
    would find it taken)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            note = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return note or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def reconciliations_in_progress(warehouse: Path) -> list[str]:
    """The notes of the reconciliations whose process is alive (each holds its own lock)."""
    found = sorted(warehouse.parent.glob(f"{warehouse.name}.rec-*.lock"))
    return [note for note in map(held_by, found) if note is not None]


def run_in_progress(warehouse: Path) -> str | None:
    """The note of the run holding the run lock (`p2c run <id> (pid …, since …)`), or None.

    Never touches the lock, so that it cannot stand in the way of a run starting: a run's
    note is emptied when the run ends, and a note left by a killed run names a pid that is
    gone."""
    try:
        note = lock_path(warehouse).read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    pid = re.search(r"\(pid (\d+),", note)
    return note if note and (pid is None or _alive(int(pid[1]))) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
