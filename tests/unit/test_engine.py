"""The engine composes stages and degrades to the fallback instead of failing."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.retrieval import EASE, Popularity
from recsys.serving import Engine, EngineConfig, Profile
from recsys.testing import tiny_split
from recsys.types import ItemList, Query


@pytest.fixture(scope="module")
def parts():
    split = tiny_split()
    return split, EASE(l2=10.0).fit(split), Popularity().fit(split)


def _engine(parts, **kwargs) -> Engine:
    split, ease, pop = parts
    data = split.dataset
    return Engine(
        data.item_index,
        retriever=kwargs.pop("retriever", ease),
        fallback=kwargs.pop("fallback", lambda q, k: pop(q, k)),
        users=data.user_index,
        **kwargs,
    )


def _history(split, user: int) -> list[str]:
    items = split.train.loc[split.train["user"] == user, "item"]
    return split.dataset.item_index.to_ids(items)


def test_personalised_path_matches_the_retriever(parts) -> None:
    split, ease, _ = parts
    engine = _engine(parts)
    history = _history(split, 0)
    answer = engine.recommend(user_id=split.dataset.user_index.ids[0], history=history, k=7)
    expected = ease(Query(user=0, history=split.dataset.item_index.indices(history)), 7)
    assert answer.items == split.dataset.item_index.to_ids(expected.items)
    assert answer.fallback is None and not answer.degraded
    assert {"profile", "retrieval", "decision", "total"} <= set(answer.timings_ms)
    assert not set(answer.items) & set(history)


def test_cold_start_and_no_consent_use_fallback(parts) -> None:
    split, _, pop = parts
    engine = _engine(parts)
    cold = engine.recommend(user_id="never-seen", k=5)
    assert cold.fallback == "cold start: no history"
    assert cold.items == split.dataset.item_index.to_ids(pop(Query(), 5).items)
    private = engine.recommend(user_id="u1", history=_history(split, 1), consent=False, k=5)
    assert private.fallback == "no personalisation consent"


def test_failing_retriever_degrades_to_fallback(parts) -> None:
    def broken(query, n):
        raise RuntimeError("index offline")

    answer = _engine(parts, retriever=broken).recommend(history=_history(parts[0], 2), k=5)
    assert len(answer.items) == 5
    assert answer.fallback == "retrieval failed: RuntimeError: index offline"


def test_failing_ranker_and_decision_keep_the_retrieval_order(parts) -> None:
    def broken(*args):
        raise ValueError("boom")

    engine = _engine(parts, ranker=broken, decision=broken)
    answer = engine.recommend(history=_history(parts[0], 3), k=5)
    assert len(answer.items) == 5 and answer.fallback is None
    assert set(answer.degraded) == {"ranking", "decision"}


def test_profile_store_failure_is_reported_not_raised(parts) -> None:
    def down(user_id: str) -> Profile:
        raise ConnectionError("redis down")

    answer = _engine(parts, profiles=down).recommend(user_id="u3", k=5)
    assert "redis down" in answer.degraded["profile"]
    assert len(answer.items) == 5


def test_stored_profile_and_fresh_history_are_merged(parts) -> None:
    split = parts[0]
    stored = split.dataset.item_index.indices(_history(split, 4)[:3])
    engine = _engine(parts, profiles=lambda uid: Profile(history=stored))
    fresh = _history(split, 4)[3:5]
    answer = engine.recommend(user_id="u4", history=fresh, k=10)
    shown = set(answer.items)
    assert not shown & set(_history(split, 4)[:5])


def test_short_personalised_list_is_filled_by_fallback(parts) -> None:
    def two_items(query, n):
        return ItemList(np.array([5, 6]), np.array([2.0, 1.0]))

    answer = _engine(parts, retriever=two_items).recommend(history=["i1"], k=6)
    assert len(answer.items) == 6 and len(set(answer.items)) == 6
    assert answer.items[:2] == parts[0].dataset.item_index.to_ids([5, 6])
    assert answer.fallback == "only 2 personalised items"


def test_k_is_validated(parts) -> None:
    engine = _engine(parts, config=EngineConfig(max_k=50))
    with pytest.raises(ValueError, match="k: must be between 1 and 50"):
        engine.recommend(k=51)


def test_engine_with_the_decision_pipeline(parts) -> None:
    from recsys.decision import (
        DecisionPipeline,
        DecisionPipelineConfig,
        ExperimentConfig,
        ItemCatalog,
        MMRConfig,
        Variant,
    )

    split = parts[0]
    experiment = ExperimentConfig(
        name="diversity",
        salt="s1",
        variants=(
            Variant(name="control", weight=0.5),
            Variant(name="mmr", weight=0.5, diversity=MMRConfig(lam=0.7)),
        ),
    )
    pipeline = DecisionPipeline(
        DecisionPipelineConfig(experiment=experiment),
        ItemCatalog.from_dataset(split.dataset),
        fit_data=split,
    )
    engine = _engine(parts, decision=pipeline)
    variants = set()
    for user in range(20):
        user_id = split.dataset.user_index.ids[user]
        answer = engine.recommend(
            user_id=user_id, history=_history(split, user), k=5, context={"user_id": user_id}
        )
        assert len(answer.items) == 5 and answer.propensities is not None
        variants.add(answer.variant)
        again = engine.recommend(
            user_id=user_id, history=_history(split, user), k=5, context={"user_id": user_id}
        )
        assert again.variant == answer.variant  # sticky
    assert variants == {"control", "mmr"}
    cold = engine.recommend(user_id="nobody", k=5)
    assert cold.fallback == "cold start: no history" and len(cold.items) == 5
    assert len(pipeline.log.records) == 41  # 20 users twice + one cold start
    private = engine.recommend(user_id="u1", history=_history(split, 1), consent=False, k=5)
    assert private.fallback == "no personalisation consent"
    assert pipeline.log.records[-1].user is None


def test_fresh_events_reach_the_next_recommendation(parts, tmp_path) -> None:
    from recsys.data import histories
    from recsys.features import EventLog, Ingestor, InProcessStore, ItemInfoCatalog
    from recsys.serving.profiles import store_profiles

    split = parts[0]
    data = split.dataset
    store = InProcessStore(ItemInfoCatalog.from_dataset(data))
    ingestor = Ingestor(store, EventLog(tmp_path / "events"))
    engine = _engine(
        parts,
        profiles=store_profiles(
            store, data.item_index, data.user_index, histories(split.train, data.n_users)
        ),
    )
    user_id = data.user_index.ids[5]
    before = engine.recommend(user_id=user_id, k=10)
    clicked = before.items[:3]
    result = ingestor.ingest(
        [
            {"user_id": user_id, "item_id": item, "timestamp": 1.7e9 + i}
            for i, item in enumerate(clicked)
        ]
    )
    assert result.accepted == 3
    after = engine.recommend(user_id=user_id, k=10)
    assert not set(after.items) & set(clicked)  # consumed items are not shown again
    assert after.items != before.items


def test_build_engine_ingests_and_reports_stage_latency(parts, tmp_path) -> None:
    from recsys.serving import build_engine, stage_latency

    split = parts[0]
    engine = build_engine(split, retriever=parts[1], event_log_dir=tmp_path / "log")
    result = engine.ingest(
        [
            {"user_id": "u1", "item_id": "i3", "timestamp": 1.7e9},
            {"user_id": "u1", "item_id": "i4", "timestamp": "yesterday"},
        ]
    )
    assert result.accepted == 1
    assert len(result.rejected) == 1 and "timestamp" in result.rejected[0].reason
    latency = stage_latency(engine, list(split.dataset.user_index.ids[:20]))
    assert latency["requests"] == 20
    assert {"profile", "retrieval", "decision", "total"} <= set(latency["stages_ms"])
    assert "i3" not in engine.recommend(user_id="u1", k=20).items
