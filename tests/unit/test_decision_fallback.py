"""Cold start and fallbacks: context popularity, backoff to global, stage failure/late."""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np
import pandas as pd
import pytest

from recsys.data import Dataset, SyntheticConfig, generate, random_split
from recsys.decision import ContextPopularity, ContextPopularityConfig, run_with_fallback
from recsys.errors import NotFittedError
from recsys.features import age_band
from recsys.types import ItemList, Query


def _two_segment_dataset() -> Dataset:
    # mobile users watch items 0-4, desktop users items 5-9; items 5-9 slightly more popular
    rows = []
    for u in range(40):
        device = "mobile" if u < 18 else "desktop"
        items = range(0, 5) if device == "mobile" else range(5, 10)
        rows += [(f"u{u}", f"i{i}", float(u * 10 + i)) for i in items]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    users = pd.DataFrame(
        {"device": ["mobile" if u < 18 else "desktop" for u in range(40)]},
        index=[f"u{u}" for u in range(40)],
    )
    return Dataset("two-segments", frame, pd.DataFrame(index=[f"i{i}" for i in range(10)]), users)


def test_context_popularity_follows_context_and_backs_off_to_global():
    fallback = ContextPopularity(ContextPopularityConfig(smoothing=5.0, min_support=1))
    fallback.fit(_two_segment_dataset())
    mobile = fallback(Query(context={"device": "mobile"}), 5)
    assert set(mobile.items.tolist()) == {0, 1, 2, 3, 4}
    assert mobile.reason == "context:device"
    anonymous = fallback(Query(), 5)
    assert set(anonymous.items.tolist()) == {5, 6, 7, 8, 9}
    assert anonymous.reason == "global"
    unseen_value = fallback(Query(context={"device": "fridge"}), 5)
    assert unseen_value.reason == "global"


def test_fit_on_split_uses_train_only_and_excludes_history():
    split = random_split(generate(SyntheticConfig(seed=3)))
    fallback = ContextPopularity().fit(split)
    top = fallback(Query(), 20)
    assert top.reason == "global"
    counts = np.bincount(split.train["item"], minlength=split.dataset.n_items)
    assert counts[top.items[0]] == counts.max()
    without = fallback(Query(history=top.items[:3]), 20)
    assert not set(top.items[:3].tolist()) & set(without.items.tolist())
    assert len(without) == 20 and len(set(without.items)) == 20


def test_movielens_style_age_is_banded():
    assert age_band(23) == "18-24" and age_band(60) == "56+" and age_band("x") is None
    users = pd.DataFrame({"age": [20, 21, 60, 61]}, index=["a", "b", "c", "d"])
    frame = pd.DataFrame(
        {"user_id": ["a", "b", "c", "d"], "item_id": ["x", "x", "y", "y"], "timestamp": 0.0}
    )
    frame.loc[4] = ["c", "z", 1.0]
    data = Dataset("ages", frame, pd.DataFrame(index=["x", "y", "z"]), users)
    fallback = ContextPopularity(smoothing=0.0, min_support=1).fit(data)
    assert fallback(Query(context={"age": 64}), 1).items.tolist() == [data.item_index.index("y")]
    assert fallback(Query(context={"age": 64}), 1).reason == "context:age_band"


def test_unfitted_fallback_raises_clear_error():
    with pytest.raises(NotFittedError, match="fit"):
        ContextPopularity()(Query(), 3)


def test_run_with_fallback_on_failure_and_on_deadline():
    def broken() -> ItemList:
        raise RuntimeError("ranker exploded")

    def slow() -> str:
        time.sleep(0.5)
        return "late"

    result, reason = run_with_fallback(broken, lambda: "popular", name="ranker")
    assert (result, reason) == ("popular", "failed:ranker")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result, reason = run_with_fallback(slow, lambda: "popular", 0.01, pool, name="ranker")
    assert (result, reason) == ("popular", "late:ranker")
    assert run_with_fallback(lambda: "ok", lambda: "popular") == ("ok", None)
