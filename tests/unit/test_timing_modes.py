"""Batch, session, real-time and edge: one engine's modes, the edge bundle, the timing bench."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from recsys.bench.timing import run_timing, verdict
from recsys.retrieval import EASE
from recsys.serving import EngineConfig, build_engine
from recsys.serving.modes import PrecomputedLists, build_edge_bundle, precompute
from recsys.testing import tiny_split


@pytest.fixture(scope="module")
def parts():
    split = tiny_split()
    return split, EASE(l2=10.0).fit(split)


def _user_with_history(split):
    counts = split.train["user_id"].value_counts()
    return counts.index[0]


def test_session_mode_ranks_once_per_session_on_the_profile_at_its_start(parts):
    from recsys.features import Ingestor, InProcessStore, ItemInfoCatalog

    split, model = parts
    store = InProcessStore(ItemInfoCatalog.from_dataset(split.dataset))
    engine = build_engine(split, retriever=model, store=store, config=EngineConfig(mode="session"))
    realtime = build_engine(split, retriever=model, store=store)
    ingest = Ingestor(store).ingest
    user = _user_with_history(split)
    t0 = float(split.train["timestamp"].max()) + 10_000
    first = engine.recommend(user_id=user, k=5, now=t0)
    # the session's first events arrive; the frozen list is reused, only exclusions move
    ingest([{"user_id": user, "item_id": first.items[0], "timestamp": t0 + 1}])
    ingest([{"user_id": user, "item_id": first.items[1], "timestamp": t0 + 2}])
    later = engine.recommend(user_id=user, k=3, now=t0 + 3)
    assert later.items == first.items[2:5]  # same list, consumed items excluded
    assert later.scores == first.scores[2:5]  # scored once, at the session's start
    assert realtime.recommend(user_id=user, k=3, now=t0 + 3).scores != later.scores
    # a gap starts a new session: the list is recomputed with those events in the profile
    fresh = engine.recommend(user_id=user, k=3, now=t0 + 3 + 3600)
    assert fresh.items == realtime.recommend(user_id=user, k=3, now=t0 + 3 + 3600).items


def test_batch_lists_are_looked_up_and_persisted(parts, tmp_path):
    split, model = parts
    engine = build_engine(split, retriever=model, decisions=False)
    users = list(split.dataset.user_index.ids[:20])
    lists, cpu = precompute(engine, users, n=30)
    assert set(lists.lists) <= set(users) and cpu >= 0.0
    path = lists.write(tmp_path / "recs.parquet", split.dataset.item_index)
    again = PrecomputedLists.read(path, split.dataset.item_index)
    user = users[0]
    np.testing.assert_array_equal(again.lists[user].items, lists.lists[user].items)
    served = build_engine(split, retriever=again, decisions=False)
    answer = served.recommend(user_id=user, k=5)
    query = engine.query_for(user)
    assert answer.items == split.dataset.item_index.to_ids(engine.rank(query).items[:5])
    unknown = served.recommend(user_id="nobody-with-a-list", history=["i1"], k=5)
    assert unknown.fallback == "only 0 personalised items" and len(unknown.items) == 5


def test_the_edge_bundle_needs_numpy_only_and_scores_the_session(parts, tmp_path):
    split, _ = parts
    bundle = build_edge_bundle(split, neighbours=20, path=tmp_path / "edge")
    code = (
        "import sys; from recsys.edge import EdgeBundle;"
        f"b = EdgeBundle.load({str(tmp_path / 'edge')!r}); print(b.recommend(['i1', 'i2'], k=4));"
        "assert not {'torch', 'pandas', 'scipy', 'faiss'} & set(sys.modules), sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    items = json.loads(out.stdout.replace("'", '"'))
    assert len(items) == 4 and not {"i1", "i2"} & set(items)
    assert items == bundle.recommend(["i1", "i2"], k=4)
    # an unknown session gets popularity; exclusions hold
    popular = bundle.recommend([], k=3)
    assert popular == bundle.recommend(["never-seen"], k=3)
    assert popular[0] not in bundle.recommend([], k=3, exclude=[popular[0]])


def test_the_timing_bench_compares_four_modes_and_gives_a_verdict(tmp_path):
    report = run_timing("synthetic", tmp_path, max_events=150)
    modes = report["modes"]
    assert set(modes) == {"batch", "session", "realtime", "edge"}
    assert modes["realtime"]["missing_events_mean"] == 0.0
    assert modes["batch"]["missing_events_mean"] >= modes["realtime"]["missing_events_mean"]
    assert all(m["requests"] == report["events"] == 150 for m in modes.values())
    assert report["verdict"]["choice"] in modes and report["verdict"]["text"]
    assert (tmp_path / "quality_vs_cost.png").stat().st_size > 0
    assert "| edge |" in (tmp_path / "timing.md").read_text()


def test_verdict_takes_the_cheapest_good_enough_mode():
    modes = {
        "batch": {"ndcg@10": 0.096, "cpu_ms_per_request": 0.1},
        "realtime": {"ndcg@10": 0.100, "cpu_ms_per_request": 0.5},
        "edge": {"ndcg@10": 0.050, "cpu_ms_per_request": 0.05},
    }
    chosen = verdict(modes, 10, 0.05)
    assert chosen["choice"] == "batch" and chosen["best_quality"] == "realtime"
    assert chosen["next_step"]["mode"] == "realtime"
    assert chosen["next_step"]["lift"] == pytest.approx(0.1 / 0.096 - 1)
    assert "batch is the cheapest architecture within 5%" in chosen["text"]
    strict = verdict(modes, 10, 0.01)
    assert strict["choice"] == "realtime" and "next_step" not in strict
    assert strict["text"].startswith("realtime has the best ndcg@10 (0.1000)")
