"""The engine composes stages and degrades to the fallback instead of failing."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from recsys.data import Dataset, histories, random_split
from recsys.data.dataset import timed_histories
from recsys.decision import (
    DecisionLog,
    DecisionPipeline,
    DecisionPipelineConfig,
    ExperimentConfig,
    ItemCatalog,
    MMRConfig,
    Variant,
)
from recsys.decision.rules import CapRule, RulesConfig
from recsys.retrieval import EASE, ItemKNN, Popularity
from recsys.serving import ComponentMismatchError, Engine, EngineConfig, Profile, build_engine
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


def _pipeline(split, **config) -> DecisionPipeline:
    return DecisionPipeline(
        DecisionPipelineConfig(**config), ItemCatalog.from_dataset(split.dataset), fit_data=split
    )


def test_personalised_path_matches_the_retriever(parts) -> None:
    split, ease, _ = parts
    engine = _engine(parts)
    history = _history(split, 0)
    answer = engine.recommend(user_id=split.dataset.user_index.ids[0], history=history, k=7)
    query = engine.query_for(split.dataset.user_index.ids[0], history=history)
    expected = ease(query, 7)
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


def test_failing_retriever_degrades_to_fallback(parts, caplog) -> None:
    def broken(query, n):
        raise RuntimeError("index offline")

    engine = _engine(parts, retriever=broken)
    answer = engine.recommend(history=_history(parts[0], 2), k=5)
    assert len(answer.items) == 5
    assert answer.fallback == "retrieval failed: RuntimeError: index offline"
    assert engine.failure_counts() == {"retrieval:RuntimeError": 1}
    assert "Traceback" in caplog.text  # logged with its traceback, not one line


def test_failing_ranker_keeps_the_retrieved_candidates(parts) -> None:
    split, ease, _ = parts

    def broken(*args):
        raise ValueError("boom")

    engine = _engine(parts, ranker=broken)
    history = _history(split, 3)
    answer = engine.recommend(history=history, k=5)
    retrieved = ease(engine.query_for(history=history), 5)
    # the retriever's own order, not the popularity fallback
    assert answer.items == split.dataset.item_index.to_ids(retrieved.items)
    assert answer.fallback is None and "ranking" in answer.degraded
    assert "ranking" in answer.timings_ms
    assert engine.failure_counts() == {"ranking:ValueError": 1}


def test_failing_decision_stage_still_applies_the_rules(parts) -> None:
    split = parts[0]
    pipeline = _pipeline(split, rules=RulesConfig(exclude_items=tuple(range(0, 120, 2))))

    def broken_selector(*args, **kwargs):
        raise ValueError("boom")

    pipeline.__class__ = type("Broken", (DecisionPipeline,), {"__call__": broken_selector})
    engine = _engine(parts, decision=pipeline)
    answer = engine.recommend(history=_history(split, 3), k=8)
    assert len(answer.items) == 8 and "decision" in answer.degraded
    shown = split.dataset.item_index.indices(answer.items)
    assert not (shown % 2 == 0).any()  # excluded items stay out on the degraded path
    assert answer.propensities == [1.0] * 8


def test_ranking_is_its_own_stage_and_is_skipped_past_the_budget(parts) -> None:
    split = parts[0]

    def slow_retriever(query, n):
        time.sleep(0.03)
        return parts[1](query, n)

    calls = []

    def ranker(query, items):
        calls.append(1)
        return items

    config = EngineConfig(budget_ms=10.0, enforce_budget=False)
    engine = _engine(parts, retriever=slow_retriever, ranker=ranker, config=config)
    answer = engine.recommend(history=_history(split, 4), k=5)
    assert not calls and answer.degraded["ranking"].startswith("skipped")
    assert len(answer.items) == 5


def _busy(seconds: float) -> None:
    """Pure-Python work (no sleep, no C call that releases the GIL)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.parametrize("mechanism", ["alarm", "thread"])
@pytest.mark.parametrize("stall", ["sleep", "compute"])
@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize("late", ["retrieval", "ranking"])
def test_a_stage_past_the_budget_is_abandoned(parts, late, path, stall, mechanism) -> None:
    """The budget binds: the answer comes at the deadline, not when the slow stage ends."""
    split, ease, pop = parts

    def slow(stage):
        def call(*args):
            if stage == late:
                time.sleep(0.5) if stall == "sleep" else _busy(0.5)
            return ease(*args) if stage == "retrieval" else args[1]

        return call

    config = EngineConfig(
        budget_ms=40.0, decision_reserve_ms=5.0, enforce_budget=True, deadline=mechanism
    )
    engine = _engine(parts, retriever=slow("retrieval"), ranker=slow("ranking"), config=config)
    history = _history(split, 4)
    start = time.perf_counter()
    if path == "sync":
        answer = engine.recommend(history=history, k=5)
    else:
        answer = asyncio.run(engine.recommend_async(history=history, k=5))
    elapsed_ms = (time.perf_counter() - start) * 1000
    assert elapsed_ms < 400.0  # answered at the deadline, not after the 500 ms stage
    assert len(answer.items) == 5
    assert engine.failure_counts() == {f"{late}:abandoned": 1}
    if late == "retrieval":
        assert answer.fallback == "retrieval abandoned at the 40 ms budget"
        assert answer.items == split.dataset.item_index.to_ids(
            pop(engine.query_for(history=history), 5).items
        )
    else:
        assert answer.fallback is None
        assert answer.degraded["ranking"].startswith("ranking abandoned at the 40 ms budget")
        retrieved = ease(engine.query_for(history=history), 5)
        assert answer.items == split.dataset.item_index.to_ids(retrieved.items)


def test_profile_store_failure_is_reported_not_raised(parts) -> None:
    def down(user_id: str, now: float) -> Profile:
        raise ConnectionError("redis down")

    answer = _engine(parts, profiles=down).recommend(user_id="u3", k=5)
    assert "redis down" in answer.degraded["profile"]
    assert len(answer.items) == 5


def test_request_history_adds_what_the_profile_lacks(parts) -> None:
    split = parts[0]
    stored_ids = _history(split, 4)[:3]
    stored = split.dataset.item_index.indices(stored_ids)
    engine = _engine(
        parts, profiles=lambda uid, now: Profile(history=stored, history_times=np.arange(3.0))
    )
    fresh = [*_history(split, 4)[3:5], stored_ids[0]]  # one item the store already has
    query = engine.query_for("u4", history=fresh, now=100.0)
    assert split.dataset.item_index.to_ids(query.history) == stored_ids + fresh[:2]
    assert query.history_times.tolist() == [0.0, 1.0, 2.0, 100.0, 100.0]
    answer = engine.recommend(user_id="u4", history=fresh, k=10)
    assert not set(answer.items) & set(_history(split, 4)[:5])


def test_short_personalised_list_is_filled_by_fallback(parts) -> None:
    def two_items(query, n):
        return ItemList(np.array([5, 6]), np.array([2.0, 1.0]))

    answer = _engine(parts, retriever=two_items).recommend(history=["i1"], k=6)
    assert len(answer.items) == 6 and len(set(answer.items)) == 6
    assert answer.items[:2] == parts[0].dataset.item_index.to_ids([5, 6])
    assert answer.fallback == "only 2 personalised items" and answer.filled == 4


def test_every_slot_passes_the_rules_and_is_logged_as_shown(parts) -> None:
    """Fallback-filled slots obey exclusions, availability and caps, with propensities."""
    split = parts[0]
    data = split.dataset
    popular = parts[2](Query(), 20).items
    excluded = tuple(int(i) for i in popular[:5])  # the fallback's favourites
    pipeline = _pipeline(
        split, rules=RulesConfig(exclude_items=excluded, caps=(CapRule(max_per_value=2),))
    )
    pipeline.availability.mark_unavailable(popular[5:8].tolist())

    def two_items(query, n):
        return ItemList(np.array([5, 6]), np.array([2.0, 1.0]))

    engine = _engine(parts, retriever=two_items, decision=pipeline)
    answer = engine.recommend(user_id=data.user_index.ids[0], history=["i1"], k=8)
    shown = data.item_index.indices(answer.items)
    assert len(shown) == 8 and answer.filled == 6
    assert not set(shown.tolist()) & set(popular[:8].tolist())
    genres = [g for item in shown for g in data.items["genres"].iloc[item]]
    assert max(genres.count(g) for g in set(genres)) <= 2
    assert answer.propensities is not None and len(answer.propensities) == 8
    record = pipeline.log.records[-1]
    assert record.items == answer.items and record.filled == 6
    assert record.propensities == answer.propensities
    assert record.fallback == "only 2 personalised items"


def test_k_is_validated(parts) -> None:
    engine = _engine(parts, config=EngineConfig(max_k=50))
    with pytest.raises(ValueError, match="k: must be between 1 and 50"):
        engine.recommend(k=51)


def test_engine_with_the_decision_pipeline(parts) -> None:
    split = parts[0]
    experiment = ExperimentConfig(
        name="diversity",
        salt="s1",
        variants=(
            Variant(name="control", weight=0.5),
            Variant(name="mmr", weight=0.5, diversity=MMRConfig(lam=0.7)),
        ),
    )
    pipeline = _pipeline(split, experiment=experiment)
    engine = _engine(parts, decision=pipeline)
    variants = set()
    for user in range(20):
        user_id = split.dataset.user_index.ids[user]
        answer = engine.recommend(user_id=user_id, history=_history(split, user), k=5)
        assert len(answer.items) == 5 and answer.propensities is not None
        variants.add(answer.variant)
        again = engine.recommend(user_id=user_id, history=_history(split, user), k=5)
        assert again.variant == answer.variant  # sticky
    assert variants == {"control", "mmr"}
    cold = engine.recommend(user_id="nobody", k=5)
    assert cold.fallback == "cold start: no history" and len(cold.items) == 5
    assert len(pipeline.log.records) == 41  # 20 users twice + one cold start
    private = engine.recommend(user_id="u1", history=_history(split, 1), consent=False, k=5)
    assert private.fallback == "no personalisation consent"
    assert pipeline.log.records[-1].user_id is None


def _reindexed(data: Dataset) -> Dataset:
    """The same data with every user at another dense index (as a retrain may do)."""
    frame = data.interactions[["user_id", "item_id", "timestamp"]].iloc[::-1]
    users = data.users.iloc[::-1]
    return Dataset(data.name, frame.reset_index(drop=True), data.items.copy(), users.copy())


def test_experiment_variants_survive_a_reindexing_retrain() -> None:
    split = tiny_split(seed=3)
    moved = random_split(_reindexed(split.dataset), seed=3)
    assert moved.dataset.user_index.ids != split.dataset.user_index.ids
    experiment = ExperimentConfig(
        name="ab",
        salt="salt",
        variants=(Variant(name="a", weight=0.5), Variant(name="b", weight=0.5)),
    )

    def variants(s) -> dict[str, str | None]:
        engine = build_engine(s, decision=DecisionPipelineConfig(experiment=experiment))
        return {u: engine.recommend(user_id=u, k=3).variant for u in s.dataset.user_index.ids}

    before, after = variants(split), variants(moved)
    assert before == after
    assert set(before.values()) == {"a", "b"}
    # a user the model has never seen is assigned by id too, not sent to the default arm
    engine = build_engine(split, decision=DecisionPipelineConfig(experiment=experiment))
    newcomers = {engine.recommend(user_id=f"new-{i}", k=3).variant for i in range(40)}
    assert newcomers == {"a", "b"}


def test_engine_refuses_parts_trained_on_another_catalogue(parts) -> None:
    from recsys.data import SyntheticConfig, generate

    split, _, pop = parts
    other = random_split(generate(SyntheticConfig(n_users=60, n_items=90, seed=5)))
    foreign = EASE(l2=10.0).fit(other)
    with pytest.raises(ComponentMismatchError, match="retriever: trained on item index"):
        Engine(split.dataset.item_index, retriever=foreign, fallback=pop)


def test_engine_refuses_a_ranker_trained_on_another_retriever() -> None:
    from recsys.ranking import Ranker, RankerConfig

    split = tiny_split()
    ease = EASE(l2=10.0).fit(split)
    ranker = Ranker(RankerConfig(candidates=20, epochs=1, folds=1, hidden=(4,))).fit(split, ease)
    knn = ItemKNN().fit(split)
    items = split.dataset.item_index
    Engine(items, retriever=ease, ranker=ranker, fallback=Popularity().fit(split))
    with pytest.raises(ComponentMismatchError, match="ranker: trained on the candidates"):
        Engine(items, retriever=knn, ranker=ranker, fallback=Popularity().fit(split))


def test_query_carries_ids_times_session_and_request_time(parts, tmp_path) -> None:
    split = parts[0]
    data = split.dataset
    engine = build_engine(split, retriever=parts[1], event_log_dir=tmp_path / "log")
    user_id = data.user_index.ids[5]
    last = float(split.train["timestamp"].max())
    event = {"user_id": user_id, "item_id": "i3", "timestamp": last + 10, "session_id": "s9"}
    engine.ingest([event])
    query = engine.query_for(user_id, now=last + 20)
    offline = timed_histories(split.train, data.n_users)[5]
    assert query.user_id == user_id and query.user == 5
    assert query.history.tolist() == [*offline.items.tolist(), data.item_index.index("i3")]
    assert query.history_times.tolist() == [*offline.times.tolist(), last + 10]
    assert query.history_types[-1] == "interaction" or query.history_types[-1]
    assert query.session_id == "s9" and query.timestamp == last + 20
    assert query.context == {"age_band": data.users.iloc[5]["age_band"],
                             "gender": data.users.iloc[5]["gender"],
                             "device": data.users.iloc[5]["device"]}  # fmt: skip


def test_fresh_events_reach_the_next_recommendation(parts, tmp_path) -> None:
    split = parts[0]
    data = split.dataset
    engine = build_engine(split, retriever=parts[1], event_log_dir=tmp_path / "events")
    user_id = data.user_index.ids[5]
    before = engine.recommend(user_id=user_id, k=10)
    clicked = before.items[:3]
    last = float(split.train["timestamp"].max())
    result = engine.ingest(
        [
            {"user_id": user_id, "item_id": item, "timestamp": last + i}
            for i, item in enumerate(clicked)
        ]
    )
    assert result.accepted == 3
    after = engine.recommend(user_id=user_id, k=10)
    assert not set(after.items) & set(clicked)  # consumed items are not shown again
    assert after.items != before.items


def test_decision_log_is_bounded_and_keeps_one_file(tmp_path, parts) -> None:
    split = parts[0]
    log = DecisionLog(tmp_path / "decisions", max_in_memory=5)
    engine = build_engine(split, retriever=parts[1], decision_log=log)
    for user_id in split.dataset.user_index.ids[:12]:
        engine.recommend(user_id=user_id, k=4, context={"device": "mobile", "age": 30})
    assert len(log.records) == 5
    files = list((tmp_path / "decisions").glob("*.jsonl"))
    assert len(files) == 1
    lines = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert len(lines) == 12
    assert lines[-1]["items"] == [str(x) for x in lines[-1]["items"]]
    assert lines[-1]["context"] == {"device": "mobile"}  # non-personal keys only
    assert {"profile", "retrieval", "decision", "total"} <= set(lines[-1]["timings_ms"])


def test_build_engine_ingests_and_reports_stage_latency(parts, tmp_path) -> None:
    from recsys.serving import stage_latency

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


def test_offline_histories_helper_matches_timed_histories(parts) -> None:
    split = parts[0]
    plain = histories(split.train, split.dataset.n_users)
    timed = timed_histories(split.train, split.dataset.n_users)
    assert all(np.array_equal(a, b.items) for a, b in zip(plain, timed, strict=True))


def test_build_engine_reads_the_store_it_is_given_even_when_empty(parts) -> None:
    from recsys.features import Ingestor, InProcessStore, ItemInfoCatalog

    split = parts[0]
    store = InProcessStore(ItemInfoCatalog.from_dataset(split.dataset))  # empty: len 0
    engine = build_engine(split, retriever=parts[1], store=store)
    Ingestor(store).ingest([{"user_id": "newcomer", "item_id": "i3", "timestamp": 1.7e9}])
    query = engine.query_for("newcomer", now=1.7e9 + 1)
    assert query.history.tolist() == [split.dataset.item_index.index("i3")]


def test_off_the_main_thread_the_alarm_falls_back_to_the_stage_thread(parts) -> None:
    split, ease, _ = parts

    def sleepy(*args):
        time.sleep(0.5)
        return ease(*args)

    config = EngineConfig(budget_ms=40.0, decision_reserve_ms=5.0, enforce_budget=True)
    assert config.deadline == "alarm"
    engine = _engine(parts, retriever=sleepy, config=config)
    answers, elapsed = [], []

    def request() -> None:
        start = time.perf_counter()
        answers.append(engine.recommend(history=_history(split, 4), k=5))
        elapsed.append(time.perf_counter() - start)

    worker = threading.Thread(target=request)
    worker.start()
    worker.join()
    assert answers[0].fallback == "retrieval abandoned at the 40 ms budget"
    assert elapsed[0] < 0.4
