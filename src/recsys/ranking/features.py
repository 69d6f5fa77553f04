"""Per-candidate features of the ranking stage, computed from training data only.

For a query (user, history, context) and its retrieved candidates (items + retrieval scores)
:class:`CandidateFeaturizer` computes named features (:meth:`CandidateFeaturizer.features`,
one (B, C) array per name; :meth:`~CandidateFeaturizer.frame` gives them as a table for
drift monitoring). Every statistic is fitted on ``split.train``: the ranker is trained on
validation interactions and evaluated on test ones, so nothing it sees comes from a held-out
event.

Request-path cost is proportional to the candidates, not the catalogue: every item–item
statistic is stored *per target item* as its strongest ``max_neighbors`` source items
(:class:`ItemItem`), so a candidate's score reads one short row and checks which sources are
in the history. Memory is O(n_items · max_neighbors) per statistic, not n_items².

Features (``FEATURE_NAMES``):

* retrieval: the retriever's score, its z-score within the list, log rank in the list;
* item–item from the history: EASE (closed-form item autoencoder) score, z-score and log
  rank; cosine item-kNN score and z-score; RP3β score and z-score; sequential co-occurrence
  score and z-score;
* user–user: user-kNN score and z-score (the history's nearest training users);
* item: log popularity, log recency-weighted popularity (half-life), days since the item was
  last seen in train (recency), release year;
* user × item: genre affinity (cosine of the history's genre profile with the item's genres),
  popularity gap (item log-pop minus the history's mean log-pop), history length, time
  affinity (how much the item was consumed in the weeks the history was) and its z-score,
  context lift (how much more the user's context group consumes the item);
* session / recent items: genre overlap with the last ``session_length`` items, max and mean
  embedding cosine with them (two-tower item vectors when given).
* order (``order_features=True``, ``ORDER_FEATURE_NAMES``): how recently the candidate itself
  was clicked in the history (1/steps back, 0 if never) and how often; the sequential
  co-occurrence of the candidate with the history items weighted by how recent each history
  item is (1/steps back) and with the last click alone; seconds since the history's last
  event and since the candidate's last click in it (log). What a session's order says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.features.definitions import derive_context, model_context_columns
from recsys.ranking import kernels
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


# Feature groups a study (or an ablation) can switch off; the retrieval features are always in:
# the ranker re-orders the retriever's list.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "retrieval": ("retrieval_score", "retrieval_z", "retrieval_log_rank"),
    "ease": ("ease_score", "ease_z", "ease_log_rank"),
    "knn": ("knn_score", "knn_z"),
    "rp3": ("rp3_score", "rp3_z"),
    "seq": ("seq_score", "seq_z"),
    "userknn": ("userknn_score", "userknn_z"),
    "item": ("item_log_pop", "item_log_recent_pop", "item_days_since_seen", "item_year"),
    "user_item": ("genre_affinity", "pop_gap", "user_log_history"),
    "time": ("time_affinity", "time_affinity_z"),
    "context": ("context_lift",),
    "session": ("session_genre_overlap", "session_max_cos", "session_mean_cos"),
}


class FeatureGroups(ComponentConfig):
    """Which feature groups the ranker sees (``FEATURE_GROUPS``; retrieval is always on)."""

    ease: bool = True
    knn: bool = True
    rp3: bool = True
    seq: bool = True
    userknn: bool = True
    item: bool = True
    user_item: bool = True
    time: bool = True
    context: bool = True
    session: bool = True

    def names(self) -> tuple[str, ...]:
        """The enabled features, in ``FEATURE_NAMES`` order."""
        on = {"retrieval", *(group for group, used in self.model_dump().items() if used)}
        kept = {name for group in on for name in FEATURE_GROUPS[group]}
        return tuple(name for name in FEATURE_NAMES if name in kept)


ORDER_FEATURE_NAMES: tuple[str, ...] = (
    "hist_recency",
    "hist_log_count",
    "seq_recent_score",
    "seq_recent_z",
    "seq_last_score",
    "log_last_gap",
    "cand_log_time_before_last",
)
_DENSE_TIME_CELLS = 25_000_000  # bins × items kept dense for the request path (≤ 100 MB)
_NEVER_SECONDS = 1e8  # "never clicked in this history": older than any session


class CandidateFeatureConfig(ComponentConfig):
    """Settings of the candidate features."""

    groups: FeatureGroups = Field(
        default_factory=FeatureGroups, description="Feature groups on/off (ablation, tuning)."
    )

    ease_l2: float = Field(250.0, gt=0.0, le=1e7, description="EASE λ of the item–item score.")
    max_ease_items: int = Field(
        25_000, ge=0, description="Skip the EASE feature above this many items (n² to fit)."
    )
    max_neighbors: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Source items kept per target item in every item–item statistic (the "
        "strongest by absolute weight): request cost and memory grow with it, not with the "
        "catalogue.",
    )
    knn_neighbors: int = Field(100, ge=1, le=100_000)
    recency_half_life_days: float = Field(30.0, gt=0.0)
    session_length: int = Field(5, ge=1, le=1000, description="Recent items of the session.")
    user_neighbors: int = Field(50, ge=1, le=100_000, description="User-kNN neighbours.")
    rp3_beta: float = Field(0.5, ge=0.0, le=2.0, description="RP3β popularity penalty.")
    time_bin_days: float = Field(7.0, gt=0.0, description="Width of the time-affinity bins.")
    seq_window: int = Field(3, ge=1, le=1000, description="Sequence co-occurrence window.")
    time_smooth_bins: float = Field(2.0, ge=0.0, description="Gaussian smoothing (bins).")
    order_features: bool = Field(
        False,
        description="Add the order features (ORDER_FEATURE_NAMES): recency of the candidate "
        "and of its co-occurring items in the history, time since the last event.",
    )


def _zscore(x: FloatArray) -> FloatArray:
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / (std + 1e-6)).astype(np.float32)


def _log_rank(x: FloatArray) -> FloatArray:
    order = np.argsort(-x, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(x.shape[-1]), x.shape), axis=-1)
    return np.log1p(ranks).astype(np.float32)


class ItemItem:
    """An item–item statistic stored per *target* item: its strongest source items.

    ``score(in_history, targets)[c] = Σ_{j ∈ history} W[j, targets[c]]`` over the kept
    sources, in O(len(targets) · max_neighbors) — independent of the catalogue size. The
    rows are kept left-aligned in one width (ELL layout) with their lengths, so a request is
    one compiled pass over the candidates' stored entries
    (:func:`recsys.ranking.kernels.ell_row_sums`).

    Args:
        by_target: CSR (n_items × n_items); row ``t`` holds the weights of target ``t``'s
            sources.
    """

    def __init__(self, by_target: sp.csr_matrix) -> None:
        self.by_target = sp.csr_matrix(by_target, dtype=np.float32)
        self.by_target.sort_indices()
        n = self.by_target.shape[0]
        lengths = np.diff(self.by_target.indptr)
        width = max(1, int(lengths.max(initial=0)))
        self._lengths = lengths.astype(np.int32)
        self._sources = np.zeros((n, width), dtype=np.int32)
        self._weights = np.zeros((n, width), dtype=np.float32)
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(len(rows)) - np.repeat(self.by_target.indptr[:-1], lengths)
        self._sources[rows, cols] = self.by_target.indices
        self._weights[rows, cols] = self.by_target.data

    @classmethod
    def from_source_major(cls, weights: Any, max_neighbors: int) -> ItemItem:
        """From W (source × target, dense or sparse), keeping the top sources per target."""
        if sp.issparse(weights):
            by_target = sp.csr_matrix(weights.T, dtype=np.float32)
            return cls(_top_per_row(by_target, max_neighbors))
        dense = np.asarray(weights, dtype=np.float32).T  # target × source
        n = dense.shape[0]
        k = min(max_neighbors, dense.shape[1])
        if k < dense.shape[1]:
            keep = np.argpartition(-np.abs(dense), k - 1, axis=1)[:, :k]
            values = np.take_along_axis(dense, keep, axis=1)
            by_target = sp.csr_matrix(
                (values.ravel(), keep.ravel(), np.arange(0, n * k + 1, k)), shape=dense.shape
            )
        else:
            by_target = sp.csr_matrix(dense)
        by_target.eliminate_zeros()
        return cls(by_target)

    def score(self, in_history: np.ndarray, targets: IntArray) -> FloatArray:
        """Sum of each target's kept weights from sources flagged in ``in_history`` (n,).

        ``in_history`` may also hold a weight per source (e.g. how recent its click was).
        """
        return kernels.ell_row_sums(
            in_history,
            self._sources,
            self._weights,
            self._lengths,
            np.asarray(targets, dtype=np.int64),
        )

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays that restore this statistic (keys start with ``prefix``)."""
        return _csr_state(self.by_target, prefix)

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> ItemItem | None:
        """Inverse of :meth:`state` (``None`` when the statistic was not saved)."""
        if f"{prefix}_data" not in state:
            return None
        return cls(_csr_from_state(state, prefix))


def _top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest-magnitude entries of each CSR row."""
    lengths = np.diff(matrix.indptr)
    if lengths.max(initial=0) <= k:
        return matrix
    data, indices, indptr = [], [], [0]
    for row in range(matrix.shape[0]):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        values, columns = matrix.data[lo:hi], matrix.indices[lo:hi]
        if hi - lo > k:
            keep = np.argpartition(-np.abs(values), k - 1)[:k]
            values, columns = values[keep], columns[keep]
        data.append(values)
        indices.append(columns)
        indptr.append(indptr[-1] + len(values))
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr)), shape=matrix.shape
    )


def _csr_state(matrix: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
        f"{prefix}_shape": np.asarray(matrix.shape),
    }


def _csr_from_state(state: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix(
        (state[f"{prefix}_data"], state[f"{prefix}_indices"], state[f"{prefix}_indptr"]),
        shape=tuple(int(x) for x in state[f"{prefix}_shape"]),
    )


class CandidateFeaturizer:
    """Fitted statistics → named per-candidate features of candidate lists."""

    def __init__(self, config: CandidateFeatureConfig | None = None) -> None:
        self.config = config or CandidateFeatureConfig()
        self.n_items = 0
        self.ease: ItemItem | None = None
        self.knn: ItemItem | None = None
        self.rp3: ItemItem | None = None
        self.seq: ItemItem | None = None
        self.log_pop: FloatArray | None = None
        self.log_recent_pop: FloatArray | None = None
        self.days_since_seen: FloatArray | None = None
        self.year: FloatArray | None = None
        self.genres: FloatArray | None = None  # (n, G) multi-hot
        self.item_genres: FloatArray | None = None  # (n, G) rows L2-normalised
        self.item_vectors: FloatArray | None = None
        self.users_of_item: sp.csr_matrix | None = None  # item → users, user rows normalised
        self.user_items: sp.csr_matrix | None = None  # user → items (binary)
        self.item_time: sp.csr_matrix | None = None  # item → share of each time bin
        self._item_time_dense: np.ndarray | None = None  # item_time, dense (request path)
        self.time_origin = 0.0
        self.n_time_bins = 1
        self.context_lift: dict[str, dict[str, np.ndarray]] = {}
        self._names: tuple[CandidateFeatureConfig, tuple[str, ...]] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order: the enabled groups, then the order features if on."""
        # configs are frozen: the names change only with the config object (read per request)
        if self._names is None or self._names[0] is not self.config:
            order = ORDER_FEATURE_NAMES if self.config.order_features else ()
            self._names = (self.config, self.config.groups.names() + order)
        return self._names[1]

    def fit(self, split: Split, item_vectors: FloatArray | None = None) -> CandidateFeaturizer:
        """Fit every statistic on ``split.train`` (and item metadata)."""
        c = self.config
        data = split.dataset
        n = self.n_items = data.n_items
        matrix = split.train_matrix()
        gram = item_gram(matrix)
        if 0 < n <= c.max_ease_items:
            self.ease = ItemItem.from_source_major(ease_weights(gram, c.ease_l2), c.max_neighbors)
        counts = np.diag(gram).copy()
        self.knn = ItemItem.from_source_major(cosine_knn(gram, c.knn_neighbors), c.max_neighbors)
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
        self._set_genres(data.genre_matrix().toarray().astype(np.float32))
        self.item_vectors = None if item_vectors is None else np.asarray(item_vectors, np.float32)
        # user-kNN: users of each item, user rows L2-normalised
        x = matrix.astype(np.float32)
        row_norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        self.users_of_item = sp.csr_matrix((sp.diags(1.0 / np.maximum(row_norm, 1e-9)) @ x).T)
        self.user_items = sp.csr_matrix(x)
        self.seq = ItemItem.from_source_major(
            self._sequence_weights(train, counts), c.max_neighbors
        )
        self.rp3 = self._fit_rp3(x, counts)
        self._fit_time(ts, items, n)
        self._fit_context(data, items, counts, n, train)
        return self

    def _set_genres(self, genres: FloatArray) -> None:
        self.genres = genres
        self.item_genres = genres / (np.linalg.norm(genres, axis=1, keepdims=True) + 1e-9)

    def _fit_rp3(self, x: sp.csr_matrix, counts: np.ndarray) -> ItemItem:
        """RP3β: two random-walk steps item → user → item, popularity-penalised.

        Built a block of target items at a time, keeping each target's strongest sources, so
        fitting never holds the n_items² walk matrix.
        """
        c = self.config
        n = self.n_items
        p_ui = sp.csr_matrix(sp.diags(1.0 / np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)) @ x)
        p_iu = sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1.0)) @ x.T)
        penalty = 1.0 / np.power(np.maximum(counts, 1.0), c.rp3_beta)
        blocks = []
        for start in range(0, n, 2048):
            targets = np.arange(start, min(n, start + 2048))
            walk = np.asarray((p_iu @ p_ui[:, targets]).todense(), dtype=np.float32)
            walk *= penalty[targets][None, :].astype(np.float32)
            walk[targets, np.arange(len(targets))] = 0.0
            blocks.append(ItemItem.from_source_major(walk, c.max_neighbors).by_target)
        by_target = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n, n))
        return ItemItem(sp.csr_matrix(by_target, shape=(n, n)))

    def _sequence_weights(self, train: pd.DataFrame, counts: np.ndarray) -> sp.csr_matrix:
        """Items consumed within ``seq_window`` steps of each other, degree-normalised."""
        n = self.n_items
        ordered = train.sort_values(["user", "timestamp"], kind="stable")
        seq_items = ordered["item"].to_numpy(np.int64)
        seq_users = ordered["user"].to_numpy(np.int64)
        src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for d in range(1, self.config.seq_window + 1):
            same = seq_users[d:] == seq_users[:-d]
            src.append(seq_items[:-d][same])
            dst.append(seq_items[d:][same])
        src_a, dst_a = np.concatenate(src), np.concatenate(dst)
        co = sp.csr_matrix((np.ones(len(src_a), np.float32), (src_a, dst_a)), shape=(n, n))
        co = co + co.T
        inv = sp.diags((1.0 / np.sqrt(counts + 1.0)).astype(np.float32))
        return sp.csr_matrix(inv @ co @ inv)

    def _fit_time(self, ts: np.ndarray, items: IntArray, n: int) -> None:
        """Each item's share of every time bin's activity (sparse: smoothing is truncated)."""
        c = self.config
        t0 = float(ts.min()) if len(ts) else 0.0
        bins = ((ts - t0) / 86400.0 / c.time_bin_days).astype(np.int64)
        n_bins = int(bins.max()) + 1 if len(bins) else 1
        item_time = np.zeros((n, n_bins), dtype=np.float64)
        np.add.at(item_time, (items, bins), 1.0)
        if c.time_smooth_bins > 0:
            from scipy.ndimage import gaussian_filter1d

            item_time = gaussian_filter1d(item_time, c.time_smooth_bins, axis=1, mode="constant")
        item_time /= item_time.sum(axis=0, keepdims=True) + 1e-9
        self.item_time = sp.csr_matrix(item_time.astype(np.float32))
        self._item_time_dense = None
        self.time_origin, self.n_time_bins = t0, n_bins

    def _fit_context(
        self, data: Any, items: IntArray, counts: np.ndarray, n: int, train: pd.DataFrame
    ) -> None:
        """Context lift: log p(item | context value) / p(item), from training users' events."""
        self.context_lift = {}
        if not len(data.users):
            return
        columns = model_context_columns(data.users)
        users = train["user"].to_numpy(np.int64)
        base = (counts + 1.0) / (counts.sum() + n)
        for name in columns.columns:
            values = np.asarray([str(v) for v in columns[name]], dtype=object)
            known = columns[name].notna().to_numpy()
            distinct = sorted(set(values[known]))
            if not 1 < len(distinct) <= 200:
                continue
            lifts = {}
            user_value = values[users]
            for value in distinct:
                cnt = np.bincount(items[user_value == value], minlength=n).astype(np.float64)
                p = (cnt + 1.0) / (cnt.sum() + n)
                lifts[value] = np.log(p / base).astype(np.float32)
            self.context_lift[str(name)] = lifts

    # ------------------------------------------------------------------ transform
    def features(
        self, queries: Sequence[Query], candidates: IntArray, retrieval_scores: FloatArray
    ) -> dict[str, FloatArray]:
        """Named features, each (B, C), of each query's candidates.

        Args:
            queries: B queries (their histories are the user profile).
            candidates: (B, C) item indices.
            retrieval_scores: (B, C) the retriever's scores of those candidates.
        """
        assert self.log_pop is not None and self.knn is not None
        cand = np.asarray(candidates, dtype=np.int64)
        ret = np.asarray(retrieval_scores, dtype=np.float32)
        ret = np.where(np.isfinite(ret), ret, 0.0).astype(np.float32)
        per_query = [self._query_features(q, cand[i]) for i, q in enumerate(queries)]
        if len(per_query) == 1:  # one request: views, no copies
            out = {
                name: np.asarray(per_query[0][name], dtype=np.float32)[None]
                for name in _QUERY_FEATURES
            }
        else:
            out = {
                name: np.stack([row[name] for row in per_query]).astype(np.float32, copy=False)
                if per_query
                else np.zeros(cand.shape, dtype=np.float32)
                for name in _QUERY_FEATURES
            }
        out["retrieval_score"] = ret
        out["item_log_pop"] = self.log_pop[cand]
        out["item_log_recent_pop"] = self.log_recent_pop[cand]  # type: ignore[index]
        out["item_days_since_seen"] = self.days_since_seen[cand]  # type: ignore[index]
        out["item_year"] = self.year[cand]  # type: ignore[index]
        # every within-list z-score in one pass (one request: one small op, not seven)
        standardised = _zscore(np.stack([out[raw] for raw in _Z_OF.values()]))
        for z_name, row in zip(_Z_OF, standardised, strict=True):
            out[z_name] = row
        ranks = _log_rank(np.stack([ret, out["ease_score"]]))
        out["retrieval_log_rank"], out["ease_log_rank"] = ranks[0], ranks[1]
        out["time_affinity"] = np.log1p(out["time_affinity"] * 1000.0).astype(np.float32)
        if self.config.order_features:
            order = [self._order_features(q, cand[i]) for i, q in enumerate(queries)]
            for name in ORDER_FEATURE_NAMES:
                if name != "seq_recent_z":
                    out[name] = (
                        np.stack([row[name] for row in order]).astype(np.float32)
                        if order
                        else np.zeros(cand.shape, dtype=np.float32)
                    )
            out["seq_recent_z"] = _zscore(out["seq_recent_score"])
        return {name: out[name] for name in self.names}

    def transform(
        self, queries: Sequence[Query], candidates: IntArray, retrieval_scores: FloatArray
    ) -> FloatArray:
        """Dense features (B, C, F) in :attr:`names` order (the model's input)."""
        named = self.features(queries, candidates, retrieval_scores)
        return np.stack([named[name] for name in self.names], axis=-1)

    def frame(
        self, queries: Sequence[Query], candidates: IntArray, retrieval_scores: FloatArray
    ) -> pd.DataFrame:
        """The features as a table: one row per (query, candidate), one column per feature."""
        named = self.features(queries, candidates, retrieval_scores)
        cand = np.asarray(candidates, dtype=np.int64)
        b, c = cand.shape
        table = {"query": np.repeat(np.arange(b), c), "item": cand.ravel()}
        table.update({name: values.ravel() for name, values in named.items()})
        return pd.DataFrame(table)

    def _query_features(self, query: Query, cand: IntArray) -> dict[str, np.ndarray]:
        """The features that depend on the query's history and context, for one query."""
        n, c = self.n_items, len(cand)
        history = query.history[(query.history >= 0) & (query.history < n)]
        in_history = np.zeros(n, dtype=bool)
        in_history[history] = True
        distinct = np.flatnonzero(in_history)
        n_hist = float(len(distinct))
        scale = np.sqrt(max(n_hist, 1.0))
        zeros = np.zeros(c, dtype=np.float32)
        out: dict[str, np.ndarray] = {
            "ease_score": zeros if self.ease is None else self.ease.score(in_history, cand),
            "knn_score": self.knn.score(in_history, cand) / scale,  # type: ignore[union-attr]
            "rp3_score": self.rp3.score(in_history, cand) * 100.0,  # type: ignore[union-attr]
            "seq_score": self.seq.score(in_history, cand),  # type: ignore[union-attr]
            "userknn_score": self._user_knn(distinct, cand, scale),
            "user_log_history": np.full(c, np.log1p(n_hist), dtype=np.float32),
        }
        assert self.item_genres is not None and self.genres is not None
        assert self.log_pop is not None
        profile = self.genres[distinct].sum(axis=0)
        profile /= np.linalg.norm(profile) + 1e-9
        out["genre_affinity"] = self.item_genres[cand] @ profile
        hist_pop = float(self.log_pop[distinct].sum()) / max(n_hist, 1.0)
        out["pop_gap"] = self.log_pop[cand] - hist_pop
        out["time_affinity"] = self._time_affinity(query, cand)  # raw; scaled in features()
        out["context_lift"] = self._context_lift(query, cand)
        recent = history[-self.config.session_length :]
        overlap, max_cos, mean_cos = zeros, zeros, zeros
        if len(recent):
            rg = self.item_genres[recent]
            overlap = ((self.item_genres[cand] @ rg.T) > 0).mean(axis=1)
            if self.item_vectors is not None:
                cos = self.item_vectors[cand] @ self.item_vectors[recent].T
                max_cos, mean_cos = cos.max(axis=1), cos.mean(axis=1)
        out["session_genre_overlap"] = overlap
        out["session_max_cos"] = max_cos
        out["session_mean_cos"] = mean_cos
        return out

    def _order_features(self, query: Query, cand: IntArray) -> dict[str, np.ndarray]:
        """Order features of one query's candidates (see ``ORDER_FEATURE_NAMES``)."""
        assert self.seq is not None
        n, c = self.n_items, len(cand)
        valid = (query.history >= 0) & (query.history < n)
        history = query.history[valid]
        times = None if query.history_times is None else query.history_times[valid]
        steps = np.zeros(n, dtype=np.float32)  # 1/steps back of each item's latest click
        counts = np.zeros(n, dtype=np.float32)
        last_click = np.full(n, np.nan)
        if len(history):
            back = np.arange(len(history), 0, -1, dtype=np.float32)  # last click: 1
            steps[history] = 1.0 / back  # later clicks overwrite earlier ones
            np.add.at(counts, history, 1.0)
            if times is not None:
                last_click[history] = times
        last = np.zeros(n, dtype=np.float32)
        gap = 0.0
        ago = np.full(c, np.log1p(_NEVER_SECONDS), dtype=np.float32)
        if len(history):
            last[history[-1]] = 1.0
        if times is not None and len(times) and np.isfinite(times[-1]):
            end = float(times[-1])
            if len(times) > 1 and np.isfinite(times[-2]):
                gap = float(np.log1p(max(0.0, end - float(times[-2]))))
            clicked = np.isfinite(last_click[cand])
            ago[clicked] = np.log1p(np.maximum(0.0, end - last_click[cand][clicked]))
        return {
            "hist_recency": steps[cand],
            "hist_log_count": np.log1p(counts[cand]),
            "seq_recent_score": self.seq.score(steps, cand),
            "seq_last_score": self.seq.score(last, cand),
            "log_last_gap": np.full(c, gap, dtype=np.float32),
            "cand_log_time_before_last": ago,
        }

    def _user_knn(self, distinct: IntArray, cand: IntArray, scale: float) -> np.ndarray:
        """Σ over the history's nearest training users of their interaction with each item."""
        assert self.users_of_item is not None and self.user_items is not None
        if not len(distinct):
            return np.zeros(len(cand), dtype=np.float32)
        by_item, by_user = self.users_of_item, self.user_items
        sims = kernels.neighbour_votes(
            by_item.indptr, by_item.indices, by_item.data, distinct, by_user.shape[0]
        )
        sims /= scale
        k = min(self.config.user_neighbors, len(sims))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[sims[top] > 0]
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[cand] = np.arange(len(cand))
        return kernels.neighbour_scores(
            by_user.indptr, by_user.indices, by_user.data, top, sims[top], position, len(cand)
        ).astype(np.float32)

    def _time_affinity(self, query: Query, cand: IntArray) -> np.ndarray:
        """How much each candidate was consumed in the time bins of the user's history."""
        assert self.item_time is not None
        times = query.history_times
        if times is not None and len(times):
            times = times[np.isfinite(times)]
        if times is None or not len(times):
            if query.timestamp is None:
                return np.zeros(len(cand), dtype=np.float32)
            times = np.asarray([query.timestamp], dtype=np.float64)
        bins = ((times - self.time_origin) / 86400.0 / self.config.time_bin_days).astype(np.int64)
        profile = np.bincount(
            np.clip(bins, 0, self.n_time_bins - 1), minlength=self.n_time_bins
        ).astype(np.float32)
        profile /= profile.sum()
        table = self._dense_item_time()
        if table is None:
            return np.asarray(self.item_time[cand] @ profile, dtype=np.float32).ravel()
        # read only the candidates' rows at the history's bins (scipy's row slicing of the
        # sparse table costs ~5x more at one request)
        used = np.flatnonzero(profile)
        return (table[np.ix_(np.asarray(cand), used)] @ profile[used]).astype(np.float32)

    def _dense_item_time(self) -> np.ndarray | None:
        """``item_time`` as a dense (item × bin) table, built once, when small enough."""
        assert self.item_time is not None
        if self._item_time_dense is None and np.prod(self.item_time.shape) <= _DENSE_TIME_CELLS:
            self._item_time_dense = self.item_time.toarray()
        return self._item_time_dense

    def _context_lift(self, query: Query, cand: IntArray) -> np.ndarray:
        if not self.context_lift:
            return np.zeros(len(cand), dtype=np.float32)
        context = derive_context(query.context)
        parts = [
            lifts[str(value)][cand]
            for name, lifts in self.context_lift.items()
            if (value := context.get(name)) is not None and str(value) in lifts
        ]
        return np.mean(parts, axis=0) if parts else np.zeros(len(cand), dtype=np.float32)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the fitted featurizer."""
        assert self.knn is not None and self.rp3 is not None and self.seq is not None
        s: dict[str, Any] = {
            "n_items": np.asarray(self.n_items),
            "log_pop": self.log_pop,
            "log_recent_pop": self.log_recent_pop,
            "days_since_seen": self.days_since_seen,
            "year": self.year,
            "genres": self.genres,
            "time": np.asarray([self.time_origin, self.n_time_bins], dtype=np.float64),
        }
        for name in ("knn", "rp3", "seq", "ease"):
            statistic = getattr(self, name)
            if statistic is not None:
                s.update(statistic.state(name))
        for name in ("users_of_item", "user_items", "item_time"):
            s.update(_csr_state(getattr(self, name), name))
        names = sorted(self.context_lift)
        spec = {name: sorted(self.context_lift[name]) for name in names}
        s["context_json"] = np.frombuffer(json.dumps(spec).encode(), dtype=np.uint8)
        for j, name in enumerate(names):
            s[f"context_{j}"] = np.stack([self.context_lift[name][v] for v in spec[name]])
        if self.item_vectors is not None:
            s["item_vectors"] = self.item_vectors
        return s

    @classmethod
    def from_state(
        cls, config: CandidateFeatureConfig, state: dict[str, np.ndarray]
    ) -> CandidateFeaturizer:
        """Inverse of :meth:`state`."""
        kernels.warm_up()  # a loaded featurizer is about to serve: compile before a request
        out = cls(config)
        out.n_items = int(state["n_items"])
        for name in ("knn", "rp3", "seq", "ease"):
            setattr(out, name, ItemItem.from_state(state, name))
        for name in ("users_of_item", "user_items", "item_time"):
            setattr(out, name, _csr_from_state(state, name))
        for name in ("log_pop", "log_recent_pop", "days_since_seen", "year"):
            setattr(out, name, state[name])
        out._set_genres(state["genres"])
        out.time_origin, out.n_time_bins = float(state["time"][0]), int(state["time"][1])
        out._dense_item_time()  # built now, not inside the first request
        spec = json.loads(bytes(state["context_json"]).decode())
        out.context_lift = {
            name: dict(zip(values, state[f"context_{j}"], strict=True))
            for j, (name, values) in enumerate(sorted(spec.items()))
        }
        out.item_vectors = state.get("item_vectors")
        return out


# each within-list z-score and the raw feature it standardises
_Z_OF: dict[str, str] = {
    "retrieval_z": "retrieval_score",
    "ease_z": "ease_score",
    "knn_z": "knn_score",
    "userknn_z": "userknn_score",
    "rp3_z": "rp3_score",
    "seq_z": "seq_score",
    "time_affinity_z": "time_affinity",
}

# computed per query by CandidateFeaturizer._query_features
_QUERY_FEATURES: tuple[str, ...] = (
    "ease_score",
    "knn_score",
    "rp3_score",
    "seq_score",
    "userknn_score",
    "user_log_history",
    "genre_affinity",
    "pop_gap",
    "time_affinity",
    "context_lift",
    "session_genre_overlap",
    "session_max_cos",
    "session_mean_cos",
)
