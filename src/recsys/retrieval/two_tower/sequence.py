"""Training data and task of the order-aware user towers (``user_encoder`` gru / transformer).

Every user's training events, in time order, are cut into windows of at most
``history_length + 1`` items (from the end, so the most recent events keep the longest
context). A window ``x_1..x_m`` is one row: the tower reads the begin vector and
``x_1..x_{m-1}``; its output after ``t`` items is trained to retrieve ``x_{t+1}`` — every
position is a (prefix → next item) example, in one causal pass (SASRec's training).

The loss is the two-tower's sampled softmax with logQ correction over the batch's items
(``softmax="in_batch"``, plus ``uniform_negatives``) or the exact softmax over the whole
catalogue (``softmax="full"``, affordable for catalogues of a few thousand items).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsys.retrieval.two_tower.features import TwoTowerFeatures
from recsys.retrieval.two_tower.model import SequenceUserTower, TwoTowerModel
from recsys.retrieval.two_tower.task import sampled_softmax_loss
from recsys.types import IntArray


class SequenceData:
    """Training windows of the users' time-ordered events.

    Args:
        train: Training interactions (dense ``user``, ``item``, ``timestamp``).
        max_history: Longest history the tower reads (a window holds one item more).
    """

    def __init__(self, train: pd.DataFrame, max_history: int) -> None:
        order = np.lexsort(
            (np.arange(len(train)), train["timestamp"].to_numpy(), train["user"].to_numpy())
        )
        users = train["user"].to_numpy(np.int64)[order]
        items = train["item"].to_numpy(np.int64)[order]
        size = max_history + 1
        rows: list[IntArray] = []
        owners: list[int] = []
        bounds = np.flatnonzero(np.diff(users)) + 1
        for seq_users, seq in zip(np.split(users, bounds), np.split(items, bounds), strict=True):
            if not len(seq):
                continue
            for end in range(len(seq), 0, -size):
                rows.append(seq[max(0, end - size) : end])
                owners.append(int(seq_users[0]))
        self.width = max((len(r) for r in rows), default=1)
        self.windows = np.full((len(rows), self.width), -1, dtype=np.int64)
        for i, row in enumerate(rows):
            self.windows[i, : len(row)] = row
        self.users = np.asarray(owners, dtype=np.int64)
        self.n_examples = int((self.windows >= 0).sum())

    def __len__(self) -> int:
        return len(self.windows)


def pad_histories(histories: Sequence[IntArray]) -> tuple[IntArray, IntArray]:
    """(B, L) item indices (``-1`` after each row's end) and (B,) lengths."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    width = max(1, int(lengths.max(initial=0)))
    out = np.full((len(histories), width), -1, dtype=np.int64)
    for row, h in enumerate(histories):
        out[row, : len(h)] = h
    return out, lengths


def gather_vectors(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``vectors`` at ``index`` (any shape); ``-1`` gives zeros (padding)."""
    safe = index.clamp(min=0)
    out = vectors[safe]
    return out * (index >= 0).unsqueeze(-1).to(out.dtype)


class SequenceSoftmaxTask(nn.Module):
    """Loss of a batch of windows: every position retrieves the next item.

    Args:
        model: A :class:`TwoTowerModel` with a :class:`SequenceUserTower`.
        features: Encoders of the item side and of the pooled user features.
        item_log_prob: (n_items,) log popularity (the logQ correction of sampled softmax).
        temperature: Softmax temperature.
        logq_correction: Subtract log Q(j) from the sampled logits.
        softmax: ``"in_batch"`` (the batch's items + uniform negatives) or ``"full"``.
        uniform_negatives: Extra uniformly drawn negatives (``in_batch`` only).
        device: Where the tensors go.
    """

    def __init__(
        self,
        model: TwoTowerModel,
        features: TwoTowerFeatures,
        item_log_prob: torch.Tensor,
        temperature: float,
        logq_correction: bool = True,
        softmax: str = "in_batch",
        uniform_negatives: int = 0,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model.user_tower, SequenceUserTower):
            raise TypeError("SequenceSoftmaxTask needs a sequence user tower")
        self.model = model
        self.features = features
        self.register_buffer("item_log_prob", item_log_prob.float(), persistent=False)
        self.temperature = temperature
        self.logq_correction = logq_correction
        self.softmax = softmax
        self.uniform_negatives = uniform_negatives
        self.device = device or torch.device("cpu")

    def forward(
        self, windows: IntArray, user_kjt: Any, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """Mean loss over every item position of (B, W) ``windows`` (``-1`` = padding)."""
        valid = windows >= 0
        lengths = valid.sum(axis=1)
        n_items = self.features.n_items
        if self.softmax == "full":
            candidates = np.arange(n_items)
        else:
            candidates = np.unique(windows[valid])
            if self.uniform_negatives and rng is not None:
                extra = rng.integers(0, n_items, size=self.uniform_negatives)
                candidates = np.concatenate([candidates, np.setdiff1d(extra, candidates)])
        vectors = self.model.item_tower(self.features.item_kjt(candidates).to(self.device))
        position = np.full(n_items, -1, dtype=np.int64)
        position[candidates] = np.arange(len(candidates))
        index = torch.from_numpy(np.where(valid, position[np.maximum(windows, 0)], -1))
        index = index.to(self.device)
        history = gather_vectors(vectors, index[:, :-1])  # (B, W - 1, D)
        hist_len = torch.from_numpy(np.maximum(lengths - 1, 0)).to(self.device)
        users = self.model.user_tower(user_kjt, history, hist_len)  # (B, W, D)
        mask = torch.from_numpy(valid).to(self.device)
        user_emb = users[mask]  # (P, D): the user after 0..m-1 items of each window
        target = index[mask]  # (P,)
        if self.softmax == "full" or not self.logq_correction:
            log_q = torch.zeros(len(candidates), device=self.device)
        else:
            ids = torch.from_numpy(candidates).to(self.device)
            log_q = torch.log(torch.tensor(float(target.shape[0]))) + self.item_log_prob[ids]
            n_in_batch = int(np.unique(windows[valid]).size)
            if len(candidates) > n_in_batch:  # uniform negatives: Q = M / n_items
                log_q[n_in_batch:] = float(np.log(self.uniform_negatives / n_items))
        return sampled_softmax_loss(
            user_emb,
            vectors,
            torch.from_numpy(candidates).to(self.device),
            log_q,
            self.temperature,
            target=target,
        )
