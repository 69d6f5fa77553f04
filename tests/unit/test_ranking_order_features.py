"""The ranker's order features: known answers on a tiny session log, and a refreshed ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import Dataset
from recsys.data.splits import Split
from recsys.ranking import CandidateFeatureConfig, CandidateFeaturizer
from recsys.ranking.features import FEATURE_NAMES, ORDER_FEATURE_NAMES
from recsys.types import Query


@pytest.fixture(scope="module")
def fitted() -> tuple[CandidateFeaturizer, dict[str, int]]:
    rows = [("s1", "a", 1.0), ("s1", "b", 2.0), ("s2", "b", 3.0), ("s2", "c", 4.0)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(index=pd.Index(list("abcd"), name="item_id"))
    data = Dataset("tiny", frame, items)
    inter = data.interactions
    split = Split(data, inter, inter.iloc[0:0], inter.iloc[0:0], protocol="sessions")
    config = CandidateFeatureConfig(order_features=True, seq_window=1)
    ids = {name: data.item_index.index(name) for name in "abcd"}
    return CandidateFeaturizer(config).fit(split), ids


def test_names_grow_only_when_asked(fitted) -> None:
    featurizer, _ = fitted
    assert featurizer.names == FEATURE_NAMES + ORDER_FEATURE_NAMES
    assert CandidateFeaturizer().names == FEATURE_NAMES


def test_order_features_known_answers(fitted) -> None:
    featurizer, ids = fitted
    # clicks a (t=10), c (t=20), a (t=30); request at t=40 (request time is not read)
    query = Query(
        history=np.array([ids["a"], ids["c"], ids["a"]]),
        history_times=np.array([10.0, 20.0, 30.0]),
        timestamp=40.0,
    )
    cand = np.array([[ids["a"], ids["b"], ids["c"], ids["d"]]])
    out = featurizer.features([query], cand, np.zeros((1, 4), dtype=np.float32))
    np.testing.assert_allclose(out["hist_recency"][0], [1.0, 0.0, 0.5, 0.0])  # a last, c 2 back
    np.testing.assert_allclose(out["hist_log_count"][0], np.log1p([2, 0, 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(out["log_last_gap"][0], np.log1p(10.0), rtol=1e-6)
    ago = out["cand_log_time_before_last"][0]
    np.testing.assert_allclose(ago[[0, 2]], np.log1p([0.0, 10.0]), rtol=1e-6, atol=1e-7)
    assert ago[1] == ago[3] > ago[2]  # never clicked: older than anything clicked
    # b follows a and precedes c within one step (seq_window=1): it co-occurs with both
    seq_recent, seq_last = out["seq_recent_score"][0], out["seq_last_score"][0]
    assert seq_last[1] > 0 and seq_last[3] == 0  # b next to the last click a; d never
    assert seq_recent[1] > seq_last[1]  # c, one step further back, adds its half
    later = Query(history=query.history, history_times=query.history_times, timestamp=1e9)
    again = featurizer.features([later], cand, np.zeros((1, 4), dtype=np.float32))
    assert all(np.array_equal(again[k], out[k]) for k in ORDER_FEATURE_NAMES)
    full = featurizer.transform([query], cand, np.zeros((1, 4), dtype=np.float32))
    assert full.shape == (1, 4, len(featurizer.names))
