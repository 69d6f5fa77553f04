"""In-memory dataset: interactions + item/user side information + dense id indexing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.schema import validate_interactions
from recsys.types import IntArray


@dataclass(frozen=True)
class IdIndex:
    """A bijection between external ids (strings) and dense indices 0..n-1."""

    ids: tuple[str, ...]
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)
    _digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions = {value: i for i, value in enumerate(self.ids)}
        if len(positions) != len(self.ids):
            raise ValueError("IdIndex ids must be unique")
        object.__setattr__(self, "_positions", positions)
        digest = hashlib.sha256("\x1f".join(self.ids).encode()).hexdigest()[:16]
        object.__setattr__(self, "_digest", digest)

    @property
    def digest(self) -> str:
        """Fingerprint of the ids *in index order*: two indexes agree iff their digests do.

        Components trained on one index record it, so serving them over another (a retrain
        that re-indexed the catalogue) is refused instead of silently mis-mapping items.
        """
        return self._digest

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._positions

    def index(self, external_id: object) -> int | None:
        """Dense index of one external id, ``None`` when unknown."""
        return self._positions.get(str(external_id))

    def indices(self, external_ids: Iterable[object]) -> IntArray:
        """Dense indices of known ids (unknown ids are dropped)."""
        found = [self._positions.get(str(x)) for x in external_ids]
        return np.asarray([i for i in found if i is not None], dtype=np.int64)

    def to_ids(self, indices: Iterable[int]) -> list[str]:
        """External ids of dense indices."""
        return [self.ids[int(i)] for i in indices]


@dataclass
class Dataset:
    """A recommendation dataset.

    Attributes:
        name: Short name (``ml-100k``, ``ml-latest-small``, ...).
        interactions: Events in the :mod:`recsys.data.schema` layout, plus dense ``user`` and
            ``item`` index columns (added on construction).
        items: One row per catalogue item indexed by external ``item_id``; columns include
            ``title``, ``genres`` (tuple of str), ``year`` (float, NaN when unknown) and, where
            the dataset has them, ``tags`` (tuple of str).
        users: One row per user indexed by external ``user_id`` with context columns
            (MovieLens-100K: ``age``, ``gender``, ``occupation``, ``zip``); may be empty.
        key: ``user``, or ``session`` for anonymous session logs: then every "user" is one
            session (``user_id`` equals ``session_id``), there are no returning users, and a
            benchmark splits whole sessions by time
            (:func:`~recsys.data.splits.session_time_split`) and predicts each session's
            next events from its prefix.
        metadata: Where the data came from (a registered dataset's config, files, column
            mapping, dropped rows, displaced columns); shown by :meth:`summary`.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame = field(default_factory=pd.DataFrame)
    key: str = "user"
    metadata: dict[str, Any] = field(default_factory=dict)
    user_index: IdIndex = field(init=False)
    item_index: IdIndex = field(init=False)

    def __post_init__(self) -> None:
        if self.key not in ("user", "session"):
            raise ValueError(f"Dataset key: {self.key!r}; use 'user' or 'session'")
        self.interactions = validate_interactions(self.interactions, source=self.name)
        item_ids = list(dict.fromkeys([*map(str, self.items.index), *self.interactions["item_id"]]))
        if len(item_ids) != len(self.items):
            extra = pd.DataFrame(index=pd.Index(item_ids[len(self.items) :], name="item_id"))
            self.items = pd.concat([self.items, extra])
        self.items.index = self.items.index.astype(str)
        self.items.index.name = "item_id"
        if "genres" not in self.items:
            self.items["genres"] = [() for _ in range(len(self.items))]
        self.items["genres"] = [g if isinstance(g, tuple) else () for g in self.items["genres"]]
        if "year" not in self.items:
            self.items["year"] = np.nan
        user_ids = list(dict.fromkeys([*map(str, self.users.index), *self.interactions["user_id"]]))
        self.item_index = IdIndex(tuple(item_ids))
        self.user_index = IdIndex(tuple(user_ids))
        if len(self.users):
            self.users.index = self.users.index.astype(str)
            self.users = self.users.reindex(user_ids)
            self.users.index.name = "user_id"
        self.interactions["user"] = (
            self.interactions["user_id"].map(self.user_index._positions).astype(np.int64)
        )
        self.interactions["item"] = (
            self.interactions["item_id"].map(self.item_index._positions).astype(np.int64)
        )

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        """Number of catalogue items."""
        return len(self.item_index)

    @property
    def session_keyed(self) -> bool:
        """True when the dataset's users are anonymous sessions (``key == "session"``)."""
        return self.key == "session"

    def item_genres(self) -> list[tuple[str, ...]]:
        """Genres of each item in dense-index order."""
        return list(self.items["genres"])

    def genre_matrix(self) -> sp.csr_matrix:
        """Multi-hot item × genre matrix (n_items, n_genres) and, via ``genre_names``, labels."""
        names = self.genre_names()
        position = {g: j for j, g in enumerate(names)}
        rows, cols = [], []
        for i, genres in enumerate(self.items["genres"]):
            for g in genres:
                rows.append(i)
                cols.append(position[g])
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(self.n_items, len(names)))

    def genre_names(self) -> list[str]:
        """Sorted distinct genre labels."""
        return sorted({g for genres in self.items["genres"] for g in genres})

    def summary(self) -> dict[str, object]:
        """Counts and time span, for ``recsys data info``."""
        ts = self.interactions["timestamp"]
        n = len(self.interactions)
        sessions = self.interactions["session_id"]
        sessions = sessions[sessions != ""]
        return {
            "name": self.name,
            "interactions": n,
            "users": self.n_users,
            "items": self.n_items,
            "items_with_interactions": int(self.interactions["item"].nunique()),
            "density": n / max(1, self.n_users * self.n_items),
            "genres": len(self.genre_names()),
            "first_event": _iso(ts.min()),
            "last_event": _iso(ts.max()),
            "event_types": sorted(self.interactions["event_type"].unique().tolist()),
            "user_context": [str(c) for c in self.users.columns],
            "key": self.key,
            "sessions": int(sessions.nunique()),
            **self.metadata,
        }


def _iso(seconds: float) -> str:
    """ISO 8601 (UTC) to the millisecond: float seconds carry no finer truth."""
    return pd.Timestamp(round(float(seconds) * 1000), unit="ms", tz="UTC").isoformat()


def interaction_matrix(
    frame: pd.DataFrame, n_users: int, n_items: int, binary: bool = True
) -> sp.csr_matrix:
    """User × item CSR matrix of the (dense-indexed) interactions in ``frame``.

    Args:
        frame: Rows with ``user`` and ``item`` columns (dense indices).
        n_users: Number of rows.
        n_items: Number of columns.
        binary: Count each (user, item) pair once with value 1.0 (implicit feedback).

    Returns:
        A float32 CSR matrix of shape (n_users, n_items).
    """
    users = frame["user"].to_numpy(np.int64)
    items = frame["item"].to_numpy(np.int64)
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


def histories(frame: pd.DataFrame, n_users: int) -> list[IntArray]:
    """Each user's item indices in time order (oldest first); empty arrays for absent users."""
    ordered = frame.sort_values("timestamp", kind="stable")
    out: list[IntArray] = [np.zeros(0, dtype=np.int64) for _ in range(n_users)]
    for user, group in ordered.groupby("user", sort=False)["item"]:
        out[int(user)] = group.to_numpy(np.int64)
    return out


@dataclass(frozen=True)
class TimedHistory:
    """One user's events in time order: item indices, Unix times and event types."""

    items: IntArray
    times: np.ndarray
    types: tuple[str, ...]


def timed_histories(frame: pd.DataFrame, n_users: int) -> list[TimedHistory]:
    """Each user's events in time order, with their times and types; empty for absent users.

    The same order as :func:`histories` (a stable sort by time), so the two agree.
    """
    empty = TimedHistory(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), ())
    out: list[TimedHistory] = [empty] * n_users
    if frame.empty:
        return out
    ordered = frame.sort_values("timestamp", kind="stable")
    users = ordered["user"].to_numpy(np.int64)
    items = ordered["item"].to_numpy(np.int64)
    times = ordered["timestamp"].to_numpy(np.float64)
    types = (
        ordered["event_type"].astype(str).to_numpy()
        if "event_type" in ordered
        else np.full(len(ordered), "interaction", dtype=object)
    )
    by_user = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[by_user])) + 1
    for rows in np.split(by_user, bounds):
        if len(rows):
            out[int(users[rows[0]])] = TimedHistory(
                items[rows], times[rows], tuple(types[rows].tolist())
            )
    return out


def split_genres(value: object, separators: Sequence[str] = ("|",)) -> tuple[str, ...]:
    """Parse a genre string (``"Action|Comedy"``) into a tuple; placeholders give ``()``."""
    if not isinstance(value, str) or not value or value == "(no genres listed)":
        return ()
    parts = [value]
    for sep in separators:
        parts = [p for part in parts for p in part.split(sep)]
    return tuple(p.strip() for p in parts if p.strip())
