"""No collapse on small, sparse logs: scaled settings, a popularity floor, a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recsys.data import SyntheticConfig, generate, temporal_split
from recsys.evaluation.protocol import evaluate
from recsys.retrieval import Popularity
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever
from recsys.retrieval.two_tower.retriever import scaled_config
from recsys.types import Query


@pytest.fixture(scope="module")
def sparse():
    data = generate(
        SyntheticConfig(
            n_users=300,
            n_items=700,
            sessions_per_user=(1, 1),
            events_per_session=(3, 6),
            popularity_exponent=1.0,
            seed=4,
        )
    )
    return temporal_split(data)


def test_scaled_config_follows_the_log(sparse) -> None:
    small = scaled_config(TwoTowerConfig(epochs=5), sparse)
    assert small.embedding_size == small.table_dim == 16
    assert small.batch_size == 64 and small.epochs >= 100 and small.patience >= 5
    assert small.uniform_negatives == min(700, 4 * 64)
    ordered = scaled_config(TwoTowerConfig(user_encoder="transformer"), sparse)
    assert ordered.softmax == "full"


def test_a_model_that_never_beats_popularity_serves_popularity(sparse, tmp_path, caplog) -> None:
    untrained = TwoTowerRetriever(
        TwoTowerConfig(epochs=1, learning_rate=1e-9, progress=False, patience=0)
    )
    with caplog.at_level(logging.WARNING):
        untrained.fit(sparse)
    assert untrained.popularity_fallback
    assert "no epoch beat popularity" in caplog.text
    pop = Popularity().fit(sparse)
    floor = evaluate(pop.score, sparse, stage="valid", ks=(10,))["ndcg@10"]
    served = evaluate(untrained.score, sparse, stage="valid", ks=(10,))["ndcg@10"]
    assert served == pytest.approx(floor)
    query = Query(history=np.array([0, 1]))
    assert untrained(query, 5).items.tolist() == pop(query, 5).items.tolist()
    untrained.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert (
        loaded.popularity_fallback
        and loaded(query, 5).items.tolist() == pop(query, 5).items.tolist()
    )


def test_below_best_baseline_warns(sparse, caplog) -> None:
    model = TwoTowerRetriever(
        TwoTowerConfig(epochs=2, progress=False, embedding_size=16, table_dim=16)
    )
    with caplog.at_level(logging.WARNING):
        model.fit(sparse)
    assert set(model.baselines_valid) == {"popularity", "ease"}
    kept = model.bench_info()
    if model.popularity_fallback:
        assert "no epoch beat popularity" in caplog.text
    elif kept["valid_ndcg@10"] < model.baselines_valid["ease"]:
        assert "ends below ease on validation" in caplog.text
    assert kept["valid_ndcg@10_popularity"] == model.baselines_valid["popularity"]
