"""Session-based k-nearest-neighbours: SKNN and V-SKNN (Ludewig & Jannach 2018).

The simple methods that neural session models must beat (session-rec's evaluations). Each
training "session" is one user of ``split.train`` (in the session protocol the users *are*
sessions); the current session is the query's ``history`` (oldest first, repeats kept).

For a prefix ``P`` (the items of ``query.history``):

1. **Candidates**: the training sessions that contain any item of ``P``; when there are more
   than ``sample_size``, the ``sample_size`` most recent ones (by their last click).
2. **Similarity** of each candidate ``N`` to the prefix:

   * SKNN: cosine of the binary item sets, ``|P ∩ N| / (√|P| · √|N|)``;
   * V-SKNN: each prefix item is weighted by its position (``weighting``; ``linear``:
     ``max(0, 1 − 0.1·(L − i))`` for the i-th of L clicks, an item clicked twice counts at
     its latest position), and ``similarity="vec"`` is ``Σ_{i ∈ P ∩ N} w_i / |P|``
     (``"cosine"``: ``Σ w_i / (√Σ w_i² · √|N|)``).
3. **Neighbours**: the ``k`` candidates of highest similarity (> 0; equal similarity: the more
   recent session first).
4. **Scores**: SKNN: ``score(i) = Σ_{N ∋ i} sim(N)``. V-SKNN multiplies each neighbour's
   similarity by a decay of how far back the most recent prefix item it shares was clicked
   (``weighting_score``; ``div``: 1/step, step 1 = the last click), and optionally by
   ``1 + idf_weighting · idf(i)``.

Items of the prefix are scored like any other: a neighbour that contains them votes for them,
which is what makes these methods strong where users re-click (they are *not* masked by the
session protocol). The implementation follows session-rec's ``ContextKNN`` and
``VMContextKNN`` (read for fidelity, written anew on sparse matrices); two deliberate
differences: SKNN's cosine is the cosine (session-rec's ``li / sqrt(la) * sqrt(lb)``
multiplies by ``√|N|`` through operator precedence), and V-SKNN's ``linear`` weights are
clipped at zero for positions more than ten clicks back (session-rec's version returns 0 for
every click after the tenth and negative weights for long sessions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.retrieval.base import Recommender
from recsys.types import FloatArray, IntArray, Query

# weight of the i-th of L clicks (1-based) in V-SKNN's similarity
POSITION_WEIGHTS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "linear": lambda i, n: np.maximum(0.0, 1.0 - 0.1 * (n - i)),
    "same": lambda i, n: np.ones_like(i, dtype=np.float64),
    "div": lambda i, n: i / float(n),
    "log": lambda i, n: 1.0 / np.log10((n - i) + 1.7),
    "quadratic": lambda i, n: (i / float(n)) ** 2,
}
# decay of a neighbour's vote by the step (1 = last click) of the latest prefix item it shares
STEP_DECAYS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda s: np.maximum(0.0, 1.0 - 0.1 * s),
    "same": lambda s: np.ones_like(s, dtype=np.float64),
    "div": lambda s: 1.0 / s,
    "log": lambda s: 1.0 / np.log10(s + 1.7),
    "quadratic": lambda s: 1.0 / (s * s),
}


class SKNNConfig(ComponentConfig):
    """Session-kNN (SKNN): cosine neighbours among recent sessions."""

    k: int = Field(100, ge=1, le=100_000, description="Neighbour sessions that vote.")
    sample_size: int = Field(
        500,
        ge=0,
        le=10_000_000,
        description="Candidate sessions kept (the most recent sharing an item); 0 = all.",
    )
    last_n: int | None = Field(
        None, ge=1, le=10_000, description="Only the last N clicks form the session (None: all)."
    )


class VSKNNConfig(SKNNConfig):
    """Vector-multiplication session-kNN (V-SKNN): recency-weighted similarity and votes."""

    weighting: Literal["linear", "same", "div", "log", "quadratic"] = Field(
        "linear", description="Weight of a prefix click by its position (recent clicks count more)."
    )
    weighting_score: Literal["linear", "same", "div", "log", "quadratic"] = Field(
        "div", description="Decay of a neighbour's vote by how far back its shared click was."
    )
    similarity: Literal["vec", "cosine"] = Field("vec")
    idf_weighting: float = Field(
        0.0, ge=0.0, le=1000.0, description="Votes × (1 + w · idf(item)); 0 = off."
    )


class SKNN(Recommender):
    """Session-based kNN: ``score(i) = Σ`` similarity of the neighbour sessions containing ``i``.

    Example:
        >>> model = SKNN(k=50, sample_size=500).fit(split)  # doctest: +SKIP
        >>> model(Query(history=np.array([3, 7, 3])), n=20, exclude_seen=False)  # doctest: +SKIP
    """

    config_class: ClassVar[type[ComponentConfig]] = SKNNConfig
    name = "sknn"
    config: SKNNConfig

    def fit(self, split: Split) -> Self:
        """Index ``split.train``'s sessions: their item sets and the time of their last click."""
        self._fitted_on(split)
        n_users, n_items = split.dataset.n_users, split.dataset.n_items
        train = split.train
        users = train["user"].to_numpy(np.int64)
        items = train["item"].to_numpy(np.int64)
        matrix = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items)
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        self.sessions = matrix
        last = np.full(n_users, -np.inf)
        np.maximum.at(last, users, train["timestamp"].to_numpy(np.float64))
        self.session_time = last
        clicks = np.bincount(items, minlength=n_items).astype(np.float64)
        n_sessions = max(1, int(np.unique(users).size))
        # session-rec's idf: log(sessions / clicks of the item)
        self.idf = np.where(clicks > 0, np.log(n_sessions / np.maximum(clicks, 1.0)), 0.0)
        self._prepare()
        return self

    def _prepare(self) -> None:
        self._by_item = self.sessions.tocsc()
        self._length = np.diff(self.sessions.indptr).astype(np.float64)
        # candidates are ranked by recency, then by index (deterministic among equal times)
        self._recency_rank = np.empty(len(self.session_time), dtype=np.int64)
        order = np.lexsort((np.arange(len(self.session_time)), -self.session_time))
        self._recency_rank[order] = np.arange(len(order))

    # ------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[Query]) -> FloatArray:
        """(B, n_items) votes of each query's neighbour sessions (prefix items included)."""
        n_items = self._require_fitted()
        out = np.zeros((len(queries), n_items), dtype=np.float32)
        for row, query in enumerate(queries):
            prefix = self._prefix(query)
            if len(prefix):
                out[row] = self._score_prefix(prefix)
        return out

    def _prefix(self, query: Query) -> IntArray:
        history = query.history
        n = self.n_items or 0
        history = history[(history >= 0) & (history < n)]
        last_n = self.config.last_n
        return history[-last_n:] if last_n else history

    def _candidates(self, distinct: IntArray) -> IntArray:
        """Sessions sharing an item with the prefix, the ``sample_size`` most recent."""
        block = self._by_item[:, distinct]
        candidates = np.unique(block.indices)
        size = self.config.sample_size
        if size and len(candidates) > size:
            ranks = self._recency_rank[candidates]
            candidates = candidates[np.argpartition(ranks, size - 1)[:size]]
        return candidates

    def _neighbours(self, candidates: IntArray, similarity: np.ndarray) -> IntArray:
        """Positions (into ``candidates``) of the ``k`` most similar, similarity > 0."""
        keep = np.flatnonzero(similarity > 0)
        order = np.lexsort((self._recency_rank[candidates[keep]], -similarity[keep]))
        return keep[order[: self.config.k]]

    def _similarity(self, prefix: IntArray, distinct: IntArray, candidates: IntArray) -> np.ndarray:
        overlap = np.asarray(self.sessions[candidates][:, distinct].sum(axis=1)).ravel()
        return overlap / (np.sqrt(len(distinct)) * np.sqrt(self._length[candidates]))

    def _votes(
        self, prefix: IntArray, candidates: IntArray, chosen: IntArray, similarity: np.ndarray
    ) -> np.ndarray:
        return similarity[chosen]

    def _score_prefix(self, prefix: IntArray) -> np.ndarray:
        distinct = np.unique(prefix)
        candidates = self._candidates(distinct)
        if not len(candidates):
            return np.zeros(self.n_items or 0, dtype=np.float32)
        similarity = self._similarity(prefix, distinct, candidates)
        chosen = self._neighbours(candidates, similarity)
        votes = self._votes(prefix, candidates, chosen, similarity)
        scores = self.sessions[candidates[chosen]].T @ votes
        return self._item_weights(np.asarray(scores, dtype=np.float64).ravel()).astype(np.float32)

    def _item_weights(self, scores: np.ndarray) -> np.ndarray:
        return scores

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        s = self.sessions
        return {
            "data": s.data,
            "indices": s.indices,
            "indptr": s.indptr,
            "shape": np.asarray(s.shape),
            "session_time": self.session_time,
            "idf": self.idf,
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(x) for x in state["shape"])
        self.sessions = sp.csr_matrix(
            (state["data"], state["indices"], state["indptr"]), shape=shape
        )
        self.session_time = state["session_time"]
        self.idf = state["idf"]
        self._prepare()


class VSKNN(SKNN):
    """V-SKNN: SKNN with position-weighted similarity and recency-decayed votes."""

    config_class: ClassVar[type[ComponentConfig]] = VSKNNConfig
    name = "vsknn"
    config: VSKNNConfig

    def _position_weights(self, prefix: IntArray, distinct: IntArray) -> np.ndarray:
        """Weight of each distinct prefix item: its latest position's weight."""
        n = len(prefix)
        weights = POSITION_WEIGHTS[self.config.weighting](np.arange(1, n + 1, dtype=np.float64), n)
        latest = np.zeros(len(distinct), dtype=np.float64)
        slot = np.searchsorted(distinct, prefix)
        latest[slot] = weights  # later positions overwrite earlier ones
        return latest

    def _similarity(self, prefix: IntArray, distinct: IntArray, candidates: IntArray) -> np.ndarray:
        weights = self._position_weights(prefix, distinct)
        shared = np.asarray(self.sessions[candidates][:, distinct] @ weights).ravel()
        if self.config.similarity == "vec":
            return shared / float(len(distinct))
        norm = np.sqrt((weights**2).sum()) * np.sqrt(self._length[candidates])
        return np.divide(shared, norm, out=np.zeros_like(shared), where=norm > 0)

    def _votes(
        self, prefix: IntArray, candidates: IntArray, chosen: IntArray, similarity: np.ndarray
    ) -> np.ndarray:
        if not len(chosen):
            return similarity[chosen]
        # (neighbours, L): does neighbour n contain the prefix's j-th click?
        contains = self.sessions[candidates[chosen]][:, prefix].toarray() > 0
        latest = len(prefix) - 1 - np.argmax(contains[:, ::-1], axis=1)
        step = (len(prefix) - latest).astype(np.float64)  # 1 = the last click
        return similarity[chosen] * STEP_DECAYS[self.config.weighting_score](step)

    def _item_weights(self, scores: np.ndarray) -> np.ndarray:
        if self.config.idf_weighting:
            return scores * (1.0 + self.config.idf_weighting * self.idf)
        return scores
