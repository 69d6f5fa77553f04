"""Bring any clickstream in: a CSV or Parquet events file with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from recsys.data.dataset import Dataset
from recsys.data.schema import REQUIRED_COLUMNS
from recsys.errors import DataError


def load_events_file(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    timestamp_unit: str = "s",
) -> Dataset:
    """Load an events file into a :class:`Dataset`.

    Args:
        path: ``.csv``/``.csv.gz``/``.tsv`` or ``.parquet`` file.
        columns: Mapping from schema column (``user_id``, ``item_id``, ``timestamp``,
            ``event_type``, ``value``, ``session_id``) to the file's column name.
        name: Dataset name (default: the file stem).
        items: Optional item side information indexed by item id.
        users: Optional user context indexed by user id.
        timestamp_unit: Unit of a numeric timestamp column; date strings are parsed as UTC.

    Raises:
        DataError: The file is missing, unreadable, or lacks a mapped column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: events file not found")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep)
    except Exception as exc:
        raise DataError(f"{path}: cannot read events file: {exc}") from exc
    mapping = dict(columns or {})
    absent = [source for source in mapping.values() if source not in frame.columns]
    if absent:
        raise DataError(
            f"{path}: mapped column(s) {absent} not in the file; found {list(frame.columns)}"
        )
    frame = frame.rename(columns={source: target for target, source in mapping.items()})
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {missing}; found {list(frame.columns)} "
            "(map them with columns={'user_id': '<your column>', ...})"
        )
    ts = frame["timestamp"]
    if not pd.api.types.is_numeric_dtype(ts):
        parsed = pd.to_datetime(ts, utc=True, errors="coerce")
        if parsed.isna().any():
            raise DataError(f"{path}: column 'timestamp' has values that are not dates")
        frame["timestamp"] = parsed.astype("int64") / 1e9
    elif timestamp_unit != "s":
        frame["timestamp"] = pd.to_timedelta(ts, unit=timestamp_unit).dt.total_seconds()
    return Dataset(
        name=name or path.name.split(".")[0],
        interactions=frame,
        items=items if items is not None else pd.DataFrame(),
        users=users if users is not None else pd.DataFrame(),
    )
