"""Bring any clickstream in: events files in CSV / TSV / semicolon / gzip / Parquet.

:func:`read_events` turns one or more files into a frame in the :mod:`recsys.data.schema`
layout and a report of what it did. It is the reader behind :func:`load_events_file` and the
dataset registry (:mod:`recsys.data.registry`, ``recsys data add``):

* **format**: ``parquet``, or text with a separator that is given (``csv`` ``,``, ``tsv`` tab,
  ``semicolon`` ``;``, or ``separator=``) or sniffed from the first lines (``auto``); ``.gz``,
  ``.bz2`` and ``.xz`` files are decompressed on the fly.
* **columns**: a mapping schema column → file column; a file column already named like a
  schema column is used as is unless the mapping takes that schema column from elsewhere.
  Then the mapping wins and the file's own column is *displaced*: reported, dropped when it is
  all empty, else kept as ``file_<name>`` (a real log may carry a user id beside the session).
* **timestamps**: numbers in a unit (``s``, ``ms``, ``us``, ``ns``), date strings (ISO 8601,
  or ``date_format``) and Parquet timestamps all become Unix seconds (UTC).
* **anonymous sessions**: with no user column, or ``user_id`` mapped to the session column,
  or ``session_key="session"``, the session id is the key (each session is a "user"). A
  session gap derives session ids from each user's events instead.
* **errors** name the file, the column (schema name and file name) and the first bad row
  (``row`` counts data rows from 0; ``line`` is the line in a text file, header = line 1). With
  ``drop_invalid`` bad rows are dropped instead and counted by reason. Blank lines are
  always dropped and counted.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import logging
import lzma
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, split_genres
from recsys.data.schema import EVENT_COLUMNS, OPTIONAL_DEFAULTS
from recsys.errors import DataError

log = logging.getLogger(__name__)

Format = Literal["auto", "csv", "tsv", "semicolon", "parquet"]
TimestampUnit = Literal["s", "ms", "us", "ns"]
SessionKey = Literal["user", "session"]

FORMATS: tuple[str, ...] = ("auto", "csv", "tsv", "semicolon", "parquet")
SEPARATORS: dict[str, str] = {"csv": ",", "tsv": "\t", "semicolon": ";"}
SNIFFED_SEPARATORS: tuple[str, ...] = (",", "\t", ";", "|")
TIMESTAMP_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_OPENERS: dict[str, Callable[..., IO[Any]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_TEXT_SUFFIXES = {".tsv": "tsv", ".tab": "tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
# beyond this a Unix-seconds timestamp is after the year 5000: it is almost surely not seconds
_SECONDS_CEILING = 1e11


class DataWarning(UserWarning):
    """A data file was read, but something in it deserves a look (e.g. a displaced column)."""


# --------------------------------------------------------------------------- reading a table


@dataclass
class Table:
    """One file read into a frame, with how it was read.

    Attributes:
        path: The file.
        frame: Its rows; the index is the data row number (0 = first row after the header).
        format: ``parquet``, ``csv``, ``tsv``, ``semicolon`` or ``text`` (another separator).
        separator: The separator of a text file (``None`` for Parquet).
    """

    path: Path
    frame: pd.DataFrame
    format: str
    separator: str | None

    def where(self, row: int) -> str:
        """``row 3 (line 5)`` for a text file with a header, ``row 3`` for Parquet."""
        return f"row {row}" if self.separator is None else f"row {row} (line {row + 2})"

    def describe(self) -> str:
        r"""``clicks.tsv (tsv, separator '\t')``: the file and how it was read, for errors."""
        how = (
            self.format
            if self.separator is None
            else f"{self.format}, separator {self.separator!r}"
        )
        return f"{self.path} ({how})"


def detect_format(
    path: Path, fmt: str = "auto", separator: str | None = None
) -> tuple[str, str | None]:
    """The format and separator to read ``path`` with.

    Args:
        path: The file (its suffix decides ``auto``; a compression suffix is looked through).
        fmt: ``auto``, ``csv``, ``tsv``, ``semicolon`` or ``parquet``.
        separator: A separator that overrides the format's (text formats only).

    Returns:
        ``(format, separator)``; the separator is ``None`` for Parquet and for text files
        whose separator must be sniffed.

    Raises:
        DataError: An unknown format, or a separator given for Parquet.
    """
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; choose one of {list(FORMATS)}")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if fmt == "auto":
        if last in _PARQUET_SUFFIXES:
            fmt = "parquet"
        elif last in _TEXT_SUFFIXES and separator is None:
            fmt = _TEXT_SUFFIXES[last]
    if fmt == "parquet":
        if separator is not None:
            raise DataError(f"{path}: a separator makes no sense for a Parquet file")
        return "parquet", None
    if separator is not None:
        if len(separator) != 1:
            raise DataError(f"{path}: separator must be one character, got {separator!r}")
        named = {v: k for k, v in SEPARATORS.items()}
        return named.get(separator, "text"), separator
    if fmt in SEPARATORS:
        return fmt, SEPARATORS[fmt]
    return "auto", None


def _open_text(path: Path, encoding: str) -> IO[str]:
    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        return path.open(encoding=encoding, newline="")
    return io.TextIOWrapper(opener(path, "rb"), encoding=encoding, newline="")


def sniff_separator(path: Path, encoding: str = "utf-8", max_lines: int = 50) -> str:
    """Guess a text file's separator from its first lines.

    Each candidate (``,`` tab ``;`` ``|``) splits the lines with the ``csv`` module (so a
    quoted ``"Heat, The"`` counts as one field); the winner gives every line the same number
    of fields, and the most of them. When none is consistent, the header line decides.

    Raises:
        DataError: The file cannot be decoded as text (e.g. it is binary or Parquet).
    """
    try:
        with _open_text(path, encoding) as handle:
            lines = [line for _, line in zip(range(max_lines), handle, strict=False)]
    except (UnicodeDecodeError, OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot read as text ({encoding}): {exc}") from exc
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    scores = []
    for rank, sep in enumerate(SNIFFED_SEPARATORS):
        counts = [len(row) for row in csv.reader(lines, delimiter=sep)]
        consistent = len(set(counts)) == 1 and counts[0] > 1
        # consistent first, then more fields in the header; the earlier candidate wins a tie
        scores.append((consistent, counts[0], -rank, sep))
    return max(scores)[3]


def read_table(
    path: str | Path,
    fmt: str = "auto",
    separator: str | None = None,
    encoding: str = "utf-8",
    text_columns: Sequence[str] = (),
    role: str = "events",
) -> Table:
    """Read a whole file (text or Parquet) into a :class:`Table`.

    Args:
        path: The file.
        fmt: ``auto`` | ``csv`` | ``tsv`` | ``semicolon`` | ``parquet``.
        separator: Overrides the format's separator; sniffed when neither gives one.
        encoding: Text encoding.
        text_columns: Columns read as strings in a text file (ids: ``007`` stays ``007``,
            and a text file and a Parquet file of the same ids give the same strings).
        role: What the file is (``events``, ``items``, ``users``): named in errors.

    Raises:
        DataError: The file is missing or cannot be read in that format (names both).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {role} file not found")
    fmt, sep = detect_format(path, fmt, separator)
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path}: cannot read as parquet: {exc}") from exc
        return Table(path, frame.reset_index(drop=True), "parquet", None)
    if sep is None:
        sep = sniff_separator(path, encoding)
        fmt = {v: k for k, v in SEPARATORS.items()}.get(sep, "text")
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding)
        wanted = {c: str for c in text_columns if c in header.columns}
        frame = pd.read_csv(
            path,
            sep=sep,
            encoding=encoding,
            dtype=wanted or None,
            # keep blank lines as rows, so that row r is line r + 2 in every message
            skip_blank_lines=False,
            float_precision="round_trip",
        )
    except Exception as exc:
        raise DataError(f"{path}: cannot read as {fmt} (separator {sep!r}): {exc}") from exc
    return Table(path, frame, fmt, sep)


# --------------------------------------------------------------------------- events


@dataclass
class EventsReport:
    """What :func:`read_events` did: per file, the mapping used and every row it dropped.

    Attributes:
        files: Per file: ``path``, ``format``, ``separator``, ``rows`` read, ``kept``.
        columns: The mapping used (schema column → file column).
        key: ``user`` or ``session`` (the dataset's users are sessions).
        displaced: File columns that a mapping displaced (``column``, ``replaced_by``,
            ``empty``, ``kept_as``).
        dropped: Rows dropped, by reason.
        examples: The first dropped row of each reason (``file row 3 (line 5)``).
        warnings: Anything else worth a look (e.g. timestamps that look like milliseconds).
    """

    files: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    key: str = "user"
    displaced: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``source`` block of a dataset summary)."""
        return {
            "files": self.files,
            "columns": self.columns,
            "key": self.key,
            "displaced_columns": self.displaced,
            "dropped_rows": self.dropped,
            "dropped_examples": self.examples,
            "warnings": self.warnings,
        }


def read_events(
    paths: str | Path | Sequence[str | Path],
    columns: Mapping[str, str | None] | None = None,
    *,
    fmt: str = "auto",
    separator: str | None = None,
    encoding: str = "utf-8",
    timestamp_unit: str = "s",
    date_format: str | None = None,
    session_key: str | None = None,
    session_gap_minutes: float | None = None,
    drop_invalid: bool = False,
) -> tuple[pd.DataFrame, EventsReport]:
    """Read events files into one frame in the schema layout.

    Args:
        paths: One file or several (read in order and concatenated, e.g. a log kept in
            daily files); every file has the same layout.
        columns: Schema column → file column (``user_id``, ``item_id``, ``timestamp``,
            ``event_type``, ``value``, ``session_id``). Unmapped schema columns are taken
            from a file column of the same name when there is one.
        fmt: ``auto`` | ``csv`` | ``tsv`` | ``semicolon`` | ``parquet``.
        separator: Text separator (else the format's, else sniffed).
        encoding: Text encoding.
        timestamp_unit: Unit of a numeric timestamp (``s``, ``ms``, ``us``, ``ns``).
        date_format: ``strftime`` format of date strings (default: ISO 8601 is inferred).
        session_key: ``session`` keys the dataset by session (anonymous sessions), ``user``
            by user; ``None`` decides: session when there is no user column, or when
            ``user_id`` is mapped to the session column.
        session_gap_minutes: Derive ``session_id`` from each user's events: a new session
            starts after this much inactivity (only when the file has no session column).
        drop_invalid: Drop rows with an empty id, a bad timestamp or a bad value (counted in
            the report) instead of raising.

    Returns:
        The frame (schema columns first, the file's other columns after them as context; not
        yet sorted) and an :class:`EventsReport`.

    Raises:
        DataError: A file is missing or unreadable, a mapped column is not in it (the
            message lists the columns that are), a required column is absent, or a value is
            bad (file, column and row named).
    """
    if timestamp_unit not in TIMESTAMP_UNITS:
        raise DataError(
            f"timestamp unit: {timestamp_unit!r}; choose one of {list(TIMESTAMP_UNITS)}"
        )
    if session_key not in (None, "user", "session"):
        raise DataError(f"session key: {session_key!r}; choose 'user' or 'session'")
    files = [paths] if isinstance(paths, str | Path) else list(paths)
    if not files:
        raise DataError("events: no file given")
    mapping = {k: v for k, v in (columns or {}).items() if v}
    unknown = sorted(set(mapping) - set(EVENT_COLUMNS))
    if unknown:
        raise DataError(f"columns: unknown schema column(s) {unknown}; map {list(EVENT_COLUMNS)}")
    report = EventsReport()
    frames = []
    for path in files:
        table = read_table(path, fmt, separator, encoding, text_columns=_id_sources(mapping))
        frames.append(
            _events_of(
                table,
                mapping,
                report,
                timestamp_unit=timestamp_unit,
                date_format=date_format,
                session_key=session_key,
                drop_invalid=drop_invalid,
                derived_sessions=session_gap_minutes is not None,
            )
        )
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1 and "session_id" in report.columns:
        _warn_shared_sessions(frames, files, report)
    if session_gap_minutes is not None:
        if "session_id" in report.columns:
            raise DataError(
                f"{files[0]}: session gap given, but the file has a session column "
                f"{report.columns['session_id']!r}; use one or the other"
            )
        frame["session_id"] = derive_sessions(frame, session_gap_minutes)
        derived = f"<derived: {report.columns['user_id']}, gap {session_gap_minutes:g} min>"
        report.columns["session_id"] = derived
        if report.key == "session":
            frame["user_id"] = frame["session_id"]
            report.columns["user_id"] = derived
    if report.key == "session" and not len(frame):
        raise DataError(f"{files[0]}: no events left")
    _check_units(frame, timestamp_unit, date_format, report)
    for message in report.warnings:
        log.warning(message)
    return frame, report


def _id_sources(mapping: Mapping[str, str]) -> list[str]:
    ids = ("user_id", "item_id", "session_id")
    return [mapping.get(c, c) for c in ids]


def _events_of(
    table: Table,
    mapping: Mapping[str, str],
    report: EventsReport,
    *,
    timestamp_unit: str,
    date_format: str | None,
    session_key: str | None,
    drop_invalid: bool,
    derived_sessions: bool = False,
) -> pd.DataFrame:
    """One file's rows in the schema layout (mapping applied, values checked).

    With ``derived_sessions`` a session key keeps the user column for now: the sessions are
    cut from each user's events afterwards.
    """
    raw = table.frame
    found = [str(c) for c in raw.columns]
    absent = [(target, source) for target, source in mapping.items() if source not in raw.columns]
    if absent:
        listed = ", ".join(f"{source!r} ({target})" for target, source in absent)
        raise DataError(
            f"{table.describe()}: mapped column {listed} not in the file; "
            f"the file has columns {found}"
        )
    sources = dict(mapping)
    for target in EVENT_COLUMNS:
        if target not in sources and target in raw.columns:
            sources[target] = target
    key = session_key
    if key is None:
        same = "user_id" in sources and sources.get("user_id") == sources.get("session_id")
        key = (
            "session" if same or ("user_id" not in sources and "session_id" in sources) else "user"
        )
    if key == "session" and not derived_sessions:
        if "session_id" not in sources:
            raise DataError(
                f"{table.describe()}: keyed by session, but no session column; map one "
                f"(session_id=<column>); the file has columns {found}"
            )
        sources["user_id"] = sources["session_id"]
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in sources]
    if missing:
        hint = " (anonymous sessions: map session_id)" if "user_id" in missing else ""
        raise DataError(
            f"{table.describe()}: missing required column(s) {missing}; the file has columns "
            f"{found}; map them (user_id=<column>, ...){hint}"
        )
    _merge_report(report, table, sources, key)

    out = pd.DataFrame({target: raw[source] for target, source in sources.items()}, index=raw.index)
    used = set(sources.values())
    for column in raw.columns:
        if column in used:
            continue
        if column in out.columns:  # a schema-named file column the mapping displaced
            empty = bool(_empty(raw[column]).all())
            kept_as = None if empty else f"file_{column}"
            if kept_as:
                out[kept_as] = raw[column]
            _displaced(report, table, str(column), sources[str(column)], empty, kept_as)
        else:
            out[column] = raw[column]

    bad = pd.Series(False, index=out.index)
    blank = raw.isna().all(axis=1) if table.separator is not None else bad
    _drop(report, table, blank, "blank line", True, lambda row, where: where)
    bad |= blank
    for target in ("user_id", "item_id"):
        source = sources[target]
        empty = _empty(out[target]) & ~bad

        def is_empty(row: int, where: str, s: str = source, t: str = target) -> str:
            return f"column {s!r} ({t}) is empty, {where}"

        _drop(report, table, empty, f"empty {target} (column {source!r})", drop_invalid, is_empty)
        bad |= empty
    source = sources["timestamp"]
    seconds, invalid, expected = to_seconds(out["timestamp"], timestamp_unit, date_format)
    invalid &= ~bad

    def bad_time(row: int, where: str) -> str:
        return (
            f"column {source!r} (timestamp), {where}: {_cell(raw, row, source)!r} is not {expected}"
        )

    _drop(report, table, invalid, f"bad timestamp (column {source!r})", drop_invalid, bad_time)
    bad |= invalid
    out["timestamp"] = seconds
    if "value" in out:
        value_source = sources["value"]
        value = pd.to_numeric(out["value"], errors="coerce")
        wrong = value.isna() & ~bad

        def bad_value(row: int, where: str) -> str:
            cell = _cell(raw, row, value_source)
            return f"column {value_source!r} (value), {where}: {cell!r} is not a number"

        _drop(report, table, wrong, f"bad value (column {value_source!r})", drop_invalid, bad_value)
        bad |= wrong
        out["value"] = value
    for column, default in OPTIONAL_DEFAULTS.items():
        if column in out and column != "value":
            out[column] = out[column].where(~_empty(out[column]), default)
    kept = out[~bad.to_numpy()]
    report.files.append(
        {
            "path": str(table.path),
            "format": table.format,
            "separator": table.separator,
            "rows": len(raw),
            "kept": len(kept),
        }
    )
    return kept


def _cell(raw: pd.DataFrame, row: int, column: str) -> object:
    """A raw value as the file shows it (``-1.0``, not ``np.float64(-1.0)``)."""
    value = raw.at[row, column]
    return value.item() if isinstance(value, np.generic) else value


def _merge_report(report: EventsReport, table: Table, sources: dict[str, str], key: str) -> None:
    if report.files and (report.columns != sources or report.key != key):
        raise DataError(
            f"{table.describe()}: its columns map differently from the first file's "
            f"({sources} vs {report.columns}); every events file must have the same layout"
        )
    report.columns = dict(sources)
    report.key = key


def _empty(column: pd.Series) -> pd.Series:
    """Null, or a string that is blank."""
    empty = column.isna()
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        empty |= column.astype(str).str.strip().eq("")
    return empty


def _drop(
    report: EventsReport,
    table: Table,
    mask: pd.Series,
    reason: str,
    drop: bool,
    error: Callable[[int, str], str],
) -> None:
    """Count the rows of ``mask`` as dropped for ``reason``, or raise on the first of them.

    ``error`` words the message for the first bad row (given its number and ``row r (line l)``).
    """
    if not mask.any():
        return
    row = int(mask.index[mask.to_numpy()][0])
    if not drop:
        raise DataError(f"{table.describe()}: {error(row, table.where(row))}")
    report.dropped[reason] = report.dropped.get(reason, 0) + int(mask.sum())
    report.examples.setdefault(reason, f"{table.path.name} {table.where(row)}")


def _displaced(
    report: EventsReport, table: Table, column: str, by: str, empty: bool, kept_as: str | None
) -> None:
    entry = {
        "file": str(table.path),
        "column": column,
        "replaced_by": by,
        "empty": empty,
        "kept_as": kept_as,
    }
    if any(d["column"] == column and d["replaced_by"] == by for d in report.displaced):
        return
    report.displaced.append(entry)
    fate = "it is all empty and was dropped" if empty else f"it is kept as {kept_as!r}"
    message = (
        f"{table.path}: the file's own column {column!r} is displaced by the mapping "
        f"{column}={by}; {fate}"
    )
    warnings.warn(message, DataWarning, stacklevel=4)


def to_seconds(
    column: pd.Series, unit: str = "s", date_format: str | None = None
) -> tuple[pd.Series, pd.Series, str]:
    """Convert a timestamp column to Unix seconds (float64, UTC).

    Args:
        column: Numbers in ``unit``, date strings, or datetimes (naive ones are UTC).
        unit: Unit of numbers: ``s``, ``ms``, ``us`` or ``ns``.
        date_format: ``strftime`` format of date strings (otherwise inferred, e.g. ISO 8601).

    Returns:
        ``(seconds, invalid, expected)``: the converted column (NaN where invalid), a mask of
        values that are empty, unparseable or before 1970, and what was expected (for errors).
    """
    epoch = pd.Timestamp(0, tz="UTC")
    if date_format is None and pd.api.types.is_datetime64_any_dtype(column):
        stamps = (
            column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        )
        expected = "a timestamp"
    elif date_format is None and _numeric_mode(column):
        numbers = pd.to_numeric(column, errors="coerce").astype(np.float64)
        seconds = numbers / TIMESTAMP_UNITS[unit]
        invalid = seconds.isna() | (seconds < 0)
        return seconds, invalid, f"a number of {_UNIT_NAMES[unit]} since 1970"
    else:
        text = column.astype("string")
        stamps = pd.to_datetime(text, format=date_format or "ISO8601", utc=True, errors="coerce")
        expected = f"a date in format {date_format!r}" if date_format else "an ISO 8601 date"
    seconds = ((stamps - epoch) / pd.Timedelta(seconds=1)).astype(np.float64)
    invalid = seconds.isna() | (seconds < 0)
    return seconds, invalid, expected


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _numeric_mode(column: pd.Series) -> bool:
    """Numbers, or strings whose first non-empty value is a number."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    if present.empty:
        return True
    first = pd.to_numeric(present.iloc[:1], errors="coerce")
    return not first.isna().any()


def _check_units(
    frame: pd.DataFrame, unit: str, date_format: str | None, report: EventsReport
) -> None:
    if date_format is not None or frame.empty:
        return
    top = float(frame["timestamp"].max())
    if top > _SECONDS_CEILING:
        report.warnings.append(
            f"timestamps reach {top:.4g} {_UNIT_NAMES[unit]}, after the year 5000: "
            "is the unit right (--timestamp-unit ms)?"
        )


def _warn_shared_sessions(
    frames: Sequence[pd.DataFrame], files: Sequence[str | Path], report: EventsReport
) -> None:
    seen: set[str] = set()
    shared = 0
    for frame in frames:
        ids = set(frame["session_id"].astype(str)) - {""}
        shared += len(ids & seen)
        seen |= ids
    if shared:
        report.warnings.append(
            f"{shared} session id(s) occur in more than one of {[str(f) for f in files]}; "
            "their events are treated as one session"
        )


def derive_sessions(frame: pd.DataFrame, gap_minutes: float) -> pd.Series:
    """Session ids ``<user>:<n>``: a user's new session starts after ``gap_minutes`` idle.

    Args:
        frame: Rows with ``user_id`` and ``timestamp`` (seconds).
        gap_minutes: Inactivity that ends a session (> 0).
    """
    if gap_minutes <= 0:
        raise DataError(f"session gap: must be > 0 minutes, got {gap_minutes}")
    users = frame["user_id"].astype(str).to_numpy()
    times = frame["timestamp"].to_numpy(np.float64)
    order = np.lexsort((np.arange(len(frame)), times, users))
    new_user = np.r_[True, users[order][1:] != users[order][:-1]]
    gap = np.r_[True, np.diff(times[order]) > gap_minutes * 60.0]
    starts = new_user | gap
    # number each user's sessions from 0 in time order
    counter = np.cumsum(starts) - 1
    first_of_user = np.maximum.accumulate(np.where(new_user, counter, 0))
    numbers = counter - first_of_user
    ids = np.empty(len(frame), dtype=object)
    ids[order] = [f"{u}:{n}" for u, n in zip(users[order], numbers, strict=True)]
    return pd.Series(ids, index=frame.index, dtype=object)


# --------------------------------------------------------------------------- side files


def read_items(
    path: str | Path,
    columns: Mapping[str, str | None] | None = None,
    *,
    fmt: str = "auto",
    separator: str | None = None,
    encoding: str = "utf-8",
    genres_separator: str = "|",
) -> pd.DataFrame:
    """Read an item side file: one row per item, indexed by the item id.

    Args:
        path: The file.
        columns: ``item_id`` (required unless the file has an ``item_id`` column),
            ``title``, ``genres``, ``year`` → file columns. Other columns are kept.
        fmt: File format (see :func:`read_table`).
        separator: Text separator.
        encoding: Text encoding.
        genres_separator: Separator inside the genres column (``Action|Comedy``).

    Raises:
        DataError: Missing / unreadable file, a mapped column not in it (columns listed), an
            empty or repeated item id (row named).
    """
    return _side_file(
        path, columns, "item_id", ("title", "genres", "year"), fmt, separator, encoding,
        role="items", genres_separator=genres_separator,
    )  # fmt: skip


def read_users(
    path: str | Path,
    columns: Mapping[str, str | None] | None = None,
    *,
    fmt: str = "auto",
    separator: str | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a user side file (user context such as age band or region), indexed by user id.

    Raises:
        DataError: As :func:`read_items`.
    """
    return _side_file(path, columns, "user_id", (), fmt, separator, encoding, role="users")


def _side_file(
    path: str | Path,
    columns: Mapping[str, str | None] | None,
    id_column: str,
    known: tuple[str, ...],
    fmt: str,
    separator: str | None,
    encoding: str,
    role: str,
    genres_separator: str = "|",
) -> pd.DataFrame:
    mapping = {k: v for k, v in (columns or {}).items() if v}
    unknown = sorted(set(mapping) - {id_column, *known})
    if unknown:
        raise DataError(f"{role} columns: unknown {unknown}; map {[id_column, *known]}")
    source_id = mapping.get(id_column, id_column)
    table = read_table(path, fmt, separator, encoding, text_columns=[source_id], role=role)
    raw = table.frame
    found = [str(c) for c in raw.columns]
    absent = [(t, s) for t, s in {id_column: source_id, **mapping}.items() if s not in raw.columns]
    if absent:
        listed = ", ".join(f"{s!r} ({t})" for t, s in absent)
        raise DataError(
            f"{table.describe()}: mapped column {listed} not in the file; "
            f"the file has columns {found}"
        )
    raw = raw[~raw.isna().all(axis=1)] if table.separator is not None else raw
    ids = raw[source_id]
    empty = _empty(ids)
    if empty.any():
        row = int(empty.index[empty.to_numpy()][0])
        raise DataError(
            f"{table.describe()}: column {source_id!r} ({id_column}) is empty, {table.where(row)}"
        )
    ids = ids.map(_id_string)
    repeated = ids.duplicated()
    if repeated.any():
        row = int(repeated.index[repeated.to_numpy()][0])
        first = int(ids.index[ids.eq(ids[row]).to_numpy()][0])
        raise DataError(
            f"{table.describe()}: {id_column} {ids[row]!r} repeats at {table.where(row)} "
            f"(first at {table.where(first)})"
        )
    renamed = {s: t for t, s in mapping.items() if t != id_column}
    out = raw.drop(columns=[source_id]).rename(columns=renamed)
    out.index = pd.Index(ids.to_numpy(), name=id_column)
    if "genres" in out:
        out["genres"] = [split_genres(g, (genres_separator,)) for g in out["genres"]]
    if "year" in out:
        out["year"] = pd.to_numeric(out["year"], errors="coerce").astype(np.float64)
    return out


def _id_string(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- one-call loader


def load_events_file(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    timestamp_unit: str = "s",
    **options: Any,
) -> Dataset:
    """Load an events file into a :class:`Dataset`.

    Args:
        path: ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) or ``.parquet`` file.
        columns: Mapping from schema column (``user_id``, ``item_id``, ``timestamp``,
            ``event_type``, ``value``, ``session_id``) to the file's column name.
        name: Dataset name (default: the file stem).
        items: Optional item side information indexed by item id.
        users: Optional user context indexed by user id.
        timestamp_unit: Unit of a numeric timestamp column; date strings are parsed as UTC.
        **options: Further :func:`read_events` options (``fmt``, ``separator``,
            ``date_format``, ``session_key``, ``session_gap_minutes``, ``drop_invalid``).

    Raises:
        DataError: The file is missing, unreadable, or lacks a mapped column.

    Example:
        >>> data = load_events_file("clicks.csv.gz", {"user_id": "visitor", "item_id": "sku"})
        ... # doctest: +SKIP
    """
    frame, report = read_events(path, columns, timestamp_unit=timestamp_unit, **options)
    return Dataset(
        name=name or Path(path).name.split(".")[0],
        interactions=frame,
        items=items if items is not None else pd.DataFrame(),
        users=users if users is not None else pd.DataFrame(),
        key=report.key,
        metadata={"source": report.as_dict()},
    )
