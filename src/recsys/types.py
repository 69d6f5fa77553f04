"""Contracts between pipeline stages.

Inside the engine items and users are *dense indices* (0..n-1) into a :class:`~recsys.data.Catalog`;
external ids are translated only at the edges (data loading, the HTTP API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
TimeArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Query:
    """What a stage knows about one request.

    Built in one place for every caller (:meth:`recsys.serving.Engine.query_for` online,
    :func:`recsys.evaluation.protocol.build_queries` offline), so training, benchmarks and
    serving hand the stages the same fields.

    Attributes:
        user: Dense user index, or ``None`` for an unknown / anonymous user (cold start).
        history: Dense item indices of the user's events, oldest first, repeats kept (a
            re-consumed item appears again at its later position). For a real-time profile
            this includes the events of the current session.
        context: Request context (e.g. ``age_band``, ``gender``, ``occupation``, ``device``),
            with derived keys already added (:func:`recsys.features.derive_context`).
        timestamp: Request time in Unix seconds, if known.
        session_id: Session identifier, if known.
        consent: Whether the user allows personalisation. Without it only context is used.
        exclude: Extra dense item indices that must not be returned.
        user_id: External user id (stable across retrains): experiment assignment and logs
            key on it, never on the dense index.
        history_times: Unix seconds of each history event (same length as ``history``), or
            ``None`` when unknown.
        history_types: Event type of each history event (``click``, ``rating``, ...), or
            ``None`` when unknown.
    """

    user: int | None = None
    history: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    context: Mapping[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    session_id: str | None = None
    consent: bool = True
    exclude: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    user_id: str | None = None
    history_times: TimeArray | None = None
    history_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        history = np.asarray(self.history, dtype=np.int64).ravel()
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "exclude", np.asarray(self.exclude, dtype=np.int64).ravel())
        if self.history_times is not None:
            times = np.asarray(self.history_times, dtype=np.float64).ravel()
            if times.shape != history.shape:
                raise ValueError(
                    f"history_times: {times.shape[0]} values for {history.shape[0]} history items"
                )
            object.__setattr__(self, "history_times", times)
        if self.history_types is not None:
            types = tuple(str(t) for t in self.history_types)
            if len(types) != len(history):
                raise ValueError(
                    f"history_types: {len(types)} values for {len(history)} history items"
                )
            object.__setattr__(self, "history_types", types)


@dataclass(frozen=True)
class ItemList:
    """An ordered list of items with scores, best first.

    Attributes:
        items: Dense item indices, shape (N,), no duplicates.
        scores: Score per item, shape (N,), in the same order (higher is better).
        propensities: Probability with which each item was shown at its position, shape (N,),
            filled in by exploring decision stages; ``None`` when the list is deterministic.
    """

    items: IntArray
    scores: FloatArray
    propensities: FloatArray | None = None

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64).ravel()
        scores = np.asarray(self.scores, dtype=np.float32).ravel()
        if items.shape != scores.shape:
            raise ValueError(f"items {items.shape} and scores {scores.shape} differ in shape")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "scores", scores)
        if self.propensities is not None:
            props = np.asarray(self.propensities, dtype=np.float32).ravel()
            if props.shape != items.shape:
                raise ValueError("propensities must have one value per item")
            object.__setattr__(self, "propensities", props)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @classmethod
    def empty(cls) -> ItemList:
        """An empty list."""
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    @classmethod
    def from_scores(
        cls, scores: npt.NDArray[np.floating], n: int, exclude: npt.ArrayLike | None = None
    ) -> ItemList:
        """Top-``n`` items of a dense score vector over the catalogue, best first.

        Args:
            scores: Shape (n_items,); one score per catalogue item.
            n: How many items to return (fewer if fewer items are eligible).
            exclude: Item indices that must not be returned.

        Returns:
            The best ``n`` eligible items, sorted by descending score (ties by index).
        """
        scores = np.asarray(scores, dtype=np.float32).copy()
        if exclude is not None:
            excl = np.asarray(exclude, dtype=np.int64)
            if excl.size:
                scores[excl] = -np.inf
        eligible = int(np.isfinite(scores).sum())
        n = min(n, eligible)
        if n <= 0:
            return cls.empty()
        top = top_k_indices(scores, n)
        return cls(top, scores[top])

    def head(self, k: int) -> ItemList:
        """The first ``k`` entries."""
        props = None if self.propensities is None else self.propensities[:k]
        return ItemList(self.items[:k], self.scores[:k], props)


def top_k_indices(scores: npt.NDArray[np.floating], k: int) -> IntArray:
    """Indices of the ``k`` largest scores, sorted by descending score.

    Among the selected items, equal scores are ordered by index; which of several items tied
    at the cut-off is selected is deterministic but unspecified (``argpartition``).

    Works on a vector (N,) or row-wise on a matrix (B, N) -> (B, k).
    """
    scores = np.asarray(scores)
    n = scores.shape[-1]
    k = min(k, n)
    if k <= 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64)
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=-1)
    # lexsort: last key is primary -> sort by -score, then by index for determinism
    order = np.lexsort((part, -part_scores), axis=-1)
    return np.take_along_axis(part, order, axis=-1).astype(np.int64)
