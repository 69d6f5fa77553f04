"""Assemble a ready-to-serve :class:`Engine` from a split and trained components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.dataset import histories
from recsys.data.splits import Split
from recsys.decision import ContextPopularity, DecisionPipeline, DecisionPipelineConfig, ItemCatalog
from recsys.features import EventLog, Ingestor, InProcessStore, ItemInfoCatalog, OnlineStore
from recsys.retrieval import EASE, Recommender
from recsys.serving.engine import Engine, EngineConfig, Reranker
from recsys.serving.profiles import store_profiles


def build_engine(
    split: Split,
    retriever: Recommender | None = None,
    ranker: Reranker | None = None,
    decision: DecisionPipelineConfig | None = None,
    store: OnlineStore | None = None,
    event_log_dir: str | Path | None = None,
    config: EngineConfig | None = None,
) -> Engine:
    """An engine over ``split``'s catalogue with every stage wired.

    Args:
        split: Training data: the retriever (if not given) and the fallback are fitted on
            ``split.train``, and each user's training history is the offline profile.
        retriever: A trained retriever (default: EASE fitted on ``split``).
        ranker: Optional trained ranker over the retrieved candidates.
        decision: Decision pipeline configuration (default: rules only, no exploration).
        store: Online feature store (default: in-process).
        event_log_dir: Where accepted events are logged (default: no ingestion).
        config: Request-path settings.
    """
    data = split.dataset
    retriever = retriever or EASE().fit(split)
    fallback = ContextPopularity().fit(split)
    pipeline = DecisionPipeline(
        decision or DecisionPipelineConfig(), ItemCatalog.from_dataset(data), fallback=fallback
    )
    store = store or InProcessStore(ItemInfoCatalog.from_dataset(data))
    offline = histories(split.train, data.n_users)
    ingestor = Ingestor(store, EventLog(event_log_dir)) if event_log_dir is not None else None
    return Engine(
        data.item_index,
        retriever=retriever,
        fallback=fallback,
        ranker=ranker,
        decision=pipeline,
        profiles=store_profiles(store, data.item_index, data.user_index, offline),
        users=data.user_index,
        config=config,
        ingestor=ingestor,
    )


def stage_latency(engine: Engine, user_ids: list[str], k: int = 10) -> dict[str, Any]:
    """Per-stage p50/p95/p99 milliseconds of ``engine.recommend`` over ``user_ids`` (in-process)."""
    timings: dict[str, list[float]] = {}
    fallbacks = 0
    for user_id in user_ids:
        answer = engine.recommend(user_id=user_id, k=k)
        fallbacks += answer.fallback is not None
        for stage, ms in answer.timings_ms.items():
            timings.setdefault(stage, []).append(ms)
    return {
        "requests": len(user_ids),
        "fallbacks": fallbacks,
        "stages_ms": {
            stage: {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
            for stage, values in timings.items()
        },
    }
