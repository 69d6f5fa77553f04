"""Top-K metrics over full rankings.

Conventions (RecBole's): relevance is binary; Recall@K = hits / |relevant|;
NDCG@K uses the ideal DCG over min(|relevant|, K) items; HR@K = 1 if any hit; MRR@K = 1/rank of
the first hit (0 when none). Per-user values are averaged over users with ≥1 relevant item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntMatrix = npt.NDArray[np.int64]


def hit_matrix(ranked: IntMatrix, relevant: sp.csr_matrix) -> npt.NDArray[np.bool_]:
    """Boolean (B, K): whether ``ranked[b, j]`` is in row ``b`` of ``relevant`` (B, n_items)."""
    ranked = np.asarray(ranked, dtype=np.int64)
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    values = np.asarray(relevant[rows, np.maximum(ranked, 0).ravel()]).ravel()
    return (values.reshape(ranked.shape) > 0) & (ranked >= 0)  # -1 pads a short list


def _n_relevant(relevant: sp.csr_matrix) -> npt.NDArray[np.float64]:
    return np.diff(relevant.indptr).astype(np.float64)


def recall(hits: npt.NDArray[np.bool_], n_relevant: npt.ArrayLike, k: int) -> np.ndarray:
    """Per-user Recall@k."""
    return hits[:, :k].sum(axis=1) / np.maximum(np.asarray(n_relevant, dtype=np.float64), 1.0)


def precision(hits: npt.NDArray[np.bool_], k: int) -> np.ndarray:
    """Per-user Precision@k."""
    return hits[:, :k].sum(axis=1) / float(k)


def hit_rate(hits: npt.NDArray[np.bool_], k: int) -> np.ndarray:
    """Per-user HR@k (1.0 when at least one relevant item is in the top k)."""
    return hits[:, :k].any(axis=1).astype(np.float64)


def mrr(hits: npt.NDArray[np.bool_], k: int) -> np.ndarray:
    """Per-user reciprocal rank of the first hit within the top k (0 if none)."""
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)


def ndcg(hits: npt.NDArray[np.bool_], n_relevant: npt.ArrayLike, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary gains and ideal DCG over min(|relevant|, k)."""
    top = hits[:, :k].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = top @ discounts
    n_ideal = np.minimum(np.asarray(n_relevant, dtype=np.int64), k)
    ideal_cumsum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    idcg = ideal_cumsum[n_ideal]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def _shown(ranked: IntMatrix, k: int) -> np.ndarray:
    """The shown item indices of the top-k lists, flattened (``-1`` padding dropped)."""
    top = np.asarray(ranked)[:, :k].ravel()
    return top[top >= 0]


def catalog_coverage(ranked: IntMatrix, n_items: int, k: int) -> float:
    """Fraction of the catalogue that appears in at least one top-k list."""
    return float(np.unique(_shown(ranked, k)).size) / float(n_items)


def gini_index(ranked: IntMatrix, n_items: int, k: int) -> float:
    """Gini coefficient of item exposure in the top-k lists (0 = equal, 1 = one item only)."""
    counts = np.sort(np.bincount(_shown(ranked, k), minlength=n_items))
    total = counts.sum()
    if total == 0:
        return 0.0
    index = np.arange(1, n_items + 1)
    return float(((2 * index - n_items - 1) * counts).sum() / (n_items * total))


def novelty(ranked: IntMatrix, item_popularity: npt.ArrayLike, n_users: int, k: int) -> float:
    """Mean self-information −log2(p(i)) of recommended items, p(i) = users with i / users.

    Items never seen in training get the probability of one interaction.
    """
    pop = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0) / float(n_users)
    return float((-np.log2(pop[_shown(ranked, k)])).mean())


def average_popularity(ranked: IntMatrix, item_popularity: npt.ArrayLike, k: int) -> float:
    """Mean training popularity (interaction count) of recommended items (ARP)."""
    pop = np.asarray(item_popularity, dtype=np.float64)
    return float(pop[_shown(ranked, k)].mean())


def intra_list_diversity(ranked: IntMatrix, item_features: sp.csr_matrix, k: int) -> float:
    """Mean pairwise (1 − cosine similarity) of item feature vectors (genres) within each list.

    Items without features count as dissimilar to everything.
    """
    ranked = np.asarray(ranked)[:, :k]
    feats = sp.csr_matrix(item_features, dtype=np.float64)
    norms = np.sqrt(np.asarray(feats.multiply(feats).sum(axis=1)).ravel())
    normed = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ feats
    values = []
    for row in ranked:
        row = row[row >= 0]
        n = len(row)
        if n < 2:
            continue
        block = normed[row]
        sim = (block @ block.T).toarray()
        off_diagonal = sim.sum() - np.trace(sim)
        values.append(1.0 - off_diagonal / (n * (n - 1)))
    return float(np.mean(values)) if values else 0.0


def summarize_accuracy(
    ranked: IntMatrix, relevant: sp.csr_matrix, ks: Sequence[int]
) -> dict[str, float]:
    """Mean Recall, NDCG, HR, MRR and Precision at each k over users with relevant items."""
    has_relevant = _n_relevant(relevant) > 0
    ranked = np.asarray(ranked)[has_relevant]
    relevant = relevant[has_relevant]
    hits = hit_matrix(ranked, relevant)
    n_rel = _n_relevant(relevant)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(recall(hits, n_rel, k).mean())
        out[f"ndcg@{k}"] = float(ndcg(hits, n_rel, k).mean())
        out[f"hr@{k}"] = float(hit_rate(hits, k).mean())
        out[f"mrr@{k}"] = float(mrr(hits, k).mean())
        out[f"precision@{k}"] = float(precision(hits, k).mean())
    return out
