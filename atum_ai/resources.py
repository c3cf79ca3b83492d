"""Where the top-level ``migrations/`` and ``prompts/`` folders live at run time.

A wheel carries them inside the package (hatch force-include -> ``atum_ai/_data/``); an
editable install or a source checkout reads them from the repository root.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    packaged = _PACKAGE_DIR / "_data" / name
    if packaged.is_dir():
        return packaged
    source = _PACKAGE_DIR.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"cannot find the {name}/ folder (looked in {packaged} and {source})")


def migrations_dir() -> Path:
    return data_dir("migrations")


def prompts_dir() -> Path:
    return data_dir("prompts")


def fixtures_dir() -> Path | None:
    """The demo fixtures ship only with a source checkout or the sdist."""
    try:
        return data_dir("fixtures")
    except FileNotFoundError:
        return None
