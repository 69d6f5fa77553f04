"""Full-ranking offline evaluation of a :class:`~recsys.retrieval.base.Recommender` on a split.

For the test stage the user's training *and* validation items are masked (RecBole does the
same); for validation only the training items are. The profile the model sees is the user's
training history (plus validation when ``history_includes_valid``), in time order, with the
user's context attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.data.dataset import histories, interaction_matrix, timed_histories
from recsys.data.splits import Split
from recsys.evaluation import metrics
from recsys.features.definitions import user_contexts
from recsys.types import IntArray, ItemList, Query, top_k_indices

DEFAULT_KS: tuple[int, ...] = (10, 20)


def build_queries(
    split: Split,
    users: IntArray,
    include_valid: bool = False,
    exclude_valid: bool = False,
    user_context: bool = True,
) -> list[Query]:
    """One :class:`Query` per user, as the engine builds it for a request.

    The history (items, times, event types, oldest first) is the user's training events —
    plus validation events with ``include_valid`` — and the context is the user table's,
    derived by :func:`recsys.features.derive_context`, exactly as the engine's profile
    lookup returns it (:func:`recsys.serving.profiles.split_profiles`).

    Args:
        split: The split.
        users: Dense user indices.
        include_valid: Validation events are history (e.g. a model retrained on them).
        exclude_valid: Validation items go to ``exclude`` (the test protocol masks them
            without making them history).
        user_context: Attach the user table's context (``False`` only to measure what
            serving without it costs).
    """
    frame = pd.concat([split.train, split.valid]) if include_valid else split.train
    data = split.dataset
    timed = timed_histories(frame, data.n_users)
    contexts = user_contexts(data.users) if user_context else []
    valid = histories(split.valid, data.n_users) if exclude_valid else None
    ids = data.user_index.ids
    out = []
    for u in np.asarray(users, dtype=np.int64).tolist():
        events = timed[u]
        out.append(
            Query(
                user=u,
                user_id=ids[u],
                history=events.items,
                history_times=events.times,
                history_types=events.types,
                context=contexts[u] if u < len(contexts) else {},
                exclude=valid[u] if valid is not None else np.zeros(0, dtype=np.int64),
            )
        )
    return out


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


Server = Callable[[Sequence[Query], int], Sequence[ItemList]]


def evaluate_served(
    serve: Server,
    split: Split,
    stage: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    users: IntArray | None = None,
    user_context: bool = True,
) -> dict[str, float]:
    """Evaluate the slates a server returns (e.g. :meth:`recsys.serving.Engine.serve`).

    The benchmarks' path: the queries are the ones the engine builds for a request
    (:func:`build_queries`), and the lists are whatever the engine's stages answer, so the
    figures are those of the served system. For the test stage the validation items are in
    each query's ``exclude`` (masked, not history), the training items in its history.

    Args:
        serve: ``(queries, k) -> one ItemList per query``.
        split: The split; ``stage`` picks ``"valid"`` or ``"test"`` as the relevant items.
        stage: ``"valid"`` or ``"test"``.
        ks: Cut-offs for the accuracy metrics.
        users: Only these dense users (default: every user with a target interaction).
        user_context: Queries carry the user table's context (see :func:`build_queries`).

    Returns:
        The metrics of :func:`evaluate`.
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage: must be 'valid' or 'test', not {stage!r}")
    dataset = split.dataset
    target = split.test if stage == "test" else split.valid
    if users is None:
        users = np.unique(target["user"].to_numpy(np.int64))
    relevant = interaction_matrix(target, dataset.n_users, dataset.n_items)[users]
    queries = build_queries(split, users, exclude_valid=stage == "test", user_context=user_context)
    k_max = max(max(ks), 10)
    ranked = np.full((len(queries), k_max), -1, dtype=np.int64)
    for row, slate in enumerate(serve(queries, k_max)):
        ranked[row, : len(slate)] = slate.items[:k_max]
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
