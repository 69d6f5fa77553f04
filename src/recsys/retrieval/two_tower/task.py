"""Training task of the two-tower model: sampled softmax with logQ correction.

For a batch of B (user, positive item) pairs the logits are ``u_b · v_j / τ - log Q(j)`` over
the B in-batch items (plus M uniform negatives when asked), where ``Q(j)`` is the probability
that item ``j`` is sampled as a negative: ``B·p_pop(j)`` for in-batch items (they are drawn in
proportion to popularity) and ``M / n_items`` for uniform ones (Yi et al. 2019, "Sampling-bias
corrected neural modeling"; Yang et al. 2020, "Mixed negative sampling"). Without the
correction popular items are over-penalised as negatives. A positive that appears in another
row of the batch is not that row's negative (masked).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.retrieval.two_tower.model import TwoTowerModel


def sampled_softmax_loss(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    item_ids: torch.Tensor,
    item_log_q: torch.Tensor,
    temperature: float,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each user against all candidate items.

    Args:
        user_emb: (B, D) user embeddings.
        item_emb: (N, D) candidate item embeddings; row ``target[b]`` is user b's positive.
        item_ids: (N,) item indices of the candidates (for masking accidental positives).
        item_log_q: (N,) log sampling probability of each candidate (zeros = no correction).
        temperature: Softmax temperature τ.
        target: (B,) positive column of each user (default ``arange(B)``).

    Returns:
        Scalar loss.
    """
    b = user_emb.shape[0]
    if target is None:
        target = torch.arange(b, device=user_emb.device)
    logits = user_emb @ item_emb.T / temperature - item_log_q[None, :]  # (B, N)
    pos_ids = item_ids[target]  # (B,)
    same = pos_ids[:, None] == item_ids[None, :]
    same[torch.arange(b, device=user_emb.device), target] = False
    logits = logits.masked_fill(same, float("-inf"))
    return nn.functional.cross_entropy(logits, target)


class InBatchSoftmaxTask(nn.Module):
    """Wraps a :class:`TwoTowerModel` and returns the training loss of a batch.

    Args:
        model: The two towers.
        item_log_prob: (n_items,) log popularity of each item in the training data.
        temperature: Softmax temperature.
        logq_correction: Subtract log Q(j) from the logits.
        n_items: Catalogue size (for the uniform negatives' Q).
        gather: Optional function that all-gathers (embeddings, ids) across processes
            (distributed training) and returns them with this process's row offset: users
            are then scored against every process's in-batch items.
    """

    def __init__(
        self,
        model: TwoTowerModel,
        item_log_prob: torch.Tensor,
        temperature: float,
        logq_correction: bool = True,
        n_items: int | None = None,
        gather: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, int]]
        | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("item_log_prob", item_log_prob.float(), persistent=False)
        self.temperature = temperature
        self.logq_correction = logq_correction
        self.n_items = n_items or int(item_log_prob.shape[0])
        self.gather = gather

    def forward(
        self,
        user_features: KeyedJaggedTensor,
        item_features: KeyedJaggedTensor,
        item_ids: torch.Tensor,
        negative_features: KeyedJaggedTensor | None = None,
        negative_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of B (user, positive) pairs, optionally with M uniform negatives."""
        user_emb, item_emb = self.model(user_features, item_features)
        b = user_emb.shape[0]
        cand_emb, cand_ids, offset = item_emb, item_ids, 0
        if self.gather is not None:
            cand_emb, cand_ids, offset = self.gather(item_emb, item_ids)
        n_batch = float(cand_ids.shape[0])
        log_q = torch.log(torch.tensor(n_batch)) + self.item_log_prob[cand_ids]
        if negative_features is not None and negative_ids is not None:
            neg_emb = self.model.item_tower(negative_features)
            m = neg_emb.shape[0]
            neg_q = torch.full(
                (m,), float(torch.log(torch.tensor(m / self.n_items))), device=neg_emb.device
            )
            cand_emb = torch.cat([cand_emb, neg_emb])
            cand_ids = torch.cat([cand_ids, negative_ids])
            log_q = torch.cat([log_q, neg_q])
        if not self.logq_correction:
            log_q = torch.zeros_like(log_q)
        target = torch.arange(b, device=user_emb.device) + offset
        return sampled_softmax_loss(
            user_emb, cand_emb, cand_ids, log_q, self.temperature, target=target
        )
