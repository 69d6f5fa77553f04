"""The event / interaction schema every loader produces and every stage consumes.

An interaction frame has one row per event with these columns:

============  ========  ==========================================================
column        dtype     meaning
============  ========  ==========================================================
user_id       string    external user id
item_id       string    external item id
timestamp     float64   Unix seconds (UTC)
event_type    string    e.g. ``rating``, ``click``, ``view``, ``purchase``
value         float32   rating, dwell time, 1.0 for implicit events
session_id    string    optional; empty when unknown
============  ========  ==========================================================

Any further columns are kept as request context (e.g. ``device``, ``referrer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys.errors import DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")
OPTIONAL_DEFAULTS: dict[str, object] = {"event_type": "interaction", "value": 1.0, "session_id": ""}
EVENT_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *OPTIONAL_DEFAULTS)


def validate_interactions(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check an interaction frame against the schema and normalise its dtypes.

    Args:
        frame: Raw frame with at least ``user_id``, ``item_id`` and ``timestamp``.
        source: Where the frame came from (a file path); named in every error.

    Returns:
        A new frame with the schema's columns first, ids as strings, ``timestamp`` float64
        and ``value`` float32, sorted stably by timestamp.

    Raises:
        DataError: A required column is missing, or a value is null / not numeric / negative.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {missing}; found columns {list(frame.columns)}"
        )
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        # e.g. a rename onto a name the frame already had: say so instead of failing later
        # with pandas' "truth value of a Series is ambiguous"
        raise DataError(
            f"{source}: column(s) {repeated} appear more than once; found columns "
            f"{list(frame.columns)} (read files with recsys.data.read_events, where a mapping "
            "displaces the file's own column)"
        )
    out = frame.copy()
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in out.columns:
            out[column] = default
    for column in ("user_id", "item_id"):
        if out[column].isna().any():
            row = int(np.flatnonzero(out[column].isna().to_numpy())[0])
            raise DataError(f"{source}: column '{column}' has an empty value (row {row})")
        out[column] = _as_id_strings(out[column])
    out["timestamp"] = _numeric(out["timestamp"], "timestamp", source).astype(np.float64)
    out["value"] = _numeric(out["value"], "value", source).astype(np.float32)
    if (out["timestamp"] < 0).any():
        raise DataError(f"{source}: column 'timestamp' has negative values")
    out["event_type"] = out["event_type"].fillna(OPTIONAL_DEFAULTS["event_type"]).astype(str)
    out["session_id"] = out["session_id"].fillna("").astype(str)
    extra = [c for c in out.columns if c not in EVENT_COLUMNS]
    out = out[[*EVENT_COLUMNS, *extra]]
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _as_id_strings(column: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(column) and (column == column.round()).all():
        column = column.astype(np.int64)
    return column.astype(str)


def _numeric(column: pd.Series, name: str, source: str) -> pd.Series:
    converted = pd.to_numeric(column, errors="coerce")
    bad = converted.isna() & column.notna() | column.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: column '{name}' must be numeric; row {row} has {column.iloc[row]!r}"
        )
    return converted


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Raise :class:`DataError` naming ``source`` if ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {missing}; found columns {list(frame.columns)}"
        )
