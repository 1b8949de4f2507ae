"""Files that hold personal data — the warehouse and its WAL, run and reconcile reports — are
created readable by their owner only: files 0600, folders 0700. Files and folders that exist
already keep their mode (an operator may have opened them up on purpose).

    private_dir(path)           the folder and its missing parents, those made 0700
    write_private(path, data)   a file written whole, atomically, 0600
    PRIVATE_UMASK               held while the warehouse is open (`Warehouse.open`): DuckDB
                                makes the file, its WAL and its spill folder itself, when it
                                likes, so whatever the process creates meanwhile is private
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Make `path` and any missing parent, each made 0700; returns `path`."""
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=PRIVATE_DIR)
            os.chmod(folder, PRIVATE_DIR)  # exact, whatever the umask
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` through a 0600 temporary file beside it, renamed
    over it: a reader sees the old file or the new one, never half of one."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _SharedUmask:
    """The process's umask is one for all threads: the private one is set while any holder
    holds it, and the one before is put back when the last lets go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._before = 0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._before = os.umask(_PRIVATE_UMASK)
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                os.umask(self._before)


PRIVATE_UMASK = _SharedUmask()
