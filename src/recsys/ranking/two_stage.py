"""Retriever → top-N candidates → ranker, as one :class:`~recsys.retrieval.base.Recommender`.

``score(queries)`` returns a full (B, n_items) vector so :func:`~recsys.evaluation.evaluate`
and the benchmark treat it like any model: the N candidates carry the ranker's logits, every
other item a lower band (its retrieval score shifted below the lowest candidate), so masking
seen items never leaves fewer than k results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.ranking.ranker import Ranker, RankerConfig, retrieve_candidates
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower.retriever import TwoTowerConfig, TwoTowerRetriever
from recsys.types import FloatArray, ItemList, Query


class TwoStageConfig(ComponentConfig):
    """A two-tower retriever and a ranker."""

    retriever: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)


class TwoStageRecommender(Recommender):
    """Two-tower retrieval of ``ranker.candidates`` items, re-scored by the ranker.

    Args:
        config: Both stages' configs.
        trained_retriever: An already trained retriever to reuse (``fit`` then trains the
            ranker only).
        **overrides: Config fields (``retriever=TwoTowerConfig(...)``, ``ranker=...``).
    """

    config_class = TwoStageConfig
    name = "two_tower+ranker"
    config: TwoStageConfig

    def __init__(
        self,
        config: TwoStageConfig | None = None,
        trained_retriever: TwoTowerRetriever | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(config, **overrides)
        self.retriever = trained_retriever
        self.ranker: Ranker | None = None
        self.timings: dict[str, float] = {}

    def fit(self, split: Split) -> Self:
        """Train the retriever (unless given trained), then the ranker on its candidates."""
        start = time.perf_counter()
        if self.retriever is None or self.retriever.n_items is None:
            self.retriever = TwoTowerRetriever(self.config.retriever).fit(split)
        self.timings["retriever_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        self.ranker = Ranker(self.config.ranker).fit(
            split, self.retriever, item_vectors=self.retriever.item_embeddings
        )
        self.timings["ranker_seconds"] = time.perf_counter() - start
        self.n_items = split.dataset.n_items
        return self

    def _parts(self) -> tuple[TwoTowerRetriever, Ranker]:
        self._require_fitted()
        assert self.retriever is not None and self.ranker is not None
        return self.retriever, self.ranker

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Ranker logits on the candidates, a lower band of retrieval scores elsewhere."""
        retriever, ranker = self._parts()
        full = retriever.score(queries)
        if not len(queries):
            return full
        cand, cand_scores = retrieve_candidates(full, queries, ranker.config.candidates)
        logits = ranker.score_candidates(queries, cand, cand_scores)
        floor = logits.min(axis=1, keepdims=True) - 1.0
        out = full - full.max(axis=1, keepdims=True) + floor
        np.put_along_axis(out, cand, logits, axis=1)
        return out.astype(np.float32)

    def __call__(self, query: Query, n: int, exclude_seen: bool = True) -> ItemList:
        """Serving path: FAISS top-N candidates, ranked, first ``n``."""
        retriever, ranker = self._parts()
        candidates = retriever(query, max(n, ranker.config.candidates), exclude_seen)
        return ranker(query, candidates).head(n)

    def bench_info(self) -> dict[str, float]:
        """Extra numbers for the benchmark table."""
        retriever, ranker = self._parts()
        info = {f"retriever_{k}": v for k, v in retriever.bench_info().items()}
        info.update(self.timings)
        info["ranker_best_epoch"] = float(ranker.best_epoch)
        info["ranker_valid_candidate_recall"] = float(getattr(ranker, "candidate_recall", np.nan))
        info["ranker_holdout_ndcg@10"] = float(getattr(ranker, "holdout_ndcg", np.nan))
        info["retrieval_holdout_ndcg@10"] = float(getattr(ranker, "holdout_retrieval_ndcg", np.nan))
        return info

    def _state(self) -> dict[str, np.ndarray]:
        retriever, ranker = self._parts()
        state = {f"retriever/{k}": v for k, v in retriever._state().items()}
        state.update({f"ranker/{k}": v for k, v in ranker.state().items()})
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.retriever = TwoTowerRetriever(self.config.retriever)
        self.retriever.n_items = self.n_items
        self.retriever._restore(
            {k[len("retriever/") :]: v for k, v in state.items() if k.startswith("retriever/")}
        )
        self.ranker = Ranker.from_state(
            {k[len("ranker/") :]: v for k, v in state.items() if k.startswith("ranker/")}
        )
