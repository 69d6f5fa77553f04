"""Feature definitions, declared once and computed by one code path.

Every feature is derived from a per-entity *state* that is folded event by event:
:func:`fold_user` / :func:`fold_item` are the **only** functions that turn events into state, and
:func:`user_features` / :func:`item_features` the only ones that turn state into feature values
(applying each feature's TTL and default). The online store calls them on every ingested event;
the offline builder and the point-in-time training-set builder call the very same functions on
the history up to a cutoff. Training and serving therefore cannot disagree about a feature.

``source`` says where a feature is *served from*: ``offline`` features are materialised by the
batch job (history up to the last refresh), ``online`` features by the online store on every
event. Both come out of the same state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.features.events import Event

SESSION_GAP_SECONDS = 1800.0
_REBASE_EXPONENT = 64.0


class FeatureConfig(ComponentConfig):
    """Parameters of the feature computations (shared by offline and online paths)."""

    recent_items: int = Field(50, ge=1, le=10_000, description="Last N items kept per user.")
    session_gap_seconds: float = Field(
        SESSION_GAP_SECONDS, gt=0.0, description="Inactivity that starts a new session."
    )
    genre_half_life_days: float = Field(
        7.0, gt=0.0, le=10_000.0, description="Half-life of the decayed per-genre counts."
    )


@dataclass(frozen=True)
class ItemInfo:
    """Static side information of an item."""

    genres: tuple[str, ...] = ()
    year: float | None = None


class ItemInfoCatalog:
    """External item id → :class:`ItemInfo` (unknown items have no genres and no year)."""

    def __init__(self, items: Mapping[str, ItemInfo] | None = None) -> None:
        self._items: dict[str, ItemInfo] = dict(items or {})

    @classmethod
    def from_dataset(cls, dataset: Any) -> ItemInfoCatalog:
        """Catalog of a :class:`~recsys.data.Dataset` (its ``items`` frame)."""
        frame = dataset.items
        years = frame["year"].tolist() if "year" in frame else [None] * len(frame)
        return cls(
            {
                str(item_id): ItemInfo(
                    tuple(genres),
                    None
                    if year is None or (isinstance(year, float) and math.isnan(year))
                    else float(year),
                )
                for item_id, genres, year in zip(frame.index, frame["genres"], years, strict=True)
            }
        )

    def get(self, item_id: str) -> ItemInfo:
        """Info of one item (empty info when unknown)."""
        return self._items.get(item_id, _EMPTY_INFO)

    def genres(self, item_id: str) -> tuple[str, ...]:
        """Genres of one item."""
        return self._items.get(item_id, _EMPTY_INFO).genres

    def __len__(self) -> int:
        return len(self._items)


_EMPTY_INFO = ItemInfo()


# --------------------------------------------------------------------------- state + fold


@dataclass
class UserState:
    """Everything the user features are computed from (JSON round-trips via to/from_dict).

    ``genre_decayed`` holds Σ w·2^((t_e − genre_ref_time)/half_life) per genre (anchored at
    ``genre_ref_time``, see :func:`fold_user`); read it through :func:`user_features`, which
    evaluates the decay at ``now``.
    """

    user_id: str
    event_count: int = 0
    first_event_time: float | None = None
    last_event_time: float | None = None
    recent_items: list[str] = field(default_factory=list)
    recent_times: list[float] = field(default_factory=list)
    recent_types: list[str] = field(default_factory=list)
    session_id: str = ""
    session_start: float | None = None
    session_length: int = 0
    genre_totals: dict[str, float] = field(default_factory=dict)
    genre_decayed: dict[str, float] = field(default_factory=dict)
    genre_ref_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return {
            "user_id": self.user_id,
            "event_count": self.event_count,
            "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time,
            "recent_items": list(self.recent_items),
            "recent_times": list(self.recent_times),
            "recent_types": list(self.recent_types),
            "session_id": self.session_id,
            "session_start": self.session_start,
            "session_length": self.session_length,
            "genre_totals": dict(self.genre_totals),
            "genre_decayed": dict(self.genre_decayed),
            "genre_ref_time": self.genre_ref_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserState:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class ItemState:
    """Everything the item features are computed from."""

    item_id: str
    event_count: int = 0
    first_event_time: float | None = None
    last_event_time: float | None = None


def fold_user(
    state: UserState, event: Event, catalog: ItemInfoCatalog, config: FeatureConfig
) -> None:
    """Apply one event to a user's state (in place). THE user feature computation.

    Events are expected in time order per user; a late event still counts (totals, decayed
    counts are order-independent), but session boundaries follow arrival order.
    """
    t = event.timestamp
    state.event_count += 1
    if state.first_event_time is None or t < state.first_event_time:
        state.first_event_time = t
    previous = state.last_event_time
    # session: a gap longer than the threshold, or a new explicit client session id
    new_session = (
        previous is None
        or t - previous > config.session_gap_seconds
        or (event.session_id != "" and event.session_id != state.session_id)
    )
    if new_session:
        state.session_start = t
        state.session_length = 0
        state.session_id = event.session_id or f"{state.user_id}@{int(t)}"
    state.session_length += 1
    if previous is None or t >= previous:
        state.last_event_time = t
    recent, recent_times, recent_types = state.recent_items, state.recent_times, state.recent_types
    if len(recent_times) != len(recent):  # a state written before times were kept
        recent_times[:] = [math.nan] * len(recent)
        recent_types[:] = [""] * len(recent)
    recent.append(event.item_id)
    recent_times.append(t)
    recent_types.append(event.event_type)
    if len(recent) > config.recent_items:
        drop = len(recent) - config.recent_items
        del recent[:drop], recent_times[:drop], recent_types[:drop]
    genres = catalog.genres(event.item_id)
    if genres:
        # Decayed counts are kept relative to an anchor time `genre_ref_time`:
        #   genre_decayed[g] = Σ_e w_e · 2^((t_e − ref) / half_life)
        # so an event costs one power, not a pass over every genre; the value at `now` is
        # genre_decayed[g] · 2^(−(now − ref) / half_life). The anchor moves forward (rescaling
        # everything) once the exponent passes 64, long before float64 could overflow.
        half_life = config.genre_half_life_days * 86400.0
        ref = state.genre_ref_time
        if ref is None:
            ref = state.genre_ref_time = t
        exponent = (t - ref) / half_life
        if exponent > _REBASE_EXPONENT:
            factor = 0.5**exponent
            decayed = state.genre_decayed
            for g in decayed:
                decayed[g] *= factor
            ref = state.genre_ref_time = t
            exponent = 0.0
        weight = 1.0 / len(genres)
        contribution = weight * 2.0**exponent
        totals = state.genre_totals
        decayed = state.genre_decayed
        for g in genres:
            totals[g] = totals.get(g, 0.0) + weight
            decayed[g] = decayed.get(g, 0.0) + contribution


def fold_item(state: ItemState, event: Event) -> None:
    """Apply one event to an item's state (in place). THE item feature computation."""
    t = event.timestamp
    state.event_count += 1
    if state.first_event_time is None or t < state.first_event_time:
        state.first_event_time = t
    if state.last_event_time is None or t > state.last_event_time:
        state.last_event_time = t


def fold_events(
    events: Iterable[Event],
    catalog: ItemInfoCatalog,
    config: FeatureConfig,
    users: dict[str, UserState] | None = None,
    items: dict[str, ItemState] | None = None,
) -> tuple[dict[str, UserState], dict[str, ItemState]]:
    """Fold events (in the given order) into user and item states (updating those given)."""
    users = {} if users is None else users
    items = {} if items is None else items
    for event in events:
        user = users.get(event.user_id)
        if user is None:
            user = users[event.user_id] = UserState(event.user_id)
        fold_user(user, event, catalog, config)
        item = items.get(event.item_id)
        if item is None:
            item = items[event.item_id] = ItemState(event.item_id)
        fold_item(item, event)
    return users, items


# --------------------------------------------------------------------------- definitions


Entity = Literal["user", "item"]
Source = Literal["offline", "online"]


@dataclass(frozen=True)
class FeatureDef:
    """One feature, declared once.

    Attributes:
        name: Unique name (column name in training sets, key in profiles).
        entity: ``user`` or ``item``.
        source: ``offline`` (batch, history up to a cutoff) or ``online`` (per event).
        dtype: ``int64``, ``float64``, ``str``, ``list[str]``, ``dict[str,float]``.
        default: Value when the entity has no state or the value expired.
        ttl_seconds: The value expires this long after the entity's last event (``None``:
            never). ``ttl_from`` names a :class:`FeatureConfig` field that overrides it.
        description: What it means.
        compute: ``(state, item_info, now, config) -> value`` (item_info only for items).
    """

    name: str
    entity: Entity
    source: Source
    dtype: str
    default: Any
    ttl_seconds: float | None
    description: str
    compute: Callable[[Any, ItemInfo | None, float, FeatureConfig], Any]
    ttl_from: str | None = None

    def ttl(self, config: FeatureConfig) -> float | None:
        """Effective TTL under ``config``."""
        if self.ttl_from is not None:
            return float(getattr(config, self.ttl_from))
        return self.ttl_seconds

    def default_value(self) -> Any:
        """A fresh copy of the default (lists and dicts are mutable)."""
        return (
            type(self.default)(self.default)
            if isinstance(self.default, list | dict)
            else self.default
        )


def _affinity(state: UserState, *_: Any) -> dict[str, float]:
    total = sum(state.genre_totals.values())
    return {g: v / total for g, v in sorted(state.genre_totals.items())} if total else {}


def _decayed(state: UserState, _: Any, now: float, config: FeatureConfig) -> dict[str, float]:
    if state.genre_ref_time is None:
        return {}
    factor = 0.5 ** ((now - state.genre_ref_time) / (config.genre_half_life_days * 86400.0))
    return {g: v * factor for g, v in sorted(state.genre_decayed.items())}


def _since(value: float | None, now: float) -> float:
    return math.inf if value is None else max(0.0, now - value)


USER_FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        "user_genre_affinity", "user", "offline", "dict[str,float]", {}, None,
        "Share of the user's events per genre (an item's weight split over its genres).",
        _affinity,
    ),
    FeatureDef(
        "user_event_count", "user", "offline", "int64", 0, None,
        "Activity level: number of events so far.",
        lambda s, *_: s.event_count,
    ),
    FeatureDef(
        "user_active_days", "user", "offline", "float64", 0.0, None,
        "Days between the user's first and last event.",
        lambda s, *_: 0.0 if s.first_event_time is None
        else (s.last_event_time - s.first_event_time) / 86400.0,
    ),
    FeatureDef(
        "user_last_items", "user", "online", "list[str]", [], None,
        "The user's last N items, oldest first (N = FeatureConfig.recent_items).",
        lambda s, *_: list(s.recent_items),
    ),
    FeatureDef(
        "user_last_item_times", "user", "online", "list[float]", [], None,
        "Unix time of each of the user's last N items (aligned with user_last_items).",
        lambda s, *_: list(s.recent_times),
    ),
    FeatureDef(
        "user_last_item_types", "user", "online", "list[str]", [], None,
        "Event type of each of the user's last N items (aligned with user_last_items).",
        lambda s, *_: list(s.recent_types),
    ),
    FeatureDef(
        "user_session_id", "user", "online", "str", "", SESSION_GAP_SECONDS,
        "Current session id (a new session starts after a gap > session_gap_seconds).",
        lambda s, *_: s.session_id, ttl_from="session_gap_seconds",
    ),
    FeatureDef(
        "user_session_start", "user", "online", "float64", math.nan, SESSION_GAP_SECONDS,
        "Unix time the current session started (NaN when no live session).",
        lambda s, *_: math.nan if s.session_start is None else s.session_start,
        ttl_from="session_gap_seconds",
    ),
    FeatureDef(
        "user_session_length", "user", "online", "int64", 0, SESSION_GAP_SECONDS,
        "Events in the current session.",
        lambda s, *_: s.session_length, ttl_from="session_gap_seconds",
    ),
    FeatureDef(
        "user_genre_decayed", "user", "online", "dict[str,float]", {}, None,
        "Per-genre event counts decayed with half-life genre_half_life_days, at `now`.",
        _decayed,
    ),
    FeatureDef(
        "user_last_event_time", "user", "online", "float64", math.nan, None,
        "Unix time of the user's last event.",
        lambda s, *_: math.nan if s.last_event_time is None else s.last_event_time,
    ),
)  # fmt: skip

ITEM_FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        "item_popularity", "item", "offline", "int64", 0, None,
        "Number of events on the item so far.",
        lambda s, *_: s.event_count,
    ),
    FeatureDef(
        "item_seconds_since_last_event", "item", "offline", "float64", math.inf, None,
        "Recency: seconds from the item's last event to `now` (inf if never seen).",
        lambda s, _i, now, _c: _since(s.last_event_time, now),
    ),
    FeatureDef(
        "item_age_seconds", "item", "offline", "float64", math.inf, None,
        "Seconds from the item's first event to `now` (inf if never seen).",
        lambda s, _i, now, _c: _since(s.first_event_time, now),
    ),
    FeatureDef(
        "item_genres", "item", "offline", "list[str]", [], None,
        "The item's genres (catalogue side information).",
        lambda _s, info, *_: list(info.genres) if info else [],
    ),
    FeatureDef(
        "item_year", "item", "offline", "float64", math.nan, None,
        "Release year (NaN when unknown).",
        lambda _s, info, *_: math.nan if info is None or info.year is None else info.year,
    ),
)  # fmt: skip

FEATURES: dict[str, FeatureDef] = {f.name: f for f in (*USER_FEATURES, *ITEM_FEATURES)}
_STATIC_ITEM_FEATURES = frozenset({"item_genres", "item_year"})


def feature_names(entity: Entity | None = None, source: Source | None = None) -> list[str]:
    """Names of the declared features, optionally filtered by entity and source."""
    return [
        f.name
        for f in FEATURES.values()
        if (entity is None or f.entity == entity) and (source is None or f.source == source)
    ]


def _select(defs: tuple[FeatureDef, ...], names: Iterable[str] | None) -> list[FeatureDef]:
    if names is None:
        return list(defs)
    chosen = []
    for name in names:
        if name not in FEATURES:
            raise ValueError(f"feature: unknown {name!r}; declared {sorted(FEATURES)}")
        chosen.append(FEATURES[name])
    return [f for f in chosen if f in defs]


def user_features(
    state: UserState | None,
    now: float,
    config: FeatureConfig,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Values of user features at time ``now`` (defaults for no state or an expired TTL)."""
    out: dict[str, Any] = {}
    for feature in _select(USER_FEATURES, names):
        ttl = feature.ttl(config)
        if (
            state is None
            or state.last_event_time is None
            or (ttl is not None and now - state.last_event_time > ttl)
        ):
            out[feature.name] = feature.default_value()
        else:
            out[feature.name] = feature.compute(state, None, now, config)
    return out


def item_features(
    state: ItemState | None,
    info: ItemInfo | None,
    now: float,
    config: FeatureConfig,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Values of item features at time ``now`` (static side information even without events)."""
    out: dict[str, Any] = {}
    for feature in _select(ITEM_FEATURES, names):
        ttl = feature.ttl(config)
        if feature.name in _STATIC_ITEM_FEATURES:
            out[feature.name] = feature.compute(state, info, now, config)
        elif (
            state is None
            or state.last_event_time is None
            or (ttl is not None and now - state.last_event_time > ttl)
        ):
            out[feature.name] = feature.default_value()
        else:
            out[feature.name] = feature.compute(state, info, now, config)
    return out


def genre_vector(values: Mapping[str, float], genres: list[str]) -> np.ndarray:
    """A dict feature (``user_genre_affinity`` …) as a dense float32 vector over ``genres``."""
    return np.asarray([values.get(g, 0.0) for g in genres], dtype=np.float32)


def session_start(
    times: npt.ArrayLike | None, now: float, gap_seconds: float = SESSION_GAP_SECONDS
) -> float | None:
    """Start of the session live at ``now``, from a history's event times (THE session rule).

    The same rule as :func:`fold_user`: a gap longer than ``gap_seconds`` ends a session.
    ``None`` when the last event is more than a gap before ``now`` (no live session: the next
    event starts one).
    """
    if times is None:
        return None
    stamps = np.sort(
        np.asarray(times, dtype=np.float64)[np.isfinite(np.asarray(times, dtype=np.float64))]
    )
    stamps = stamps[stamps <= now]
    if not len(stamps) or now - stamps[-1] > gap_seconds:
        return None
    breaks = np.flatnonzero(np.diff(stamps) > gap_seconds)
    return float(stamps[breaks[-1] + 1] if len(breaks) else stamps[0])


# --------------------------------------------------------------------------- request context
#
# User context reaches a model from three places — the user table (training, offline
# evaluation, and the engine's profile lookup), the online store and the request itself — and
# every one of them goes through `derive_context` so a model sees the same keys at training
# and at serving time.

# MovieLens-1M's age bands: (exclusive upper bound, label); the last band is open-ended
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
    (math.inf, "56+"),
)  # fmt: skip

# user-table columns that identify rather than describe a user: never model inputs
IDENTIFYING_COLUMNS = frozenset({"zip", "zip_code", "title", "name", "user_id"})


def age_band(age: object) -> str | None:
    """Age band label of an age in years; ``None`` when the age is missing or not a number."""
    try:
        years = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if math.isnan(years):
        return None
    return next(label for upper, label in AGE_BANDS if years < upper)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def derive_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Context with missing values dropped and derived keys added (THE context derivation).

    Derived keys: ``age_band`` from ``age`` when the band is not given. Identifying columns
    (``zip``, ...) are dropped: they are not model inputs.
    """
    out = {k: v for k, v in context.items() if not _missing(v) and k not in IDENTIFYING_COLUMNS}
    if "age_band" not in out and "age" in out:
        band = age_band(out["age"])
        if band is not None:
            out["age_band"] = band
    return out


def derive_context_columns(frame: Any) -> Any:
    """:func:`derive_context` for a frame of contexts (one row each), as new columns."""
    out = frame.drop(columns=[c for c in frame.columns if c in IDENTIFYING_COLUMNS])
    if "age" in out and "age_band" not in out:
        # right after its source: column order is feature order for the models
        out.insert(out.columns.get_loc("age") + 1, "age_band", [age_band(a) for a in out["age"]])
    return out


# raw context columns that models see only through the key derived from them
REPLACED_BY_DERIVED = {"age": "age_band"}


def model_context_columns(users: Any) -> Any:
    """The categorical user-context columns a model learns from (derived, raw sources dropped)."""
    derived = derive_context_columns(users)
    return derived.drop(columns=[c for c in REPLACED_BY_DERIVED if c in derived.columns])


def user_contexts(users: Any) -> list[dict[str, Any]]:
    """Per dense user index, the derived context of the user table (``Dataset.users``).

    The one source of stored user context: training, offline evaluation and the engine's
    profile lookup all read it from here.
    """
    if users is None or len(users) == 0:
        return []
    records = users.to_dict("records")
    return [derive_context(row) for row in records]


# --------------------------------------------------------------------------- history


def merge_history(
    items: npt.ArrayLike,
    times: npt.ArrayLike,
    later_items: npt.ArrayLike,
    later_times: npt.ArrayLike,
    types: Sequence[str] | None = None,
    later_types: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """One time-ordered history from two event sources (THE history merge).

    The offline history (a batch snapshot) and the online store's recent events overlap when
    the store also saw events the snapshot holds; an event present in both — same item, same
    timestamp — counts once. Everything is ordered by time (stable: the first source first on
    ties); repeats of an item at different times are kept.

    Args:
        items: First source's dense item indices (e.g. the offline history).
        times: Their Unix times.
        later_items: Second source's dense item indices (e.g. the online store's events).
        later_times: Their Unix times.
        types: Event types of the first source (``None``: unknown).
        later_types: Event types of the second source.

    Returns:
        ``(items, times, types)`` oldest first; ``types`` is ``None`` unless every kept event
        has one.
    """
    items = np.asarray(items, dtype=np.int64)
    times = np.asarray(times, dtype=np.float64)
    later_items = np.asarray(later_items, dtype=np.int64)
    later_times = np.asarray(later_times, dtype=np.float64)
    if times.shape != items.shape or later_times.shape != later_items.shape:
        raise ValueError("merge_history: every event needs a time")
    if not len(later_items):
        return items, times, None if types is None else tuple(types)
    # only events of the first source at or after the earliest later event can be repeats
    overlap = times >= later_times.min()
    if overlap.any():
        known = set(zip(items[overlap].tolist(), times[overlap].tolist(), strict=True))
        fresh = np.fromiter(
            (
                key not in known
                for key in zip(later_items.tolist(), later_times.tolist(), strict=True)
            ),
            dtype=bool,
            count=len(later_items),
        )
    else:
        fresh = np.ones(len(later_items), dtype=bool)
    merged_items = np.concatenate([items, later_items[fresh]])
    merged_times = np.concatenate([times, later_times[fresh]])
    merged_types: tuple[str, ...] | None = None
    if (types is not None or not len(items)) and (later_types is not None or not fresh.any()):
        kept = [t for t, f in zip(later_types or (), fresh.tolist(), strict=False) if f]
        merged_types = (*(types or ()), *kept)
    if len(merged_times) > 1 and np.any(np.diff(merged_times) < 0):
        order = np.argsort(merged_times, kind="stable")
        merged_items, merged_times = merged_items[order], merged_times[order]
        if merged_types is not None:
            merged_types = tuple(merged_types[i] for i in order.tolist())
    return merged_items, merged_times, merged_types
