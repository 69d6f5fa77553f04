"""Two-tower retrieval: features, model, task, component contract (synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data import SyntheticConfig, generate, make_split
from recsys.evaluation.protocol import build_queries, evaluate
from recsys.retrieval.base import Recommender
from recsys.retrieval.two_tower import (
    InBatchSoftmaxTask,
    TwoTowerConfig,
    TwoTowerFeatures,
    TwoTowerModel,
    TwoTowerRetriever,
    sampled_softmax_loss,
)
from recsys.retrieval.two_tower.features import Jagged
from recsys.testing import RecommenderContract
from recsys.types import Query

TINY = {
    "embedding_size": 16,
    "table_dim": 16,
    "hidden_size": 32,
    "epochs": 3,
    "batch_size": 128,
    "progress": False,
    "patience": 5,
}


@pytest.fixture(scope="module")
def split():
    data = generate(SyntheticConfig(n_users=120, n_items=80, seed=3))
    return make_split(data, "random", seed=1)


@pytest.fixture(scope="module")
def trained(split):
    return TwoTowerRetriever(TwoTowerConfig(**TINY)).fit(split)


def test_jagged_gather_matches_python():
    rows = [[1, 2], [], [3], [4, 5, 6]]
    jag = Jagged.from_lists(rows)
    values, lengths = jag.gather(np.array([3, 1, 0, 3]))
    assert lengths.tolist() == [3, 0, 2, 3]
    assert values.tolist() == [4, 5, 6, 1, 2, 4, 5, 6]


def test_features_encode_and_roundtrip(split):
    feats = TwoTowerFeatures.fit(split.dataset, history_length=4)
    items = feats.item_kjt(np.array([0, 5, 7]))
    assert items.keys() == [s.name for s in feats.item_specs()]
    assert items.stride() == 3
    queries = [
        Query(user=3, history=np.arange(10), context={"gender": "F"}),
        Query(user=None),  # unknown user, empty history
        Query(user=10_000, history=np.array([99_999, 2])),  # unknown ids are dropped
    ]
    users = feats.user_kjt(queries)
    lengths = users.to_dict()["user_history"].lengths().tolist()
    assert lengths == [4, 0, 1]  # last 4 items, none, the one valid item
    assert users.to_dict()["user_id"].values().tolist() == [4, 0, 0]
    again = TwoTowerFeatures.from_json(feats.to_json())
    assert again.to_dict() == feats.to_dict()


def test_model_shapes_and_unit_norm(split):
    feats = TwoTowerFeatures.fit(split.dataset)
    model = TwoTowerModel(feats.user_specs(), feats.item_specs(), 8, 16, 4)
    u, v = model(
        feats.user_kjt([Query(user=1, history=np.array([1, 2]))]), feats.item_kjt(np.arange(6))
    )
    assert u.shape == (1, 4) and v.shape == (6, 4)
    assert torch.allclose(v.norm(dim=1), torch.ones(6), atol=1e-5)


def test_loss_masks_duplicate_positives():
    user = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    items = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    ids = torch.tensor([5, 5, 7])
    log_q = torch.zeros(3)
    loss = sampled_softmax_loss(user, items, ids, log_q, 0.1)
    # rows 0 and 1 share a positive: each must not see the other as a negative
    logits = user @ items.T / 0.1
    logits[0, 1] = logits[1, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.allclose(loss, expected)


def test_task_logq_changes_loss(split):
    feats = TwoTowerFeatures.fit(split.dataset)
    torch.manual_seed(0)
    model = TwoTowerModel(feats.user_specs(), feats.item_specs(), 8, 16, 4)
    log_prob = torch.log(torch.rand(feats.n_items) + 0.01)
    users = feats.user_kjt([Query(user=i, history=np.array([i])) for i in range(4)])
    items = feats.item_kjt(np.arange(4))
    ids = torch.arange(4)
    with_q = InBatchSoftmaxTask(model, log_prob, 0.1, logq_correction=True)(users, items, ids)
    without = InBatchSoftmaxTask(model, log_prob, 0.1, logq_correction=False)(users, items, ids)
    assert with_q.item() != pytest.approx(without.item())
    negs = feats.item_kjt(np.arange(10, 16))
    task = InBatchSoftmaxTask(model, log_prob, 0.1)
    assert torch.isfinite(task(users, items, ids, negs, torch.arange(10, 16)))


def test_config_json_roundtrip():
    config = TwoTowerConfig(**TINY)
    assert TwoTowerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError):
        TwoTowerConfig(embedding_sise=3)  # misspelt key rejected


def test_fit_learns_something(split, trained):
    assert trained.history and trained.best_epoch >= 1
    assert len(trained.epoch_seconds) == len(trained.history)
    ndcg = evaluate(trained.score, split, stage="valid")["ndcg@10"]
    assert ndcg > 0.05


def test_deterministic_under_seed(split, trained):
    again = TwoTowerRetriever(TwoTowerConfig(**TINY)).fit(split)
    queries = build_queries(split, np.arange(10))
    np.testing.assert_allclose(again.score(queries), trained.score(queries), atol=1e-5)


def test_save_load_identical(tmp_path, split, trained):
    trained.save(tmp_path / "tt")
    assert (tmp_path / "tt" / "features.json").exists()
    loaded = Recommender.load(tmp_path / "tt")
    assert isinstance(loaded, TwoTowerRetriever)
    queries = build_queries(split, np.arange(20))
    np.testing.assert_allclose(loaded.score(queries), trained.score(queries), atol=1e-6)
    for q in queries[:5]:
        a, b = trained(q, 10), loaded(q, 10)
        assert a.items.tolist() == b.items.tolist()


def test_call_contract(split, trained):
    queries = build_queries(split, np.arange(5))
    for q in queries:
        out = trained(q, 7)
        assert len(out) == 7
        assert len(set(out.items.tolist())) == 7
        assert not set(out.items.tolist()) & set(q.history.tolist())
        assert np.all(np.diff(out.scores) <= 1e-6)
    cold = trained(Query(), 5)  # unknown user, empty history: results, no exception
    assert len(cold) == 5
    excl = trained(Query(user=1, exclude=np.arange(70)), 20)
    assert len(excl) == 10  # only 10 items are left in the catalogue


def test_fresh_history_changes_recommendations(trained):
    a = trained(Query(user=None, history=np.array([1, 2, 3])), 10)
    b = trained(Query(user=None, history=np.array([40, 41, 42, 43])), 10)
    assert a.items.tolist() != b.items.tolist()


def _torch_user_vectors(retriever, queries):
    with torch.inference_mode():
        return retriever.model.user_tower(retriever._query_kjt(queries)).numpy()


def test_served_user_tower_is_the_trained_torch_tower(split, trained):
    assert trained._frozen_user is not None  # a CPU bag tower serves through NumPy
    queries = build_queries(split, np.arange(30))
    odd = [Query(), Query(user=10_000, history=np.array([3, 3, 5])), Query(user=2)]
    for batch in (queries, odd, queries[:1], odd[1:2]):
        np.testing.assert_allclose(
            trained.user_embeddings(batch), _torch_user_vectors(trained, batch), atol=2e-6
        )


def test_served_user_tower_follows_training(split):
    r = TwoTowerRetriever(TwoTowerConfig(**TINY)).prepare(split)
    queries = build_queries(split, np.arange(8))
    r.train_epoch()
    before = r.user_embeddings(queries)
    r.train_epoch()
    after = r.user_embeddings(queries)
    assert np.abs(after - before).max() > 1e-4  # the weights moved: so did the served tower
    np.testing.assert_allclose(after, _torch_user_vectors(r, queries), atol=2e-6)


def test_train_epoch_api(split):
    r = TwoTowerRetriever(TwoTowerConfig(**TINY)).prepare(split)
    first = r.train_epoch()
    second = r.train_epoch()
    assert np.isfinite(first) and second < first + 1.0
    assert 0.0 <= r.validate() <= 1.0


def test_not_fitted_raises():
    from recsys.errors import NotFittedError

    with pytest.raises(NotFittedError):
        TwoTowerRetriever().score([Query()])


class TestTwoTowerContract(RecommenderContract):
    component = TwoTowerRetriever
    config_overrides = {
        "embedding_size": 16,
        "table_dim": 16,
        "hidden_size": 32,
        "epochs": 20,
        "batch_size": 64,
        "learning_rate": 1e-2,
        "history_dropout": 0.0,
        "use_user_id": False,  # ids memorise the toy data; the history bag generalises
        "patience": 20,
        "progress": False,
    }


def test_cli_train_two_tower(tmp_path):
    import json

    from typer.testing import CliRunner

    from recsys.cli import app

    config = json.dumps({**TINY, "epochs": 1})
    out = tmp_path / "cli-tt"
    result = CliRunner().invoke(
        app, ["train", "two-tower", "--dataset", "synthetic", "--out", str(out), "--config", config]
    )
    assert result.exit_code == 0, result.output
    assert isinstance(Recommender.load(out), TwoTowerRetriever)
