"""Append-only, durable event log: validated events in segmented JSON-lines files.

Layout: ``<directory>/events-000001.jsonl``, ``events-000002.jsonl``, ... One line per event::

    {"user_id": "u1", "item_id": "i9", "timestamp": 1600000000.0, "event_type": "click",
     "value": 1.0, "session_id": "", "context": {"device": "mobile"}}

Guarantees:

* **Durable acknowledgement**: :meth:`EventLog.append` writes the whole batch, flushes it and
  calls ``fsync`` on the file before it returns (and on the directory when a segment is new).
* **Crash recovery**: a process killed mid-write leaves at most one *torn* record at the end of
  a segment (no trailing newline, or a line that does not parse). Readers skip it with a
  warning and keep everything before it; a writer that reopens the log starts a new segment
  instead of appending after the torn bytes. Unparseable data *inside* a segment is corruption,
  not a tear, and raises :class:`~recsys.errors.DataError` naming the file and line.
* **At-least-once**: a batch torn by a crash was never acknowledged; the client retries it, so
  its complete records may appear twice.
* **Replay**: :meth:`EventLog.read` yields events in arrival order (what a live consumer saw),
  :meth:`EventLog.replay` in time order (stable: ties keep arrival order).
* **Erasure**: :meth:`EventLog.forget` rewrites every segment without one user's events
  (write to a temporary file, fsync, atomic rename).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.data.schema import EVENT_COLUMNS, OPTIONAL_DEFAULTS
from recsys.errors import DataError

log = logging.getLogger(__name__)

SEGMENT_PATTERN = re.compile(r"^events-(\d{6})\.jsonl$")
_SCALARS = (str, int, float, bool, type(None))
_KNOWN_KEYS = frozenset((*EVENT_COLUMNS, "context"))
_DEFAULT_EVENT_TYPE = str(OPTIONAL_DEFAULTS["event_type"])
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_INF = math.inf
_quote = json.encoder.encode_basestring  # C-accelerated JSON string escaping (no ASCII-only)


class TornRecordWarning(UserWarning):
    """A segment ends with an incomplete record (a crash mid-write); it was skipped."""


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event in the :mod:`recsys.data.schema` layout.

    Attributes:
        user_id: External user id.
        item_id: External item id.
        timestamp: Unix seconds (UTC).
        event_type: ``click``, ``view``, ``rating``, ...
        value: Rating, dwell time, or 1.0 for implicit events.
        session_id: Client-side session id; empty when unknown.
        context: Further request context (``device``, ``referrer``, ...): JSON scalars.
    """

    user_id: str
    item_id: str
    timestamp: float
    event_type: str = str(OPTIONAL_DEFAULTS["event_type"])
    value: float = 1.0
    session_id: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON-serialisable record written to the log."""
        return {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp,
            "event_type": self.event_type,
            "value": self.value,
            "session_id": self.session_id,
            "context": dict(self.context),
        }

    def to_json(self) -> str:
        """One compact JSON line (without the newline), the same as ``json.dumps(to_record())``.

        Assembled by hand around the C string escaper: this is the ingest hot path, and the
        generic encoder costs several times more per event. Numbers are finite (validated),
        so ``repr`` of a float is valid JSON.
        """
        context = _ENCODER.encode(self.context) if self.context else "{}"
        return (
            f'{{"user_id":{_quote(self.user_id)},"item_id":{_quote(self.item_id)},'
            f'"timestamp":{float(self.timestamp)!r},"event_type":{_quote(self.event_type)},'
            f'"value":{float(self.value)!r},"session_id":{_quote(self.session_id)},'
            f'"context":{context}}}'
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        """Inverse of :meth:`to_record` (no validation: the log only holds valid events)."""
        return cls(
            user_id=record["user_id"],
            item_id=record["item_id"],
            timestamp=float(record["timestamp"]),
            event_type=record.get("event_type", "interaction"),
            value=float(record.get("value", 1.0)),
            session_id=record.get("session_id", ""),
            context=record.get("context") or {},
        )


@dataclass(frozen=True)
class Rejected:
    """An event refused at ingest, with the reason.

    Attributes:
        index: Position of the event in the submitted batch.
        event: The event as submitted.
        reason: Which field is wrong and why (``"timestamp: must be ..."``).
    """

    index: int
    event: Any
    reason: str


@dataclass
class IngestResult:
    """Outcome of one ingested batch.

    Attributes:
        accepted: Valid events from consenting users, written to the log (and store).
        rejected: Invalid events, each with its reason; the valid ones of the batch are kept.
        anonymous: Valid events of users without consent: not stored, only counted as
            anonymous context.
        store_ok: Whether the online store took the update. ``False`` means the events are
            durable in the log but the store was unreachable (rebuild it with ``replay``).
        store_error: Why the store update failed, if it did.
    """

    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    anonymous: int = 0
    store_ok: bool = True
    store_error: str | None = None


# --------------------------------------------------------------------------- validation


_NUMBER_TYPES = (int, float)


def _id(value: Any, name: str) -> str:
    if type(value) is str:  # the fast path: ids arrive as strings
        if value and not value.isspace():
            return value
        raise ValueError(f"{name}: must not be empty")
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: required, a non-empty string or integer id, got {value!r}")
    return str(value)


def _number(value: Any, name: str) -> float:
    if type(value) is float and -_INF < value < _INF:  # the fast path (also rejects NaN)
        return value
    if value is None:
        raise ValueError(f"{name}: required, a number")
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return number


def validate_event(raw: Event | Mapping[str, Any]) -> Event:
    """Check one raw event against the schema and normalise it.

    Args:
        raw: An :class:`Event` or a mapping with ``user_id``, ``item_id``, ``timestamp`` and
            optionally ``event_type``, ``value``, ``session_id``, ``context`` (a mapping) and
            any further scalar keys (merged into the context).

    Returns:
        The validated :class:`Event`.

    Raises:
        ValueError: The message starts with the offending field's name.
    """
    if isinstance(raw, Event):
        raw = raw.to_record()
    elif type(raw) is not dict and not isinstance(raw, Mapping):
        raise ValueError(f"event: must be a mapping, got {type(raw).__name__}")
    get = raw.get
    user_id = _id(get("user_id"), "user_id")
    item_id = _id(get("item_id"), "item_id")
    timestamp = _number(get("timestamp"), "timestamp")
    if timestamp < 0:
        raise ValueError(f"timestamp: must be Unix seconds >= 0, got {timestamp!r}")
    value = _number(get("value", 1.0), "value")
    event_type = get("event_type", _DEFAULT_EVENT_TYPE)
    if type(event_type) is not str or not event_type:
        raise ValueError(f"event_type: must be a non-empty string, got {event_type!r}")
    session_id = get("session_id", "")
    if session_id is None:
        session_id = ""
    elif type(session_id) is not str:
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise ValueError(f"session_id: must be a string, got {session_id!r}")
        session_id = str(session_id)
    context: dict[str, Any] = {}
    nested = get("context")
    if nested:
        if not isinstance(nested, Mapping):
            raise ValueError(f"context: must be a mapping, got {type(nested).__name__}")
        context.update(nested)
    if not _KNOWN_KEYS.issuperset(raw):
        for key, val in raw.items():
            if key not in _KNOWN_KEYS:
                context[key] = val
    for key, val in context.items():
        if type(key) is not str:
            raise ValueError(f"context: keys must be strings, got {key!r}")
        if not isinstance(val, _SCALARS) or (isinstance(val, float) and not math.isfinite(val)):
            raise ValueError(f"context.{key}: must be a JSON scalar, got {val!r}")
    return Event(user_id, item_id, timestamp, event_type, value, session_id, context)


def validate_events(
    events: Iterable[Event | Mapping[str, Any]],
) -> tuple[list[Event], list[Rejected]]:
    """Validate a batch; keep the valid events and explain each rejected one."""
    valid: list[Event] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(events):
        try:
            valid.append(validate_event(raw))
        except ValueError as exc:
            rejected.append(Rejected(index, raw, str(exc)))
    return valid, rejected


def events_from_frame(frame: pd.DataFrame) -> list[Event]:
    """Events from an interaction frame in the schema layout (extra columns become context).

    The dense ``user``/``item`` index columns a :class:`~recsys.data.Dataset` adds are dropped.
    """
    extra = [c for c in frame.columns if c not in EVENT_COLUMNS and c not in ("user", "item")]
    users = frame["user_id"].astype(str).tolist()
    items = frame["item_id"].astype(str).tolist()
    times = frame["timestamp"].astype(float).tolist()
    types = (
        frame["event_type"].astype(str).tolist()
        if "event_type" in frame
        else ["interaction"] * len(frame)
    )
    values = frame["value"].astype(float).tolist() if "value" in frame else [1.0] * len(frame)
    sessions = (
        frame["session_id"].fillna("").astype(str).tolist()
        if "session_id" in frame
        else [""] * len(frame)
    )
    contexts: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    for column in extra:
        for ctx, val in zip(contexts, frame[column].tolist(), strict=True):
            if not (isinstance(val, float) and math.isnan(val)):
                ctx[column] = val.item() if hasattr(val, "item") else val
    return [
        Event(u, i, t, e, v, s, c)
        for u, i, t, e, v, s, c in zip(
            users, items, times, types, values, sessions, contexts, strict=True
        )
    ]


def events_to_frame(events: Iterable[Event]) -> pd.DataFrame:
    """Interaction frame (schema columns, context keys as extra columns) from events."""
    records = []
    for event in events:
        record = event.to_record()
        context = record.pop("context")
        record.update({k: v for k, v in context.items() if k not in record})
        records.append(record)
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- the log


class EventLog:
    """Append-only segmented JSON-lines event log (see the module docstring for guarantees).

    Args:
        directory: Folder of the segments (created).
        segment_max_events: Start a new segment after this many records.
        fsync: ``fsync`` each batch before acknowledging it. Turn off only for throwaway logs.

    Example:
        >>> log = EventLog(tmp_path / "events")                      # doctest: +SKIP
        >>> log.append([{"user_id": "u1", "item_id": "i1", "timestamp": 1.0}]).accepted
        1
    """

    def __init__(
        self, directory: str | Path, segment_max_events: int = 100_000, fsync: bool = True
    ) -> None:
        if segment_max_events < 1:
            raise ValueError("segment_max_events: must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_max_events = segment_max_events
        self.fsync = fsync
        self._lock = threading.Lock()
        self._handle: Any = None
        self._segment: Path | None = None
        self._segment_count = 0
        self._lock_file: Any = None

    # -------------------------------------------------------------- segments
    def segments(self) -> list[Path]:
        """Segment files in order."""
        found = [p for p in self.directory.iterdir() if SEGMENT_PATTERN.match(p.name)]
        return sorted(found, key=lambda p: int(SEGMENT_PATTERN.match(p.name).group(1)))  # type: ignore[union-attr]

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"events-{number:06d}.jsonl"

    def _open_for_append(self) -> None:
        """Pick the segment to append to: the last one unless it is full or ends torn."""
        existing = self.segments()
        if existing:
            last = existing[-1]
            data = last.read_bytes()
            count = data.count(b"\n")
            torn = bool(data) and not data.endswith(b"\n")
            number = int(SEGMENT_PATTERN.match(last.name).group(1))  # type: ignore[union-attr]
            if torn or count >= self.segment_max_events:
                # never append after a torn record: its bytes would merge with ours
                self._start_segment(number + 1)
                return
            self._segment, self._segment_count = last, count
            self._handle = open(last, "ab")  # noqa: SIM115 (kept open across appends)
        else:
            self._start_segment(1)

    def _start_segment(self, number: int) -> None:
        if self._handle is not None:
            self._handle.close()
        self._segment = self._segment_path(number)
        self._handle = open(self._segment, "ab")  # noqa: SIM115
        self._segment_count = 0
        if self.fsync:
            _fsync_dir(self.directory)

    def close(self) -> None:
        """Close the open segment (appending again reopens it)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- writing
    def append(self, events: Iterable[Event | Mapping[str, Any]]) -> IngestResult:
        """Validate and durably append a batch.

        Valid events are written (flushed and fsynced before this returns); invalid ones are
        returned in ``rejected`` with a reason each.

        Returns:
            An :class:`IngestResult` with ``accepted`` and ``rejected``.
        """
        valid, rejected = validate_events(events)
        self.write(valid)
        return IngestResult(accepted=len(valid), rejected=rejected)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the log across threads *and* processes (several server workers share it)."""
        with self._lock:
            if self._lock_file is None:
                self._lock_file = open(self.directory / ".lock", "a+b")  # noqa: SIM115
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def _stale(self) -> bool:
        """Whether another process moved the log on (a new segment, or a rewritten one)."""
        if self._handle is None or self._segment is None:
            return True
        current = self.segments()
        if not current or current[-1] != self._segment:
            return True
        try:
            return os.fstat(self._handle.fileno()).st_ino != os.stat(self._segment).st_ino
        except FileNotFoundError:
            return True

    def write(self, events: list[Event]) -> None:
        """Durably append already-validated events (flush + fsync before returning).

        Safe across processes: the append happens under an exclusive lock on the log, after
        checking that no other writer started a segment or rewrote this one (``forget``).
        """
        if not events:
            return
        with self._exclusive():
            if self._stale():
                if self._handle is not None:
                    self._handle.close()
                    self._handle = None
                self._open_for_append()
            position = 0
            while position < len(events):
                room = self.segment_max_events - self._segment_count
                if room <= 0:
                    number = int(SEGMENT_PATTERN.match(self._segment.name).group(1))  # type: ignore[union-attr]
                    self._start_segment(number + 1)
                    continue
                chunk = events[position : position + room]
                payload = "".join(e.to_json() + "\n" for e in chunk).encode("utf-8")
                self._handle.write(payload)
                self._handle.flush()
                if self.fsync:
                    os.fsync(self._handle.fileno())
                self._segment_count += len(chunk)
                position += len(chunk)

    # -------------------------------------------------------------- reading
    def read(self) -> Iterator[Event]:
        """All events in arrival order (segment by segment, line by line)."""
        for segment in self.segments():
            yield from _read_segment(segment)

    def replay(self, start: float | None = None, end: float | None = None) -> list[Event]:
        """Events with ``start <= timestamp < end`` in time order (ties keep arrival order)."""
        events = [
            e
            for e in self.read()
            if (start is None or e.timestamp >= start) and (end is None or e.timestamp < end)
        ]
        events.sort(key=lambda e: e.timestamp)  # list.sort is stable
        return events

    def to_frame(self, end: float | None = None) -> pd.DataFrame:
        """The log as an interaction frame in time order (for offline / point-in-time jobs)."""
        return events_to_frame(self.replay(end=end))

    def __len__(self) -> int:
        return sum(1 for _ in self.read())

    # -------------------------------------------------------------- erasure
    def forget(self, user_id: str) -> int:
        """Remove every event of ``user_id`` by rewriting the segments that hold any.

        Each rewritten segment goes to a temporary file that is fsynced and atomically renamed
        over the original, so a crash leaves either the old or the new segment, never a mix.

        Returns:
            The number of events removed.
        """
        user_id = str(user_id)
        removed = 0
        needle = json.dumps(user_id)
        with self._exclusive():
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            for segment in self.segments():
                text = segment.read_bytes().decode("utf-8", errors="replace")
                if needle not in text:  # cheap pre-check: most segments lack the user
                    continue
                keep: list[str] = []
                for event in _read_segment(segment, quiet=True):
                    if event.user_id == user_id:
                        removed += 1
                    else:
                        keep.append(event.to_json() + "\n")
                tmp = segment.with_suffix(".jsonl.tmp")
                with open(tmp, "wb") as handle:
                    handle.write("".join(keep).encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, segment)
            _fsync_dir(self.directory)
        log.info("event log %s: forgot %d events of user %s", self.directory, removed, user_id)
        return removed


def _read_segment(path: Path, quiet: bool = False) -> Iterator[Event]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    # split leaves b"" after a final newline; anything else there is a record without newline
    tail = lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            record = json.loads(line)
            event = Event.from_record(record)
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines) and not tail:
                # the last complete-looking line is garbage: a torn write that got its newline
                _warn_torn(path, number, quiet)
                return
            raise DataError(f"{path}: line {number} is corrupt ({exc})") from exc
        yield event
    if tail:
        _warn_torn(path, len(lines) + 1, quiet)


def _warn_torn(path: Path, line: int, quiet: bool) -> None:
    if not quiet:
        warnings.warn(
            f"{path}: line {line} is a torn record (crash mid-write); skipped, "
            "everything before it kept",
            TornRecordWarning,
            stacklevel=3,
        )


def _fsync_dir(directory: Path) -> None:
    """Make a created / renamed file's directory entry durable (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
