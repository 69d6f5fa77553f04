"""The sequential benches: every model served by the Engine on session prefixes (tiny data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.bench.sequential import evaluate_models, sequential_engine
from recsys.data.dataset import Dataset
from recsys.data.splits import Split
from recsys.evaluation.sessions import session_events
from recsys.ranking.two_stage import holdout_sessions
from recsys.retrieval import VSKNN


def _walks(n_sessions: int, n_items: int, seed: int, t0: float) -> pd.DataFrame:
    """Sessions walking i → i + 1, with re-clicks of the current item one time in four."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        item = int(rng.integers(n_items))
        for t in range(int(rng.integers(3, 8))):
            rows.append((f"{seed}-{s}", f"i{item}", t0 + s * 600.0 + t))
            item = item if rng.random() < 0.25 else (item + 1) % n_items
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.fixture(scope="module")
def split() -> Split:
    train, test = _walks(400, 40, 0, 0.0), _walks(60, 40, 1, 1e6)
    frame = pd.concat([train.assign(part=0), test.assign(part=2)], ignore_index=True)
    frame["session_id"] = frame["user_id"]
    items = pd.DataFrame(index=pd.Index([f"i{i}" for i in range(40)], name="item_id"))
    data = Dataset("walks", frame, items)
    inter = data.interactions
    part = inter.pop("part").to_numpy()
    return Split(data, inter[part == 0], inter.iloc[0:0], inter[part == 2], protocol="sessions")


def test_engine_keeps_prefix_items_and_lists_the_catalogue(split) -> None:
    model = VSKNN(k=20, sample_size=100).fit(split)
    engine = sequential_engine(split, model, keep_history=True)
    events = session_events(split)
    lists = engine.serve(events.queries[:5], split.dataset.n_items)
    assert all(len(slate) == split.dataset.n_items for slate in lists)
    assert events.queries[0].history[-1] in lists[0].items[:3]  # the last click is kept


def test_holdout_keeps_most_sessions_for_training(split) -> None:
    inner = holdout_sessions(split, days=1.0)
    n_sessions = split.train["user"].nunique()
    held = inner.test["user"].nunique()
    assert 0 < held <= 0.2 * n_sessions + 1
    assert inner.train["timestamp"].min() <= inner.test["timestamp"].min()
    assert not set(inner.train["user"]) & set(inner.test["user"])


def test_sequential_models_beat_popularity_served(split) -> None:
    events = session_events(split)
    results, costs = evaluate_models(
        split,
        "synthetic",
        events,
        ["popularity", "vsknn", "two_tower_seq", "two_tower_seq+ranker"],
        keep_history=True,
        cost_models=("two_tower_seq",),
    )
    hr = {name: values["hr@20"] for name, values in results.items()}
    assert hr["vsknn"] > hr["popularity"] + 0.2
    assert hr["two_tower_seq"] > hr["popularity"] + 0.2
    assert hr["two_tower_seq+ranker"] > hr["popularity"] + 0.2
    assert results["two_tower_seq+ranker"]["ranker_events"] > 0
    assert set(costs["two_tower_seq"]) == {"batch_1", "batch_100"}


def test_peer_lists_are_scored_by_our_evaluator_and_reported(split, tmp_path) -> None:
    import json

    from recsys.bench.recbole_peers import export_events, recbole_rows
    from recsys.bench.sequential import PeerSettings, _report

    events = session_events(split)
    folder = tmp_path / "peers"
    written = export_events(split.train, events, folder, "walks", max_len=5)
    test_rows = (written / "walks.test.inter").read_text().splitlines()
    assert len(test_rows) == len(events) + 1 and test_rows[0].startswith("user_id:token")
    # a fake peer that lists each event's target first: what the runner would leave behind
    n = len(events)
    items = np.stack([np.r_[t, (t + 1) % 40] for t in events.targets])
    scores = np.tile([2.0, 1.0], (n, 1))
    np.savez(folder / "walks-Fake.npz", items=items, scores=scores, event=np.arange(n))
    meta = {"epochs": 3, "epoch_seconds": [1.0] * 3, "seconds_per_epoch": 1.0, "recbole": "x"}
    (folder / "walks-Fake.npz.json").write_text(json.dumps(meta))
    rows = recbole_rows(
        "/nonexistent/python",
        split.train,
        events,
        40,
        folder,
        "walks",
        {"Fake": 3},
        5,
        mask_history=False,
        reuse=True,
    )
    assert rows["recbole_fake"]["hr@20"] == 1.0 and rows["recbole_fake"]["reused_lists"] == 1.0
    peers = PeerSettings(("Fake",), epochs=3, reuse=True)
    report = _report("sessions", "walks", "sessions", split, events, rows, {}, 0, peers, "")
    assert "recbole_fake" in report["models"] and report["peers"]["reused_lists"]
