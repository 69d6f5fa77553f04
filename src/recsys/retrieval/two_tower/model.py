"""Two-tower ``nn.Module``: sparse features → ``EmbeddingBagCollection`` → MLP → unit vector.

Shapes: ``B`` batch size, ``F`` number of sparse features of a tower, ``E`` table embedding
dim, ``H`` hidden width, ``D`` output embedding size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.retrieval.two_tower.features import FeatureSpec
from recsys.types import FloatArray, IntArray

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def table_configs(
    specs: Sequence[FeatureSpec],
    embedding_dim: int,
    prefix: str,
    init_scale: dict[str, float] | None = None,
) -> list[EmbeddingBagConfig]:
    """One embedding table per feature (``<prefix>_<feature>``).

    ``init_scale`` maps feature names to a uniform init range ``±scale`` (TorchRec's default
    is ``±√(1/rows)``, which for thousands of items leaves the item vectors dominated by the
    tower's bias at the start: every item looks alike).
    """
    scales = init_scale or {}
    return [
        EmbeddingBagConfig(
            name=f"{prefix}_{spec.name}",
            embedding_dim=embedding_dim,
            num_embeddings=max(1, spec.num_embeddings),
            feature_names=[spec.name],
            pooling=_POOLING[spec.pooling],
            weight_init_max=scales.get(spec.name),
            weight_init_min=-scales[spec.name] if spec.name in scales else None,
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


@dataclass(frozen=True)
class FrozenTower:
    """A trained bag :class:`Tower` as NumPy arrays: the request path's user tower on the CPU.

    The same function as the tower in evaluation mode (pooled tables, MLP, L2 norm), without
    building a :class:`KeyedJaggedTensor` and dispatching TorchRec's modules per request: on
    one request that dispatch was most of the retrieval stage (0.9 of 1.1 ms, measured on
    ml-latest-small). The retriever rebuilds it whenever it recomputes its item vectors, so
    training, evaluation and serving read the same weights.

    Attributes:
        tables: One (rows, E) table per feature, in the tower's feature order.
        mean_pooled: Per feature, whether its bag is averaged (else summed).
        layers: The MLP as (W^T, bias) pairs; a ReLU sits between consecutive pairs.
    """

    tables: tuple[FloatArray, ...]
    mean_pooled: tuple[bool, ...]
    layers: tuple[tuple[FloatArray, FloatArray], ...]

    @classmethod
    def of(cls, tower: Tower) -> FrozenTower | None:
        """Freeze ``tower`` (``None`` when its MLP holds a layer this class does not run)."""
        configs = {name: c for c in tower.ebc.embedding_bag_configs() for name in c.feature_names}
        tables, mean = [], []
        for name in tower.feature_names:
            config = configs[name]
            weight = tower.ebc.embedding_bags[config.name].weight
            tables.append(weight.detach().cpu().numpy().astype(np.float32, copy=True))
            mean.append(config.pooling == PoolingType.MEAN)
        layers: list[tuple[FloatArray, FloatArray]] = []
        expect_linear = True
        for module in tower.mlp:
            if isinstance(module, nn.Dropout):
                continue  # identity in evaluation mode
            if isinstance(module, nn.Linear) and expect_linear:
                weight_t = module.weight.detach().cpu().numpy().T
                layers.append(
                    (
                        np.ascontiguousarray(weight_t, dtype=np.float32),
                        module.bias.detach().cpu().numpy().astype(np.float32),
                    )
                )
                expect_linear = False
            elif isinstance(module, nn.ReLU) and not expect_linear:
                expect_linear = True
            else:
                return None
        return cls(tuple(tables), tuple(mean), tuple(layers))

    def __call__(self, parts: Sequence[tuple[IntArray, IntArray]]) -> FloatArray:
        """(B, D) unit vectors from one ``(values, lengths)`` jagged pair per feature."""
        pooled = [
            _pool(table, values, lengths, mean)
            for table, mean, (values, lengths) in zip(
                self.tables, self.mean_pooled, parts, strict=True
            )
        ]
        x = np.concatenate(pooled, axis=1)
        for depth, (weight_t, bias) in enumerate(self.layers):
            if depth:
                np.maximum(x, 0.0, out=x)
            x = x @ weight_t + bias
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _pool(table: FloatArray, values: IntArray, lengths: IntArray, mean: bool) -> FloatArray:
    """Sum (or mean) of each bag's rows of ``table``; an empty bag pools to zeros (TorchRec)."""
    if len(lengths) == 1:  # one request: no segment bookkeeping
        out = table[values].sum(axis=0, keepdims=True, dtype=np.float32)
    else:
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        bags = sp.csr_matrix(
            (np.ones(len(values), dtype=np.float32), values, indptr),
            shape=(len(lengths), table.shape[0]),
        )
        out = np.asarray(bags @ table, dtype=np.float32)
    if mean:
        out /= np.maximum(np.asarray(lengths, dtype=np.float32), 1.0)[:, None]
    return out


class TwoTowerModel(nn.Module):
    """User tower and item tower sharing an output space (dot product = cosine).

    ``user_encoder="bag"`` pools the history (a :class:`Tower`); ``"transformer"`` and
    ``"gru"`` encode it in order (a :class:`SequenceUserTower` over the item tower's vectors of
    the history items, called by the retriever with the history as a tensor).

    Args:
        user_specs: User tower features.
        item_specs: Item tower features.
        embedding_dim: Table width ``E``.
        hidden_size: Hidden width ``H`` of each tower's MLP.
        output_size: Output size ``D``.
        dropout: Dropout on each tower's concatenated embeddings.
        device: Device of every parameter.
        user_encoder: ``"bag"``, ``"transformer"`` or ``"gru"``.
        max_length: Longest history of a sequence encoder.
        encoder_layers: Depth of a sequence encoder.
        encoder_heads: Attention heads of the transformer.
        encoder_dropout: Dropout inside a sequence encoder.

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
        user_encoder: str = "bag",
        max_length: int = 50,
        encoder_layers: int = 2,
        encoder_heads: int = 2,
        encoder_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.user_encoder = user_encoder
        self.user_tower: nn.Module
        if user_encoder == "bag":
            self.user_tower = Tower(
                table_configs(user_specs, embedding_dim, "user"),
                hidden_size,
                output_size,
                dropout,
                device,
            )
        else:
            self.user_tower = SequenceUserTower(
                table_configs(user_specs, embedding_dim, "user"),
                user_encoder,
                output_size,
                max_length,
                hidden_size,
                encoder_layers,
                encoder_heads,
                encoder_dropout,
                device,
            )
        # ordered towers read the item vectors as inputs: start them distinct
        scale = None if user_encoder == "bag" else {"item_id": 0.5}
        self.item_tower = Tower(
            table_configs(item_specs, embedding_dim, "item", scale),
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


class SequenceEncoder(nn.Module):
    """Order-aware encoder of a history: causal transformer (SASRec-style) or GRU.

    Args:
        kind: ``"transformer"`` (self-attention with a causal mask and learned positions) or
            ``"gru"``.
        dim: Width ``D`` of the inputs and outputs.
        max_length: Longest input sequence ``L`` (positions of the transformer).
        layers: Transformer blocks / GRU layers.
        heads: Attention heads (transformer).
        dropout: Dropout inside the encoder and on its inputs.
        device: Where the layers live.

    Input: (B, L, D) item vectors, left-aligned (oldest first), zero-padded after each row's
    length. Output: (B, L, D); row ``b`` position ``t`` depends only on positions ``≤ t`` (so
    padding after a row's end never reaches its valid positions, and every position of a
    training sequence is a next-item example).

    Example::

        >>> enc = SequenceEncoder("transformer", dim=8, max_length=5, layers=1, heads=2)
        >>> enc(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        max_length: int,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("transformer", "gru"):
            raise ValueError(f"kind: 'transformer' or 'gru', not {kind!r}")
        device = torch.device(device or "cpu")
        self.kind = kind
        self.max_length = max_length
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, device=device)
        if kind == "transformer":
            self.positions = nn.Embedding(max_length, dim, device=device)
            layer = nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=2 * dim,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
                device=device,
            )
            self.encoder: nn.Module = nn.TransformerEncoder(
                layer, layers, enable_nested_tensor=False
            )
        else:
            self.encoder = nn.GRU(dim, dim, num_layers=layers, batch_first=True, device=device)

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, L) attention weights of the last transformer block, averaged over heads.

        Row ``t`` says how much position ``t`` attends to each earlier position (causal: zero
        after ``t``). For inspection (notebooks); the forward pass does not compute them.
        """
        if self.kind != "transformer":
            raise ValueError("attention: only the transformer encoder has attention")
        length = x.shape[1]
        positions = torch.arange(length, device=x.device)
        x = x + self.positions(positions)[None]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device)
        layers = list(self.encoder.layers)  # type: ignore[union-attr]
        for layer in layers[:-1]:
            x = layer(x, src_mask=mask, is_causal=True)
        last = layers[-1]
        h = last.norm1(x) if last.norm_first else x
        _, weights = last.self_attn(h, h, h, attn_mask=mask, need_weights=True)
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) → (B, L, D), causal."""
        length = x.shape[1]
        if self.kind == "transformer":
            positions = torch.arange(length, device=x.device)
            x = self.dropout(x + self.positions(positions)[None])
            mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device)
            out = self.encoder(x, mask=mask, is_causal=True)
        else:
            out, _ = self.encoder(self.dropout(x))
        return self.norm(out)


class SequenceUserTower(nn.Module):
    """User tower over the *ordered* history: item vectors → causal encoder → MLP → unit vector.

    The history items enter as the item tower's output vectors (the same KJT/EBC item side:
    input and output item spaces are shared, as SASRec shares its item embeddings), after a
    learned begin-of-sequence vector, so an empty history is encoded too (cold start). User
    id and context features are pooled by their own ``EmbeddingBagCollection`` and join
    every position before the MLP. The output at a position is the vector of the item clicked
    there plus the MLP's correction, normalised (a residual path across the whole tower).

    Args:
        tables: Embedding tables of the pooled user features (id, context); may be empty.
        kind: ``"transformer"`` or ``"gru"`` (:class:`SequenceEncoder`).
        dim: Item vector size ``D`` (the model's output size).
        max_length: Longest history ``L`` (the begin vector takes one more position).
        hidden_size: MLP hidden width (0 = one linear layer).
        layers: Encoder depth.
        heads: Attention heads.
        dropout: Encoder dropout.
        device: Where the parameters live.

    ``forward(features, history, lengths)``: features a KJT of the pooled user features
    (batch B), history (B, L, D) item vectors left-aligned, lengths (B,) → (B, L + 1, D) unit
    vectors; position ``t`` has seen the begin vector and the first ``t`` items, so it is the
    user after ``t`` events (:meth:`last` picks position ``lengths``).
    """

    def __init__(
        self,
        tables: list[EmbeddingBagConfig],
        kind: str,
        dim: int,
        max_length: int,
        hidden_size: int,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        device = torch.device(device or "cpu")
        self.feature_names = [name for t in tables for name in t.feature_names]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device) if tables else None
        pooled = sum(t.embedding_dim * len(t.feature_names) for t in tables)
        self.begin = nn.Parameter(torch.zeros(dim, device=device))
        nn.init.normal_(self.begin, std=0.1)
        self.scale = nn.Parameter(torch.tensor(float(dim) ** 0.5, device=device))
        self.encoder = SequenceEncoder(kind, dim, max_length + 1, layers, heads, dropout, device)
        if hidden_size > 0:
            self.mlp: nn.Module = nn.Sequential(
                nn.Linear(dim + pooled, hidden_size, device=device),
                nn.ReLU(),
                nn.Linear(hidden_size, dim, device=device),
            )
        else:
            self.mlp = nn.Linear(dim + pooled, dim, device=device)
        last = self.mlp[-1] if isinstance(self.mlp, nn.Sequential) else self.mlp
        nn.init.zeros_(last.weight)  # start as "the item just clicked" (see forward)
        nn.init.zeros_(last.bias)

    def forward(
        self, features: KeyedJaggedTensor | None, history: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """(B, L + 1, D) unit user vectors after 0..L events."""
        b = history.shape[0]
        begin = self.begin.expand(b, 1, -1)
        x = torch.cat([begin, history * self.scale], dim=1)  # (B, L + 1, D)
        h = self.encoder(x)
        parts = [h]
        if self.ebc is not None and features is not None:
            pooled = self.ebc(features).to_dict()
            flat = torch.cat([pooled[name] for name in self.feature_names], dim=1)
            parts.append(flat[:, None, :].expand(-1, h.shape[1], -1))
        # the item just clicked passes straight to the output (input and output item spaces
        # are shared): from the first step the tower scores that item and its neighbours
        # high, which is where re-clicks and next clicks are; the encoder learns the rest
        out = torch.cat([begin, history], dim=1) + self.mlp(torch.cat(parts, dim=-1))
        return nn.functional.normalize(out, dim=-1)

    @torch.no_grad()
    def attention(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L + 1, L + 1) last-block attention over [begin, item 1..L] (transformer only)."""
        begin = self.begin.expand(history.shape[0], 1, -1)
        return self.encoder.attention(torch.cat([begin, history * self.scale], dim=1))

    def last(
        self, features: KeyedJaggedTensor | None, history: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """(B, D) the user vector after each row's last event (position ``lengths``)."""
        out = self.forward(features, history, lengths)
        return out[torch.arange(out.shape[0], device=out.device), lengths]
