"""Non-neural baselines: popularity, item-based kNN (cosine), EASE.

Each scores from the query's history, so a fresh history changes the next recommendation
without retraining (popularity excepted, by design).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.retrieval.base import Recommender, history_matrix
from recsys.types import FloatArray, Query


def item_gram(matrix: sp.spmatrix) -> np.ndarray:
    """Dense item × item co-occurrence XᵀX (float64) of a user × item matrix."""
    return (matrix.T @ matrix).toarray().astype(np.float64)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE^R's closed-form item–item weights B from the Gram matrix (diag(B) = 0)."""
    regularised = gram.copy()
    regularised[np.diag_indices_from(regularised)] += l2
    inverse = np.linalg.inv(regularised)
    weights = inverse / (-np.diag(inverse))
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def cosine_knn(gram: np.ndarray, neighbors: int, shrink: float = 0.0) -> sp.csr_matrix:
    """Cosine item–item similarity from a binary Gram matrix, truncated per *target* item.

    Column i holds the similarities of target item i; only its ``neighbors`` most similar
    source items are kept. This is the classic formulation and RecBole's; truncating rows
    instead costs ~0.025 NDCG@10 on ML-100K.
    """
    norms = np.sqrt(np.diag(gram))
    sim = gram / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    k = min(neighbors, sim.shape[0] - 1)
    if 0 < k < sim.shape[0]:
        drop = np.argpartition(-sim, k, axis=0)[k:, :]
        np.put_along_axis(sim, drop, 0.0, axis=0)
    return sp.csr_matrix(sim.astype(np.float32))


class PopularityConfig(ComponentConfig):
    """Most-popular baseline."""

    recency_half_life_days: float | None = Field(
        None, gt=0.0, description="Weight events by recency (None = plain counts)."
    )


class Popularity(Recommender):
    """Recommends the items with the most training interactions to everyone."""

    config_class = PopularityConfig
    name = "popularity"
    config: PopularityConfig

    def fit(self, split: Split) -> Self:
        """Count interactions per item (optionally decayed by age)."""
        train = split.train
        weights = np.ones(len(train))
        if self.config.recency_half_life_days is not None:
            age_days = (train["timestamp"].max() - train["timestamp"].to_numpy()) / 86400.0
            weights = 0.5 ** (age_days / self.config.recency_half_life_days)
        counts = np.bincount(
            train["item"].to_numpy(), weights=weights, minlength=split.dataset.n_items
        )
        self.counts = counts.astype(np.float32)
        self._fitted_on(split)
        return self

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """The same popularity vector for every query."""
        self._require_fitted()
        return np.broadcast_to(self.counts, (len(queries), len(self.counts))).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.counts = state["counts"]


class ItemKNNConfig(ComponentConfig):
    """Item-based k-nearest-neighbours with cosine similarity."""

    neighbors: int = Field(100, ge=1, le=10_000, description="Similar items kept per item.")
    shrink: float = Field(0.0, ge=0.0, description="Similarity shrinkage (Bell & Koren).")


class ItemKNN(Recommender):
    """score(u, i) = Σ_{j ∈ history(u) ∩ N_k(i)} sim(i, j), N_k(i) = the k items most similar to i.

    See :func:`cosine_knn` for the truncation.
    """

    config_class = ItemKNNConfig
    name = "itemknn"
    config: ItemKNNConfig

    def fit(self, split: Split) -> Self:
        """Compute the truncated cosine item–item similarity matrix."""
        gram = item_gram(split.train_matrix())
        self.similarity = cosine_knn(gram, self.config.neighbors, self.config.shrink)
        self._fitted_on(split)
        return self

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Sum of similarities from the history items."""
        n_items = self._require_fitted()
        return np.asarray((history_matrix(queries, n_items) @ self.similarity).todense())

    def _state(self) -> dict[str, np.ndarray]:
        sim = self.similarity
        return {"data": sim.data, "indices": sim.indices, "indptr": sim.indptr}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        n = self._require_fitted()
        self.similarity = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=(n, n)
        )


class EASEConfig(ComponentConfig):
    """EASE^R (Steck 2019): a closed-form item–item linear autoencoder."""

    l2: float = Field(250.0, gt=0.0, le=1e6, description="L2 regularisation λ.")


class EASE(Recommender):
    """B = argmin ||X − XB||² + λ||B||², diag(B) = 0, solved in closed form."""

    config_class = EASEConfig
    name = "ease"
    config: EASEConfig

    def fit(self, split: Split) -> Self:
        """Invert the regularised Gram matrix (n_items²; fine up to ~20k items)."""
        self.weights = ease_weights(item_gram(split.train_matrix()), self.config.l2)
        self._fitted_on(split)
        return self

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Reconstruct the history row through B."""
        n_items = self._require_fitted()
        return np.asarray(history_matrix(queries, n_items) @ self.weights)

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.weights = state["weights"]
