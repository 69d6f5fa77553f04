"""Ranking component and the two-stage recommender (retrieve ~100 → rank them).

The ranker is trained on the retriever's candidates for the *validation* interactions: for each
validation user the profile is the training history, the candidates are the retriever's top-N
unseen items, and the positives are that user's validation items. Test interactions are never
read. Training uses a listwise softmax over each user's candidates (one logit per candidate);
a fraction of the validation users is held out for early stopping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from recsys.config import ComponentConfig
from recsys.data.dataset import interaction_matrix
from recsys.data.splits import Split
from recsys.errors import NotFittedError
from recsys.evaluation import metrics
from recsys.evaluation.sessions import PredictionEvents
from recsys.ranking.features import CandidateFeatureConfig, CandidateFeaturizer
from recsys.ranking.model import DCNRanker, FusedDCNBag
from recsys.retrieval.two_tower.runtime import with_config_threads
from recsys.types import FloatArray, IntArray, ItemList, Query

log = logging.getLogger(__name__)


class CandidateSource(Protocol):
    """What the ranker needs from a retriever: its serving path and its identity."""

    n_items: int | None
    model_id: str | None

    def retrieve(
        self, queries: Sequence[Query], n: int, exclude_seen: bool = True
    ) -> list[ItemList]:
        """Top-``n`` candidates per query (history excluded unless ``exclude_seen=False``)."""


class RankerConfig(ComponentConfig):
    """Hyper-parameters of the ranker (chosen on validation users, never on test)."""

    candidates: int = Field(100, ge=1, le=100_000, description="Candidates ranked per query.")
    features: CandidateFeatureConfig = Field(default_factory=CandidateFeatureConfig)
    use_id_embeddings: bool = Field(False, description="Learn user/item id embeddings.")
    embedding_dim: int = Field(8, ge=1, le=512)
    cross_layers: int = Field(2, ge=0, le=16)
    low_rank: int = Field(8, ge=1, le=256)
    hidden: tuple[int, ...] = Field((64, 32), description="MLP widths after the cross net.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    loss: Literal["listwise", "bce"] = Field("listwise")
    epochs: int = Field(60, ge=1, le=10_000)
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, le=100_000, description="Candidate lists per step.")
    folds: int = Field(
        5,
        ge=1,
        le=100,
        description=(
            "K-fold bagging over validation users: model k trains on the other folds and "
            "early-stops on fold k; the ranker averages the K models. The out-of-fold NDCG is "
            "a clean validation estimate. 1 = one model trained for `epochs`, no early stop."
        ),
    )
    patience: int = Field(8, ge=0, le=1000)
    seed: int = Field(7, ge=0)
    device: str = Field("cpu")
    num_threads: int | None = Field(1, ge=1, le=1024, description="torch CPU threads.")
    progress: bool = Field(False)


def ndcg_at(ranked_hits: np.ndarray, n_relevant: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k of (B, ≥k) hit matrices over rows with at least one positive."""
    n_relevant = np.asarray(n_relevant)
    has_positive = n_relevant > 0
    if not has_positive.any():
        return 0.0
    values = metrics.ndcg(np.asarray(ranked_hits, dtype=bool), n_relevant, k)
    return float(values[has_positive].mean())


class Ranker:
    """Scores each retrieved candidate; ``ranker(query, items) -> ItemList`` re-sorted."""

    def __init__(self, config: RankerConfig | None = None, **overrides: Any) -> None:
        base = config or RankerConfig()
        self.config = RankerConfig.model_validate({**base.model_dump(), **overrides})
        self.featurizer: CandidateFeaturizer | None = None
        self.models: list[DCNRanker] = []
        self.n_users = 0
        self.n_items = 0
        self.history: list[dict[str, float]] = []
        self.best_epoch = 0
        self.train_seconds = 0.0
        # no validation interactions to learn from: keep the retrieval order
        self.passthrough = False
        # what the ranker was trained against: the engine refuses other parts
        self.retriever_id: str | None = None
        self.item_digest: str | None = None
        self._fused: FusedDCNBag | None = None

    # ------------------------------------------------------------------ construction
    @property
    def model(self) -> DCNRanker | None:
        """The first bagged model (``None`` before training)."""
        return self.models[0] if self.models else None

    def _build(self, index: int = 0, seed: bool = True) -> DCNRanker:
        """A fresh model; ``seed`` seeds its initial weights (training, never loading)."""
        c = self.config
        if seed:
            torch.manual_seed(c.seed + 1000 * index)
        return DCNRanker(
            n_dense=len(self.featurizer.names) if self.featurizer else 0,
            n_users=self.n_users + 1 if c.use_id_embeddings else 0,
            n_items=self.n_items if c.use_id_embeddings else 0,
            embedding_dim=c.embedding_dim,
            cross_layers=c.cross_layers,
            low_rank=c.low_rank,
            hidden=tuple(c.hidden),
            dropout=c.dropout,
        ).to(torch.device(c.device))

    def training_lists(
        self,
        split: Split,
        retriever: CandidateSource,
        events: PredictionEvents | None = None,
        keep_history: bool = False,
    ) -> tuple[list[Query], IntArray, FloatArray, np.ndarray, np.ndarray]:
        """Training (queries, candidates, retrieval scores, labels, n_relevant).

        By default the validation users: the profile is the training history, the positives
        the user's validation items. With ``events`` (next-event protocols, e.g. the
        sessions of a held-out day), one list per event: its prefix is the query, its next
        click the one positive, and ``keep_history`` keeps the prefix's items among the
        candidates (the session protocol serves them).

        Candidates come from ``retriever.retrieve`` — the path the engine serves — so the
        ranker learns from exactly the lists it will rank. Short lists (a small catalogue
        minus the history) are padded with ``-1``.
        """
        from recsys.evaluation.protocol import build_queries

        if events is not None:
            queries = list(events.queries)
        else:
            users = split.target_users("valid")
            queries = build_queries(split, users)
        width = min(self.config.candidates, split.dataset.n_items)
        cand = np.full((len(queries), width), -1, dtype=np.int64)
        score = np.zeros((len(queries), width), dtype=np.float32)
        for start in range(0, len(queries), 256):
            batch = queries[start : start + 256]
            found_lists = (
                retriever.retrieve(batch, width, exclude_seen=False)
                if keep_history
                else retriever.retrieve(batch, width)
            )
            for row, found in enumerate(found_lists, start=start):
                cand[row, : len(found)] = found.items[:width]
                score[row, : len(found)] = found.scores[:width]
        if events is not None:
            labels = (cand == events.targets[:, None]) & (cand >= 0)
            return queries, cand, score, labels, np.ones(len(queries), dtype=np.int64)
        valid = interaction_matrix(split.valid, split.dataset.n_users, split.dataset.n_items)
        valid = valid[users]
        labels = (
            np.asarray(valid[np.arange(len(users))[:, None], np.maximum(cand, 0)].todense()) > 0
        ) & (cand >= 0)
        n_rel = np.diff(valid.indptr)
        return queries, cand, score, labels, n_rel

    @with_config_threads
    def fit(
        self,
        split: Split,
        retriever: CandidateSource,
        item_vectors: FloatArray | None = None,
        on_fold: Callable[[int, float], None] | None = None,
        events: PredictionEvents | None = None,
        keep_history: bool = False,
    ) -> Self:
        """Fit features on train and the model on the retriever's validation candidates.

        Args:
            split: Train fits the features; validation interactions are the labels.
            retriever: Gives the candidate lists (its serving path).
            item_vectors: Item embeddings for the session-similarity features.
            on_fold: Called after each bagging fold with (fold number from 1, out-of-fold
                NDCG@10 of the folds so far); a tuning objective reports it and may stop
                the fit by raising (e.g. ``optuna.TrialPruned``).
            events: Prediction events whose lists replace the validation users' (next-event
                protocols; :meth:`training_lists`).
            keep_history: Keep the prefix's items among the candidates (with ``events``).
        """
        start_time = time.perf_counter()
        c = self.config
        self.n_users, self.n_items = split.dataset.n_users, split.dataset.n_items
        self.retriever_id = getattr(retriever, "model_id", None)
        self._fused = None
        self.item_digest = split.dataset.item_index.digest
        self.featurizer = CandidateFeaturizer(c.features).fit(split, item_vectors)
        queries, cand, score, labels, n_rel = self.training_lists(
            split, retriever, events, keep_history
        )
        n_feat = len(self.featurizer.names)
        dense = np.concatenate(
            [np.zeros((0, cand.shape[1], n_feat), dtype=np.float32)]
            + [
                self.featurizer.transform(
                    queries[s : s + 256], np.maximum(cand[s : s + 256], 0), score[s : s + 256]
                )
                for s in range(0, len(queries), 256)
            ]
        )
        slots = np.asarray([0 if q.user is None else q.user + 1 for q in queries], dtype=np.int64)
        self.candidate_recall = float(labels.sum() / max(1, n_rel.sum()))
        self.passthrough = int(labels.sum()) == 0
        if self.passthrough:
            log.warning(
                "ranker: no validation positives among the candidates; keeping the retrieval order"
            )
            self.models = [self._build()]
            self.train_seconds = time.perf_counter() - start_time
            return self
        rng = np.random.default_rng(c.seed)
        order = rng.permutation(len(queries))
        k = min(c.folds, len(queries))
        self.models = []
        if k < 2:
            model = self._build(0)
            self._train(model, dense, cand, slots, labels, n_rel, order, None, c.epochs)
            self.models.append(model)
        else:
            oob = np.zeros(labels.shape, dtype=np.float32)
            epochs = []
            folds = np.array_split(order, k)
            for fold, hold in enumerate(folds):
                fit_rows = np.setdiff1d(order, hold)
                model = self._build(fold)
                best_epoch = self._train(
                    model, dense, cand, slots, labels, n_rel, fit_rows, hold, c.epochs
                )
                self.models.append(model)
                epochs.append(best_epoch)
                oob[hold] = self._logits(dense[hold], slots[hold], cand[hold], [model])
                if on_fold is not None:
                    done = np.concatenate(folds[: fold + 1])
                    ranked = np.argsort(-oob[done], axis=1, kind="stable")
                    on_fold(
                        fold + 1,
                        ndcg_at(np.take_along_axis(labels[done], ranked, axis=1), n_rel[done]),
                    )
            order_oob = np.argsort(-oob, axis=1, kind="stable")
            self.holdout_ndcg = ndcg_at(np.take_along_axis(labels, order_oob, axis=1), n_rel)
            # each validation user's out-of-fold top 10 (item indices, -1 = padding): what a
            # tuning objective scores beyond accuracy (diversity, coverage)
            self.holdout_top = np.take_along_axis(cand, order_oob[:, :10], axis=1)
            # -1 marks a query without a user (an anonymous session's prefix)
            self.holdout_users = np.asarray(
                [-1 if q.user is None else q.user for q in queries], dtype=np.int64
            )
            self.holdout_retrieval_ndcg = ndcg_at(labels, n_rel)
            self.best_epoch = int(np.median(epochs))
            log.info(
                "ranker out-of-fold ndcg@10 %.4f (retrieval order %.4f), epochs %s",
                self.holdout_ndcg,
                self.holdout_retrieval_ndcg,
                epochs,
            )
        self.train_seconds = time.perf_counter() - start_time
        return self

    def refresh(
        self, split: Split, retriever: CandidateSource, item_vectors: FloatArray | None = None
    ) -> Self:
        """Serve the trained model over a newer training window and a retrained retriever.

        The ranker was trained on the candidates of a retriever fitted *before* the events it
        learned from (a held-out window); serving, it ranks the candidates of the same
        retriever configuration retrained on all the data. This refits the featurizer's
        statistics on ``split.train`` (counts, co-occurrences: statistics, not weights) and
        records the new retriever, keeping the model's weights.

        Raises:
            ValueError: The ranker learned id embeddings (tied to the old index sizes).
        """
        if self.config.use_id_embeddings:
            raise ValueError("refresh: a ranker with id embeddings must be retrained")
        self.featurizer = CandidateFeaturizer(self.config.features).fit(split, item_vectors)
        self.n_users, self.n_items = split.dataset.n_users, split.dataset.n_items
        self.retriever_id = getattr(retriever, "model_id", None)
        self.item_digest = split.dataset.item_index.digest
        return self

    def _train(
        self,
        model: DCNRanker,
        dense: FloatArray,
        cand: IntArray,
        slots: IntArray,
        labels: np.ndarray,
        n_rel: np.ndarray,
        rows: IntArray,
        hold: IntArray | None,
        epochs: int,
    ) -> int:
        """Train ``model`` on ``rows``; with ``hold``, early-stop on it and keep the best."""
        c = self.config
        device = torch.device(c.device)
        rows = rows[labels[rows].sum(axis=1) > 0]  # lists without positives teach nothing
        opt = torch.optim.AdamW(model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
        rng = np.random.default_rng(c.seed + 1)
        best, best_state, best_epoch, bad = -1.0, None, epochs, 0
        dense_t = torch.from_numpy(dense)
        labels_t = torch.from_numpy(labels.astype(np.float32))
        padded_t = torch.from_numpy(cand < 0)
        for epoch in tqdm(range(1, epochs + 1), desc="ranker", disable=not c.progress):
            model.train()
            perm = rng.permutation(rows)
            for s in range(0, len(perm), c.batch_size):
                idx = perm[s : s + c.batch_size]
                if len(idx) < 2:
                    continue
                logits = model(dense_t[idx].to(device), self._ids(slots[idx], cand[idx]))
                y = labels_t[idx].to(device)
                padded = padded_t[idx].to(device)
                if c.loss == "listwise":
                    logp = torch.log_softmax(logits.masked_fill(padded, -1e9), dim=1)
                    loss = (-(logp * y).sum(1) / y.sum(1).clamp(min=1.0)).mean()
                else:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, y, weight=(~padded).float()
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if hold is None:
                continue
            logits_h = self._logits(dense[hold], slots[hold], cand[hold], [model])
            order = np.argsort(-logits_h, axis=1, kind="stable")
            ndcg = ndcg_at(np.take_along_axis(labels[hold], order, axis=1), n_rel[hold])
            self.history.append({"epoch": epoch, "holdout_ndcg@10": ndcg})
            if ndcg > best:
                best, best_epoch, bad = ndcg, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad > c.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        return best_epoch

    def _ids(self, slots: IntArray, cand: IntArray) -> Any:
        if not self.config.use_id_embeddings:
            return None
        return DCNRanker.id_features(
            torch.from_numpy(slots), torch.from_numpy(np.maximum(cand, 0))
        ).to(torch.device(self.config.device))

    @torch.inference_mode()
    def _logits(
        self,
        dense: FloatArray,
        slots: IntArray,
        cand: IntArray,
        models: Sequence[DCNRanker] | None = None,
    ) -> FloatArray:
        """(B, C) logits averaged over ``models`` (default: every bagged model).

        Padding (``cand < 0``) gets ``-inf``, so it sorts last.
        """
        device = torch.device(self.config.device)
        fused = self._fused_bag() if models is None else None
        if fused is not None and device.type == "cpu":
            logits = fused.numpy_forward(np.asarray(dense, dtype=np.float32))
            return np.where(np.asarray(cand) < 0, -np.inf, logits).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(dense)).to(device)
        if fused is not None:
            total = fused(x).cpu()
        else:
            chosen = list(models) if models is not None else self.models
            ids = self._ids(slots, cand)
            total = torch.zeros(dense.shape[:2])
            for model in chosen:
                model.eval()
                total += model(x, ids).cpu()
            total /= max(1, len(chosen))
        logits = total.numpy().astype(np.float32)
        return np.where(np.asarray(cand) < 0, -np.inf, logits).astype(np.float32)

    def _fused_bag(self) -> FusedDCNBag | None:
        """The bag as one batched module (built once; ``None`` with id embeddings)."""
        if self._fused is None and self.models and not self.config.use_id_embeddings:
            for model in self.models:
                model.eval()
            self._fused = FusedDCNBag(self.models).to(torch.device(self.config.device))
        return self._fused

    # ------------------------------------------------------------------ inference
    def score_candidates(
        self, queries: Sequence[Query], candidates: IntArray, retrieval_scores: FloatArray
    ) -> FloatArray:
        """(B, C) ranker logits of each query's candidates (the request path)."""
        if self.model is None or self.featurizer is None:
            raise NotFittedError("Ranker is not trained: call fit() or load()")
        if self.passthrough:
            return np.asarray(retrieval_scores, dtype=np.float32)
        cand = np.asarray(candidates, dtype=np.int64)
        dense = self.featurizer.transform(queries, np.maximum(cand, 0), retrieval_scores)
        slots = np.asarray(
            [
                q.user + 1 if q.user is not None and 0 <= q.user < self.n_users else 0
                for q in queries
            ],
            dtype=np.int64,
        )
        return self._logits(dense, slots, cand)

    def __call__(self, query: Query, items: ItemList) -> ItemList:
        """Re-score and re-sort retrieved ``items`` (their scores are the retrieval scores)."""
        if len(items) == 0:
            return items
        logits = self.score_candidates([query], items.items[None, :], items.scores[None, :])[0]
        order = np.lexsort((np.arange(len(logits)), -logits))
        return ItemList(items.items[order], logits[order])

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the trained ranker (with its config)."""
        if not self.models or self.featurizer is None:
            raise NotFittedError("Ranker is not trained: call fit() or load()")
        out = {f"feat.{k}": np.asarray(v) for k, v in self.featurizer.state().items()}
        for i, model in enumerate(self.models):
            out.update(
                {f"model{i}.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
            )
        out["meta_json"] = np.frombuffer(
            json.dumps(
                {
                    "n_users": self.n_users,
                    "n_items": self.n_items,
                    "best_epoch": self.best_epoch,
                    "passthrough": self.passthrough,
                    "n_models": len(self.models),
                    "history": self.history,
                    "retriever_id": self.retriever_id,
                    "item_digest": self.item_digest,
                    "config": self.config.model_dump(mode="json"),
                }
            ).encode(),
            dtype=np.uint8,
        )
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Ranker:
        """Inverse of :meth:`state`."""
        meta = json.loads(bytes(state["meta_json"]).decode())
        out = cls(RankerConfig.model_validate(meta["config"]))
        out.n_users, out.n_items = int(meta["n_users"]), int(meta["n_items"])
        out.best_epoch, out.history = int(meta["best_epoch"]), meta["history"]
        out.passthrough = bool(meta.get("passthrough", False))
        out.retriever_id = meta.get("retriever_id")
        out.item_digest = meta.get("item_digest")
        out.featurizer = CandidateFeaturizer.from_state(
            out.config.features,
            {k[len("feat.") :]: v for k, v in state.items() if k.startswith("feat.")},
        )
        out.models = []
        for i in range(int(meta.get("n_models", 1))):
            # the initial weights are overwritten: do not draw them from the global RNG
            with torch.random.fork_rng(devices=[]):
                model = out._build(i, seed=False)
            prefix = f"model{i}."
            model.load_state_dict(
                {
                    k[len(prefix) :]: torch.from_numpy(np.array(v))
                    for k, v in state.items()
                    if k.startswith(prefix)
                }
            )
            out.models.append(model)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the ranker (config inside) to ``path/ranker.npz``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "ranker.npz", **self.state())
        (path / "ranker.json").write_text(self.config.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Ranker:
        """Read a ranker written by :meth:`save` (never retrains)."""
        with np.load(Path(path) / "ranker.npz", allow_pickle=False) as state:
            return cls.from_state({k: state[k] for k in state.files})
