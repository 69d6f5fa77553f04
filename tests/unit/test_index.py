"""FAISS item index: exact inner product, HNSW recall, exclusion with refill, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.retrieval.index import IndexConfig, ItemIndex


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2000, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_matches_numpy(vectors):
    index = ItemIndex().build(vectors)
    q = vectors[:5] + 0.1
    out = index.search(q, 10)
    for row, result in zip(q, out, strict=True):
        expected = np.argsort(-(vectors @ row), kind="stable")[:10]
        assert result.items.tolist() == expected.tolist()
        np.testing.assert_allclose(result.scores, (vectors @ row)[expected], rtol=1e-5)


def test_inner_product_not_l2():
    # an item with a large norm wins on inner product but not on L2 distance
    v = np.array([[1.0, 0.0], [10.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    out = ItemIndex().build(v).search_one(np.array([1.0, 0.0], dtype=np.float32), 1)
    assert out.items.tolist() == [1]


def test_exclude_refills_to_k(vectors):
    index = ItemIndex(IndexConfig(overfetch=0)).build(vectors)
    q = vectors[0]
    top = index.search_one(q, 300).items
    # exclude the 250 best: the answer must still have k items, none excluded
    out = index.search_one(q, 20, exclude=top[:250])
    assert len(out) == 20
    assert not set(out.items.tolist()) & set(top[:250].tolist())
    assert out.items.tolist() == top[250:270].tolist()


def test_a_long_exclusion_list_is_filtered_inside_faiss_with_the_same_answer(vectors):
    """Above the selector threshold the ID-selector path returns the exact filtered top-k."""
    from recsys.retrieval.index import _SELECTOR_MIN_EXCLUDED

    index = ItemIndex().build(vectors)
    rng = np.random.default_rng(3)
    queries = vectors[:4] + 0.05
    short = rng.choice(2000, 10, replace=False)
    long = np.concatenate([np.argsort(-(vectors @ queries[1]))[:200], rng.choice(2000, 400)])
    assert len(np.unique(long)) > _SELECTOR_MIN_EXCLUDED
    excludes = [short, long, [], np.arange(1990)]
    out = index.search(queries, 25, excludes)
    for row, (q, excluded) in enumerate(zip(queries, excludes, strict=True)):
        scores = vectors @ q
        scores[np.asarray(excluded, dtype=np.int64)] = -np.inf
        expected = np.argsort(-scores, kind="stable")[: min(25, int(np.isfinite(scores).sum()))]
        assert out[row].items.tolist() == expected.tolist()
        np.testing.assert_allclose(out[row].scores, scores[expected], rtol=1e-5)


def test_exclude_more_than_catalogue_allows(vectors):
    index = ItemIndex().build(vectors[:30])
    out = index.search_one(vectors[0], 10, exclude=np.arange(25))
    assert sorted(out.items.tolist()) == list(range(25, 30))


def test_hnsw_recall_vs_exact(vectors):
    hnsw = ItemIndex(IndexConfig(kind="hnsw", hnsw_m=16, ef_search=128)).build(vectors)
    recall = hnsw.recall_vs_exact(vectors[:50] + 0.05, k=100)
    assert recall > 0.9
    out = hnsw.search(vectors[:3], 10, [[0], [1], [2]])
    assert all(len(o) == 10 for o in out)
    assert 0 not in out[0].items


def test_save_load(tmp_path, vectors):
    index = ItemIndex(IndexConfig(kind="hnsw")).build(vectors)
    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx")
    assert loaded.config == index.config
    a = index.search(vectors[:4], 10)
    b = loaded.search(vectors[:4], 10)
    assert [x.items.tolist() for x in a] == [x.items.tolist() for x in b]


def test_config_roundtrip():
    config = IndexConfig(kind="hnsw", ef_search=64)
    assert IndexConfig.from_json(config.to_json()) == config


def test_empty_index_raises():
    from recsys.errors import NotFittedError

    with pytest.raises(NotFittedError):
        ItemIndex().search(np.zeros((1, 4), dtype=np.float32), 3)
