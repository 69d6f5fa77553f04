"""Full-ranking offline evaluation of a :class:`~recsys.retrieval.base.Recommender` on a split.

For the test stage the user's training *and* validation items are masked (RecBole does the
same); for validation only the training items are. The profile the model sees is the user's
training history (plus validation when ``history_includes_valid``), in time order, with the
user's context attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.data.dataset import histories, interaction_matrix
from recsys.data.splits import Split
from recsys.evaluation import metrics
from recsys.types import IntArray, Query, top_k_indices

DEFAULT_KS: tuple[int, ...] = (10, 20)


def user_context(split: Split, user: int) -> dict[str, Any]:
    """Context attributes of a user (empty when the dataset has none)."""
    users = split.dataset.users
    if users.empty:
        return {}
    row = users.iloc[user]
    return {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}


def build_queries(split: Split, users: IntArray, include_valid: bool = False) -> list[Query]:
    """One :class:`Query` per user: time-ordered history and context."""
    frame = pd.concat([split.train, split.valid]) if include_valid else split.train
    hist = histories(frame, split.dataset.n_users)
    return [
        Query(user=int(u), history=hist[int(u)], context=user_context(split, int(u))) for u in users
    ]


def rank_users(
    scorer: Callable[[Sequence[Query]], np.ndarray],
    queries: Sequence[Query],
    mask: sp.csr_matrix,
    k: int,
    batch_size: int = 256,
    progress: bool = False,
) -> IntArray:
    """Top-``k`` item indices per query after masking ``mask`` rows (aligned with queries)."""
    out = np.zeros((len(queries), k), dtype=np.int64)
    starts = range(0, len(queries), batch_size)
    for start in tqdm(starts, desc="ranking", disable=not progress, leave=False):
        batch = list(queries[start : start + batch_size])
        scores = np.asarray(scorer(batch), dtype=np.float32).copy()
        block = mask[start : start + len(batch)]
        rows = np.repeat(np.arange(len(batch)), np.diff(block.indptr))
        scores[rows, block.indices] = -np.inf
        out[start : start + len(batch)] = top_k_indices(scores, k)
    return out


def evaluate(
    scorer: Callable[[Sequence[Query]], np.ndarray],
    split: Split,
    stage: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    progress: bool = False,
    history_includes_valid: bool = False,
) -> dict[str, float]:
    """Evaluate a scorer (e.g. ``recommender.score``) with full ranking.

    Args:
        scorer: Maps a batch of queries to a (B, n_items) score matrix.
        split: The split; ``stage`` picks ``"valid"`` or ``"test"`` as the relevant items.
        stage: ``"valid"`` (mask train) or ``"test"`` (mask train and valid).
        ks: Cut-offs for the accuracy metrics.
        batch_size: Users per scoring call.
        progress: Show a progress bar.
        history_includes_valid: Let the model see validation items as history at test time.

    Returns:
        Accuracy metrics at each k plus ``coverage@10``, ``ild@10`` (genre), ``novelty@10``,
        ``gini@10``, ``arp@10`` and ``users`` (the number of users evaluated).
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage: must be 'valid' or 'test', not {stage!r}")
    dataset = split.dataset
    n_users, n_items = dataset.n_users, dataset.n_items
    target = split.test if stage == "test" else split.valid
    users = np.unique(target["user"].to_numpy(np.int64))
    seen = split.train if stage == "valid" else pd.concat([split.train, split.valid])
    mask = interaction_matrix(seen, n_users, n_items)[users]
    relevant = interaction_matrix(target, n_users, n_items)[users]
    queries = build_queries(split, users, include_valid=history_includes_valid and stage == "test")
    k_max = max(max(ks), 10)
    ranked = rank_users(scorer, queries, mask, k_max, batch_size=batch_size, progress=progress)
    return summarize(ranked, relevant, split, ks)


def summarize(
    ranked: IntArray, relevant: sp.csr_matrix, split: Split, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Accuracy and beyond-accuracy metrics of ranked lists (rows aligned with ``relevant``)."""
    dataset = split.dataset
    popularity = np.bincount(split.train["item"].to_numpy(), minlength=dataset.n_items)
    result = metrics.summarize_accuracy(ranked, relevant, ks)
    result["coverage@10"] = metrics.catalog_coverage(ranked, dataset.n_items, 10)
    result["ild@10"] = metrics.intra_list_diversity(ranked, dataset.genre_matrix(), 10)
    result["novelty@10"] = metrics.novelty(ranked, popularity, dataset.n_users, 10)
    result["gini@10"] = metrics.gini_index(ranked, dataset.n_items, 10)
    result["arp@10"] = metrics.average_popularity(ranked, popularity, 10)
    result["users"] = float(ranked.shape[0])
    return result
