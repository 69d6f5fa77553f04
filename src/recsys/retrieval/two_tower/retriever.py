"""The two-tower retrieval component: trains, scores, serves through FAISS, saves and loads.

Model (:mod:`.model`), training task (:mod:`.task`) and this component are kept apart: the
``nn.Module`` computes embeddings, the task turns a batch into a loss, the component owns the
data, the epochs, early stopping, the index and persistence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from tqdm.auto import tqdm

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.evaluation.protocol import evaluate
from recsys.features.definitions import user_contexts
from recsys.retrieval.base import Recommender
from recsys.retrieval.index import IndexConfig, ItemIndex
from recsys.retrieval.two_tower.features import TwoTowerFeatures
from recsys.retrieval.two_tower.model import FrozenTower, TwoTowerModel
from recsys.retrieval.two_tower.runtime import with_config_threads
from recsys.retrieval.two_tower.sequence import (
    SequenceData,
    SequenceSoftmaxTask,
    gather_vectors,
    pad_histories,
)
from recsys.retrieval.two_tower.task import InBatchSoftmaxTask
from recsys.types import FloatArray, IntArray, ItemList, Query

log = logging.getLogger(__name__)


class TwoTowerConfig(ComponentConfig):
    """Hyper-parameters of the two-tower retriever (the seed is config)."""

    embedding_size: int = Field(64, ge=2, le=1024, description="Output embedding size D.")
    table_dim: int = Field(64, ge=2, le=1024, description="Embedding table width E.")
    hidden_size: int = Field(256, ge=0, le=8192, description="Tower MLP hidden width.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on pooled embeddings.")
    epochs: int = Field(30, ge=1, le=10_000, description="Maximum training epochs.")
    learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    sparse_optimizer: Literal["adam", "adagrad", "rowwise_adagrad"] = Field(
        "adam",
        description=(
            "Optimiser of the embedding tables ('adam' shares the dense AdamW). TorchRec's "
            "fused CPU kernels (distributed training) support only the Adagrad variants."
        ),
    )
    sparse_learning_rate: float = Field(
        0.05, gt=0.0, le=10.0, description="Learning rate of the Adagrad table optimisers."
    )
    batch_size: int = Field(1024, ge=2, le=1_000_000)
    temperature: float = Field(0.05, gt=0.0, le=10.0, description="Softmax temperature τ.")
    logq_correction: bool = Field(True, description="Subtract log popularity from logits.")
    uniform_negatives: int = Field(0, ge=0, le=100_000, description="Extra uniform negatives.")
    history_length: int = Field(50, ge=0, le=10_000, description="History bag size (recent).")
    history_mode: Literal["auto", "others", "past"] = Field(
        "auto",
        description=(
            "Training history of an example: all the user's other training items ('others'), "
            "only earlier ones ('past'), or 'auto' (past for temporal splits, else others)."
        ),
    )
    history_dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fraction of history items dropped per example."
    )
    user_encoder: Literal["bag", "gru", "transformer"] = Field(
        "bag",
        description=(
            "How the user tower reads the history: a pooled bag (order lost), a GRU, or a "
            "causal transformer with positions (SASRec-style) over the last `history_length` "
            "items. The ordered towers train on every (prefix → next item) position at once."
        ),
    )
    encoder_layers: int = Field(2, ge=1, le=12, description="GRU layers / transformer blocks.")
    encoder_heads: int = Field(2, ge=1, le=16, description="Attention heads (transformer).")
    encoder_dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout in the encoder.")
    softmax: Literal["in_batch", "full"] = Field(
        "in_batch",
        description=(
            "Ordered towers: sampled softmax over the batch's items with logQ correction, or "
            "the exact softmax over the catalogue (affordable up to ~10k items)."
        ),
    )
    scale_to_data: bool = Field(
        False,
        description=(
            "Derive embedding size, batch size, epochs and negatives from the training log's "
            "size (scaled_config): a small, sparse log gets a small model trained for more "
            "epochs against more negatives, instead of settings sized for MovieLens."
        ),
    )
    baseline_floor: bool = Field(
        True,
        description=(
            "With a validation part: an epoch is kept only if it beats popularity's "
            "validation NDCG@10 (no such epoch: the component serves popularity), and a "
            "warning names the simple baseline (popularity, EASE) the model ends below."
        ),
    )
    use_user_id: bool = Field(True, description="Learn a per-user embedding.")
    use_context: bool = Field(True, description="Use user context attributes.")
    max_tags: int = Field(500, ge=0, le=100_000, description="Tag vocabulary size.")
    patience: int = Field(3, ge=0, le=1000, description="Epochs without validation gain.")
    min_epochs: int = Field(1, ge=1, le=10_000)
    seed: int = Field(42, ge=0)
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'.")
    num_threads: int | None = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "torch CPU threads while training/scoring (None = torch's default). One is fastest "
            "for these small ops on the 2-core machines: two threads made them 2-100x slower."
        ),
    )
    index: IndexConfig = Field(default_factory=IndexConfig)
    progress: bool = Field(True, description="Show tqdm progress bars.")


def scaled_config(config: TwoTowerConfig, split: Split) -> TwoTowerConfig:
    """``config`` with the sizes that scale with the training log.

    * embedding and table width ``≈ 4·events^¼`` as a power of two in [16, 128] (12k clicks:
      32; 80k: 64);
    * batch ``≈ events / 50`` as a power of two in [64, 1024], so a small log still takes
      tens of steps per epoch;
    * epochs: enough for ~3,000 optimiser steps, within [config.epochs, 300]; patience ≥ 5;
    * negatives: the exact softmax over the catalogue for ordered towers up to 20k items,
      else ``min(items, 4 · batch)`` uniform negatives beside the in-batch ones.
    """
    events = max(1, len(split.train))
    n_items = split.dataset.n_items
    dim = int(np.clip(2 ** round(np.log2(4 * events**0.25)), 16, 128))
    batch = int(np.clip(2 ** round(np.log2(events / 50)), 64, 1024))
    steps_per_epoch = max(1, int(np.ceil(events / batch)))
    epochs = int(np.clip(np.ceil(3000 / steps_per_epoch), config.epochs, 300))
    update: dict[str, Any] = {
        "embedding_size": dim,
        "table_dim": dim,
        "batch_size": batch,
        "epochs": epochs,
        "patience": max(config.patience, 5),
    }
    if config.user_encoder != "bag" and n_items <= 20_000:
        update["softmax"] = "full"
    else:
        update["uniform_negatives"] = min(n_items, 4 * batch)
    return TwoTowerConfig.model_validate({**config.model_dump(), **update})


def _item_log_prob(train: pd.DataFrame, n_items: int) -> torch.Tensor:
    counts = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float64)
    prob = (counts + 1.0) / (counts.sum() + n_items)
    return torch.from_numpy(np.log(prob)).float()


class TrainingData:
    """Per-user time-ordered training sequences and the (user, position) examples."""

    def __init__(self, split: Split, history_mode: str) -> None:
        n_users = split.dataset.n_users
        train = split.train.sort_values(["user", "timestamp"], kind="stable")
        users = train["user"].to_numpy(np.int64)
        self.items = train["item"].to_numpy(np.int64)
        counts = np.bincount(users, minlength=n_users)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.counts = counts.astype(np.int64)
        self.users = users
        self.positions = np.arange(len(users)) - self.starts[users]
        mode = history_mode
        if mode == "auto":
            sequential = ("temporal", "leave_last_out", "sessions")
            mode = "past" if split.protocol in sequential else "others"
        self.mode = mode

    def __len__(self) -> int:
        return len(self.users)

    def history(self, row: int, length: int, dropout: float, rng: np.random.Generator) -> IntArray:
        """History bag of example ``row`` without its target."""
        u = self.users[row]
        start, count, pos = self.starts[u], self.counts[u], self.positions[row]
        seq = self.items[start : start + count]
        hist = seq[:pos] if self.mode == "past" else np.concatenate([seq[:pos], seq[pos + 1 :]])
        if dropout > 0 and len(hist):
            hist = hist[rng.random(len(hist)) >= dropout]
        return hist[-length:] if length else hist[:0]


class TwoTowerRetriever(Recommender):
    """Two-tower retrieval (user tower × item tower, cosine), FAISS for serving.

    ``fit(split)`` trains on ``split.train`` with early stopping on validation NDCG@10;
    ``score(queries)`` gives (B, n_items) cosine scores; ``retriever(query, n)`` answers
    through the FAISS index, excluding the history. A fresh ``query.history`` re-encodes the
    user without retraining.
    """

    config_class = TwoTowerConfig
    name = "two_tower"
    config: TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.features: TwoTowerFeatures | None = None
        self.model: TwoTowerModel | None = None
        self.item_embeddings: FloatArray | None = None
        self.index: ItemIndex | None = None
        self.history: list[dict[str, float]] = []
        self.epoch_seconds: list[float] = []
        self.best_epoch = 0
        self._split: Split | None = None
        self._data: TrainingData | None = None
        self._task: InBatchSoftmaxTask | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._rng: np.random.Generator | None = None
        self._aug_rng: np.random.Generator | None = None
        self._context_rows: list[list[int]] | None = None
        self._seq_task: SequenceSoftmaxTask | None = None
        self._seq_data: SequenceData | None = None
        self.baselines_valid: dict[str, float] = {}
        self.popularity_fallback = False
        self._popularity: FloatArray | None = None
        self._frozen_user: FrozenTower | None = None

    @property
    def device(self) -> torch.device:
        """The torch device of the model."""
        return torch.device(self.config.device)

    # ------------------------------------------------------------------ construction
    def build_model(self, features: TwoTowerFeatures) -> TwoTowerModel:
        """A fresh (untrained) model for the given features, on ``config.device``."""
        c = self.config
        return TwoTowerModel(
            features.user_specs(),
            features.item_specs(),
            embedding_dim=c.table_dim,
            hidden_size=c.hidden_size,
            output_size=c.embedding_size,
            dropout=c.dropout,
            device=self.device,
            user_encoder=c.user_encoder,
            max_length=max(1, c.history_length),
            encoder_layers=c.encoder_layers,
            encoder_heads=c.encoder_heads,
            encoder_dropout=c.encoder_dropout,
        )

    @property
    def sequential(self) -> bool:
        """Whether the user tower reads the history in order (GRU / transformer)."""
        return self.config.user_encoder != "bag"

    def prepare(self, split: Split) -> Self:
        """Build vocabularies, model, task and optimiser for training on ``split``."""
        c = self.config
        torch.manual_seed(c.seed)
        self._rng = np.random.default_rng(c.seed)  # batch order
        self._aug_rng = np.random.default_rng(c.seed + 1)  # history dropout, negatives
        self.features = TwoTowerFeatures.fit(
            split.dataset,
            history_length=c.history_length,
            max_tags=c.max_tags,
            use_context=c.use_context,
            sequence=self.sequential,
        )
        self._fitted_on(split)
        self.model = self.build_model(self.features)
        log_prob = _item_log_prob(split.train, self.n_items).to(self.device)
        self._task = InBatchSoftmaxTask(
            self.model,
            log_prob,
            temperature=c.temperature,
            logq_correction=c.logq_correction,
            n_items=self.n_items,
        )
        if self.sequential:
            self._seq_task = SequenceSoftmaxTask(
                self.model,
                self.features,
                log_prob,
                temperature=c.temperature,
                logq_correction=c.logq_correction,
                softmax=c.softmax,
                uniform_negatives=c.uniform_negatives,
                device=self.device,
            )
            self._seq_data = SequenceData(split.train, max(1, c.history_length))
        self._optimizers = self.make_optimizers(self.model)
        self._split = split
        self._data = TrainingData(split, c.history_mode)
        # the user table's context, derived exactly as the engine derives it at request time
        self._context_rows = [
            self.features.context_row(ctx) for ctx in user_contexts(split.dataset.users)
        ]
        self.history, self.epoch_seconds = [], []
        return self

    def make_optimizers(self, model: torch.nn.Module) -> list[torch.optim.Optimizer]:
        """AdamW for the MLPs; ``sparse_optimizer`` for the embedding tables."""
        c = self.config
        if c.sparse_optimizer == "adam":
            return [
                torch.optim.AdamW(
                    model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay
                )
            ]
        tables = [p for n, p in model.named_parameters() if ".ebc." in f".{n}"]
        dense = [p for n, p in model.named_parameters() if ".ebc." not in f".{n}"]
        if c.sparse_optimizer == "adagrad":
            sparse: torch.optim.Optimizer = torch.optim.Adagrad(
                tables, lr=c.sparse_learning_rate, eps=1e-8
            )
        else:
            from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

            sparse = RowWiseAdagrad(tables, lr=c.sparse_learning_rate, eps=1e-8)
        return [
            torch.optim.AdamW(dense, lr=c.learning_rate, weight_decay=c.weight_decay),
            sparse,
        ]

    # ------------------------------------------------------------------ training
    def batches(self, rng: np.random.Generator) -> list[IntArray]:
        """This epoch's shuffled example rows (windows for ordered towers), cut into batches."""
        assert self._data is not None
        n = len(self._seq_data) if self._seq_data is not None else len(self._data)
        order = rng.permutation(n)
        bs = self.config.batch_size
        return [order[i : i + bs] for i in range(0, len(order), bs) if len(order[i : i + bs]) > 1]

    def encode_batch(
        self, rows: IntArray, rng: np.random.Generator
    ) -> tuple[Any, Any, torch.Tensor, Any, torch.Tensor | None]:
        """(user KJT, item KJT, item ids, negative KJT, negative ids) of example rows."""
        assert self._data is not None and self.features is not None and self.n_items
        c, data, feats = self.config, self._data, self.features
        users = data.users[rows]
        items = data.items[rows]
        hist = [data.history(int(r), c.history_length, c.history_dropout, rng) for r in rows]
        slots = users + 1 if c.use_user_id else np.zeros(len(users), dtype=np.int64)
        ctx = [self._context_of(int(u)) for u in users]
        user_kjt = feats.encode_users(slots, hist, ctx).to(self.device)
        item_kjt = feats.item_kjt(items).to(self.device)
        neg_kjt, neg_ids = None, None
        if c.uniform_negatives:
            negs = rng.integers(0, self.n_items, size=c.uniform_negatives)
            neg_kjt = feats.item_kjt(negs).to(self.device)
            neg_ids = torch.from_numpy(negs).to(self.device)
        return user_kjt, item_kjt, torch.from_numpy(items).to(self.device), neg_kjt, neg_ids

    def _context_of(self, user: int) -> list[int]:
        assert self._context_rows is not None
        return self._context_rows[user] if user < len(self._context_rows) else []

    @with_config_threads
    def train_epoch(self) -> float:
        """One pass over the training interactions; returns the mean loss."""
        if self._task is None or not self._optimizers or self._rng is None:
            raise RuntimeError("call prepare(split) before train_epoch()")
        self._task.train()
        start = time.perf_counter()
        losses = []
        batches = self.batches(self._rng)
        epoch = len(self.history) + 1
        bar = tqdm(
            batches, desc=f"two-tower epoch {epoch}", disable=not self.config.progress, leave=False
        )
        for rows in bar:
            if self._seq_task is not None:
                loss = self._sequence_loss(rows)
            else:
                loss = self._task(*self.encode_batch(rows, self._aug_rng))
            for opt in self._optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in self._optimizers:
                opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        self.epoch_seconds.append(time.perf_counter() - start)
        self.refresh_embeddings()
        return float(np.mean(losses)) if losses else float("nan")

    def _sequence_loss(self, rows: IntArray) -> torch.Tensor:
        """Loss of a batch of training windows (ordered towers)."""
        assert self._seq_data is not None and self._seq_task is not None
        assert self.features is not None
        data = self._seq_data
        windows = data.windows[rows]
        windows = windows[:, : max(1, int((windows >= 0).sum(axis=1).max()))]
        users = data.users[rows]
        slots = users + 1 if self.config.use_user_id else np.zeros(len(users), dtype=np.int64)
        ctx = [self._context_of(int(u)) for u in users]
        empty = [np.zeros(0, dtype=np.int64)] * len(rows)
        user_kjt = self.features.encode_users(slots, empty, ctx).to(self.device)
        self._seq_task.train()
        return self._seq_task(windows, user_kjt, self._aug_rng)

    @with_config_threads
    def validate(self) -> float:
        """Validation NDCG@10 (full ranking, training items masked)."""
        assert self._split is not None
        return evaluate(self.score, self._split, stage="valid", ks=(10,))["ndcg@10"]

    @with_config_threads
    def fit(self, split: Split, on_epoch: Callable[[int, float], None] | None = None) -> Self:
        """Train with early stopping on validation NDCG@10; keep the best epoch's weights.

        With ``baseline_floor`` (and a validation part) popularity is the epoch to beat: an
        epoch is kept only if its validation NDCG@10 exceeds popularity's; if none does, the
        component serves popularity (``popularity_fallback``), and a warning names any simple
        baseline the kept model is below on validation.

        Args:
            split: Trains on ``split.train``; ``split.valid`` drives early stopping.
            on_epoch: Called after each epoch with (epoch, validation NDCG@10); a tuning
                objective reports it and may stop the fit by raising (``optuna.TrialPruned``).
        """
        if self.config.scale_to_data:
            self.config = scaled_config(self.config, split)
            log.info("two-tower settings scaled to the log: %s", self.config)
        self.prepare(split)
        assert self.model is not None
        c = self.config
        best, best_state, bad = -1.0, None, 0
        has_valid = len(split.valid) > 0
        self.baselines_valid = {}
        self.popularity_fallback = False
        if has_valid and c.baseline_floor:
            self.baselines_valid = self._baselines_on_valid(split)
            best = self.baselines_valid["popularity"]
        for epoch in range(1, c.epochs + 1):
            loss = self.train_epoch()
            ndcg = self.validate() if has_valid else float("nan")
            self.history.append({"epoch": epoch, "loss": loss, "valid_ndcg@10": ndcg})
            log.info("two-tower epoch %d loss %.4f valid ndcg@10 %.4f", epoch, loss, ndcg)
            if on_epoch is not None:
                on_epoch(epoch, ndcg)
            if not has_valid or ndcg > best:
                best, bad, self.best_epoch = ndcg, 0, epoch
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                bad += 1
                if bad > c.patience and epoch >= c.min_epochs:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        elif self.baselines_valid:
            self.popularity_fallback = True
            self.best_epoch = 0
            log.warning(
                "two-tower: no epoch beat popularity on validation (NDCG@10 %.4f); serving "
                "popularity. Try scale_to_data=True or a smaller model for this log.",
                self.baselines_valid["popularity"],
            )
        self._warn_below_baselines(best)
        self.refresh_embeddings()
        self._optimizers = []
        self._task = None
        self._seq_task = None
        self._seq_data = None
        self._data = None
        self._context_rows = None
        return self

    def _baselines_on_valid(self, split: Split) -> dict[str, float]:
        """Validation NDCG@10 of popularity and (up to 10k items) EASE, the bar to clear."""
        from recsys.retrieval.baselines import EASE, Popularity

        assert self.n_items is not None
        popularity = Popularity().fit(split)
        self._popularity = popularity.counts.astype(np.float32)
        out = {"popularity": evaluate(popularity.score, split, stage="valid", ks=(10,))["ndcg@10"]}
        if self.n_items <= 10_000:
            ease = EASE().fit(split)
            out["ease"] = evaluate(ease.score, split, stage="valid", ks=(10,))["ndcg@10"]
        return out

    def _warn_below_baselines(self, best: float) -> None:
        if not self.baselines_valid or self.popularity_fallback:
            return
        name, value = max(self.baselines_valid.items(), key=lambda kv: kv[1])
        if best < value:
            log.warning(
                "two-tower ends below %s on validation (NDCG@10 %.4f < %.4f): on this log "
                "the simple baseline is the better choice (or try scale_to_data=True)",
                name,
                best,
                value,
            )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    @with_config_threads
    def refresh_embeddings(self) -> FloatArray:
        """Recompute every item's embedding and rebuild the FAISS index."""
        assert self.model is not None and self.features is not None
        self.model.eval()
        n = self.features.n_items
        chunks = []
        for start in range(0, n, 8192):
            items = np.arange(start, min(n, start + 8192))
            kjt = self.features.item_kjt(items).to(self.device)
            chunks.append(self.model.item_tower(kjt).cpu().numpy())
        self.item_embeddings = np.concatenate(chunks).astype(np.float32)
        self.index = ItemIndex(self.config.index).build(self.item_embeddings)
        self._frozen_user = None
        if not self.sequential and self.device.type == "cpu":
            self._frozen_user = FrozenTower.of(self.model.user_tower)  # type: ignore[arg-type]
        return self.item_embeddings

    def _query_kjt(self, queries: Sequence[Query]) -> Any:
        assert self.features is not None
        return self.features.encode_users(*self._query_inputs(queries)).to(self.device)

    def _query_inputs(
        self, queries: Sequence[Query]
    ) -> tuple[IntArray, list[IntArray], list[list[int]]]:
        """User slots (index + 1, 0 = unknown or ids off), history bags, context rows."""
        assert self.features is not None
        slots = np.asarray(
            [
                q.user + 1
                if self.config.use_user_id
                and q.user is not None
                and 0 <= q.user < self.features.n_users
                else 0
                for q in queries
            ],
            dtype=np.int64,
        )
        hist = self.features.histories_of(queries)
        ctx = [self.features.context_row(q.context) for q in queries]
        return slots, hist, ctx

    @with_config_threads
    def user_embeddings(self, queries: Sequence[Query]) -> FloatArray:
        """(B, D) unit user vectors of the queries (from their current history/context)."""
        return self._encode(queries)

    @torch.inference_mode()
    def _encode(self, queries: Sequence[Query]) -> FloatArray:
        """The user tower on the queries (the request path: no thread or seed changes)."""
        self._require_fitted()
        assert self.model is not None
        if not queries:
            return np.zeros((0, self.config.embedding_size), dtype=np.float32)
        if self.sequential:
            return self._encode_sequences(queries)
        if self._frozen_user is not None:  # CPU: the same tower without TorchRec's dispatch
            assert self.features is not None
            return self._frozen_user(self.features.user_parts(*self._query_inputs(queries)))
        return self.model.user_tower(self._query_kjt(queries)).cpu().numpy().astype(np.float32)

    def _encode_sequences(self, queries: Sequence[Query]) -> FloatArray:
        """Ordered tower: the last ``history_length`` items' vectors → the user after them.

        The history items' vectors are the served item vectors (the item tower's output,
        recomputed with every :meth:`refresh_embeddings`), so a request runs the encoder only.
        """
        assert self.model is not None and self.features is not None
        assert self.item_embeddings is not None
        self.model.eval()
        padded, lengths = pad_histories(self.features.histories_of(queries))
        vectors = torch.from_numpy(self.item_embeddings).to(self.device)
        history = gather_vectors(vectors, torch.from_numpy(padded).to(self.device))
        user = self.model.user_tower.last(  # type: ignore[operator]
            self._query_kjt(queries), history, torch.from_numpy(lengths).to(self.device)
        )
        return user.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def attention(self, query: Query) -> FloatArray:
        """Last-block attention of a transformer tower over one query's history.

        Returns:
            (L + 1, L + 1): row ``t`` is how the user vector after ``t`` clicks attends to the
            begin vector (column 0) and to each of the last ``L`` clicks (columns 1..L).
        """
        if self.config.user_encoder != "transformer":
            raise ValueError("attention: needs user_encoder='transformer'")
        assert self.model is not None and self.features is not None
        assert self.item_embeddings is not None
        self.model.eval()
        history = self.features.histories_of([query])[0]
        vectors = torch.from_numpy(self.item_embeddings[history][None]).to(self.device)
        weights = self.model.user_tower.attention(vectors)  # type: ignore[operator]
        return weights[0].cpu().numpy().astype(np.float32)

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """(B, n_items) cosine of each query's user vector with every item vector.

        Training-time validation uses it; serving and the benchmarks go through
        :meth:`retrieve` (the FAISS index), the path the engine runs.
        """
        n_items = self._require_fitted()
        if self.popularity_fallback and self._popularity is not None:
            return np.broadcast_to(self._popularity, (len(queries), n_items)).copy()
        assert self.item_embeddings is not None
        return self.user_embeddings(queries) @ self.item_embeddings.T

    def retrieve(
        self, queries: Sequence[Query], n: int, exclude_seen: bool = True
    ) -> list[ItemList]:
        """Top-``n`` per query through the FAISS index, excluding ``exclude`` and the history."""
        self._require_fitted()
        assert self.index is not None
        excludes = [
            np.concatenate([q.exclude, q.history]) if exclude_seen else q.exclude for q in queries
        ]
        if self.popularity_fallback:  # no epoch beat popularity on validation
            scores = self.score(queries)
            return [
                ItemList.from_scores(row, n, excl)
                for row, excl in zip(scores, excludes, strict=True)
            ]
        return self.index.search(self._encode(queries), n, excludes)

    def bench_info(self) -> dict[str, float]:
        """Extra numbers for the benchmark table."""
        secs = self.epoch_seconds
        info = {
            "epochs": float(len(secs)),
            "best_epoch": float(self.best_epoch),
            "seconds_per_epoch": float(np.mean(secs)) if secs else float("nan"),
            "popularity_fallback": float(self.popularity_fallback),
        }
        info.update({f"valid_ndcg@10_{k}": v for k, v in self.baselines_valid.items()})
        if self.history:
            kept = [h["valid_ndcg@10"] for h in self.history if h["epoch"] == self.best_epoch]
            info["valid_ndcg@10"] = float(kept[0]) if kept else float("nan")
        return info

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        assert self.model is not None and self.features is not None
        state = {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        state["features_json"] = np.frombuffer(self.features.to_json().encode(), dtype=np.uint8)
        state["history_json"] = np.frombuffer(
            json.dumps(
                {
                    "history": self.history,
                    "epoch_seconds": self.epoch_seconds,
                    "best_epoch": self.best_epoch,
                    "baselines_valid": self.baselines_valid,
                    "popularity_fallback": self.popularity_fallback,
                }
            ).encode(),
            dtype=np.uint8,
        )
        if self._popularity is not None:
            state["popularity"] = self._popularity
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.features = TwoTowerFeatures.from_json(bytes(state["features_json"]).decode())
        self.model = self.build_model(self.features)
        weights = {
            k[len("model.") :]: torch.from_numpy(np.array(v))
            for k, v in state.items()
            if k.startswith("model.")
        }
        self.model.load_state_dict(weights)
        if "history_json" in state:
            meta = json.loads(bytes(state["history_json"]).decode())
            self.history = meta["history"]
            self.epoch_seconds = meta["epoch_seconds"]
            self.best_epoch = meta["best_epoch"]
            self.baselines_valid = meta.get("baselines_valid", {})
            self.popularity_fallback = bool(meta.get("popularity_fallback", False))
        self._popularity = state.get("popularity")
        self.refresh_embeddings()

    def save(self, path: str | Path) -> Path:
        """Write config, weights, id mappings and vocabularies to the directory ``path``.

        ``component.json`` (config), ``state.npz`` (weights + vocabularies, all that
        :meth:`load` reads) and a readable copy of the vocabularies in ``features.json``.
        """
        path = super().save(path)
        assert self.features is not None
        (path / "features.json").write_text(json.dumps(self.features.to_dict(), indent=1))
        return path
