"""User vectors for embedding drift, from the two-tower's user tower.

A window's user vectors are those the engine would compute for its active users from what
they did *in that window*: each user's in-window items (oldest first, the last
``history_length`` kept by the tower), their latest request context and their id. When tastes
move, these vectors move, even if no single event column does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.monitoring.frames import context_columns

#: ``events of one window -> one row per user (index: user id), one column per dimension``
UserEmbedder = Callable[[pd.DataFrame], pd.DataFrame]


class TwoTowerEmbedder:
    """User vectors from a trained :class:`~recsys.retrieval.two_tower.TwoTowerRetriever`.

    Args:
        retriever: A fitted two-tower retriever (its features map external ids).
        max_users: Embed at most this many users per window (seeded sample).
        seed: Sampling seed.
        batch_size: Users per forward pass.
    """

    def __init__(
        self, retriever: Any, max_users: int | None = None, seed: int = 0, batch_size: int = 1024
    ) -> None:
        if retriever.features is None:
            raise ValueError("retriever: not fitted")
        self.retriever = retriever
        self.max_users = max_users
        self.seed = seed
        self.batch_size = batch_size
        features = retriever.features
        self._items = {str(i): k for k, i in enumerate(features.item_ids)}
        self._users = {str(u): k for k, u in enumerate(features.user_ids)}

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> TwoTowerEmbedder:
        """Load a retriever saved by ``recsys train two-tower`` (or ``.save``)."""
        from recsys.retrieval.base import Recommender
        from recsys.retrieval.two_tower import TwoTowerRetriever

        model = Recommender.load(path)
        if not isinstance(model, TwoTowerRetriever):
            raise ValueError(f"{path}: not a two-tower retriever ({type(model).__name__})")
        return cls(model, **kwargs)

    def __call__(self, events: pd.DataFrame) -> pd.DataFrame:
        """One unit vector per active user of ``events`` (index: user id)."""
        from recsys.types import Query

        frame = events.sort_values("timestamp", kind="stable")
        users = frame["user_id"].astype(str)
        unique = pd.unique(users)
        if self.max_users is not None and len(unique) > self.max_users:
            rng = np.random.default_rng(self.seed)
            unique = np.sort(rng.choice(unique, size=self.max_users, replace=False))
            keep = users.isin(set(unique))
            frame, users = frame[keep], users[keep]
        item_index = frame["item_id"].astype(str).map(self._items)
        ctx_cols = [c for c in context_columns(frame) if c in self.retriever.features.context]
        queries: list[Query] = []
        ids: list[str] = []
        grouped = pd.DataFrame({"user": users.to_numpy(), "item": item_index.to_numpy()})
        for column in ctx_cols:
            grouped[column] = frame[column].to_numpy()
        for user, rows in grouped.groupby("user", sort=True, observed=True):
            history = rows["item"].dropna().to_numpy(dtype=np.int64)
            context = {c: rows[c].iloc[-1] for c in ctx_cols if pd.notna(rows[c].iloc[-1])}
            queries.append(Query(user=self._users.get(str(user)), history=history, context=context))
            ids.append(str(user))
        vectors = [
            self.retriever.user_embeddings(queries[lo : lo + self.batch_size])
            for lo in range(0, len(queries), self.batch_size)
        ]
        matrix = (
            np.concatenate(vectors)
            if vectors
            else np.zeros((0, self.retriever.config.embedding_size), dtype=np.float32)
        )
        return pd.DataFrame(
            matrix,
            index=pd.Index(ids, name="user_id"),
            columns=[f"e{d}" for d in range(matrix.shape[1])],
        )


def fit_two_tower_embedder(
    events: pd.DataFrame,
    *,
    epochs: int = 3,
    seed: int = 0,
    max_users: int | None = None,
    **overrides: Any,
) -> TwoTowerEmbedder:
    """Train a small two-tower on a window's events (random split) and wrap its user tower.

    For demos and benchmarks where no trained retriever exists; a deployment passes the
    retriever it serves (``recsys drift --retriever DIR``).

    Args:
        events: Events in the schema layout (the reference window).
        epochs: Training epochs.
        seed: Split, training and sampling seed.
        max_users: Users embedded per window (seeded sample).
        **overrides: Further :class:`~recsys.retrieval.two_tower.TwoTowerConfig` fields.
    """
    from recsys.data import Dataset, random_split
    from recsys.retrieval.two_tower import TwoTowerConfig, TwoTowerRetriever

    frame = events.astype(
        {c: object for c in events.columns if isinstance(events[c].dtype, pd.CategoricalDtype)}
    )
    data = Dataset(name="drift-reference", interactions=frame, items=pd.DataFrame())
    settings: dict[str, Any] = {
        "embedding_size": 16,
        "table_dim": 16,
        "hidden_size": 32,
        "batch_size": 256,
        "epochs": epochs,
        "patience": epochs,
        "progress": False,
        "seed": seed,
        **overrides,
    }
    model = TwoTowerRetriever(TwoTowerConfig(**settings)).fit(random_split(data, seed=seed))
    return TwoTowerEmbedder(model, max_users=max_users, seed=seed)
