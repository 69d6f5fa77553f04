"""Next-event protocols: events per prefix, honest tie-breaking, the YOOCHOOSE loader."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from recsys.data.dataset import Dataset
from recsys.data.splits import Split, leave_last_out
from recsys.errors import ChecksumError
from recsys.evaluation.sessions import (
    evaluate_events,
    next_event_events,
    session_events,
    tie_aware_rank,
)
from recsys.types import ItemList


def _session_split() -> Split:
    rows = [
        ("s1", "a", 1.0), ("s1", "b", 2.0), ("s1", "a", 3.0),  # a re-click
        ("s2", "c", 1.0), ("s2", "c", 1.5),  # repeat of the last click
        ("s3", "d", 5.0),  # one click: no prediction event
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["session_id"] = frame["user_id"]
    data = Dataset("s", frame, pd.DataFrame(index=pd.Index([], name="item_id")))
    inter = data.interactions
    return Split(data, inter.iloc[0:0], inter.iloc[0:0], inter, protocol="sessions")


def test_one_event_per_prefix_position() -> None:
    split = _session_split()
    events = session_events(split)
    ids = split.dataset.item_index
    assert len(events) == 3  # s1: 2 events, s2: 1, s3: none
    histories = [ids.to_ids(q.history) for q in events.queries]
    assert histories == [["a"], ["a", "b"], ["c"]]
    assert ids.to_ids(events.targets) == ["b", "a", "c"]
    assert events.repeat.tolist() == [False, True, True]
    assert events.repeat_last.tolist() == [False, False, True]
    assert all(q.user is None for q in events.queries)
    assert events.queries[1].history_times.tolist() == [1.0, 2.0]
    assert events.queries[1].timestamp == 2.0 and events.queries[1].session_id == "s1"


def test_tied_target_is_not_ranked_first() -> None:
    items = np.array([5, 1, 2, 3, 4])
    scores = np.array([9.0, 1.0, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    ranks = [tie_aware_rank(items, scores, 3, rng)[0] for _ in range(400)]
    assert set(ranks) == {2.0, 3.0, 4.0, 5.0}  # anywhere among the four tied, not always 2
    assert np.mean(ranks) == pytest.approx(3.5, abs=0.15)
    assert tie_aware_rank(items, scores, 5, rng)[:2] == (1.0, 0)
    assert tie_aware_rank(items, scores, 7, rng)[0] == float("inf")


def test_evaluate_events_counts_ties_honestly() -> None:
    split = _session_split()
    events = session_events(split)
    n = split.dataset.n_items

    def all_equal(queries, k):  # every item scored the same: a target's rank is uniform
        return [ItemList(np.arange(n), np.zeros(n)) for _ in queries]

    result = evaluate_events(all_equal, events, n, ks=(1, 2))
    assert result["hr@1_expected"] == pytest.approx(1 / n)
    assert result["hr@2_expected"] == pytest.approx(2 / n)
    assert result["mrr@2_expected"] == pytest.approx((1 + 0.5) / n)
    assert result["tied_targets"] == 3 and result["events"] == 3 and result["sequences"] == 2

    def perfect(queries, k):
        out = []
        for target in events.targets[: len(queries)]:
            order = np.r_[target, np.setdiff1d(np.arange(n), [target])]
            out.append(ItemList(order, -np.arange(n, dtype=np.float32)))
        return out

    best = evaluate_events(perfect, events, n, ks=(1,), batch_size=10)
    assert best["hr@1"] == 1.0 and best["mrr@1"] == 1.0 and best["ndcg@1"] == 1.0


def test_next_event_events_use_everything_before(synthetic) -> None:
    split = leave_last_out(synthetic)
    events = next_event_events(split, "test")
    users = split.target_users("test")
    assert len(events) == len(users)
    q = events.queries[0]
    user = q.user
    before = pd.concat([split.train, split.valid])
    assert len(q.history) == int((before["user"] == user).sum())
    assert events.targets[0] == int(split.test.loc[split.test["user"] == user, "item"].iloc[0])
    assert np.all(np.diff(q.history_times) >= 0)


def test_yoochoose_checksum_error_names_the_file(tmp_path) -> None:
    from recsys.data.yoochoose import PREFIX, read_part

    path = tmp_path / f"{PREFIX}_test.txt"
    path.write_text("SessionId\tItemId\tTime\n1\t2\t3.0\n")
    with pytest.raises(ChecksumError, match=str(path)):
        read_part("test", tmp_path)
    with pytest.raises(ValueError, match="part: unknown"):
        read_part("nope", tmp_path)


@pytest.mark.slow
def test_yoochoose_sample_session_protocol(tmp_path) -> None:
    from recsys.data.yoochoose import find_yoochoose_sample, session_split

    split = session_split("test")
    assert split.sizes() == {"train": 70_278, "valid": 0, "test": 13_568}
    assert split.dataset.n_items == 2_933
    events = session_events(split)
    assert len(events) == 10_152 and len(np.unique(events.sequences)) == 3_416
    assert events.repeat.mean() == pytest.approx(0.342, abs=0.001)
    # a truncated copy of a part is refused, naming the file
    copy = tmp_path / "copy"
    shutil.copytree(find_yoochoose_sample(), copy)
    target = next(copy.glob("*_train_tr.txt"))
    target.chmod(0o644)
    target.write_text(target.read_text()[:1000])
    with pytest.raises(ChecksumError, match="train_tr"):
        session_split("valid", copy)
