"""Retriever → top-N candidates → ranker, trained together as one model.

The trained artefact of the ``two_tower+ranker`` benchmark entry. Served, it is split into
its two stages (:meth:`TwoStageRecommender.stages`): the engine runs, times and degrades the
retrieval and the ranking separately. As a :class:`~recsys.retrieval.base.Recommender` it
answers through the same two calls (``retrieve`` → ``ranker``); its ``score`` gives the ranker
logit to the candidates and ``-inf`` to every other item, which it does not rank.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.ranking.ranker import Ranker, RankerConfig
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower.retriever import TwoTowerConfig, TwoTowerRetriever
from recsys.types import FloatArray, ItemList, Query


class TwoStageConfig(ComponentConfig):
    """A two-tower retriever and a ranker."""

    retriever: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    holdout_days: float = Field(
        1.0,
        gt=0.0,
        le=365.0,
        description="Session splits (no validation part): the ranker learns from the "
        "sessions of the training part's last `holdout_days`, ranking the candidates of a "
        "retriever trained on the sessions before them.",
    )


def holdout_sessions(split: Split, days: float, max_fraction: float = 0.2) -> Split:
    """``split.train`` cut in time: sessions starting in the last ``days`` become the test part.

    At most ``max_fraction`` of the sessions are held out (the latest), so a short log keeps
    most of its sessions for the retriever.

    The ranker of a session model learns from these held-out sessions' prediction events,
    with a retriever and statistics fitted on the sessions before them (what it will face
    on really new sessions).
    """
    train = split.train
    start = train.groupby("user")["timestamp"].min()
    cutoff = float(train["timestamp"].max()) - days * 86400.0
    if len(start):
        cutoff = max(cutoff, float(np.quantile(start.to_numpy(), 1.0 - max_fraction)))
    late = start.index[start.to_numpy() >= cutoff]
    held = train["user"].isin(late).to_numpy()
    return Split(
        split.dataset,
        train=train[~held].reset_index(drop=True),
        valid=train.iloc[0:0],
        test=train[held].reset_index(drop=True),
        protocol=split.protocol,
        seed=split.seed,
    )


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
        """Train the retriever (unless given trained), then the ranker on its candidates.

        On a session split (``protocol="sessions"``, no validation part) the ranker learns
        from the last ``holdout_days`` of training sessions — every prefix → next click,
        prefix items kept among the candidates — ranking the candidates of a retriever
        trained on the sessions before them; it then serves the full retriever's candidates
        with statistics refitted on all training sessions (:meth:`Ranker.refresh`).
        """
        start = time.perf_counter()
        if self.retriever is None or self.retriever.n_items is None:
            self.retriever = TwoTowerRetriever(self.config.retriever).fit(split)
        self.timings["retriever_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        if split.protocol == "sessions" and not len(split.valid):
            from recsys.evaluation.sessions import session_events

            inner = holdout_sessions(split, self.config.holdout_days)
            early = TwoTowerRetriever(self.config.retriever).fit(inner)
            self.timings["holdout_retriever_seconds"] = time.perf_counter() - start
            events = session_events(inner, "test")
            self.ranker = Ranker(self.config.ranker).fit(
                inner, early, early.item_embeddings, events=events, keep_history=True
            )
            self.ranker.refresh(split, self.retriever, self.retriever.item_embeddings)
            self.timings["ranker_events"] = float(len(events))
        else:
            self.ranker = Ranker(self.config.ranker).fit(
                split, self.retriever, item_vectors=self.retriever.item_embeddings
            )
        self.timings["ranker_seconds"] = time.perf_counter() - start
        self._fitted_on(split)
        return self

    def _parts(self) -> tuple[TwoTowerRetriever, Ranker]:
        self._require_fitted()
        assert self.retriever is not None and self.ranker is not None
        return self.retriever, self.ranker

    def stages(self) -> tuple[TwoTowerRetriever, Ranker]:
        """The retriever and the ranker, for the engine to run as separate stages."""
        return self._parts()

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Ranker logits of each query's candidates; ``-inf`` for the items not retrieved."""
        retriever, ranker = self._parts()
        out = np.full((len(queries), retriever._require_fitted()), -np.inf, dtype=np.float32)
        for row, ranked in enumerate(self.retrieve(queries, ranker.config.candidates)):
            out[row, ranked.items] = ranked.scores
        return out

    def retrieve(
        self, queries: Sequence[Query], n: int, exclude_seen: bool = True
    ) -> list[ItemList]:
        """FAISS top candidates, ranked, first ``n`` (the engine's retrieval → ranking)."""
        retriever, ranker = self._parts()
        width = max(n, ranker.config.candidates)
        candidates = retriever.retrieve(queries, width, exclude_seen)
        return [
            ranker(query, found).head(n) for query, found in zip(queries, candidates, strict=True)
        ]

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
        identity = {"model_id": retriever.model_id, "item_digest": retriever.item_digest}
        state["retriever_identity_json"] = np.frombuffer(
            json.dumps(identity).encode(), dtype=np.uint8
        )
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.retriever = TwoTowerRetriever(self.config.retriever)
        self.retriever.n_items = self.n_items
        if "retriever_identity_json" in state:
            identity = json.loads(bytes(state["retriever_identity_json"]).decode())
            self.retriever.model_id = identity["model_id"]
            self.retriever.item_digest = identity["item_digest"]
        self.retriever._restore(
            {k[len("retriever/") :]: v for k, v in state.items() if k.startswith("retriever/")}
        )
        self.ranker = Ranker.from_state(
            {k[len("ranker/") :]: v for k, v in state.items() if k.startswith("ranker/")}
        )
