"""Where the contracts, report templates and demo fixtures live.

In an installed wheel they are copied under `p2c_etl/_data/`; in a source checkout
(editable install or tests run from the tree) they are the top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "_data"
_SOURCE_ROOT = _PACKAGE.parent


def _first_existing(installed: Path, source: Path) -> Path:
    if installed.is_dir():
        return installed
    if source.is_dir():
        return source
    raise FileNotFoundError(f"p2c-etl is installed without its data folder: {installed}")


def contracts_dir() -> Path:
    """The folder of contract files, one sub-folder per system."""
    return _first_existing(_INSTALLED / "contracts", _SOURCE_ROOT / "contracts")


def templates_dir() -> Path:
    """The folder of Jinja report templates."""
    return _first_existing(_INSTALLED / "templates", _SOURCE_ROOT / "reports" / "templates")


def demo_fixtures_dir() -> Path:
    """The demo data: `crm/` and `erp/` in the files-connector layout."""
    return _first_existing(
        _INSTALLED / "fixtures" / "demo", _SOURCE_ROOT / "data" / "fixtures" / "demo"
    )
