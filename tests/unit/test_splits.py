"""Splits are deterministic under a seed and never leak."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data import leave_last_out, random_split, temporal_split, time_cutoff_split


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"], frame["item"], strict=True))


def test_random_split_is_deterministic_and_disjoint(synthetic) -> None:
    a = random_split(synthetic, seed=3)
    b = random_split(synthetic, seed=3)
    c = random_split(synthetic, seed=4)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test)
    assert not _pairs(a.train) & _pairs(a.test)
    assert not _pairs(a.train) & _pairs(a.valid)
    assert not _pairs(a.valid) & _pairs(a.test)
    assert sum(a.sizes().values()) == len(synthetic.interactions)


def test_random_split_ratios_per_user(synthetic) -> None:
    split = random_split(synthetic, seed=1)
    per_user = synthetic.interactions.groupby("user").size()
    test_counts = split.test.groupby("user").size().reindex(per_user.index, fill_value=0)
    expected = np.where(per_user >= 3, np.maximum((per_user * 0.1).astype(int), 1), 0)
    assert (test_counts.to_numpy() == expected).all()


@pytest.mark.parametrize("make", [temporal_split, leave_last_out])
def test_temporal_splits_never_train_on_the_future(synthetic, make) -> None:
    split = make(synthetic)
    last_train = split.train.groupby("user")["timestamp"].max()
    first_test = split.test.groupby("user")["timestamp"].min()
    first_valid = split.valid.groupby("user")["timestamp"].min()
    joined = pd.concat([last_train, first_valid, first_test], axis=1, keys=["tr", "va", "te"])
    joined = joined.dropna()
    assert len(joined) > 0
    assert (joined["tr"] <= joined["va"]).all()
    assert (joined["va"] <= joined["te"]).all()
    assert not _pairs(split.train) & _pairs(split.test)


def test_leave_last_out_holds_exactly_one(synthetic) -> None:
    split = leave_last_out(synthetic, n_valid=1, n_test=1)
    assert split.test.groupby("user").size().max() == 1
    assert split.valid.groupby("user").size().max() == 1


def test_time_cutoff_split(synthetic) -> None:
    ts = synthetic.interactions["timestamp"]
    valid_start, test_start = ts.quantile(0.7), ts.quantile(0.85)
    split = time_cutoff_split(synthetic, valid_start, test_start)
    assert split.train["timestamp"].max() < valid_start
    assert split.valid["timestamp"].between(valid_start, test_start, inclusive="left").all()
    assert (split.test["timestamp"] >= test_start).all()
    assert set(split.test["user"]) <= set(split.train["user"])
    with pytest.raises(ValueError, match="valid_start"):
        time_cutoff_split(synthetic, test_start, valid_start)
