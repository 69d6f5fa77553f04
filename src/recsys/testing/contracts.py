"""The retrieval-component contract: what every :class:`Recommender` must do."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset
from recsys.data.splits import Split, random_split
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.retrieval.base import Recommender
from recsys.types import Query


def tiny_split(seed: int = 0) -> Split:
    """A small seeded synthetic split (≈150 users × 120 items) for fast contract tests."""
    data = generate(SyntheticConfig(n_users=150, n_items=120, n_categories=6, seed=seed))
    return random_split(data, seed=seed)


def checkerboard_split(n_users: int = 40, n_items: int = 30) -> tuple[Split, dict[int, int]]:
    """A known-answer dataset (implicit's checkerboard idea).

    Users and items form two groups (even / odd). Each user interacted with every item of
    their own group except one, which is held out as the test item; nobody touches the other
    group. Any collaborative model must rank the held-out item first.

    Returns:
        The split and, per dense user index, the held-out dense item index.
    """
    rows = []
    held_out: dict[str, str] = {}
    for u in range(n_users):
        group_items = [i for i in range(n_items) if i % 2 == u % 2]
        hidden = group_items[u % len(group_items)]
        held_out[f"u{u}"] = f"i{hidden}"
        for t, i in enumerate(group_items):
            rows.append((f"u{u}", f"i{i}", float(t)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame(
        {"genres": [(f"g{i % 2}",) for i in range(n_items)]},
        index=pd.Index([f"i{i}" for i in range(n_items)], name="item_id"),
    )
    data = Dataset(name="checkerboard", interactions=frame, items=items)
    inter = data.interactions
    is_test = np.array(
        [held_out[u] == i for u, i in zip(inter["user_id"], inter["item_id"], strict=True)]
    )
    split = Split(
        data,
        train=inter[~is_test].reset_index(drop=True),
        valid=inter.iloc[0:0].copy(),
        test=inter[is_test].reset_index(drop=True),
        protocol="checkerboard",
    )
    answers = {int(u): int(i) for u, i in zip(split.test["user"], split.test["item"], strict=True)}
    return split, answers


class RecommenderContract:
    """Contract tests for a :class:`Recommender` subclass; collected by pytest when subclassed.

    Attributes:
        component: The class under test.
        config_overrides: Keyword overrides that make training fast in tests.
        known_answer: Whether the component must pass the checkerboard known-answer test
            (False for non-personalised models such as popularity).
    """

    component: ClassVar[type[Recommender]]
    config_overrides: ClassVar[dict[str, Any]] = {}
    known_answer: ClassVar[bool] = True

    def _make(self) -> Recommender:
        return self.component(**self.config_overrides)

    def _fitted(self) -> tuple[Recommender, Split]:
        split = tiny_split()
        return self._make().fit(split), split

    def test_default_construction(self) -> None:
        model = self.component()
        assert isinstance(model.config, self.component.config_class)

    def test_config_json_round_trip(self) -> None:
        config = self._make().config
        again = type(config).model_validate_json(config.model_dump_json())
        assert again == config

    def test_unknown_config_key_rejected(self) -> None:
        import pydantic
        import pytest

        with pytest.raises(pydantic.ValidationError):
            self.component.config_class.model_validate({"no_such_setting": 1})

    def test_recommend_respects_k_without_duplicates(self) -> None:
        model, split = self._fitted()
        user = int(split.test["user"].iloc[0])
        history = split.train.loc[split.train["user"] == user, "item"].to_numpy()
        result = model(Query(user=user, history=history), n=10)
        assert len(result) == 10
        assert len(set(result.items.tolist())) == 10
        assert not set(result.items.tolist()) & set(history.tolist())
        assert np.all(np.diff(result.scores) <= 1e-6)

    def test_unknown_user_gets_cold_start_results(self) -> None:
        model, _ = self._fitted()
        result = model(Query(user=None), n=5)
        assert len(result) == 5
        assert np.isfinite(result.scores).all()

    def test_more_than_catalogue_returns_all_eligible(self) -> None:
        model, split = self._fitted()
        result = model(Query(user=None, history=np.array([0, 1])), n=10_000)
        assert len(result) == split.dataset.n_items - 2

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        model, split = self._fitted()
        model.save(tmp_path / "model")
        loaded = Recommender.load(tmp_path / "model")
        assert type(loaded) is type(model)
        assert loaded.config == model.config
        queries = [
            Query(user=int(u), history=split.train.loc[split.train["user"] == u, "item"].to_numpy())
            for u in split.test["user"].unique()[:5]
        ]
        np.testing.assert_allclose(loaded.score(queries), model.score(queries), rtol=1e-5)

    def test_known_answer_checkerboard(self) -> None:
        split, answers = checkerboard_split()
        model = self._make().fit(split)
        train = split.train
        for user, item in list(answers.items())[:10]:
            history = train.loc[train["user"] == user, "item"].to_numpy()
            top = model(Query(user=user, history=history), n=1)
            if self.known_answer:
                assert top.items[0] == item, f"user {user}: expected {item}, got {top.items[0]}"
            else:
                assert top.items[0] not in history
