"""What a drift run compares: events and logged decisions, from files or from windows of the logs.

Two sources, one shape. Either side of a run is

* **files** (``--reference R --current C``): each a CSV / Parquet / JSON-lines file or a
  folder of JSON-lines. A file holds *events* (``user_id``, ``item_id``, ``timestamp``, ...)
  or *logged decisions* (``timestamp``, ``items``, ...); the kind is read from its columns.
  One side may name an events file and a decisions file (repeat the option).
* **a window of the logs** (``--log DIR --reference-window W``) with the layout::

      DIR/events/      an EventLog directory (events-000001.jsonl, ...)
      DIR/decisions/   decision JSON lines (*.jsonl, one record per line, append-only)

  Windows are ``A..B`` (half-open ``[A, B)``, UTC), with ``A``/``B`` an ISO date or datetime,
  ``now`` or ``now-7d``; or ``last-7d`` (= ``now-7d..now``). Units: s, m, h, d, w.

Every problem is a :class:`~recsys.errors.DataError` naming the file, window or column, which the
command line turns into exit code 2.

Decision records are read tolerantly: absent optional keys become missing values, unknown keys
are ignored, a stage absent from ``timings_ms`` is simply not compared. Both the log format
(``user_id``, external item ids) and the in-process :class:`~recsys.decision.DecisionRecord`
(``user``, dense item ids) are accepted.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.schema import EVENT_COLUMNS, REQUIRED_COLUMNS, validate_interactions
from recsys.errors import DataError
from recsys.features.events import SEGMENT_PATTERN, EventLog, TornRecordWarning

DECISION_REQUIRED: tuple[str, ...] = ("timestamp", "items")
LATENCY_PREFIX = "latency_"
CONTEXT_PREFIX = "ctx_"
_CHUNK_ROWS = 20_000  # JSON records per chunk: decoded dicts are ~10x their columns
_TABLE_CHUNK_ROWS = 200_000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_RELATIVE = re.compile(r"^now(?:-(\d+(?:\.\d+)?)([smhdw]))?$")
_LAST = re.compile(r"^last-(\d+(?:\.\d+)?)([smhdw])$")
_DECISION_SCALARS = (
    "decision_id", "user_id", "session_id", "consent", "experiment", "variant", "bucket",
    "source", "diversity", "exploration", "fallback", "filled",
)  # fmt: skip
_DECISION_LISTS = ("items", "scores", "propensities", "reasons")


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` in Unix seconds (UTC).

    Attributes:
        start: First second included.
        end: First second excluded.
        text: The window as the user wrote it.
    """

    start: float
    end: float
    text: str

    def __str__(self) -> str:
        return f"{self.text} [{_iso(self.start)}, {_iso(self.end)})"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(token: str, now: float) -> float:
    """One end of a window: ``now``, ``now-7d`` or an ISO date / datetime (naive = UTC)."""
    token = token.strip()
    match = _RELATIVE.match(token)
    if match:
        amount, unit = match.groups()
        return now - (float(amount) * _UNITS[unit] if amount else 0.0)
    try:
        moment = datetime.fromisoformat(token.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DataError(
            f"window: cannot read {token!r}; use an ISO date (2026-01-01), a datetime "
            "(2026-01-01T06:00), 'now' or 'now-7d'"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_window(text: str, now: float | None = None) -> Window:
    """Parse ``A..B`` or ``last-7d`` into a :class:`Window`.

    Args:
        text: The window (see the module docstring).
        now: "Now" in Unix seconds (default: the current time); pin it to re-run a schedule.

    Raises:
        DataError: The text is not a window, or it is empty (``end <= start``).
    """
    now = datetime.now(tz=UTC).timestamp() if now is None else float(now)
    text = text.strip()
    last = _LAST.match(text)
    if last:
        amount, unit = last.groups()
        start, end = now - float(amount) * _UNITS[unit], now
    elif ".." in text:
        left, right = text.split("..", 1)
        start, end = parse_time(left, now), parse_time(right, now)
    else:
        raise DataError(
            f"window {text!r}: expected 'A..B' (e.g. 2026-01-01..2026-01-08, now-14d..now-7d) "
            "or 'last-7d'"
        )
    if end <= start:
        raise DataError(f"window {text!r}: ends before it starts ({_iso(start)} .. {_iso(end)})")
    return Window(start, end, text)


# --------------------------------------------------------------------------- the input


@dataclass
class DriftInput:
    """One side of a drift run (reference or current).

    Attributes:
        label: ``reference`` or ``current``.
        source: Where the data came from (files, or the log folder and window), for messages.
        events: Events in the side's window, schema columns plus context columns; or ``None``.
        decisions: Logged decisions in the normal form of :func:`decisions_frame`; or ``None``.
        outcome_events: Events used to find outcomes of the decisions (for windows: the
            window plus the outcome horizon after it); defaults to ``events``.
        window: The time window, when the side is a window of the logs.
        items: Optional item attributes indexed by item id (diversity, item columns).
    """

    label: str
    source: str
    events: pd.DataFrame | None = None
    decisions: pd.DataFrame | None = None
    outcome_events: pd.DataFrame | None = None
    window: Window | None = None
    items: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.outcome_events is None:
            self.outcome_events = self.events

    @property
    def n_events(self) -> int:
        """Events in the window (0 without events)."""
        return 0 if self.events is None else len(self.events)

    @property
    def n_decisions(self) -> int:
        """Decisions in the window (0 without decisions)."""
        return 0 if self.decisions is None else len(self.decisions)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the report."""
        out: dict[str, Any] = {
            "source": self.source,
            "events": self.n_events,
            "decisions": self.n_decisions,
        }
        if self.window is not None:
            out["window"] = self.window.text
            out["start"] = _iso(self.window.start)
            out["end"] = _iso(self.window.end)
        return out


def from_frames(
    label: str,
    events: pd.DataFrame | None = None,
    decisions: pd.DataFrame | Iterable[Mapping[str, Any]] | None = None,
    source: str | None = None,
    outcome_events: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> DriftInput:
    """A :class:`DriftInput` from in-memory frames (validated like files are).

    Args:
        label: ``reference`` or ``current``.
        events: Events in the :mod:`recsys.data.schema` layout (extra columns are context).
        decisions: Decision records (dicts as logged) or a frame of them.
        source: Name used in messages (default: ``"<label> frames"``).
        outcome_events: Events for the outcome join (default: ``events``).
        items: Item attributes indexed by item id.

    Raises:
        DataError: Both are missing or empty, or a required column is absent.
    """
    source = source or f"{label} frames"
    ev = None if events is None else _validate_events(events, source)
    dec = None
    if decisions is not None:
        frame = decisions if isinstance(decisions, pd.DataFrame) else pd.DataFrame(list(decisions))
        dec = decisions_frame(frame, source)
    _require_rows(label, source, ev, dec)
    outcomes = None if outcome_events is None else _validate_events(outcome_events, source)
    return DriftInput(label, source, ev, dec, outcomes, items=items)


def _require_rows(
    label: str, source: str, events: pd.DataFrame | None, decisions: pd.DataFrame | None
) -> None:
    if events is None and decisions is None:
        raise DataError(f"{label} ({source}): neither events nor decisions")
    if (events is None or events.empty) and (decisions is None or decisions.empty):
        raise DataError(f"{label} ({source}): empty (no events and no decisions)")


# --------------------------------------------------------------------------- files


def load_files(label: str, paths: Sequence[str | Path]) -> DriftInput:
    """Load one side from files: at most one events file and one decisions file.

    Args:
        label: ``reference`` or ``current``.
        paths: CSV (``.csv``, ``.csv.gz``, ``.tsv``), Parquet, JSON-lines files, an EventLog
            folder or a folder of decision JSON lines.

    Raises:
        DataError: A file is missing, unreadable, empty, of an unknown kind, or two files of
            the same kind were given.
    """
    if not paths:
        raise DataError(f"{label}: no file given")
    events: pd.DataFrame | None = None
    decisions: pd.DataFrame | None = None
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        kind, frame = _load_path(path)
        if frame.empty:
            raise DataError(f"{path}: no {kind} in the file ({label})")
        if kind == "events":
            if events is not None:
                raise DataError(f"{path}: a second events file for the {label} side")
            events = frame
        else:
            if decisions is not None:
                raise DataError(f"{path}: a second decisions file for the {label} side")
            decisions = frame
        names.append(str(path))
    source = ", ".join(names)
    return DriftInput(label, source, events, decisions)


def _load_path(path: Path) -> tuple[str, pd.DataFrame]:
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir():
        if any(SEGMENT_PATTERN.match(p.name) for p in path.iterdir()):
            return "events", read_event_log(path)
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise DataError(
                f"{path}: a folder without events-*.jsonl segments or *.jsonl decisions"
            )
        return "decisions", read_decision_log(path)
    name = path.name.lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        first = _first_record(path)
        if "items" in first:
            return "decisions", read_decision_log(path)
        if "item_id" in first:
            return "events", read_event_log(path)
        raise DataError(
            f"{path}: records have neither 'item_id' (events) nor 'items' (decisions); "
            f"found keys {sorted(first)}"
        )
    columns = _table_columns(path)
    if "items" in columns:
        return "decisions", decisions_frame(_read_table(path), str(path))
    if "item_id" in columns:
        chunks, offset = [], 0
        for chunk in _table_chunks(path):
            try:
                chunks.append(_validate_events(chunk, str(path)))
            except DataError as exc:
                if offset == 0:
                    raise
                raise DataError(f"{exc} (row numbers counted from row {offset})") from exc
            offset += len(chunk)
        frame = concat_categorical(chunks)
        return "events", frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    raise DataError(
        f"{path}: missing the columns of events {list(REQUIRED_COLUMNS)} or of decisions "
        f"{list(DECISION_REQUIRED)}; found columns {columns}"
    )


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def _csv_sep(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def _check_table_type(path: Path) -> None:
    if not _is_parquet(path) and not path.name.lower().endswith(
        (".csv", ".csv.gz", ".tsv", ".tsv.gz")
    ):
        raise DataError(f"{path}: unknown file type; use .parquet, .csv, .tsv or .jsonl")


def _table_columns(path: Path) -> list[str]:
    _check_table_type(path)
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, sep=_csv_sep(path), nrows=0).columns)
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def _read_table(path: Path) -> pd.DataFrame:
    return concat_categorical(list(_table_chunks(path)))


def _table_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The table in chunks of rows, strings read as categoricals where the reader can.

    A million events as Python strings take ~0.5 GB per copy; chunks keep the peak near the
    compact result.
    """
    _check_table_type(path)
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path)
            for batch in table.iter_batches(batch_size=_TABLE_CHUNK_ROWS):
                yield batch.to_pandas(strings_to_categorical=True)
            return
        reader = pd.read_csv(path, sep=_csv_sep(path), chunksize=_TABLE_CHUNK_ROWS)
        yield from reader
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def _first_record(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}: line 1 is not JSON ({exc})") from exc
                if not isinstance(record, dict):
                    raise DataError(f"{path}: line 1 is not a JSON object")
                return record
    raise DataError(f"{path}: empty file")


# --------------------------------------------------------------------------- events


def _validate_events(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("user", "item") if c in frame.columns])
    # the schema validator fills and casts columns; categoricals would refuse new values
    categorical = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if categorical:
        frame = frame.astype({c: object for c in categorical})
    if "timestamp" in frame.columns and not pd.api.types.is_numeric_dtype(frame["timestamp"]):
        parsed = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
        if parsed.isna().any():
            raise DataError(f"{source}: column 'timestamp' has values that are not times")
        frame = frame.assign(timestamp=parsed.astype("int64") / 1e9)
    return _compact(validate_interactions(frame, source))


def read_event_log(
    path: str | Path, start: float | None = None, end: float | None = None
) -> pd.DataFrame:
    """Events with ``start <= timestamp < end`` from an EventLog folder or one segment file.

    Streams the segments and builds the frame in chunks with categorical string columns, so a
    million events stay well under a gigabyte.
    """
    path = Path(path)
    if path.is_dir():
        records: Iterator[Mapping[str, Any]] = (
            e.to_record() for e in EventLog(path, fsync=False).read()
        )
    else:
        records = _jsonl_records(path)
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    chunks: list[pd.DataFrame] = []
    rows: list[Mapping[str, Any]] = []
    for record in records:
        ts = record.get("timestamp")
        if not isinstance(ts, (int, float)) or not lo <= ts < hi:
            continue
        rows.append(record)
        if len(rows) >= _CHUNK_ROWS:
            chunks.append(_event_chunk(rows))
            rows = []
    if rows:
        chunks.append(_event_chunk(rows))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    frame = concat_categorical(chunks)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: events without {missing}")
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _event_chunk(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    flat = []
    for record in rows:
        row = {k: v for k, v in record.items() if k != "context"}
        context = record.get("context") or {}
        for key, value in context.items():
            row.setdefault(key, value)
        flat.append(row)
    frame = pd.DataFrame.from_records(flat)
    for column in ("user_id", "item_id"):
        if column in frame:
            frame[column] = frame[column].astype(str)
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce").astype(np.float64)
    if "value" in frame:
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(np.float32)
    return _compact(frame)


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one JSON-lines file, streamed.

    A torn last record (a crash mid-write) is skipped with a warning; garbage before it is an
    error naming the line.
    """
    held: tuple[int, bytes] | None = None  # the last non-blank line is judged at the end
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if held is not None:
                yield _parse_line(path, *held)
            held = (number, line)
    if held is not None:
        try:
            yield _parse_line(path, *held)
        except DataError:
            warnings.warn(
                f"{path}: line {held[0]} is a torn record; skipped",
                TornRecordWarning,
                stacklevel=2,
            )


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path}: line {number} is not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {number} is not a JSON object")
    return record


# --------------------------------------------------------------------------- decisions


def read_decision_log(
    path: str | Path, start: float | None = None, end: float | None = None
) -> pd.DataFrame:
    """Decisions with ``start <= timestamp < end`` from a ``*.jsonl`` file or a folder of them."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    lo = -math.inf if start is None else start
    hi = math.inf if end is None else end
    chunks: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    for file in files:
        for number, record in enumerate(_jsonl_records(file), start=1):
            ts = record.get("timestamp")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                raise DataError(f"{file}: record {number} has no numeric 'timestamp'")
            if lo <= ts < hi:
                rows.append(record)
            if len(rows) >= _CHUNK_ROWS:
                chunks.append(decisions_frame(pd.DataFrame(rows), str(file)))
                rows = []
    if rows or not chunks:
        chunks.append(
            decisions_frame(pd.DataFrame(rows), str(path)) if rows else _empty_decisions()
        )
    return concat_categorical(chunks)


def _empty_decisions() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "decision_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype=np.float64),
            "items": pd.Series(dtype=object),
        }
    )
    return frame


def decisions_frame(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Normalise logged decisions into the frame the checks read.

    Output columns: ``decision_id``, ``timestamp`` (float seconds), ``user_id`` (str or
    missing), ``session_id``, ``consent``, ``experiment``, ``variant``, ``bucket``, ``source``,
    ``fallback``, ``filled``, ``items`` (list of str), ``scores`` / ``propensities`` (lists of
    float, when logged), ``reasons`` (list of str), one ``latency_<stage>`` column per stage of
    ``timings_ms`` and one ``ctx_<key>`` column per request-context key.

    ``timings_ms`` / ``context`` may be dicts, JSON strings (CSV) or flattened columns
    (``timings_ms.ranking``, ``context.device``); list columns may be lists, arrays or JSON
    strings.

    Raises:
        DataError: ``timestamp`` or ``items`` is missing, or a value cannot be read.
    """
    if frame.empty and not len(frame.columns):
        return _empty_decisions()
    if "user" in frame.columns:  # the in-process DecisionRecord names it ``user``
        if "user_id" in frame.columns:
            frame = frame.assign(
                user_id=frame["user_id"].where(frame["user_id"].notna(), frame["user"])
            )
        else:
            frame = frame.rename(columns={"user": "user_id"})
    missing = [c for c in DECISION_REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: decisions need column(s) {missing}; found columns {list(frame.columns)}"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    ts = frame["timestamp"]
    if not pd.api.types.is_numeric_dtype(ts):
        parsed = pd.to_datetime(ts, utc=True, errors="coerce")
        if parsed.isna().any():
            row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise DataError(f"{source}: decision row {row} has timestamp {ts.iloc[row]!r}")
        ts = parsed.astype("int64") / 1e9
    out["timestamp"] = ts.to_numpy(dtype=np.float64)
    if out["timestamp"].isna().any():
        raise DataError(f"{source}: column 'timestamp' has empty values")
    for column in _DECISION_SCALARS:
        if column in frame.columns:
            out[column] = frame[column].to_numpy()
    if "decision_id" not in out:
        out["decision_id"] = [f"d{i}" for i in range(len(frame))]
    out["decision_id"] = out["decision_id"].astype(str)
    if "user_id" in out:
        out["user_id"] = [None if _missing(u) else _id_str(u) for u in out["user_id"]]
    for column in _DECISION_LISTS:
        if column in frame.columns:
            out[column] = [_as_list(v, column, source, i) for i, v in enumerate(frame[column])]
    out["items"] = [[_id_str(i) for i in items] for items in out["items"]]
    for name, values in _nested(frame, "timings_ms", source).items():
        out[LATENCY_PREFIX + name] = pd.to_numeric(values, errors="coerce").astype(np.float64)
    for name, values in _nested(frame, "context", source).items():
        out[CONTEXT_PREFIX + name] = values
    return _compact(out)


def _id_str(value: Any) -> str:
    """An id as text; ``7.0`` (an integer id in a column with gaps) is ``"7"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_list(value: Any, column: str, source: str, row: int) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, (tuple, np.ndarray, pd.Series)):
        return list(value)
    if _missing(value):
        return []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise DataError(f"{source}: column '{column}' row {row} is not a JSON list") from exc
        if isinstance(parsed, list):
            return parsed
    raise DataError(f"{source}: column '{column}' row {row} must be a list, got {value!r}")


def _nested(frame: pd.DataFrame, key: str, source: str) -> dict[str, list[Any]]:
    """Sub-fields of a dict column (``timings_ms``) or of flattened ``key.name`` columns."""
    columns: dict[str, list[Any]] = {}
    n = len(frame)
    if key in frame.columns:
        for row, value in enumerate(frame[key]):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise DataError(f"{source}: column '{key}' row {row} is not JSON") from exc
            if _missing(value) or value is None:
                continue
            if not isinstance(value, Mapping):
                raise DataError(f"{source}: column '{key}' row {row} must be a mapping")
            for name, val in value.items():
                column = columns.get(str(name))
                if column is None:  # not setdefault: its default list would be built per row
                    column = columns[str(name)] = [None] * n
                column[row] = val
    prefix = key + "."
    for column in frame.columns:
        if isinstance(column, str) and column.startswith(prefix):
            columns[column[len(prefix) :]] = frame[column].tolist()
    return columns


# --------------------------------------------------------------------------- the logs


def load_log_window(
    label: str,
    log_dir: str | Path,
    window: Window,
    outcome_horizon_s: float = 0.0,
    now: float | None = None,
) -> DriftInput:
    """Load one side from a window of the logs under ``log_dir`` (see the module docstring).

    Args:
        label: ``reference`` or ``current``.
        log_dir: Folder holding ``events/`` and/or ``decisions/``.
        window: The side's window.
        outcome_horizon_s: Also read events this long after the window, to find the
            outcomes of its last decisions (capped at ``now``).
        now: Current time (default: the clock).

    Raises:
        DataError: The folder is missing, holds neither ``events/`` nor ``decisions/``, or a
            log that exists has no record in the window.
    """
    root = Path(log_dir)
    if not root.is_dir():
        raise DataError(f"--log {root}: folder not found")
    events_dir, decisions_dir = root / "events", root / "decisions"
    if not events_dir.is_dir() and not decisions_dir.is_dir():
        raise DataError(f"--log {root}: neither {events_dir.name}/ nor {decisions_dir.name}/ found")
    now = datetime.now(tz=UTC).timestamp() if now is None else now
    source = f"{root} {window}"
    events = outcomes = decisions = None
    if events_dir.is_dir():
        horizon_end = min(window.end + outcome_horizon_s, max(now, window.end))
        outcomes = read_event_log(events_dir, window.start, horizon_end)
        in_window = outcomes["timestamp"].to_numpy() < window.end
        events = outcomes[in_window].reset_index(drop=True)
        if events.empty:
            raise DataError(f"{label} window {window}: no events in {events_dir}")
    if decisions_dir.is_dir():
        decisions = read_decision_log(decisions_dir, window.start, window.end)
        if decisions.empty:
            raise DataError(f"{label} window {window}: no decisions in {decisions_dir}")
    return DriftInput(label, source, events, decisions, outcomes, window=window)


# --------------------------------------------------------------------------- compact frames


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """String columns as categoricals: a million events in tens of MB instead of hundreds."""
    for column in frame.columns:
        series = frame[column]
        if series.dtype == object and len(series):
            sample = series.iloc[: min(len(series), 1000)].dropna()
            if len(sample) and all(isinstance(v, str) for v in sample):
                frame[column] = series.astype("category")
    return frame


def concat_categorical(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate chunks, keeping categorical columns categorical (union of categories)."""
    if len(chunks) == 1:
        return chunks[0].reset_index(drop=True)
    columns = list(dict.fromkeys(c for chunk in chunks for c in chunk.columns))
    out: dict[str, Any] = {}
    for column in columns:
        parts = [
            chunk[column] if column in chunk else pd.Series([None] * len(chunk), dtype=object)
            for chunk in chunks
        ]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            out[column] = pd.api.types.union_categoricals(parts, ignore_order=True)
        else:
            parts = [
                p.astype(object) if isinstance(p.dtype, pd.CategoricalDtype) else p for p in parts
            ]
            out[column] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame({k: pd.Series(v).reset_index(drop=True) for k, v in out.items()})
