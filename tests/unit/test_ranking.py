"""Ranking stage: candidate features, DCN ranker, two-stage recommender contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import SyntheticConfig, generate, make_split
from recsys.evaluation.protocol import build_queries
from recsys.ranking import (
    CandidateFeaturizer,
    DCNRanker,
    Ranker,
    RankerConfig,
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


def test_fused_bag_equals_the_mean_of_its_models_in_torch_and_numpy():
    """The served bag (one batched pass, and its NumPy twin) gives the models' mean logit."""
    from recsys.ranking.model import FusedDCNBag

    torch.manual_seed(0)
    models = [DCNRanker(n_dense=6, cross_layers=2, hidden=(8, 4)) for _ in range(3)]
    for model in models:  # move the batch-norm statistics off their defaults
        model.train()
        model(torch.randn(4, 9, 6) * 3 + 1)
        model.eval()
    dense = torch.randn(2, 9, 6)
    expected = torch.stack([m(dense) for m in models]).mean(dim=0).detach().numpy()
    fused = FusedDCNBag(models)
    np.testing.assert_allclose(fused(dense).detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.numpy_forward(dense.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_time_affinity_dense_and_sparse_paths_agree(split, monkeypatch):
    """The request path's dense (bin × item) read equals the sparse product it replaces."""
    import recsys.ranking.features as features

    feats = CandidateFeaturizer().fit(split)
    queries = build_queries(split, np.arange(5))
    cand = np.arange(20)
    dense = [feats._time_affinity(q, cand) for q in queries]
    monkeypatch.setattr(features, "_DENSE_TIME_CELLS", 0)
    sparse_only = CandidateFeaturizer().fit(split)
    assert sparse_only._dense_item_time() is None
    for query, expected in zip(queries, dense, strict=True):
        np.testing.assert_allclose(sparse_only._time_affinity(query, cand), expected, rtol=1e-5)
    assert any(np.abs(row).sum() > 0 for row in dense)


def test_features_are_named_and_frame_shaped(split):
    feats = CandidateFeaturizer().fit(split)
    queries = build_queries(split, np.arange(3))
    cand = np.tile(np.arange(7), (3, 1))
    scores = np.random.default_rng(1).random(cand.shape)
    named = feats.features(queries, cand, scores)
    assert tuple(named) == FEATURE_NAMES
    frame = feats.frame(queries, cand, scores)
    assert list(frame.columns) == ["query", "item", *FEATURE_NAMES] and len(frame) == 21
    dense = feats.transform(queries, cand, scores)
    np.testing.assert_array_equal(dense[..., FEATURE_NAMES.index("knn_score")], named["knn_score"])


def test_item_item_rows_read_only_the_candidates(split):
    """Per-target storage gives the dense sum exactly, and the top-M truncation keeps the
    strongest sources."""
    from recsys.ranking.features import ItemItem

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(30, 30)).astype(np.float32)
    exact = ItemItem.from_source_major(weights, max_neighbors=30)
    history = np.zeros(30, dtype=bool)
    history[[1, 4, 9]] = True
    targets = np.array([0, 5, 29])
    np.testing.assert_allclose(
        exact.score(history, targets), weights[[1, 4, 9]][:, targets].sum(axis=0), rtol=1e-5
    )
    top = ItemItem.from_source_major(weights, max_neighbors=3)
    assert np.diff(top.by_target.indptr).max() == 3
    kept = top.by_target[5].indices
    assert set(kept) == set(np.argsort(-np.abs(weights[:, 5]))[:3])


def test_item_item_weighted_history_and_user_knn_match_dense_numpy(split):
    """The compiled request-path loops give what the dense NumPy products give."""
    from recsys.ranking.features import ItemItem

    rng = np.random.default_rng(1)
    weights = rng.normal(size=(40, 40)).astype(np.float32)
    recency = np.zeros(40, dtype=np.float32)
    recency[[2, 7, 30]] = [1.0, 0.5, 0.25]
    targets = np.array([3, 7, 39, 0])
    np.testing.assert_allclose(
        ItemItem.from_source_major(weights, max_neighbors=40).score(recency, targets),
        recency @ weights[:, targets],
        rtol=1e-5,
        atol=1e-6,
    )
    feats = CandidateFeaturizer().fit(split)
    history = np.unique(split.train["item"].to_numpy()[:15])
    cand = np.arange(split.dataset.n_items)
    by_item = feats.users_of_item.toarray()  # item × user weights
    sims = by_item[history].sum(axis=0) / 2.0
    top = np.argsort(-sims, kind="stable")[: feats.config.user_neighbors]
    top = top[sims[top] > 0]
    expected = sims[top] @ feats.user_items.toarray()[top]
    got = feats._user_knn(history, cand, 2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert got.max() > 0


def test_loading_a_ranker_leaves_the_global_rng_alone(tmp_path, two_stage):
    path = two_stage.ranker.save(tmp_path / "rk")
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    Ranker.load(path)
    assert torch.equal(torch.random.get_rng_state(), state)


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


def test_two_stage_score_is_the_served_path(split, two_stage):
    queries = build_queries(split, np.arange(8))
    scores = two_stage.score(queries)
    assert scores.shape == (8, split.dataset.n_items)
    served = two_stage.retrieve(queries, RANKER.candidates)
    for row, ranked in zip(scores, served, strict=True):
        # only the retrieved candidates are scored, with the ranker's logits
        assert set(np.flatnonzero(np.isfinite(row)).tolist()) == set(ranked.items.tolist())
        np.testing.assert_allclose(row[ranked.items], ranked.scores, rtol=1e-6)


def test_two_stage_served_beats_popularity(split, two_stage):
    from recsys.evaluation.protocol import evaluate_served
    from recsys.retrieval import Popularity
    from recsys.serving import build_engine

    served = evaluate_served(build_engine(split, two_stage, decisions=False).serve, split)
    popular = evaluate_served(
        build_engine(split, Popularity().fit(split), decisions=False).serve, split
    )
    assert served["ndcg@10"] > popular["ndcg@10"]


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
