"""Per-candidate features of the ranking stage, computed from training data only.

For a query (user, history, context) and its retrieved candidates (items + retrieval scores)
:class:`CandidateFeaturizer` builds a dense (B, C, F) tensor. Every statistic is fitted on
``split.train``: the ranker is trained on validation interactions and evaluated on test ones,
so nothing it sees is computed from a held-out event.

Features (``FEATURE_NAMES``):

* retrieval: the retriever's score, its z-score within the list, log rank in the list;
* item–item: an EASE score (closed-form item autoencoder fitted on train) of the candidate
  from the history, its z-score and log rank in the list; cosine item-kNN score;
* item: log popularity, log recency-weighted popularity (half-life), days since the item was
  last seen in train (recency), release year;
* user × item: genre affinity (cosine of the history's genre profile with the item's genres),
  popularity gap (item log-pop minus the history's mean log-pop), history length;
* session / recent items: genre overlap with the last ``session_length`` items, max and mean
  embedding cosine with them (two-tower item vectors when given).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.retrieval.base import history_matrix
from recsys.retrieval.baselines import cosine_knn, ease_weights, item_gram
from recsys.types import FloatArray, IntArray, Query

FEATURE_NAMES: tuple[str, ...] = (
    "retrieval_score",
    "retrieval_z",
    "retrieval_log_rank",
    "ease_score",
    "ease_z",
    "ease_log_rank",
    "knn_score",
    "knn_z",
    "item_log_pop",
    "item_log_recent_pop",
    "item_days_since_seen",
    "item_year",
    "genre_affinity",
    "pop_gap",
    "user_log_history",
    "session_genre_overlap",
    "session_max_cos",
    "session_mean_cos",
    "userknn_score",
    "userknn_z",
    "rp3_score",
    "rp3_z",
    "time_affinity",
    "time_affinity_z",
    "context_lift",
    "seq_score",
    "seq_z",
)


class CandidateFeatureConfig(ComponentConfig):
    """Settings of the candidate features."""

    ease_l2: float = Field(250.0, gt=0.0, le=1e7, description="EASE λ of the item–item score.")
    max_ease_items: int = Field(
        25_000, ge=0, description="Skip the EASE feature above this many items (n² memory)."
    )
    knn_neighbors: int = Field(100, ge=1, le=100_000)
    recency_half_life_days: float = Field(30.0, gt=0.0)
    session_length: int = Field(5, ge=1, le=1000, description="Recent items of the session.")
    user_neighbors: int = Field(50, ge=1, le=100_000, description="User-kNN neighbours.")
    rp3_beta: float = Field(0.5, ge=0.0, le=2.0, description="RP3β popularity penalty.")
    time_bin_days: float = Field(7.0, gt=0.0, description="Width of the time-affinity bins.")
    seq_window: int = Field(3, ge=1, le=1000, description="Sequence co-occurrence window.")
    time_smooth_bins: float = Field(2.0, ge=0.0, description="Gaussian smoothing (bins).")


def _zscore(x: FloatArray) -> FloatArray:
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return (x - mean) / (std + 1e-6)


def _log_rank(x: FloatArray) -> FloatArray:
    order = np.argsort(-x, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(x.shape[1])[None, :].repeat(len(x), 0), axis=1)
    return np.log1p(ranks).astype(np.float32)


class CandidateFeaturizer:
    """Fitted statistics → (B, C, F) dense features of candidate lists."""

    def __init__(self, config: CandidateFeatureConfig | None = None) -> None:
        self.config = config or CandidateFeatureConfig()
        self.n_items = 0
        self.ease: FloatArray | None = None
        self.knn: sp.csr_matrix | None = None
        self.log_pop: FloatArray | None = None
        self.log_recent_pop: FloatArray | None = None
        self.days_since_seen: FloatArray | None = None
        self.year: FloatArray | None = None
        self.genres: sp.csr_matrix | None = None
        self.item_vectors: FloatArray | None = None
        self.user_rows: sp.csr_matrix | None = None
        self.user_matrix: sp.csr_matrix | None = None
        self.seq: sp.csr_matrix | None = None
        self.rp3: FloatArray | None = None
        self.item_time: FloatArray | None = None
        self.user_time: FloatArray | None = None
        self.time_origin = 0.0
        self.n_time_bins = 1
        self.context_lift: dict[str, dict[str, np.ndarray]] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order."""
        return FEATURE_NAMES

    def fit(self, split: Split, item_vectors: FloatArray | None = None) -> CandidateFeaturizer:
        """Fit every statistic on ``split.train`` (and item metadata)."""
        c = self.config
        data = split.dataset
        n = self.n_items = data.n_items
        matrix = split.train_matrix()
        gram = item_gram(matrix)
        if 0 < n <= c.max_ease_items:
            self.ease = ease_weights(gram, c.ease_l2)
        counts = np.diag(gram).copy()
        self.knn = cosine_knn(gram, c.knn_neighbors)
        del gram
        train = split.train
        ts = train["timestamp"].to_numpy(np.float64)
        items = train["item"].to_numpy(np.int64)
        t_end = float(ts.max()) if len(ts) else 0.0
        self.log_pop = np.log1p(counts).astype(np.float32)
        decay = 0.5 ** ((t_end - ts) / 86400.0 / c.recency_half_life_days)
        self.log_recent_pop = np.log1p(np.bincount(items, weights=decay, minlength=n)).astype(
            np.float32
        )
        last = np.full(n, -np.inf)
        np.maximum.at(last, items, ts)
        days = np.where(np.isfinite(last), (t_end - last) / 86400.0, 3650.0)
        self.days_since_seen = np.log1p(np.maximum(days, 0.0)).astype(np.float32)
        years = data.items["year"].to_numpy(np.float64)
        fill = np.nanmedian(years) if np.isfinite(years).any() else 0.0
        years = np.where(np.isfinite(years), years, fill)
        self.year = ((years - fill) / 10.0).astype(np.float32)
        genres = data.genre_matrix().astype(np.float32)
        self.genres = sp.csr_matrix(genres)
        self.item_vectors = None if item_vectors is None else np.asarray(item_vectors, np.float32)
        # user-kNN: the training matrix, rows L2-normalised
        x = matrix.astype(np.float32)
        row_norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        self.user_rows = sp.csr_matrix(sp.diags(1.0 / np.maximum(row_norm, 1e-9)) @ x)
        self.user_matrix = sp.csr_matrix(x)
        # sequential co-occurrence: items consumed within seq_window steps of each other
        ordered = train.sort_values(["user", "timestamp"], kind="stable")
        seq_items = ordered["item"].to_numpy(np.int64)
        seq_users = ordered["user"].to_numpy(np.int64)
        src, dst = [], []
        for d in range(1, c.seq_window + 1):
            same = seq_users[d:] == seq_users[:-d]
            src.append(seq_items[:-d][same])
            dst.append(seq_items[d:][same])
        src_a, dst_a = np.concatenate(src), np.concatenate(dst)
        co = sp.csr_matrix((np.ones(len(src_a), np.float32), (src_a, dst_a)), shape=(n, n))
        co = co + co.T
        inv = sp.diags((1.0 / np.sqrt(counts + 1.0)).astype(np.float32))
        self.seq = sp.csr_matrix(inv @ co @ inv)
        # RP3β: two random-walk steps item → user → item, popularity-penalised
        p_ui = sp.diags(1.0 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)) @ x
        p_iu = sp.diags(1.0 / np.maximum(counts, 1.0)) @ x.T
        w = np.asarray((p_iu @ p_ui).todense(), dtype=np.float32)
        w /= np.power(np.maximum(counts, 1.0), c.rp3_beta).astype(np.float32)[None, :]
        np.fill_diagonal(w, 0.0)
        self.rp3 = w
        # time affinity: how much each item was consumed when the user was active
        t0 = float(ts.min()) if len(ts) else 0.0
        bins = ((ts - t0) / 86400.0 / c.time_bin_days).astype(np.int64)
        n_bins = int(bins.max()) + 1 if len(bins) else 1
        item_time = np.zeros((n, n_bins), dtype=np.float64)
        np.add.at(item_time, (items, bins), 1.0)
        if c.time_smooth_bins > 0:
            from scipy.ndimage import gaussian_filter1d

            item_time = gaussian_filter1d(item_time, c.time_smooth_bins, axis=1, mode="constant")
        item_time /= item_time.sum(axis=0, keepdims=True) + 1e-9  # share of each bin's activity
        users = train["user"].to_numpy(np.int64)
        user_time = np.zeros((data.n_users, n_bins), dtype=np.float64)
        np.add.at(user_time, (users, bins), 1.0)
        user_time /= user_time.sum(axis=1, keepdims=True) + 1e-9
        self.item_time = item_time.astype(np.float32)
        self.user_time = user_time.astype(np.float32)
        self.time_origin, self.n_time_bins = t0, n_bins
        # context lift: log p(item | context value) / p(item), from training users
        self.context_lift: dict[str, dict[str, np.ndarray]] = {}
        if len(data.users):
            from recsys.retrieval.two_tower.features import age_band

            base = (counts + 1.0) / (counts.sum() + n)
            for column in data.users.columns:
                if column in ("zip", "zip_code"):
                    continue
                raw = data.users[column]
                name = "age_band" if column == "age" else str(column)
                values = np.asarray(
                    [age_band(v) if column == "age" else str(v) for v in raw], dtype=object
                )
                distinct = sorted(set(values))
                if not 1 < len(distinct) <= 200:
                    continue
                lifts = {}
                user_value = values[users]
                for value in distinct:
                    sel = items[user_value == value]
                    cnt = np.bincount(sel, minlength=n).astype(np.float64)
                    p = (cnt + 1.0) / (cnt.sum() + n)
                    lifts[value] = np.log(p / base).astype(np.float32)
                self.context_lift[name] = lifts
        return self

    def transform(
        self, queries: Sequence[Query], candidates: IntArray, retrieval_scores: FloatArray
    ) -> FloatArray:
        """Dense features (B, C, F) of each query's candidates.

        Args:
            queries: B queries (their histories are the user profile).
            candidates: (B, C) item indices.
            retrieval_scores: (B, C) the retriever's scores of those candidates.
        """
        assert self.log_pop is not None and self.genres is not None and self.knn is not None
        cand = np.asarray(candidates, dtype=np.int64)
        ret = np.asarray(retrieval_scores, dtype=np.float32)
        b, c = cand.shape
        rows = np.arange(b)[:, None]
        hist = history_matrix(queries, self.n_items)  # (B, n) binary
        out = np.zeros((b, c, len(FEATURE_NAMES)), dtype=np.float32)
        ret = np.where(np.isfinite(ret), ret, 0.0).astype(np.float32)
        out[..., 0] = ret
        out[..., 1] = _zscore(ret)
        out[..., 2] = _log_rank(ret)
        if self.ease is not None:
            ease = np.asarray(hist @ self.ease)[rows, cand]
            out[..., 3] = ease
            out[..., 4] = _zscore(ease)
            out[..., 5] = _log_rank(ease)
        knn = np.asarray((hist @ self.knn).todense())[rows, cand]
        n_hist = np.asarray(hist.sum(axis=1)).ravel().astype(np.float32)
        out[..., 6] = knn / np.sqrt(np.maximum(n_hist, 1.0))[:, None]
        out[..., 7] = _zscore(knn)
        out[..., 8] = self.log_pop[cand]
        out[..., 9] = self.log_recent_pop[cand]
        out[..., 10] = self.days_since_seen[cand]
        out[..., 11] = self.year[cand]
        profile = np.asarray((hist @ self.genres).todense())  # (B, G)
        profile /= np.linalg.norm(profile, axis=1, keepdims=True) + 1e-9
        item_g = self.genres.toarray()
        item_g /= np.linalg.norm(item_g, axis=1, keepdims=True) + 1e-9
        out[..., 12] = np.einsum("bg,bcg->bc", profile, item_g[cand])
        hist_pop = np.asarray(hist @ self.log_pop).ravel() / np.maximum(n_hist, 1.0)
        out[..., 13] = self.log_pop[cand] - hist_pop[:, None]
        out[..., 14] = np.log1p(n_hist)[:, None]
        sims = np.asarray((hist @ self.user_rows.T).todense(), dtype=np.float32)  # (B, U)
        sims /= np.sqrt(np.maximum(n_hist, 1.0))[:, None]
        k = min(self.config.user_neighbors, sims.shape[1])
        if k < sims.shape[1]:
            drop = np.argpartition(-sims, k - 1, axis=1)[:, k:]
            np.put_along_axis(sims, drop, 0.0, axis=1)
        uknn = np.asarray((sp.csr_matrix(sims) @ self.user_matrix).todense())[rows, cand]
        out[..., 18] = uknn
        out[..., 19] = _zscore(uknn)
        rp3 = np.asarray(hist @ self.rp3)[rows, cand]
        out[..., 20] = rp3 * 100.0
        out[..., 21] = _zscore(rp3)
        time_aff = np.zeros((b, c), dtype=np.float32)
        for i, q in enumerate(queries):
            profile_t = None
            if q.user is not None and 0 <= q.user < self.user_time.shape[0]:
                profile_t = self.user_time[q.user]
                if profile_t.sum() <= 0:
                    profile_t = None
            if profile_t is None and q.timestamp is not None:
                t_bin = int((q.timestamp - self.time_origin) / 86400.0 / self.config.time_bin_days)
                profile_t = np.zeros(self.n_time_bins, dtype=np.float32)
                profile_t[min(max(t_bin, 0), self.n_time_bins - 1)] = 1.0
            if profile_t is not None:
                time_aff[i] = self.item_time[cand[i]] @ profile_t
        out[..., 22] = np.log1p(time_aff * 1000.0)
        out[..., 23] = _zscore(time_aff)
        if self.context_lift:
            for i, q in enumerate(queries):
                parts = []
                for name, lifts in self.context_lift.items():
                    value = q.context.get(name)
                    if value is None and name == "age_band" and "age" in q.context:
                        from recsys.retrieval.two_tower.features import age_band

                        value = age_band(q.context["age"])
                    if value is not None and str(value) in lifts:
                        parts.append(lifts[str(value)][cand[i]])
                if parts:
                    out[i, :, 24] = np.mean(parts, axis=0)
        seq = np.asarray((hist @ self.seq).todense())[rows, cand]
        out[..., 25] = seq
        out[..., 26] = _zscore(seq)
        length = self.config.session_length
        for i, q in enumerate(queries):
            recent = q.history[(q.history >= 0) & (q.history < self.n_items)][-length:]
            if not len(recent):
                continue
            rg = item_g[recent]  # (S, G)
            out[i, :, 15] = ((item_g[cand[i]] @ rg.T) > 0).mean(axis=1)
            if self.item_vectors is not None:
                cos = self.item_vectors[cand[i]] @ self.item_vectors[recent].T  # (C, S)
                out[i, :, 16] = cos.max(axis=1)
                out[i, :, 17] = cos.mean(axis=1)
        return out

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the fitted featurizer."""
        assert self.knn is not None and self.genres is not None
        s: dict[str, Any] = {
            "n_items": np.asarray(self.n_items),
            "log_pop": self.log_pop,
            "log_recent_pop": self.log_recent_pop,
            "days_since_seen": self.days_since_seen,
            "year": self.year,
            "rp3": self.rp3,
            "item_time": self.item_time,
            "user_time": self.user_time,
            "time": np.asarray([self.time_origin, self.n_time_bins], dtype=np.float64),
        }
        for name in ("knn", "genres", "user_rows", "user_matrix", "seq"):
            m = getattr(self, name)
            s[f"{name}_data"], s[f"{name}_indices"], s[f"{name}_indptr"] = (
                m.data,
                m.indices,
                m.indptr,
            )
            s[f"{name}_shape"] = np.asarray(m.shape)
        names = sorted(self.context_lift)
        spec = {name: sorted(self.context_lift[name]) for name in names}
        s["context_json"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
        for j, name in enumerate(names):
            s[f"context_{j}"] = np.stack([self.context_lift[name][v] for v in spec[name]])
        if self.ease is not None:
            s["ease"] = self.ease
        if self.item_vectors is not None:
            s["item_vectors"] = self.item_vectors
        return s

    @classmethod
    def from_state(
        cls, config: CandidateFeatureConfig, state: dict[str, np.ndarray]
    ) -> CandidateFeaturizer:
        """Inverse of :meth:`state`."""
        out = cls(config)
        out.n_items = int(state["n_items"])
        for name in ("knn", "genres", "user_rows", "user_matrix", "seq"):
            setattr(
                out,
                name,
                sp.csr_matrix(
                    (state[f"{name}_data"], state[f"{name}_indices"], state[f"{name}_indptr"]),
                    shape=tuple(int(x) for x in state[f"{name}_shape"]),
                ),
            )
        for name in (
            "log_pop",
            "log_recent_pop",
            "days_since_seen",
            "year",
            "rp3",
            "item_time",
            "user_time",
        ):
            setattr(out, name, state[name])
        out.time_origin, out.n_time_bins = float(state["time"][0]), int(state["time"][1])
        spec = json.loads(bytes(state["context_json"]).decode())
        out.context_lift = {
            name: dict(zip(values, state[f"context_{j}"], strict=True))
            for j, (name, values) in enumerate(sorted(spec.items()))
        }
        out.ease = state.get("ease")
        out.item_vectors = state.get("item_vectors")
        return out
