"""Ranker feature groups: switchable without touching code (ablations and tuning studies)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data import SyntheticConfig, generate, make_split
from recsys.evaluation.protocol import build_queries
from recsys.ranking import CandidateFeatureConfig, CandidateFeaturizer
from recsys.ranking.features import FEATURE_GROUPS, FEATURE_NAMES, FeatureGroups


@pytest.fixture(scope="module")
def split():
    return make_split(generate(SyntheticConfig(n_users=60, n_items=50, seed=3)), "random", seed=1)


def test_groups_partition_the_features() -> None:
    names = [n for group in FEATURE_GROUPS.values() for n in group]
    assert sorted(names) == sorted(FEATURE_NAMES)  # every feature in exactly one group
    assert set(FeatureGroups.model_fields) == set(FEATURE_GROUPS) - {"retrieval"}


def test_switched_off_groups_leave_the_model_input(split) -> None:
    groups = FeatureGroups(ease=False, session=False)
    feats = CandidateFeaturizer(CandidateFeatureConfig(groups=groups)).fit(split)
    dropped = set(FEATURE_GROUPS["ease"]) | set(FEATURE_GROUPS["session"])
    assert feats.names == tuple(n for n in FEATURE_NAMES if n not in dropped)
    queries = build_queries(split, np.arange(3))
    cand = np.tile(np.arange(8), (3, 1))
    scores = np.random.default_rng(0).random(cand.shape)
    dense = feats.transform(queries, cand, scores)
    assert dense.shape == (3, 8, len(feats.names))
    full = CandidateFeaturizer().fit(split).transform(queries, cand, scores)
    keep = [FEATURE_NAMES.index(n) for n in feats.names]
    np.testing.assert_allclose(dense, full[..., keep])


def test_ranker_with_fewer_groups_trains_saves_and_loads(split, tmp_path) -> None:
    from recsys.ranking import Ranker, RankerConfig
    from recsys.retrieval.baselines import EASE

    retriever = EASE(l2=10.0).fit(split)
    config = RankerConfig(
        candidates=20, epochs=2, hidden=(8,), folds=2,
        features=CandidateFeatureConfig(groups=FeatureGroups(knn=False, time=False)),
    )  # fmt: skip
    folds = []
    ranker = Ranker(config).fit(split, retriever, on_fold=lambda f, v: folds.append((f, v)))
    assert [f for f, _ in folds] == [1, 2]
    assert folds[-1][1] == pytest.approx(ranker.holdout_ndcg)
    assert ranker.holdout_top.shape == (len(ranker.holdout_users), 10)
    loaded = Ranker.load(ranker.save(tmp_path / "r"))
    assert loaded.featurizer.names == ranker.featurizer.names
    queries = build_queries(split, np.arange(4))
    cand = np.tile(np.arange(20), (4, 1))
    scores = np.zeros(cand.shape, dtype=np.float32)
    np.testing.assert_allclose(
        loaded.score_candidates(queries, cand, scores),
        ranker.score_candidates(queries, cand, scores),
        atol=1e-5,
    )
