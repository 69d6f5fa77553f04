"""Where recsys keeps its download cache and where it looks for shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def project_root() -> Path | None:
    """The checkout this package runs from (editable install), or ``None`` when installed."""
    candidate = _PACKAGE_DIR.parents[1]
    if (candidate / "pyproject.toml").is_file() and (candidate / "src" / "recsys").is_dir():
        return candidate
    return None


def cache_dir() -> Path:
    """Download cache: ``$RECSYS_CACHE_DIR``, else ``<checkout>/data``, else ``~/.cache/recsys``."""
    if env := os.environ.get("RECSYS_CACHE_DIR"):
        return Path(env)
    root = project_root()
    return root / "data" if root else Path.home() / ".cache" / "recsys"


def shared_data_dirs() -> list[Path]:
    """Directories searched for datasets that are not fetched (in order).

    ``$RECSYS_DATA_DIR`` first, then ``$RECSYS_SHARED_DATA`` and the ``../shared/data`` folder
    beside the checkout.
    """
    dirs: list[Path] = []
    for var in ("RECSYS_DATA_DIR", "RECSYS_SHARED_DATA"):
        if env := os.environ.get(var):
            dirs.append(Path(env))
    root = project_root()
    if root is not None:
        dirs.append(root.parent / "shared" / "data")
    return dirs
