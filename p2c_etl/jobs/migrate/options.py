"""What a migration is asked to do (`MigrateOptions`) and how it shows its progress."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_CHUNK_ROWS = 100_000
Tick = Callable[[int], None]
Bars = Callable[[str, int], AbstractContextManager[Tick]]


def no_bars(flow: str, total: int) -> AbstractContextManager[Tick]:
    return nullcontext(lambda _: None)


@dataclass(frozen=True)
class MigrateOptions:
    source: Path
    flows: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    dry_run: bool = False
    resume: str | None = None
