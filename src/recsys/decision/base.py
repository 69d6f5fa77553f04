"""Shared pieces of the decision stages: the stage contract and the item catalogue they read.

A decision stage is ``Stage(config, ...)(query, items, k) -> ItemList``: it receives the ranked
candidates (best first) and returns what to show, at most ``k`` items, no duplicates.
Item side information (attributes for rules, vectors for similarity) lives in one
:class:`ItemCatalog` shared by all stages, so each stage's config stays pure data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from recsys.config import ComponentConfig
from recsys.types import FloatArray, ItemList, Query


@dataclass
class ItemCatalog:
    """Item side information for the decision stages, in dense item-index order.

    Attributes:
        n_items: Catalogue size.
        attributes: Per-item attribute columns, each a sequence of length ``n_items``. Values are
            scalars (``year``) or tuples of labels (``genres``).
        vectors: L2-normalised item vectors, shape (n_items, d); cosine similarity between
            items is their dot product. Items without features have a zero row (similarity 0).
        ids: External item id of each dense index (decision logs record external ids, which
            survive a retrain); ``None`` logs the dense index as text.
    """

    n_items: int
    attributes: dict[str, list[Any]] = field(default_factory=dict)
    vectors: FloatArray | None = None
    ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, column in self.attributes.items():
            if len(column) != self.n_items:
                raise ValueError(
                    f"attributes[{name!r}]: has {len(column)} values for {self.n_items} items"
                )
        if self.ids is not None and len(self.ids) != self.n_items:
            raise ValueError(f"ids: {len(self.ids)} ids for {self.n_items} items")
        if self.vectors is not None:
            vectors = np.asarray(self.vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != self.n_items:
                raise ValueError(f"vectors: shape {vectors.shape}, expected ({self.n_items}, d)")
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            self.vectors = np.divide(
                vectors, norms, out=np.zeros_like(vectors), where=norms > 0
            ).astype(np.float32)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        vectors: npt.ArrayLike | None = None,
        attributes: Sequence[str] | None = None,
    ) -> ItemCatalog:
        """Build from a :class:`~recsys.data.Dataset`.

        Args:
            dataset: The dataset (its ``items`` frame is in dense-index order).
            vectors: Item embeddings (n_items, d) for similarity; default: multi-hot genres.
            attributes: Item columns to expose to rules (default: all columns of ``items``).
        """
        items = dataset.items
        names = list(items.columns) if attributes is None else list(attributes)
        missing = [n for n in names if n not in items.columns]
        if missing:
            raise ValueError(f"attributes: {missing} not in the dataset's item columns")
        attrs = {name: list(items[name]) for name in names}
        if vectors is None:
            vectors = dataset.genre_matrix().toarray()
        return cls(
            n_items=dataset.n_items,
            attributes=attrs,
            vectors=np.asarray(vectors),
            ids=tuple(dataset.item_index.ids),
        )

    @classmethod
    def from_genres(cls, genres: Sequence[Sequence[str]]) -> ItemCatalog:
        """A catalogue from per-item genre labels only (similarity = genre cosine)."""
        names = sorted({g for gs in genres for g in gs})
        position = {g: j for j, g in enumerate(names)}
        vectors = np.zeros((len(genres), max(1, len(names))), dtype=np.float32)
        for i, gs in enumerate(genres):
            for g in gs:
                vectors[i, position[g]] = 1.0
        return cls(len(genres), {"genres": [tuple(g) for g in genres]}, vectors)

    def external_ids(self, items: npt.ArrayLike) -> list[str]:
        """External ids of dense item indices (the index as text without ``ids``)."""
        indices = np.asarray(items, dtype=np.int64).tolist()
        if self.ids is None:
            return [str(i) for i in indices]
        return [self.ids[i] for i in indices]

    def require_vectors(self) -> FloatArray:
        """The item vectors, or a clear error when the catalogue has none."""
        if self.vectors is None:
            raise ValueError("catalog.vectors: diversity needs item vectors (embeddings or genres)")
        return self.vectors

    def attribute(self, name: str) -> list[Any]:
        """One attribute column, or a clear error naming it."""
        if name not in self.attributes:
            raise ValueError(f"attribute: {name!r} not in catalog ({sorted(self.attributes)})")
        return self.attributes[name]


def as_values(value: Any) -> tuple[Any, ...]:
    """An attribute value as a tuple of labels (scalars become 1-tuples, missing becomes ())."""
    if isinstance(value, (tuple, list, set, frozenset, np.ndarray)):
        return tuple(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return (value,)


def check_k(k: int) -> int:
    """Validate a slate size."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k: must be a non-negative integer, not {k!r}")
    return int(k)


def check_items(items: ItemList, n_items: int | None = None) -> ItemList:
    """Validate a candidate list: no duplicates, finite scores, indices inside the catalogue."""
    if len(np.unique(items.items)) != len(items):
        raise ValueError("items: candidate list contains duplicate item indices")
    if not np.all(np.isfinite(items.scores)):
        raise ValueError("items.scores: must be finite")
    if (
        n_items is not None
        and len(items)
        and (items.items.min() < 0 or items.items.max() >= n_items)
    ):
        raise ValueError(f"items: indices must lie in [0, {n_items})")
    return items


def normalized_relevance(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Min–max scale scores to [0, 1] within the list (all 1.0 when they are all equal).

    Relevance and similarity must be on comparable scales for a trade-off weight to mean the
    same thing whatever the ranker's score scale is.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    lo, hi = s.min(), s.max()
    if hi - lo <= 0:
        return np.ones_like(s)
    return (s - lo) / (hi - lo)


def take(items: ItemList, positions: npt.ArrayLike, propensities: Any = None) -> ItemList:
    """Sub-list of ``items`` at ``positions`` (in that order)."""
    pos = np.asarray(positions, dtype=np.int64)
    props = propensities
    if props is None and items.propensities is not None:
        props = items.propensities[pos]
    return ItemList(items.items[pos], items.scores[pos], props)


class DecisionStage(ABC):
    """Base of decision stages: ``stage(query, items, k) -> ItemList``.

    Subclasses set ``config_class`` and implement :meth:`__call__`.
    """

    config_class: ClassVar[type[ComponentConfig]]

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        if overrides:
            base = self.config_class.model_validate({**base.model_dump(), **overrides})
        self.config = base

    @abstractmethod
    def __call__(self, query: Query, items: ItemList, k: int) -> ItemList:
        """Choose at most ``k`` of ``items`` (best first) to show for ``query``."""


def context_value(context: Mapping[str, Any], key: str) -> Any:
    """A context value, ``None`` when absent or NaN."""
    value = context.get(key)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
