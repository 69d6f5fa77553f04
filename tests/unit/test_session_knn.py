"""SKNN / V-SKNN: the retrieval contract and hand-computed answers on tiny sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import Dataset
from recsys.data.splits import Split
from recsys.retrieval import SKNN, VSKNN
from recsys.testing import RecommenderContract
from recsys.types import Query


class TestSKNN(RecommenderContract):
    component = SKNN
    config_overrides = {"k": 20, "sample_size": 200}


class TestVSKNN(RecommenderContract):
    component = VSKNN
    config_overrides = {"k": 20, "sample_size": 200}


@pytest.fixture(scope="module")
def sessions() -> tuple[Split, dict[str, int]]:
    """s1 [a b c] @1, s2 [a d] @2, s3 [b d e] @3, s4 [f g] @4 (time of the last click)."""
    rows = [
        ("s1", "a", 1.0), ("s1", "b", 1.1), ("s1", "c", 1.2),
        ("s2", "a", 2.0), ("s2", "d", 2.1),
        ("s3", "b", 3.0), ("s3", "d", 3.1), ("s3", "e", 3.2),
        ("s4", "f", 4.0), ("s4", "g", 4.1),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    data = Dataset("tiny-sessions", frame, pd.DataFrame(index=pd.Index([], name="item_id")))
    inter = data.interactions
    split = Split(data, inter, inter.iloc[0:0], inter.iloc[0:0], protocol="sessions")
    return split, {name: data.item_index.index(name) for name in "abcdefg"}


def _scores(model, items: dict[str, int], prefix: str) -> dict[str, float]:
    query = Query(history=np.array([items[c] for c in prefix]))
    row = model.score([query])[0]
    return {name: round(float(row[i]), 4) for name, i in items.items()}


def test_sknn_known_answer(sessions) -> None:
    split, items = sessions
    # prefix {a, b}: cosine s1 2/(√2·√3) = .8165, s2 1/(√2·√2) = .5, s3 1/(√2·√3) = .4082
    model = SKNN(k=2, sample_size=0).fit(split)
    assert _scores(model, items, "ab") == {
        "a": 1.3165, "b": 0.8165, "c": 0.8165, "d": 0.5, "e": 0.0, "f": 0.0, "g": 0.0,
    }  # fmt: skip
    # sample_size=1 keeps only the most recent candidate session (s3)
    recent = SKNN(k=2, sample_size=1).fit(split)
    assert _scores(recent, items, "ab") == {
        "a": 0.0, "b": 0.4082, "c": 0.0, "d": 0.4082, "e": 0.4082, "f": 0.0, "g": 0.0,
    }  # fmt: skip


def test_vsknn_known_answer_depends_on_order(sessions) -> None:
    split, items = sessions
    model = VSKNN(k=3, sample_size=0, weighting="linear", weighting_score="div").fit(split)
    # prefix a, b: weights a .9, b 1; vec similarity s1 (.9+1)/2 = .95, s3 1/2 = .5,
    # s2 .9/2 = .45; s2 shares only a, clicked one step before the last → vote × 1/2
    assert _scores(model, items, "ab") == {
        "a": 0.95 + 0.225, "b": 1.45, "c": 0.95, "d": 0.5 + 0.225, "e": 0.5, "f": 0.0, "g": 0.0,
    }  # fmt: skip
    # prefix b, a: weights b .9, a 1 → s1 .95, s2 .5, s3 .45 (its b is one step back)
    assert _scores(model, items, "ba") == {
        "a": 1.45, "b": 0.95 + 0.225, "c": 0.95, "d": 0.5 + 0.225, "e": 0.225, "f": 0.0, "g": 0.0,
    }  # fmt: skip


def test_vsknn_repeated_click_counts_at_its_latest_position(sessions) -> None:
    split, items = sessions
    model = VSKNN(k=3, sample_size=0).fit(split)
    # a b a: a's weight is its latest position's (1.0), b's .9 (one of 3 clicks back)
    row = _scores(model, items, "aba")
    # s1 (.9+1)/2 = .95 decay 1; s2 1/2 = .5 decay 1; s3 .9/2 = .45, its b is 2 steps back
    assert row["c"] == 0.95 and row["d"] == pytest.approx(0.5 + 0.225, abs=1e-4)


def test_idf_weighting_multiplies_votes(sessions) -> None:
    split, items = sessions
    plain = VSKNN(k=3, sample_size=0).fit(split)
    weighted = VSKNN(k=3, sample_size=0, idf_weighting=2.0).fit(split)
    a, b = _scores(plain, items, "ab"), _scores(weighted, items, "ab")
    idf_c = np.log(4 / 1)  # 4 sessions, item c clicked once
    assert b["c"] == pytest.approx(a["c"] * (1 + 2 * idf_c), abs=1e-3)


def test_prefix_items_are_recommended_when_not_excluded(sessions) -> None:
    split, items = sessions
    model = VSKNN(k=3, sample_size=0).fit(split)
    query = Query(history=np.array([items["a"], items["b"]]))
    kept = model(query, 2, exclude_seen=False)
    assert kept.items.tolist() == [items["b"], items["a"]]
    masked = model(query, 2)
    assert not {items["a"], items["b"]} & set(masked.items.tolist())


def test_last_n_uses_only_recent_clicks(sessions) -> None:
    split, items = sessions
    model = SKNN(k=5, sample_size=0, last_n=1).fit(split)
    # only b: s1 1/√3, s3 1/√3
    assert _scores(model, items, "ab")["a"] == pytest.approx(1 / np.sqrt(3), abs=1e-4)
