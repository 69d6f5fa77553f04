"""What each ranker feature group adds: leave-one-group-out on validation, never on test.

The ranker is refitted with one group of :data:`~recsys.ranking.features.FEATURE_GROUPS`
switched off at a time (the retriever is shared), and each fit is scored by its out-of-fold
validation NDCG@10 — the figure a tuning study optimises. ``adds`` is how much the full
ranker loses without the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from recsys.data.splits import Split
from recsys.ranking.features import FEATURE_GROUPS
from recsys.ranking.ranker import Ranker, RankerConfig


def feature_group_ablation(
    split: Split,
    retriever: Any,
    config: RankerConfig | None = None,
    groups: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Out-of-fold validation NDCG@10 of the ranker without each feature group.

    Args:
        split: The split (the ranker trains on its validation interactions).
        retriever: A trained retriever (its candidates and item vectors are shared).
        config: The ranker config (needs ``folds >= 2`` for the out-of-fold figure).
        groups: Groups to switch off one at a time (default: every switchable group).

    Returns:
        One row per setting — ``all groups``, ``retrieval order`` (no ranker) and
        ``without <group>`` — with ``valid_oof_ndcg@10`` and ``adds`` (the full ranker's
        NDCG minus this row's; for a group, what it adds).
    """
    config = config or RankerConfig()
    if config.folds < 2:
        raise ValueError("config.folds: the out-of-fold validation figure needs folds >= 2")
    switchable = [g for g in FEATURE_GROUPS if g != "retrieval"]
    names = list(groups) if groups is not None else switchable
    unknown = sorted(set(names) - set(switchable))
    if unknown:
        raise ValueError(f"groups: cannot switch off {unknown}; choose from {switchable}")

    def fit(ranker_config: RankerConfig) -> Ranker:
        return Ranker(ranker_config).fit(
            split, retriever, item_vectors=getattr(retriever, "item_embeddings", None)
        )

    full = fit(config)
    rows = [
        {"setting": "all groups", "valid_oof_ndcg@10": full.holdout_ndcg},
        {"setting": "retrieval order", "valid_oof_ndcg@10": full.holdout_retrieval_ndcg},
    ]
    for group in names:
        features = config.features.model_copy(
            update={"groups": config.features.groups.model_copy(update={group: False})}
        )
        ranker = fit(config.model_copy(update={"features": features}))
        rows.append({"setting": f"without {group}", "valid_oof_ndcg@10": ranker.holdout_ndcg})
    table = pd.DataFrame(rows).set_index("setting")
    table["adds"] = full.holdout_ndcg - table["valid_oof_ndcg@10"]
    return table
