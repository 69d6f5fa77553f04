"""Two-tower ``nn.Module``: sparse features → ``EmbeddingBagCollection`` → MLP → unit vector.

Shapes: ``B`` batch size, ``F`` number of sparse features of a tower, ``E`` table embedding
dim, ``H`` hidden width, ``D`` output embedding size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.retrieval.two_tower.features import FeatureSpec

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def table_configs(
    specs: Sequence[FeatureSpec], embedding_dim: int, prefix: str
) -> list[EmbeddingBagConfig]:
    """One embedding table per feature (``<prefix>_<feature>``)."""
    return [
        EmbeddingBagConfig(
            name=f"{prefix}_{spec.name}",
            embedding_dim=embedding_dim,
            num_embeddings=max(1, spec.num_embeddings),
            feature_names=[spec.name],
            pooling=_POOLING[spec.pooling],
        )
        for spec in specs
    ]


class Tower(nn.Module):
    """One tower: pooled sparse embeddings, concatenated, through an MLP, L2-normalised.

    Args:
        tables: Embedding tables, one feature each (see :func:`table_configs`).
        hidden_size: Width ``H`` of the hidden layer (0 = a single linear layer).
        output_size: Output embedding size ``D``.
        dropout: Dropout on the concatenated embeddings during training.
        device: Where the tables and layers live.

    Input: a :class:`KeyedJaggedTensor` with the tables' feature names as keys, batch ``B``.
    Output: (B, D) float tensor, each row of unit L2 norm.

    Example::

        >>> from recsys.retrieval.two_tower.features import FeatureSpec
        >>> specs = [FeatureSpec("item_id", 10, "sum"), FeatureSpec("item_genres", 4, "mean")]
        >>> tower = Tower(table_configs(specs, 8, "item"), hidden_size=16, output_size=4)
        >>> kjt = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["item_id", "item_genres"],
        ...     values=torch.tensor([3, 7, 1, 2, 3]),  # item ids 3, 7; genres {1, 2} and {3}
        ...     lengths=torch.tensor([1, 1, 2, 1]),
        ... )
        >>> tower(kjt).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        tables: list[EmbeddingBagConfig],
        hidden_size: int,
        output_size: int,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        device = torch.device(device or "cpu")
        self.feature_names = [name for t in tables for name in t.feature_names]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)
        in_size = sum(t.embedding_dim * len(t.feature_names) for t in tables)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden_size > 0:
            layers += [
                nn.Linear(in_size, hidden_size, device=device),
                nn.ReLU(),
                nn.Linear(hidden_size, output_size, device=device),
            ]
        else:
            layers.append(nn.Linear(in_size, output_size, device=device))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """(B, D) unit vectors of a batch of feature rows."""
        pooled = self.ebc(features).to_dict()
        x = torch.cat([pooled[name] for name in self.feature_names], dim=1)  # (B, F·E)
        return nn.functional.normalize(self.mlp(x), dim=-1)


class TwoTowerModel(nn.Module):
    """User tower and item tower sharing an output space (dot product = cosine).

    Args:
        user_specs: User tower features.
        item_specs: Item tower features.
        embedding_dim: Table width ``E``.
        hidden_size: Hidden width ``H`` of each tower's MLP.
        output_size: Output size ``D``.
        dropout: Dropout on each tower's concatenated embeddings.
        device: Device of every parameter.

    ``forward(user_features, item_features)`` returns ``(user_emb (B_u, D), item_emb (B_i, D))``.

    Example::

        >>> from recsys.retrieval.two_tower.features import FeatureSpec
        >>> model = TwoTowerModel(
        ...     [FeatureSpec("user_id", 5, "sum")], [FeatureSpec("item_id", 10, "sum")],
        ...     embedding_dim=8, hidden_size=16, output_size=4)
        >>> users = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["user_id"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1]))
        >>> items = KeyedJaggedTensor.from_lengths_sync(
        ...     keys=["item_id"], values=torch.tensor([4, 9, 0]), lengths=torch.tensor([1, 1, 1]))
        >>> u, v = model(users, items)
        >>> (u @ v.T).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        user_specs: Sequence[FeatureSpec],
        item_specs: Sequence[FeatureSpec],
        embedding_dim: int = 64,
        hidden_size: int = 128,
        output_size: int = 64,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.user_tower = Tower(
            table_configs(user_specs, embedding_dim, "user"),
            hidden_size,
            output_size,
            dropout,
            device,
        )
        self.item_tower = Tower(
            table_configs(item_specs, embedding_dim, "item"),
            hidden_size,
            output_size,
            dropout,
            device,
        )

    def forward(
        self, user_features: KeyedJaggedTensor, item_features: KeyedJaggedTensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User (B_u, D) and item (B_i, D) unit embeddings."""
        return self.user_tower(user_features), self.item_tower(item_features)
