"""The online feature store: one interface, two backends (in-process and Redis).

The store keeps one :class:`~recsys.features.definitions.UserState` per user, updated by the
same fold the offline builder uses, and serves it as a :class:`UserProfile`.

Failure contract (what the engine relies on):

* :meth:`OnlineStore.get_profile` / :meth:`OnlineStore.get_profiles` **never raise** because
  the backend is down: they return default profiles with ``degraded=True`` and a ``reason``, so
  the caller falls back to offline / default features and can say so in its response.
* :meth:`OnlineStore.apply` (the write path) raises :class:`StoreUnavailableError`; the ingest
  pipeline catches it and reports ``store_ok=False`` (the events are durable in the log and the
  store can be rebuilt from it with :func:`recsys.features.ingest.replay`).
* :attr:`OnlineStore.healthy` / :attr:`OnlineStore.last_error` tell a health check the state.

The Redis backend keeps each user's state as one JSON string under ``<prefix>u:<user_id>``
with a TTL (refreshed on every write): batched reads are one ``MGET``, batched writes one
pipelined round trip. A failed call opens a short circuit (``retry_after_seconds``) during
which reads answer degraded at once instead of waiting for socket timeouts again.
Writers are expected to partition events by user (one writer per user at a time, as a Kafka
consumer group would): the read-fold-write of a batch is not a Redis transaction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.data.dataset import IdIndex
from recsys.errors import RecsysError
from recsys.features.definitions import (
    FeatureConfig,
    ItemInfoCatalog,
    UserState,
    fold_user,
    merge_history,
    user_features,
)
from recsys.features.events import Event
from recsys.types import Query

log = logging.getLogger(__name__)


class StoreUnavailableError(RecsysError, ConnectionError):
    """The online store's backend cannot be reached (or answered garbage)."""


@dataclass(frozen=True)
class UserProfile:
    """A user's online features at one moment, as the engine consumes them.

    Attributes:
        user_id: External user id.
        recent_items: Last N external item ids, oldest first.
        recent_times: Unix time of each recent item (empty when the state predates them).
        recent_types: Event type of each recent item.
        session_id: Current session id ("" when no live session).
        session_start: Unix time the current session started (``None`` when none).
        session_length: Events in the current session (0 when none).
        genre_counts: Decayed per-genre counts at ``as_of``.
        genre_affinity: Share of all the user's events per genre.
        event_count: Events seen for this user.
        last_event_time: Unix time of the last event (``None`` if none).
        as_of: The time the features were evaluated at.
        degraded: ``True`` when the backend failed and these are defaults.
        reason: Why the profile is degraded (``None`` otherwise).
    """

    user_id: str
    recent_items: tuple[str, ...] = ()
    recent_times: tuple[float, ...] = ()
    recent_types: tuple[str, ...] = ()
    session_id: str = ""
    session_start: float | None = None
    session_length: int = 0
    genre_counts: Mapping[str, float] = field(default_factory=dict)
    genre_affinity: Mapping[str, float] = field(default_factory=dict)
    event_count: int = 0
    last_event_time: float | None = None
    as_of: float | None = None
    degraded: bool = False
    reason: str | None = None

    @property
    def known(self) -> bool:
        """Whether the store had any state for the user."""
        return self.event_count > 0

    @classmethod
    def default(
        cls, user_id: str, as_of: float | None = None, reason: str | None = None
    ) -> UserProfile:
        """The profile of a user without state; ``reason`` marks it degraded."""
        return cls(str(user_id), as_of=as_of, degraded=reason is not None, reason=reason)

    @classmethod
    def from_state(
        cls, user_id: str, state: UserState | None, now: float, config: FeatureConfig
    ) -> UserProfile:
        """Evaluate the declared user features of ``state`` at ``now`` into a profile."""
        values = user_features(state, now, config)
        last = values["user_last_event_time"]
        return cls(
            user_id=str(user_id),
            recent_items=tuple(values["user_last_items"]),
            recent_times=tuple(values["user_last_item_times"]),
            recent_types=tuple(values["user_last_item_types"]),
            session_id=values["user_session_id"],
            session_start=None
            if math.isnan(values["user_session_start"])
            else float(values["user_session_start"]),
            session_length=int(values["user_session_length"]),
            genre_counts=values["user_genre_decayed"],
            genre_affinity=values["user_genre_affinity"],
            event_count=int(values["user_event_count"]),
            last_event_time=None if math.isnan(last) else float(last),
            as_of=now,
        )


def profile_to_query(
    profile: UserProfile,
    item_index: IdIndex,
    user_index: IdIndex | None = None,
    base_history: Sequence[int] | np.ndarray | None = None,
    context: Mapping[str, Any] | None = None,
    consent: bool = True,
    base_times: Sequence[float] | np.ndarray | None = None,
) -> Query:
    """Turn a profile into a :class:`~recsys.types.Query` for a retriever.

    Args:
        profile: The user's online profile.
        item_index: External item id → dense index (unknown items are dropped).
        user_index: External user id → dense index (``None`` user when unknown / not given).
        base_history: Dense item indices known offline (e.g. the training history).
        context: Request context.
        consent: Without consent the query carries no user and no history (context only).
        base_times: Unix time of each ``base_history`` event; without them the base events
            are taken to precede every online event.

    Returns:
        A query whose history is :func:`~recsys.features.definitions.merge_history` of the
        base history and the profile's recent events.
    """
    if not consent:
        return Query(user=None, context=dict(context or {}), timestamp=profile.as_of, consent=False)
    items, times, _ = recent_events(profile, item_index)
    base = np.zeros(0, dtype=np.int64) if base_history is None else base_history
    if base_times is None:
        base_times = np.full(len(base), -np.inf)
    history, history_times, _ = merge_history(base, base_times, items, times)
    user = user_index.index(profile.user_id) if user_index is not None else None
    return Query(
        user=user,
        history=history,
        history_times=history_times,
        context=dict(context or {}),
        timestamp=profile.as_of,
        session_id=profile.session_id or None,
        user_id=profile.user_id,
    )


def recent_events(
    profile: UserProfile, item_index: IdIndex
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """The profile's recent events as dense item indices, times and types (unknown items dropped).

    A state written before event times were kept has none: its events then count as the
    newest, in their stored order, and their types are unknown (``None``).
    """
    positions = [item_index.index(i) for i in profile.recent_items]
    known = [j for j, p in enumerate(positions) if p is not None]
    items = np.asarray([positions[j] for j in known], dtype=np.int64)
    if len(profile.recent_times) != len(profile.recent_items):
        return items, np.full(len(items), np.inf), None
    times = np.asarray([profile.recent_times[j] for j in known], dtype=np.float64)
    types = None
    if len(profile.recent_types) == len(profile.recent_items):
        types = [profile.recent_types[j] for j in known]
    return items, np.where(np.isnan(times), np.inf, times), types


class OnlineStore(ABC):
    """Per-user online state with a backend-independent fold and profile API.

    Args:
        catalog: Item side information (genres) used by the fold.
        config: Feature parameters (the same as the offline builder's).
    """

    def __init__(self, catalog: ItemInfoCatalog | None = None, config: FeatureConfig | None = None):
        self.catalog = catalog or ItemInfoCatalog()
        self.config = config or FeatureConfig()
        self.last_error: str | None = None

    # -------------------------------------------------------------- backend primitives
    @abstractmethod
    def _load(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """States of the given users that exist (raise StoreUnavailableError on failure)."""

    @abstractmethod
    def _save(self, states: Mapping[str, UserState]) -> None:
        """Write states (raise StoreUnavailableError on failure)."""

    @abstractmethod
    def _delete(self, user_id: str) -> bool:
        """Delete one user's state; whether it existed."""

    @abstractmethod
    def user_ids(self) -> list[str]:
        """Every user with state (raises StoreUnavailableError)."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every user's state (raises StoreUnavailableError)."""

    # -------------------------------------------------------------- writes
    def apply(self, events: Iterable[Event]) -> None:
        """Fold validated events (in the given order) into the users' states.

        Raises:
            StoreUnavailableError: The backend failed; nothing or part of the batch was written.
        """
        events = list(events)
        if not events:
            return
        wanted = list(dict.fromkeys(e.user_id for e in events))
        states = self._load(wanted)
        for event in events:
            state = states.get(event.user_id)
            if state is None:
                state = states[event.user_id] = UserState(event.user_id)
            fold_user(state, event, self.catalog, self.config)
        self._save(states)

    def put_states(self, states: Mapping[str, UserState]) -> None:
        """Seed the store with states folded elsewhere (e.g. by the offline batch job)."""
        self._save(states)

    def delete(self, user_id: str) -> bool:
        """Erase one user's state (privacy). Raises :class:`StoreUnavailableError` on failure."""
        return self._delete(str(user_id))

    # -------------------------------------------------------------- reads
    def get_state(self, user_id: str) -> UserState | None:
        """Raw state of one user (``None`` if absent). Raises :class:`StoreUnavailableError`."""
        return self._load([str(user_id)]).get(str(user_id))

    def get_profile(
        self,
        user_id: str,
        now: float | None = None,
        offline: Mapping[str, UserState] | None = None,
    ) -> UserProfile:
        """The user's profile at ``now`` (default: wall clock). Never raises on backend failure.

        Args:
            user_id: External user id.
            now: Evaluation time (session TTLs and genre decay are relative to it).
            offline: Batch-job states (:attr:`OfflineFeatures.user_states`) to serve when the
                backend fails.

        Returns:
            The profile. On backend failure: the user's offline profile if ``offline`` has one,
            else the default profile, either way with ``degraded=True`` and the reason.
        """
        return self.get_profiles([user_id], now, offline)[0]

    def get_profiles(
        self,
        user_ids: Sequence[str],
        now: float | None = None,
        offline: Mapping[str, UserState] | None = None,
    ) -> list[UserProfile]:
        """Profiles of several users in one backend round trip (same failure contract)."""
        now = time.time() if now is None else float(now)
        ids = [str(u) for u in user_ids]
        try:
            states = self._load_for_read(ids)
        except StoreUnavailableError as exc:
            return [self._fallback_profile(u, now, offline, str(exc)) for u in ids]
        return [UserProfile.from_state(u, states.get(u), now, self.config) for u in ids]

    def _load_for_read(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        """:meth:`_load` for a profile read (a backend may answer it from a prefetch)."""
        return self._load(user_ids)

    def _fallback_profile(
        self, user_id: str, now: float, offline: Mapping[str, UserState] | None, error: str
    ) -> UserProfile:
        state = offline.get(user_id) if offline is not None else None
        if state is None:
            return UserProfile.default(user_id, now, f"online store unavailable: {error}; defaults")
        profile = UserProfile.from_state(user_id, state, now, self.config)
        reason = f"online store unavailable: {error}; offline features"
        return dataclasses.replace(profile, degraded=True, reason=reason)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every user's state as plain dicts (compare two stores with ``==``)."""
        ids = self.user_ids()
        return {u: s.to_dict() for u, s in self._load(ids).items()}

    @property
    def healthy(self) -> bool:
        """Whether the last backend call succeeded."""
        return self.last_error is None


class InProcessStore(OnlineStore):
    """The default backend: a dict in this process (notebooks, tests, one server worker).

    States are kept as objects; reads return copies so callers cannot mutate the store.
    """

    def __init__(self, catalog: ItemInfoCatalog | None = None, config: FeatureConfig | None = None):
        super().__init__(catalog, config)
        self._states: dict[str, UserState] = {}
        self._lock = threading.Lock()

    def apply(self, events: Iterable[Event]) -> None:
        """Fold events straight into the live states (no copy: the hot path)."""
        with self._lock:
            states = self._states
            for event in events:
                state = states.get(event.user_id)
                if state is None:
                    state = states[event.user_id] = UserState(event.user_id)
                fold_user(state, event, self.catalog, self.config)

    def _load(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        with self._lock:
            return {
                u: UserState.from_dict(self._states[u].to_dict())  # to_dict copies containers
                for u in user_ids
                if u in self._states
            }

    def _save(self, states: Mapping[str, UserState]) -> None:
        with self._lock:
            for user_id, state in states.items():
                self._states[user_id] = UserState.from_dict(state.to_dict())

    def _delete(self, user_id: str) -> bool:
        with self._lock:
            return self._states.pop(user_id, None) is not None

    def user_ids(self) -> list[str]:
        """Users with state."""
        with self._lock:
            return list(self._states)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


# how long a state read alongside a consent check may serve the profile read that follows it
PREFETCH_SECONDS = 0.05


class RedisStore(OnlineStore):
    """Redis backend, shared by server workers and replicas.

    Args:
        url: ``redis://host:port/db``.
        catalog: Item side information for the fold.
        config: Feature parameters.
        prefix: Key prefix (namespaces several stores in one Redis).
        key_ttl_seconds: Wall-clock TTL of a user's key, refreshed on every write (idle users
            expire). ``None`` keeps keys forever.
        socket_timeout: Seconds before a Redis call counts as failed (keep it far below the
            request budget).
        retry_after_seconds: After a failure, answer reads degraded without trying Redis for
            this long (a simple circuit breaker).
        client: An existing ``redis.Redis`` client (overrides ``url``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        catalog: ItemInfoCatalog | None = None,
        config: FeatureConfig | None = None,
        prefix: str = "recsys:",
        key_ttl_seconds: int | None = 30 * 86400,
        socket_timeout: float = 0.25,
        retry_after_seconds: float = 1.0,
        client: Any = None,
    ) -> None:
        super().__init__(catalog, config)
        import redis  # imported here: the in-process path must not need it

        self._redis = redis
        self.client = client or redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            decode_responses=False,
        )
        self.prefix = prefix
        self.key_ttl_seconds = key_ttl_seconds
        self.retry_after_seconds = retry_after_seconds
        self._open_until = 0.0
        # (user_id, raw value, monotonic time) read alongside another command, per thread
        self._prefetched = threading.local()

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    def _call(self, what: str, fn: Any) -> Any:
        if time.monotonic() < self._open_until:
            raise StoreUnavailableError(
                f"redis {what} skipped: circuit open after '{self.last_error}'"
            )
        try:
            result = fn()
        except (self._redis.RedisError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._open_until = time.monotonic() + self.retry_after_seconds
            log.warning("redis %s failed: %s", what, self.last_error)
            raise StoreUnavailableError(f"redis {what} failed: {self.last_error}") from exc
        self.last_error = None
        return result

    def ping(self) -> bool:
        """Whether Redis answers now (bypasses the circuit breaker)."""
        self._open_until = 0.0
        try:
            return bool(self._call("ping", self.client.ping))
        except StoreUnavailableError:
            return False

    def _load(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        if not user_ids:
            return {}
        values = self._call("mget", lambda: self.client.mget([self._key(u) for u in user_ids]))
        return self._decode(user_ids, values)

    @staticmethod
    def _decode(user_ids: Sequence[str], values: Sequence[Any]) -> dict[str, UserState]:
        out: dict[str, UserState] = {}
        for user_id, raw in zip(user_ids, values, strict=True):
            if raw is None:
                continue
            try:
                out[user_id] = UserState.from_dict(json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise StoreUnavailableError(
                    f"redis value of user {user_id!r} is corrupt: {exc}"
                ) from exc
        return out

    def read_with_state(self, what: str, user_id: str, command: Any) -> Any:
        """Run ``command(pipeline)`` and read the user's state in the same round trip.

        The state is kept for the next profile read of that user *in this thread* (within
        :data:`PREFETCH_SECONDS`), which takes it instead of asking Redis again: a request
        that checks consent and then reads the profile pays one round trip, not two. Writes
        (:meth:`apply`) never use it: they always read the current state.

        Args:
            what: Name of the call for errors.
            user_id: The user whose state to prefetch.
            command: Adds one command to the pipeline; its reply is returned.

        Raises:
            StoreUnavailableError: Redis failed (nothing is kept).
        """

        def both() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            command(pipe)
            pipe.get(self._key(user_id))
            return pipe.execute()

        reply, raw = self._call(what, both)
        self._prefetched.value = (str(user_id), raw, time.monotonic())
        return reply

    def _load_for_read(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        kept = getattr(self._prefetched, "value", None)
        self._prefetched.value = None
        if (
            kept is not None
            and len(user_ids) == 1
            and kept[0] == user_ids[0]
            and time.monotonic() - kept[2] <= PREFETCH_SECONDS
        ):
            return self._decode(user_ids, [kept[1]])
        return self._load(user_ids)

    def _save(self, states: Mapping[str, UserState]) -> None:
        if not states:
            return
        self._prefetched.value = None  # this thread's prefetch predates the write

        def write() -> None:
            pipe = self.client.pipeline(transaction=False)
            for user_id, state in states.items():
                payload = json.dumps(state.to_dict(), separators=(",", ":"))
                pipe.set(self._key(user_id), payload, ex=self.key_ttl_seconds)
            pipe.execute()

        self._call("pipeline set", write)

    def _delete(self, user_id: str) -> bool:
        return bool(self._call("delete", lambda: self.client.delete(self._key(user_id))))

    def user_ids(self) -> list[str]:
        """Users with a key under this store's prefix (SCAN, not KEYS: no server stall)."""
        start = len(self._key(""))

        def scan() -> list[str]:
            keys = self.client.scan_iter(match=self._key("*"), count=1000)
            return [k.decode("utf-8")[start:] for k in keys]

        return self._call("scan", scan)

    def clear(self) -> None:
        """Delete every key under this store's prefix."""

        def wipe() -> None:
            keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                self.client.delete(*keys[i : i + 1000])

        self._call("clear", wipe)

    def ttl(self, user_id: str) -> int:
        """Remaining TTL of a user's key in seconds (-1 none, -2 absent)."""
        return int(self._call("ttl", lambda: self.client.ttl(self._key(user_id))))
