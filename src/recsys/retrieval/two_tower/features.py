"""Feature vocabularies and encoders of the two towers → TorchRec ``KeyedJaggedTensor``.

Item tower features (one jagged row per item):

* ``item_id``: the dense item index (one value).
* ``item_genres``: the item's genres as a multi-hot bag (0..n values).
* ``item_year``: release year bucketed by ``year_bucket_size`` years (one value; 0 = unknown).
* ``item_tags``: the item's most frequent tags (0..n values), where the dataset has tags.

User tower features (one jagged row per :class:`~recsys.types.Query`):

* ``user_id``: dense user index + 1; 0 for an unknown user (cold start).
* ``user_history``: the last ``history_length`` items of ``query.history`` as a
  variable-length bag. This is the real-time signal: a fresh history re-encodes the user with
  the same weights, no retraining.
* ``user_history_genres``: the genres of those items (bag; what the user has been watching).
* ``ctx_<name>``: one value per context attribute of the dataset's users (MovieLens-100K:
  ``age_band``, ``gender``, ``occupation``); 0 = unknown / missing.

Index 0 of every vocabulary (except ``item_id`` and the history bag, which hold item indices)
means "unknown", so an unseen value at serving time degrades gracefully instead of raising.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.dataset import Dataset
from recsys.features.definitions import derive_context, model_context_columns
from recsys.types import IntArray, Query

UNKNOWN = "<unk>"
_MAX_CONTEXT_VALUES = 200


@dataclass
class Vocabulary:
    """Token ↔ index map; index 0 is ``<unk>``."""

    tokens: list[str]
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != UNKNOWN:
            self.tokens = [UNKNOWN, *[t for t in self.tokens if t != UNKNOWN]]
        self._positions = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: object) -> int:
        """Index of a token, 0 when unknown."""
        return self._positions.get(str(token), 0)


@dataclass
class Jagged:
    """A jagged int array: row ``r`` is ``values[offsets[r]:offsets[r + 1]]``."""

    values: IntArray
    offsets: IntArray

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> Jagged:
        """Build from Python lists."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = (
            np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(offsets[-1]))
            if len(rows)
            else np.zeros(0, dtype=np.int64)
        )
        return cls(values, offsets)

    def gather(self, rows: IntArray) -> tuple[IntArray, IntArray]:
        """(values, lengths) of the given rows, concatenated in order."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), lengths
        # position of every output value in ``values``
        row_start_in_out = np.cumsum(lengths) - lengths
        index = np.arange(total) - np.repeat(row_start_in_out, lengths) + np.repeat(starts, lengths)
        return self.values[index], lengths


@dataclass(frozen=True)
class FeatureSpec:
    """One sparse feature: its name, table size and pooling."""

    name: str
    num_embeddings: int
    pooling: str  # "sum" | "mean"


class TwoTowerFeatures:
    """Fitted vocabularies of both towers; encodes items and queries as KJTs.

    Args:
        n_users: Number of known users (dense indices 0..n_users-1).
        n_items: Number of catalogue items.
        genres: Genre vocabulary.
        item_genres: Genre indices of each item (jagged, n_items rows).
        item_year: Year-bucket index of each item, shape (n_items,).
        n_year_buckets: Size of the year vocabulary (bucket 0 = unknown).
        tags: Tag vocabulary (empty when the dataset has none).
        item_tags: Tag indices of each item (jagged), or ``None``.
        context: Context attribute → vocabulary.
        history_length: Items of the history bag kept (most recent).
        user_ids: External user ids in dense order (the id mapping).
        item_ids: External item ids in dense order.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        genres: Vocabulary,
        item_genres: Jagged,
        item_year: IntArray,
        n_year_buckets: int,
        tags: Vocabulary,
        item_tags: Jagged | None,
        context: dict[str, Vocabulary],
        history_length: int,
        user_ids: list[str],
        item_ids: list[str],
        year_min: int = 0,
        year_bucket_size: int = 5,
        sequence: bool = False,
    ) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.genres = genres
        self.item_genres = item_genres
        self.item_year = np.asarray(item_year, dtype=np.int64)
        self.n_year_buckets = n_year_buckets
        self.tags = tags
        self.item_tags = item_tags
        self.context = context
        self.history_length = history_length
        self.user_ids = user_ids
        self.item_ids = item_ids
        self.year_min = year_min
        self.year_bucket_size = year_bucket_size
        # an ordered user tower reads the history as a sequence, not as pooled bags
        self.sequence = sequence

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        history_length: int = 50,
        max_tags: int = 500,
        year_bucket_size: int = 5,
        use_context: bool = True,
        sequence: bool = False,
    ) -> TwoTowerFeatures:
        """Build vocabularies from a dataset's item and user tables.

        Side information (genres, years, tags, user attributes) is catalogue metadata, not
        interactions, so reading it for every item/user leaks nothing from held-out events.
        """
        items = dataset.items
        genres = Vocabulary(dataset.genre_names())
        item_genres = Jagged.from_lists(
            [[genres.index(g) for g in gs] for gs in dataset.item_genres()]
        )
        years = items["year"].to_numpy(dtype=np.float64)
        known = years[~np.isnan(years)]
        year_min = int(known.min()) if known.size else 0
        buckets = np.zeros(len(years), dtype=np.int64)
        ok = ~np.isnan(years)
        buckets[ok] = 1 + ((years[ok] - year_min) // year_bucket_size).astype(np.int64)
        n_year_buckets = int(buckets.max()) + 2 if len(buckets) else 2

        tags = Vocabulary([])
        item_tags = None
        if "tags" in items and max_tags > 0:
            rows = [t if isinstance(t, tuple) else () for t in items["tags"]]
            counts = Counter(str(t).lower() for row in rows for t in set(row))
            if counts:
                top = sorted(counts, key=lambda t: (-counts[t], t))[:max_tags]
                tags = Vocabulary(top)
                item_tags = Jagged.from_lists(
                    [sorted({tags.index(str(t).lower()) for t in row} - {0}) for row in rows]
                )

        context: dict[str, Vocabulary] = {}
        if use_context and len(dataset.users):
            columns = model_context_columns(dataset.users)
            for column in columns.columns:
                tokens = sorted({str(v) for v in columns[column].dropna()})
                if 0 < len(tokens) <= _MAX_CONTEXT_VALUES:
                    context[str(column)] = Vocabulary(tokens)

        return cls(
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            genres=genres,
            item_genres=item_genres,
            item_year=buckets,
            n_year_buckets=n_year_buckets,
            tags=tags,
            item_tags=item_tags,
            context=context,
            history_length=history_length,
            user_ids=list(dataset.user_index.ids),
            item_ids=list(dataset.item_index.ids),
            year_min=year_min,
            year_bucket_size=year_bucket_size,
            sequence=sequence,
        )

    # ------------------------------------------------------------------ specs
    def item_specs(self) -> list[FeatureSpec]:
        """Item tower features, in KJT key order."""
        specs = [
            FeatureSpec("item_id", self.n_items, "sum"),
            FeatureSpec("item_genres", len(self.genres), "mean"),
        ]
        if self.has_years:
            specs.append(FeatureSpec("item_year", self.n_year_buckets, "sum"))
        if self.item_tags is not None:
            specs.append(FeatureSpec("item_tags", len(self.tags), "mean"))
        return specs

    def user_specs(self) -> list[FeatureSpec]:
        """User tower features, in KJT key order (no history bags for a sequence tower)."""
        specs = [FeatureSpec("user_id", self.n_users + 1, "sum")]
        if not self.sequence:
            specs += [
                FeatureSpec("user_history", self.n_items, "mean"),
                FeatureSpec("user_history_genres", len(self.genres), "mean"),
            ]
        specs += [FeatureSpec(f"ctx_{name}", len(v), "sum") for name, v in self.context.items()]
        return specs

    @property
    def has_years(self) -> bool:
        """Whether any item has a year (a catalogue without any gets no constant feature)."""
        return bool((self.item_year > 0).any())

    # ------------------------------------------------------------------ encoding
    def item_kjt(self, items: IntArray) -> KeyedJaggedTensor:
        """KJT of the given items (batch size ``len(items)``)."""
        items = np.asarray(items, dtype=np.int64)
        ones = np.ones(len(items), dtype=np.int64)
        parts: list[tuple[IntArray, IntArray]] = [(items, ones), self.item_genres.gather(items)]
        if self.has_years:
            parts.append((self.item_year[items], ones))
        if self.item_tags is not None:
            parts.append(self.item_tags.gather(items))
        return _kjt([s.name for s in self.item_specs()], parts)

    def histories_of(self, queries: Sequence[Query]) -> list[IntArray]:
        """Each query's last ``history_length`` valid items."""
        out = []
        for q in queries:
            h = q.history[(q.history >= 0) & (q.history < self.n_items)]
            out.append(h[-self.history_length :] if self.history_length else h[:0])
        return out

    def user_kjt(
        self,
        queries: Sequence[Query],
        histories: Sequence[IntArray] | None = None,
    ) -> KeyedJaggedTensor:
        """KJT of the given queries (batch size ``len(queries)``).

        Args:
            queries: The requests; ``user`` may be ``None`` and ``history`` empty.
            histories: Precomputed history bags (training passes target-free histories);
                by default each query's last ``history_length`` items.
        """
        hist = list(histories) if histories is not None else self.histories_of(queries)
        return self.encode_users(
            np.asarray(
                [
                    0 if q.user is None or not 0 <= q.user < self.n_users else q.user + 1
                    for q in queries
                ],
                dtype=np.int64,
            ),
            hist,
            [self.context_row(q.context) for q in queries],
        )

    def context_row(self, context: Mapping[str, Any]) -> list[int]:
        """Context vocabulary indices of one request (0 for absent values)."""
        if not self.context:
            return []
        derived = derive_context(context)
        return [
            0 if (value := derived.get(name)) is None else vocab.index(value)
            for name, vocab in self.context.items()
        ]

    def encode_users(
        self, user_slots: IntArray, histories: Sequence[IntArray], context_rows: Sequence[list[int]]
    ) -> KeyedJaggedTensor:
        """KJT from user slots (index + 1, 0 = unknown), history bags and context indices."""
        parts = self.user_parts(user_slots, histories, context_rows)
        return _kjt([s.name for s in self.user_specs()], parts)

    def user_parts(
        self, user_slots: IntArray, histories: Sequence[IntArray], context_rows: Sequence[list[int]]
    ) -> list[tuple[IntArray, IntArray]]:
        """The user tower's input as one ``(values, lengths)`` pair per feature (KJT order)."""
        n = len(user_slots)
        ones = np.ones(n, dtype=np.int64)
        hist_lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
        hist_values = np.concatenate(histories) if n else np.zeros(0, dtype=np.int64)
        g_values, g_lengths = self.item_genres.gather(hist_values.astype(np.int64))
        # genres per user = the genre bags of its history items, concatenated
        item_cum = np.concatenate([[0], np.cumsum(g_lengths)]).astype(np.int64)
        hist_end = np.cumsum(hist_lengths)
        g_user_lengths = item_cum[hist_end] - item_cum[hist_end - hist_lengths]
        parts: list[tuple[IntArray, IntArray]] = [(np.asarray(user_slots, dtype=np.int64), ones)]
        if not self.sequence:
            parts += [
                (hist_values.astype(np.int64), hist_lengths),
                (g_values, g_user_lengths.astype(np.int64)),
            ]
        ctx = np.asarray(context_rows, dtype=np.int64).reshape(n, len(self.context))
        for j in range(len(self.context)):
            parts.append((ctx[:, j], ones))
        return parts

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (vocabularies and id mappings)."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "genres": self.genres.tokens,
            "item_genres": [self.item_genres.values.tolist(), self.item_genres.offsets.tolist()],
            "item_year": self.item_year.tolist(),
            "n_year_buckets": self.n_year_buckets,
            "tags": self.tags.tokens,
            "item_tags": None
            if self.item_tags is None
            else [self.item_tags.values.tolist(), self.item_tags.offsets.tolist()],
            "context": {k: v.tokens for k, v in self.context.items()},
            "history_length": self.history_length,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "year_min": self.year_min,
            "year_bucket_size": self.year_bucket_size,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TwoTowerFeatures:
        """Inverse of :meth:`to_dict`."""

        def jagged(pair: Any) -> Jagged:
            return Jagged(np.asarray(pair[0], dtype=np.int64), np.asarray(pair[1], dtype=np.int64))

        return cls(
            n_users=int(state["n_users"]),
            n_items=int(state["n_items"]),
            genres=Vocabulary(list(state["genres"])),
            item_genres=jagged(state["item_genres"]),
            item_year=np.asarray(state["item_year"], dtype=np.int64),
            n_year_buckets=int(state["n_year_buckets"]),
            tags=Vocabulary(list(state["tags"])),
            item_tags=None if state["item_tags"] is None else jagged(state["item_tags"]),
            context={k: Vocabulary(list(v)) for k, v in state["context"].items()},
            history_length=int(state["history_length"]),
            user_ids=list(state["user_ids"]),
            item_ids=list(state["item_ids"]),
            year_min=int(state["year_min"]),
            year_bucket_size=int(state["year_bucket_size"]),
            sequence=bool(state.get("sequence", False)),
        )

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TwoTowerFeatures:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _kjt(keys: list[str], parts: list[tuple[IntArray, IntArray]]) -> KeyedJaggedTensor:
    values = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    lengths = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.from_numpy(values.astype(np.int64)),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
    )
