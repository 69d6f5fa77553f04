"""Metrics against brute-force references (hypothesis) and hand-checkable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation import metrics


def _relevant(rows: list[set[int]], n_items: int) -> sp.csr_matrix:
    indptr, indices = [0], []
    for row in rows:
        indices.extend(sorted(row))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_items))


def _reference(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    hits = [1 if i in relevant else 0 for i in top]
    dcg = sum(h / math.log2(pos + 2) for pos, h in enumerate(hits))
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(relevant), k)))
    first = next((pos for pos, h in enumerate(hits) if h), None)
    return {
        "recall": sum(hits) / len(relevant),
        "ndcg": dcg / idcg,
        "hr": float(any(hits)),
        "mrr": 0.0 if first is None else 1 / (first + 1),
        "precision": sum(hits) / k,
    }


@st.composite
def ranking_case(draw):
    n_items = draw(st.integers(5, 40))
    n_users = draw(st.integers(1, 6))
    k = draw(st.integers(1, n_items))
    ranked, relevant = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        ranked.append(list(perm[:k]))
        relevant.append(draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items)))
    return n_items, k, ranked, relevant


@settings(max_examples=200, deadline=None)
@given(ranking_case())
def test_accuracy_metrics_match_brute_force(case) -> None:
    n_items, k, ranked, relevant = case
    rel = _relevant(relevant, n_items)
    hits = metrics.hit_matrix(np.array(ranked), rel)
    n_rel = [len(r) for r in relevant]
    for u in range(len(ranked)):
        ref = _reference(ranked[u], relevant[u], k)
        assert metrics.recall(hits, n_rel, k)[u] == pytest.approx(ref["recall"])
        assert metrics.ndcg(hits, n_rel, k)[u] == pytest.approx(ref["ndcg"])
        assert metrics.hit_rate(hits, k)[u] == pytest.approx(ref["hr"])
        assert metrics.mrr(hits, k)[u] == pytest.approx(ref["mrr"])
        assert metrics.precision(hits, k)[u] == pytest.approx(ref["precision"])


def test_hand_checked_values() -> None:
    # ranked [3, 1, 4, 0], relevant {1, 0, 7}; hits at ranks 2 and 4
    rel = _relevant([{0, 1, 7}], 10)
    hits = metrics.hit_matrix(np.array([[3, 1, 4, 0]]), rel)
    assert hits.tolist() == [[False, True, False, True]]
    assert metrics.recall(hits, [3], 4)[0] == pytest.approx(2 / 3)
    expected_dcg = 1 / math.log2(3) + 1 / math.log2(5)
    expected_idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg(hits, [3], 4)[0] == pytest.approx(expected_dcg / expected_idcg)
    assert metrics.mrr(hits, 4)[0] == pytest.approx(0.5)
    # only one relevant item, at rank 1: perfect NDCG whatever k is
    one = metrics.hit_matrix(np.array([[5, 2, 3]]), _relevant([{5}], 10))
    assert metrics.ndcg(one, [1], 3)[0] == pytest.approx(1.0)


def test_summary_ignores_users_without_relevant_items() -> None:
    rel = _relevant([{0}, set()], 5)
    out = metrics.summarize_accuracy(np.array([[0, 1], [0, 1]]), rel, ks=[2])
    assert out["hr@2"] == pytest.approx(1.0)


def test_coverage_gini_novelty() -> None:
    ranked = np.array([[0, 1], [0, 2]])
    assert metrics.catalog_coverage(ranked, n_items=4, k=2) == pytest.approx(0.75)
    # everyone gets the same single item: maximal concentration
    assert metrics.gini_index(np.zeros((5, 1), dtype=int), n_items=4, k=1) == pytest.approx(0.75)
    assert metrics.gini_index(np.array([[0], [1], [2], [3]]), n_items=4, k=1) == pytest.approx(0)
    pop = np.array([8, 4, 2, 1])
    assert metrics.novelty(np.array([[1]]), pop, n_users=8, k=1) == pytest.approx(1.0)
    assert metrics.average_popularity(ranked, pop, 2) == pytest.approx((8 + 4 + 8 + 2) / 4)


def test_intra_list_diversity_by_genre() -> None:
    genres = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32))
    assert metrics.intra_list_diversity(np.array([[0, 1]]), genres, 2) == pytest.approx(0.0)
    assert metrics.intra_list_diversity(np.array([[0, 2]]), genres, 2) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50), st.integers(1, 60))
def test_top_k_indices_matches_full_sort(values, k) -> None:
    from recsys.types import top_k_indices

    scores = np.array(values, dtype=np.float64)
    top = top_k_indices(scores, k)
    assert len(set(top.tolist())) == len(top) == min(k, len(values))
    assert scores[top].tolist() == sorted(values, reverse=True)[: len(top)]
    distinct = len(set(values)) == len(values)
    if distinct:
        assert top.tolist() == sorted(range(len(values)), key=lambda i: -values[i])[:k]
