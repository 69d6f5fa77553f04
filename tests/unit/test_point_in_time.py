from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.data import SyntheticConfig, generate
from recsys.errors import DataError
from recsys.features.definitions import FeatureConfig, ItemInfo, ItemInfoCatalog
from recsys.features.events import Event
from recsys.features.offline import build_offline_features, point_in_time_features

CATALOG = ItemInfoCatalog(
    {"a": ItemInfo(("Action",), 1990.0), "b": ItemInfo(("Comedy",), 2001.0), "c": ItemInfo()}
)


def _history() -> list[Event]:
    return [
        Event("u1", "a", 100.0),
        Event("u2", "b", 150.0),
        Event("u1", "b", 200.0),  # the labelled interaction itself
        Event("u2", "b", 200.0),  # simultaneous with the label: not "strictly before"
        Event("u1", "c", 300.0),  # the future
    ]


def test_features_are_as_they_were_strictly_before_the_label():
    labels = pd.DataFrame({"user_id": ["u1"], "item_id": ["b"], "timestamp": [200.0], "label": [1]})
    row = point_in_time_features(labels, _history(), CATALOG).iloc[0]
    assert row["label"] == 1
    assert row["user_event_count"] == 1
    assert row["user_last_items"] == ["a"]
    assert row["user_genre_affinity"] == {"Action": 1.0}
    assert row["user_last_event_time"] == 100.0
    assert row["item_popularity"] == 1  # u2's event at 150, not the two at 200
    assert row["item_seconds_since_last_event"] == 50.0
    assert row["item_genres"] == ["Comedy"] and row["item_year"] == 2001.0


def test_a_future_event_that_would_change_the_features_does_not_leak():
    labels = pd.DataFrame(
        {"user_id": ["u1", "u1"], "item_id": ["b", "c"], "timestamp": [200.0, 250.0]}
    )
    with_future = point_in_time_features(labels, _history(), CATALOG)
    without_future = point_in_time_features(labels, _history()[:-1], CATALOG)
    pd.testing.assert_frame_equal(with_future, without_future)
    # the future event does change the features once it is in the past
    later = pd.DataFrame({"user_id": ["u1"], "item_id": ["c"], "timestamp": [301.0]})
    after = point_in_time_features(later, _history(), CATALOG).iloc[0]
    assert after["user_last_items"] == ["a", "b", "c"] and after["item_popularity"] == 1
    # and the labelled interaction at 250 already sees the one at 200
    assert with_future.iloc[1]["user_last_items"] == ["a", "b"]


def test_label_order_is_kept_and_unknown_entities_get_defaults():
    labels = pd.DataFrame(
        {
            "user_id": ["u1", "ghost", "u1"],
            "item_id": ["c", "zzz", "a"],
            "timestamp": [301.0, 5.0, 100.0],
        },
        index=[10, 11, 12],
    )
    out = point_in_time_features(labels, _history(), CATALOG)
    assert list(out.index) == [10, 11, 12]
    assert out.loc[10, "user_event_count"] == 3 and out.loc[12, "user_event_count"] == 0
    assert out.loc[11, "user_last_items"] == [] and out.loc[11, "item_popularity"] == 0
    assert math.isinf(out.loc[11, "item_seconds_since_last_event"])
    assert math.isnan(out.loc[11, "item_year"])


def test_selected_features_only_and_bad_input_named():
    labels = pd.DataFrame({"user_id": ["u1"], "item_id": ["b"], "timestamp": [200.0]})
    out = point_in_time_features(labels, _history(), CATALOG, features=["item_popularity"])
    assert list(out.columns) == ["user_id", "item_id", "timestamp", "item_popularity"]
    with pytest.raises(DataError, match="timestamp"):
        point_in_time_features(labels.drop(columns="timestamp"), _history(), CATALOG)
    with pytest.raises(ValueError, match="unknown 'nope'"):
        point_in_time_features(labels, _history(), CATALOG, features=["nope"])


def test_no_leakage_on_synthetic_data_against_truncated_histories():
    data = generate(SyntheticConfig(n_users=30, n_items=40, seed=5))
    frame = data.interactions
    catalog = ItemInfoCatalog.from_dataset(data)
    rng = np.random.default_rng(0)
    labels = frame.iloc[rng.choice(len(frame), size=25, replace=False)][
        ["user_id", "item_id", "timestamp"]
    ]
    full = point_in_time_features(labels, frame, catalog, FeatureConfig(recent_items=5))
    for index, label in labels.iterrows():
        past = frame[frame["timestamp"] < label["timestamp"]]
        alone = point_in_time_features(
            labels.loc[[index]], past, catalog, FeatureConfig(recent_items=5)
        )
        pd.testing.assert_frame_equal(full.loc[[index]], alone)


def test_point_in_time_at_the_cutoff_equals_the_offline_tables():
    data = generate(SyntheticConfig(n_users=20, n_items=30, seed=8))
    frame = data.interactions
    catalog = ItemInfoCatalog.from_dataset(data)
    cutoff = float(frame["timestamp"].median())
    offline = build_offline_features(frame, cutoff, catalog)
    users = offline.users.index[:5]
    labels = pd.DataFrame({"user_id": users, "item_id": ["i1"] * 5, "timestamp": [cutoff] * 5})
    pit = point_in_time_features(labels, frame, catalog)
    for column in offline.users.columns:
        got, want = pit[column].tolist(), offline.users.loc[users, column].tolist()
        same = [a == b or (a != a and b != b) for a, b in zip(got, want, strict=True)]  # NaN == NaN
        assert all(same), (column, got, want)
