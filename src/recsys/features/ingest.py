"""Streaming ingestion: validate → consent → durable log → online store; replay; forget.

Order of operations for a batch (:meth:`Ingestor.ingest`):

1. validate every event (invalid ones are rejected with a reason, the rest continue);
2. split by consent: events of users without consent are **not stored** anywhere; they only
   feed an in-memory, user-free tally of item ids (``anonymous_item_counts``), the anonymous
   context that may still be used (e.g. trending items);
3. append the rest to the event log (flushed + fsynced: the acknowledgement point);
4. fold them into the online store. A store failure does not lose events (they are in the
   log) and does not raise: the result says ``store_ok=False``; :func:`replay` rebuilds the
   store from the log.

:func:`replay` folds the log in arrival order, the order the live store saw, so a rebuilt
store equals the live one exactly.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.features.events import Event, EventLog, IngestResult, validate_events
from recsys.features.store import OnlineStore, RedisStore, StoreUnavailableError


class ConsentUnavailableError(StoreUnavailableError):
    """A shared consent registry cannot be reached: nobody's consent can be verified."""


class ConsentRegistry:
    """Per-user consent to store and personalise (in memory: one process).

    Args:
        default: Consent of users never set explicitly (``True``: opt-out model).
        overrides: Initial explicit flags.
    """

    def __init__(self, default: bool = True, overrides: Mapping[str, bool] | None = None):
        self.default = default
        self._flags: dict[str, bool] = {str(k): bool(v) for k, v in (overrides or {}).items()}

    def set(self, user_id: str, consent: bool) -> None:
        """Record a user's choice."""
        self._flags[str(user_id)] = bool(consent)

    def allows(self, user_id: str) -> bool:
        """Whether the user's events may be stored and used to personalise."""
        return self._flags.get(str(user_id), self.default)

    def allows_many(self, user_ids: Sequence[str]) -> list[bool]:
        """:meth:`allows` for several users (one round trip in shared backends)."""
        return [self.allows(u) for u in user_ids]


class RedisConsentRegistry(ConsentRegistry):
    """Consent shared by every server worker: one Redis hash (``<prefix>consent``).

    Uses the :class:`RedisStore`'s connection and circuit breaker. When Redis cannot be
    reached the registry does not guess: it raises :class:`ConsentUnavailableError`, and
    callers serve without personalisation and refuse to store events they cannot clear.

    Args:
        store: The Redis online store whose connection to share.
        default: Consent of users never set explicitly.
    """

    def __init__(self, store: RedisStore, default: bool = True) -> None:
        super().__init__(default)
        self.store = store
        self.key = f"{store.prefix}consent"

    def set(self, user_id: str, consent: bool) -> None:
        """Record a user's choice (raises :class:`ConsentUnavailableError`)."""
        try:
            self.store._call(
                "consent set", lambda: self.store.client.hset(self.key, str(user_id), int(consent))
            )
        except StoreUnavailableError as exc:
            raise ConsentUnavailableError(str(exc)) from exc

    def allows(self, user_id: str) -> bool:
        """Whether the user consents (raises :class:`ConsentUnavailableError`).

        The same round trip reads the user's online state, which the profile read that
        follows in this thread takes (:meth:`RedisStore.read_with_state`).
        """
        try:
            value = self.store.read_with_state(
                "consent get", str(user_id), lambda pipe: pipe.hget(self.key, str(user_id))
            )
        except StoreUnavailableError as exc:
            raise ConsentUnavailableError(str(exc)) from exc
        return self.default if value is None else value in (b"1", "1", 1)

    def allows_many(self, user_ids: Sequence[str]) -> list[bool]:
        """One HMGET for several users (raises :class:`ConsentUnavailableError`)."""
        if not user_ids:
            return []
        ids = [str(u) for u in user_ids]
        try:
            values = self.store._call("consent get", lambda: self.store.client.hmget(self.key, ids))
        except StoreUnavailableError as exc:
            raise ConsentUnavailableError(str(exc)) from exc
        return [self.default if v is None else v in (b"1", "1", 1) for v in values]


@dataclass
class ForgetResult:
    """What :meth:`Ingestor.forget` removed."""

    user_id: str
    log_events_removed: int
    store_state_removed: bool


class Ingestor:
    """The ingest pipeline: one event log + one online store (+ consent).

    Args:
        store: The online store to update.
        log: The durable event log (``None``: store only, e.g. a notebook demo).
        consent: Consent registry (default: everyone consents).
    """

    def __init__(
        self,
        store: OnlineStore,
        log: EventLog | None = None,
        consent: ConsentRegistry | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self.consent = consent or ConsentRegistry()
        self.anonymous_item_counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def ingest(self, events: Iterable[Event | Mapping[str, Any]]) -> IngestResult:
        """Validate, log durably and fold a batch into the store (see the module docstring).

        Returns:
            An :class:`~recsys.features.events.IngestResult`; never raises for bad events or an
            unreachable store (a failing disk does raise: nothing would be acknowledged).

        Raises:
            ConsentUnavailableError: A shared consent registry cannot be read; nothing of the
                batch was written.
        """
        valid, rejected = validate_events(events)
        kept: list[Event] = []
        anonymous: list[str] = []
        users = list(dict.fromkeys(e.user_id for e in valid))
        # raises ConsentUnavailableError before anything is written: events whose consent
        # cannot be checked are refused, not stored and not dropped silently
        allowed = dict(zip(users, self.consent.allows_many(users), strict=True))
        for event in valid:
            if allowed[event.user_id]:
                kept.append(event)
            else:
                anonymous.append(event.item_id)  # the item only: no user, no session
        result = IngestResult(accepted=len(kept), rejected=rejected, anonymous=len(anonymous))
        # one lock around log + store: concurrent batches reach both in the same order, which
        # is what makes a replay of the log arrive at exactly the live store's state
        with self._lock:
            self.anonymous_item_counts.update(anonymous)
            if self.log is not None:
                self.log.write(kept)
            try:
                self.store.apply(kept)
            except StoreUnavailableError as exc:
                result.store_ok = False
                result.store_error = str(exc)
        return result

    def forget(self, user_id: str) -> ForgetResult:
        """Erase a user from the event log (segments rewritten) and the online store.

        Raises:
            StoreUnavailableError: The store could not be reached; the log part is already done,
                so calling again later completes the erasure.
        """
        with self._lock:
            removed = self.log.forget(user_id) if self.log is not None else 0
            existed = self.store.delete(user_id)
        return ForgetResult(str(user_id), removed, existed)


def replay(log_dir: str | Path | EventLog, store: OnlineStore, batch_size: int = 5000) -> int:
    """Rebuild ``store`` from the event log: clear it, then fold the log in arrival order.

    Returns:
        The number of events replayed.
    """
    log = log_dir if isinstance(log_dir, EventLog) else EventLog(log_dir)
    store.clear()
    batch: list[Event] = []
    count = 0
    for event in log.read():
        batch.append(event)
        if len(batch) >= batch_size:
            store.apply(batch)
            count += len(batch)
            batch = []
    store.apply(batch)
    return count + len(batch)


# --------------------------------------------------------------------------- measurement


def benchmark_ingest(
    events: Sequence[Event],
    store: OnlineStore,
    batch_size: int = 500,
    latency_samples: int = 500,
    log_dir: str | Path | None = None,
) -> dict[str, float]:
    """Measure ingest throughput and event-to-feature latency through the real pipeline.

    Throughput: ``events`` are ingested in batches of ``batch_size`` (each batch validated,
    written + fsynced to a fresh event log, folded into ``store``). Latency: for
    ``latency_samples`` single events, the time from submitting the event until
    ``store.get_profile`` returns a profile that contains it (ingest of a batch of one, with
    its fsync, plus one read); ``store_only_*`` times the same round trip without the log.

    Args:
        events: Events to ingest (in time order).
        store: The store (cleared first).
        batch_size: Events per ingest call for the throughput run.
        latency_samples: Single-event round trips timed for the latency percentiles.
        log_dir: Folder for the event log (default: a temporary folder, removed after).

    Returns:
        ``events_per_second``, ``events``, ``batch_size``, ``seconds``, latency
        ``p50_ms``/``p99_ms``/``mean_ms``, ``store_only_p50_ms``/``store_only_p99_ms`` and
        ``latency_samples``.
    """
    with tempfile.TemporaryDirectory(prefix="recsys-ingest-") as tmp:
        folder = Path(log_dir) if log_dir is not None else Path(tmp)
        store.clear()
        records = [e.to_record() for e in events]  # what arrives over the wire: raw mappings
        split = max(0, len(records) - latency_samples)
        ingestor = Ingestor(store, EventLog(folder / "throughput"))
        start = time.perf_counter()
        for i in range(0, split, batch_size):
            result = ingestor.ingest(records[i : i + batch_size])
            if not result.store_ok:
                raise StoreUnavailableError(
                    result.store_error or "store failed during the benchmark"
                )
        seconds = time.perf_counter() - start
        ingestor.log.close()  # type: ignore[union-attr]
        latencies = []
        single = Ingestor(store, EventLog(folder / "latency"))
        for record in records[split:]:
            begin = time.perf_counter()
            single.ingest([record])
            profile = store.get_profile(record["user_id"], now=record["timestamp"])
            latencies.append(time.perf_counter() - begin)
            if not profile.recent_items or profile.recent_items[-1] != record["item_id"]:
                raise AssertionError("the profile does not reflect the event just ingested")
        single.log.close()  # type: ignore[union-attr]
        # the same round trip without the durable log: what the fsync costs
        store_only = []
        memory = Ingestor(store)
        for record in records[split:]:
            begin = time.perf_counter()
            memory.ingest([record])
            store.get_profile(record["user_id"], now=record["timestamp"])
            store_only.append(time.perf_counter() - begin)
    lat_ms = np.asarray(latencies) * 1000.0
    store_ms = np.asarray(store_only) * 1000.0
    return {
        "events": float(split),
        "batch_size": float(batch_size),
        "seconds": seconds,
        "events_per_second": split / seconds if seconds > 0 else float("nan"),
        "latency_samples": float(len(lat_ms)),
        "p50_ms": float(np.percentile(lat_ms, 50)) if len(lat_ms) else float("nan"),
        "p99_ms": float(np.percentile(lat_ms, 99)) if len(lat_ms) else float("nan"),
        "mean_ms": float(statistics.fmean(lat_ms)) if len(lat_ms) else float("nan"),
        "store_only_p50_ms": float(np.percentile(store_ms, 50)) if len(store_ms) else float("nan"),
        "store_only_p99_ms": float(np.percentile(store_ms, 99)) if len(store_ms) else float("nan"),
    }
