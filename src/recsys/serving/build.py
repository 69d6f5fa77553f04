"""Assemble a ready-to-serve :class:`Engine` from a split and trained components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.splits import Split
from recsys.decision import ContextPopularity, DecisionPipeline, DecisionPipelineConfig, ItemCatalog
from recsys.features import (
    ConsentRegistry,
    EventLog,
    Ingestor,
    InProcessStore,
    ItemInfoCatalog,
    OnlineStore,
)
from recsys.retrieval import EASE, Recommender
from recsys.serving.engine import Engine, EngineConfig, Reranker
from recsys.serving.profiles import split_profiles


def build_engine(
    split: Split,
    retriever: Recommender | None = None,
    ranker: Reranker | None = None,
    decision: DecisionPipelineConfig | None = None,
    store: OnlineStore | None = None,
    event_log_dir: str | Path | None = None,
    config: EngineConfig | None = None,
    decisions: bool = True,
    user_context: bool = True,
    decision_log: Any = None,
    fallback: ContextPopularity | None = None,
    consent: ConsentRegistry | None = None,
) -> Engine:
    """An engine over ``split``'s catalogue with every stage wired.

    Args:
        split: Training data: the retriever (if not given) and the fallback are fitted on
            ``split.train``, each user's training events are the offline history and the
            user table the stored context.
        retriever: A trained retriever (default: EASE fitted on ``split``); a trained
            two-stage model is served as its two stages.
        ranker: Optional trained ranker over the retrieved candidates.
        decision: Decision pipeline configuration (default: rules only, no exploration).
        store: Online feature store (default: in-process).
        event_log_dir: Where accepted events are logged (default: no ingestion).
        config: Request-path settings.
        decisions: ``False`` leaves the decision stage out (the benchmarks' model-quality
            path: the ranked list cut to k).
        user_context: Serve the user table's context (``False`` only to measure the cost of
            serving without it).
        decision_log: A :class:`~recsys.decision.DecisionLog` for the pipeline.
        fallback: A fitted cold-start / failure fallback (default: context popularity
            fitted on ``split``).
        consent: The ingestor's consent registry (default: everyone consents, in memory).
    """
    data = split.dataset
    retriever = retriever or EASE().fit(split)
    fallback = fallback or ContextPopularity().fit(split)
    pipeline = None
    if decisions:
        pipeline = DecisionPipeline(
            decision or DecisionPipelineConfig(),
            ItemCatalog.from_dataset(data),
            fallback=fallback,
            log=decision_log,
        )
    if store is None:  # an empty store is falsy (it has a length): test for None
        store = InProcessStore(ItemInfoCatalog.from_dataset(data))
    ingestor = None
    if event_log_dir is not None:
        ingestor = Ingestor(store, EventLog(event_log_dir), consent=consent)
    return Engine(
        data.item_index,
        retriever=retriever,
        fallback=fallback,
        ranker=ranker,
        decision=pipeline,
        profiles=split_profiles(split, store, context=user_context),
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
