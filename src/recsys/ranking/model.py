"""DCN-v2 style ranker: dense candidate features + id embeddings → low-rank cross net → MLP.

Shapes: ``B`` queries, ``C`` candidates per query, ``F`` dense features, ``E`` id embedding
dim. Every candidate gets its own logit (B, C); candidates are never pooled into one logit.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class DCNRanker(nn.Module):
    """Per-candidate scorer (DCN-v2 with TorchRec's ``LowRankCrossNet``).

    Args:
        n_dense: Number of dense features ``F``.
        n_users: User id table size (index 0 = unknown user); 0 disables id embeddings.
        n_items: Item id table size; 0 disables id embeddings.
        embedding_dim: Width ``E`` of the id embeddings.
        cross_layers: Cross layers.
        low_rank: Rank of each cross layer.
        hidden: Widths of the MLP after the cross net.
        dropout: Dropout in the MLP.

    ``forward(dense (B, C, F), ids KJT with keys user_id, item_id and batch B·C)`` → (B, C).

    Example::

        >>> ranker = DCNRanker(n_dense=3, n_users=5, n_items=7, embedding_dim=4)
        >>> dense = torch.randn(2, 6, 3)                        # 2 queries × 6 candidates
        >>> ids = ranker.id_features(torch.tensor([1, 2]), torch.randint(0, 7, (2, 6)))
        >>> ranker(dense, ids).shape
        torch.Size([2, 6])
    """

    def __init__(
        self,
        n_dense: int,
        n_users: int = 0,
        n_items: int = 0,
        embedding_dim: int = 16,
        cross_layers: int = 2,
        low_rank: int = 8,
        hidden: tuple[int, ...] = (128, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.use_ids = n_users > 0 and n_items > 0
        self.ebc: EmbeddingBagCollection | None = None
        width = n_dense
        if self.use_ids:
            tables = [
                EmbeddingBagConfig(
                    name="rank_user_id",
                    embedding_dim=embedding_dim,
                    num_embeddings=n_users,
                    feature_names=["user_id"],
                    pooling=PoolingType.SUM,
                ),
                EmbeddingBagConfig(
                    name="rank_item_id",
                    embedding_dim=embedding_dim,
                    num_embeddings=n_items,
                    feature_names=["item_id"],
                    pooling=PoolingType.SUM,
                ),
            ]
            self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
            width += 2 * embedding_dim
        self.input_norm = nn.BatchNorm1d(n_dense)
        self.cross = LowRankCrossNet(in_features=width, num_layers=cross_layers, low_rank=low_rank)
        layers: list[nn.Module] = []
        prev = width
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.mlp = nn.Sequential(*layers)
        self.linear = nn.Linear(n_dense, 1)  # wide part on the raw (normalised) features

    @staticmethod
    def id_features(users: torch.Tensor, items: torch.Tensor) -> KeyedJaggedTensor:
        """KJT (batch B·C) from user slots (B,) and candidate items (B, C)."""
        b, c = items.shape
        user_values = users.long().repeat_interleave(c)
        values = torch.cat([user_values, items.reshape(-1).long()])
        return KeyedJaggedTensor.from_lengths_sync(
            keys=["user_id", "item_id"],
            values=values,
            lengths=torch.ones(2 * b * c, dtype=torch.long),
        )

    def forward(self, dense: torch.Tensor, ids: KeyedJaggedTensor | None = None) -> torch.Tensor:
        """(B, C) logits."""
        b, c, f = dense.shape
        x = self.input_norm(dense.reshape(b * c, f))
        wide = self.linear(x)
        if self.use_ids and self.ebc is not None and ids is not None:
            pooled = self.ebc(ids).to_dict()
            x = torch.cat([x, pooled["user_id"], pooled["item_id"]], dim=1)
        elif self.use_ids:
            pad = torch.zeros(b * c, self.cross.W_kernels[0].shape[0] - f, device=dense.device)
            x = torch.cat([x, pad], dim=1)
        return (self.mlp(self.cross(x)) + wide).reshape(b, c)
