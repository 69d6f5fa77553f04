from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from recsys.bench.freshness import freshness_table, run_freshness
from recsys.data import SyntheticConfig, generate
from recsys.data.dataset import Dataset
from recsys.evaluation.replay import (
    MODES,
    FreshnessConfig,
    freshness_split,
    profile_prefixes,
    replay_freshness,
)
from recsys.features.definitions import FeatureConfig, ItemInfoCatalog
from recsys.features.events import events_from_frame
from recsys.features.ingest import Ingestor
from recsys.features.store import InProcessStore
from recsys.retrieval.baselines import EASE
from recsys.serving import Engine, build_engine
from recsys.types import ItemList

DAY = 86400.0


def test_profile_prefixes_follow_refresh_and_session_boundaries():
    # one user: two events on day 0 (one session), a long gap, then three on day 1 where the
    # last comes 40 minutes after the previous one (a new session)
    t = [0.5 * DAY, 0.5 * DAY + 60, 1.2 * DAY, 1.2 * DAY + 60, 1.2 * DAY + 60 + 2400]
    test = pd.DataFrame({"user": [0] * 5, "timestamp": t})
    prefixes = profile_prefixes(test, FreshnessConfig())
    assert prefixes["realtime"].tolist() == [0, 1, 2, 3, 4]
    assert prefixes["session"].tolist() == [0, 0, 2, 2, 4]
    assert prefixes["batch"].tolist() == [0, 0, 2, 2, 2]
    assert prefixes["static"].tolist() == [0, 0, 0, 0, 0]


def test_profile_prefixes_are_per_user_in_an_interleaved_stream():
    test = pd.DataFrame({"user": [1, 0, 1, 0, 1], "timestamp": [1.0, 2.0, 3.0, 4.0, 5.0]})
    prefixes = profile_prefixes(test, FreshnessConfig())
    assert prefixes["realtime"].tolist() == [0, 0, 1, 1, 2]
    assert prefixes["session"].tolist() == [0, 0, 0, 0, 0]


def _chain_dataset(late_user: bool = False) -> Dataset:
    """Every user walks the same chain of items i0 → i1 → … one per hour, 2 h apart per user.

    With ``late_user``, user ``late`` walks it after everyone else (a new user after the cutoff).
    """
    rows = []
    for user in range(6):
        for step in range(10):
            rows.append((f"u{user}", f"i{step}", user * 7200.0 + step * 3600.0))
    if late_user:
        rows += [("late", f"i{step}", 200_000.0 + step * 3600.0) for step in range(10)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Dataset("chain", frame, items=pd.DataFrame(index=[f"i{k}" for k in range(10)]))


def _oracle_engine(data: Dataset) -> Engine:
    """An engine whose retriever knows the chain: the successor of the last history item.

    Its cold-start fallback is "popularity" that starts everyone at ``i0``.
    """
    n_items = data.n_items

    def next_item(query, n):
        scores = np.zeros(n_items, dtype=np.float32)
        if query.history.size and query.history[-1] + 1 < n_items:
            scores[query.history[-1] + 1] = 1.0
        return ItemList.from_scores(scores, n, exclude=query.history)

    def starts_at_zero(query, k):
        scores = -np.arange(n_items, dtype=np.float32)
        return ItemList.from_scores(scores, k, exclude=query.history)

    return Engine(data.item_index, retriever=next_item, fallback=starts_at_zero)


def test_a_sequential_oracle_only_wins_with_fresh_profiles():
    data = _chain_dataset()
    split = freshness_split(data, test_fraction=0.3)
    report = replay_freshness(_oracle_engine(data).serve, split, FreshnessConfig(k=1))
    assert report["metrics"]["realtime"]["hr@1"] == 1.0
    assert report["metrics"]["realtime"]["missing_events"] == 0.0
    # hourly events: a 30-min session gap makes every event its own session (fresh too)
    assert report["metrics"]["session"]["hr@1"] == 1.0
    assert report["metrics"]["static"]["hr@1"] < 0.5
    assert report["metrics"]["batch"]["hr@1"] < 1.0
    assert report["delta_vs_batch"]["realtime"]["ndcg@1"] > 0


def test_new_users_start_from_the_fallback_and_gain_from_fresh_profiles():
    data = _chain_dataset(late_user=True)
    known = freshness_split(data, test_fraction=0.3)
    everyone = freshness_split(data, test_fraction=0.3, new_users=True)
    assert "late" not in set(known.test["user_id"]) and "late" in set(everyone.test["user_id"])
    new_user = "late"
    report = replay_freshness(_oracle_engine(data).serve, everyone, FreshnessConfig(k=1))
    events_of_new = int((everyone.test["user_id"] == new_user).sum())
    assert report["events_of_new_users"] >= events_of_new > 1
    # the chain is perfectly predictable from the fallback and then from a fresh profile
    assert report["metrics"]["realtime"]["hr@1"] == 1.0
    assert report["metrics"]["static"]["hr@1"] < report["metrics"]["realtime"]["hr@1"]


@pytest.fixture(scope="module")
def synthetic_split():
    data = generate(SyntheticConfig(n_users=60, n_items=80, seed=11))
    return freshness_split(data, test_fraction=0.2)


def test_ease_replay_reports_every_profile_with_consistent_staleness(synthetic_split):
    model = EASE(l2=50.0).fit(synthetic_split)
    engine = build_engine(synthetic_split, model, decisions=False)
    report = replay_freshness(engine.serve, synthetic_split, FreshnessConfig())
    assert report["events"] == len(synthetic_split.test)
    missing = [report["metrics"][m]["missing_events"] for m in MODES]
    assert missing[0] >= missing[1] >= missing[3] == 0.0
    # (session and batch are not nested: a session may span the midnight refresh)
    for mode in MODES:
        m = report["metrics"][mode]
        assert 0.0 <= m["mrr@10"] <= m["ndcg@10"] <= m["hr@10"] <= 1.0
    # the real-time profile knows everything seen, so both masks agree for it
    assert report["metrics_seen_masked"]["realtime"] == {
        k: v for k, v in report["metrics"]["realtime"].items() if k != "missing_events"
    }
    assert report["delta_vs_batch"]["batch"]["ndcg@10"] == 0.0


def test_the_realtime_profile_is_what_the_online_store_serves(synthetic_split):
    """The replay's real-time history ends with exactly the store's last-N items."""
    split = synthetic_split
    data = split.dataset
    store = InProcessStore(ItemInfoCatalog.from_dataset(data), FeatureConfig(recent_items=5))
    ingestor = Ingestor(store)
    ingestor.ingest(events_from_frame(split.train))
    test = split.test.sort_values("timestamp", kind="stable")
    history = {u: list(g) for u, g in split.train.groupby("user_id")["item_id"]}
    for row in test.itertuples():
        profile = store.get_profile(row.user_id, now=row.timestamp)
        assert list(profile.recent_items) == history[row.user_id][-5:]
        ingestor.ingest(
            [{"user_id": row.user_id, "item_id": row.item_id, "timestamp": row.timestamp}]
        )
        history[row.user_id].append(row.item_id)


def test_unknown_mode_and_empty_test_are_errors(synthetic_split):
    def serve(queries, k):
        return [ItemList.empty() for _ in queries]

    with pytest.raises(ValueError, match="modes"):
        replay_freshness(serve, synthetic_split, modes=["hourly"])
    empty = copy.copy(synthetic_split)
    empty.test = synthetic_split.test.iloc[:0]
    with pytest.raises(ValueError, match="no test events"):
        replay_freshness(serve, empty)


def test_run_freshness_writes_json_and_table(tmp_path):
    config = FreshnessConfig(test_fraction=0.2, max_events=80)
    report = run_freshness(
        ["synthetic"], tmp_path, config, throughput_events=400, latency_samples=20, redis=False
    )
    written = json.loads((tmp_path / "freshness.json").read_text())
    assert set(written["datasets"]["synthetic"]["metrics"]) == set(MODES)
    assert written["datasets"]["synthetic"]["events"] == 80
    assert written["ingest"]["in_process"]["events"] == 400
    assert written["ingest"]["in_process"]["events_per_second"] > 0
    assert "redis" not in written["ingest"]
    table = (tmp_path / "freshness.md").read_text()
    assert "| realtime |" in table and "in_process" in table
    assert freshness_table(report).strip() == table.strip()


def test_cli_bench_freshness_runs_on_synthetic(tmp_path):
    from typer.testing import CliRunner

    from recsys.cli import app

    out = tmp_path / "fresh"
    result = CliRunner().invoke(
        app,
        ["bench", "freshness", "-d", "synthetic", "--out", str(out), "--max-events", "50",
         "--throughput-events", "300", "--latency-samples", "10", "--no-redis"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| realtime |" in result.output
    assert json.loads((out / "freshness.json").read_text())["datasets"]["synthetic"]["events"] == 50
    bad = CliRunner().invoke(app, ["bench", "freshness", "-d", "nope", "--out", str(out)])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_freshness_config_round_trips_and_is_bounded():
    config = FreshnessConfig(test_fraction=0.2, max_events=10, k=5)
    assert FreshnessConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="test_fraction"):
        FreshnessConfig(test_fraction=1.5)
