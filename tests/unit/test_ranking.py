"""Ranking stage: candidate features, DCN ranker, two-stage recommender contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import SyntheticConfig, generate, make_split
from recsys.evaluation.protocol import build_queries, evaluate
from recsys.ranking import (
    CandidateFeaturizer,
    DCNRanker,
    Ranker,
    RankerConfig,
    retrieve_candidates,
)
from recsys.ranking.features import FEATURE_NAMES
from recsys.ranking.two_stage import TwoStageConfig, TwoStageRecommender
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower import TwoTowerConfig
from recsys.testing import RecommenderContract
from recsys.types import ItemList, Query

RETRIEVER = TwoTowerConfig(
    embedding_size=16, table_dim=16, hidden_size=32, epochs=2, batch_size=128, progress=False
)
RANKER = RankerConfig(candidates=30, epochs=4, hidden=(16,), batch_size=16)


@pytest.fixture(scope="module")
def split():
    data = generate(SyntheticConfig(n_users=120, n_items=80, seed=5))
    return make_split(data, "random", seed=2)


@pytest.fixture(scope="module")
def two_stage(split):
    return TwoStageRecommender(TwoStageConfig(retriever=RETRIEVER, ranker=RANKER)).fit(split)


def test_featurizer_shapes_and_no_nan(split):
    feats = CandidateFeaturizer().fit(split)
    queries = build_queries(split, np.arange(6))
    queries.append(Query())  # cold start: empty history, no user
    cand = np.tile(np.arange(10), (len(queries), 1))
    out = feats.transform(queries, cand, np.random.default_rng(0).random(cand.shape))
    assert out.shape == (len(queries), 10, len(FEATURE_NAMES))
    assert np.isfinite(out).all()


def test_featurizer_uses_train_only(split):
    """Statistics do not move when held-out interactions change."""
    a = CandidateFeaturizer().fit(split)
    shuffled = type(split)(split.dataset, split.train, split.test, split.valid, split.protocol)
    b = CandidateFeaturizer().fit(shuffled)
    queries = build_queries(split, np.arange(4))
    cand = np.tile(np.arange(12), (4, 1))
    scores = np.zeros(cand.shape, dtype=np.float32)
    np.testing.assert_allclose(
        a.transform(queries, cand, scores), b.transform(queries, cand, scores)
    )


def test_dcn_per_candidate_logits():
    model = DCNRanker(n_dense=5, n_users=4, n_items=9, embedding_dim=3)
    dense = torch.randn(2, 7, 5)
    ids = DCNRanker.id_features(torch.tensor([1, 2]), torch.randint(0, 9, (2, 7)))
    out = model(dense, ids)
    assert out.shape == (2, 7)
    model.eval()
    # permuting candidates permutes logits: no pooling across candidates
    perm = torch.randperm(7)
    plain = DCNRanker(n_dense=5).eval()
    np.testing.assert_allclose(
        plain(dense)[:, perm].detach(), plain(dense[:, perm]).detach(), rtol=1e-5, atol=1e-6
    )


def test_retrieve_candidates_excludes_history():
    scores = np.arange(10, dtype=np.float32)[None, :].repeat(2, 0)
    queries = [Query(history=np.array([9, 8])), Query(exclude=np.array([9]))]
    cand, sc = retrieve_candidates(scores, queries, 3)
    assert cand[0].tolist() == [7, 6, 5]
    assert cand[1].tolist() == [8, 7, 6]
    assert sc[0].tolist() == [7.0, 6.0, 5.0]


def test_ranker_call_reorders_given_items(split, two_stage):
    ranker = two_stage.ranker
    query = build_queries(split, np.array([0]))[0]
    items = ItemList(np.array([3, 1, 2, 50]), np.array([0.9, 0.5, 0.4, 0.1]))
    out = ranker(query, items)
    assert sorted(out.items.tolist()) == [1, 2, 3, 50]
    assert np.all(np.diff(out.scores) <= 0)
    assert len(ranker(query, ItemList.empty())) == 0


def test_config_roundtrips():
    assert RankerConfig.from_json(RANKER.to_json()) == RANKER
    config = TwoStageConfig(retriever=RETRIEVER, ranker=RANKER)
    assert TwoStageConfig.from_json(config.to_json()) == config


def test_two_stage_scores_full_catalogue(split, two_stage):
    queries = build_queries(split, np.arange(8))
    scores = two_stage.score(queries)
    assert scores.shape == (8, split.dataset.n_items)
    assert np.isfinite(scores).all()
    # candidates (ranked band) sit above every non-candidate
    cand, _ = retrieve_candidates(two_stage.retriever.score(queries), queries, RANKER.candidates)
    for row, c in zip(scores, cand, strict=True):
        others = np.setdiff1d(np.arange(len(row)), c)
        assert row[c].min() > row[others].max()
    metrics = evaluate(two_stage.score, split, stage="test")
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_two_stage_contract(split, two_stage):
    for q in build_queries(split, np.arange(4)):
        out = two_stage(q, 10)
        assert len(out) == 10 and len(set(out.items.tolist())) == 10
        assert not set(out.items.tolist()) & set(q.history.tolist())
    assert len(two_stage(Query(), 5)) == 5  # unknown user: results, not an exception


def test_two_stage_save_load_identical(tmp_path, split, two_stage):
    two_stage.save(tmp_path / "ts")
    loaded = Recommender.load(tmp_path / "ts")
    assert isinstance(loaded, TwoStageRecommender)
    queries = build_queries(split, np.arange(10))
    np.testing.assert_allclose(loaded.score(queries), two_stage.score(queries), atol=1e-5)
    for q in queries[:3]:
        assert loaded(q, 10).items.tolist() == two_stage(q, 10).items.tolist()


def test_ranker_save_load(tmp_path, split, two_stage):
    path = two_stage.ranker.save(tmp_path / "rk")
    loaded = Ranker.load(path)
    query = build_queries(split, np.array([1]))[0]
    items = two_stage.retriever(query, 20)
    assert loaded(query, items).items.tolist() == two_stage.ranker(query, items).items.tolist()


class TestTwoStageContract(RecommenderContract):
    component = TwoStageRecommender
    config_overrides = {
        "retriever": TwoTowerConfig(
            embedding_size=16,
            table_dim=16,
            hidden_size=32,
            epochs=20,
            batch_size=64,
            learning_rate=1e-2,
            history_dropout=0.0,
            patience=20,
            progress=False,
            use_user_id=False,
        ),
        "ranker": RankerConfig(candidates=30, epochs=4, hidden=(16,), batch_size=16),
    }
