"""Slate diversification: MMR and DPP (fast greedy MAP), both honouring slate caps.

Both read item similarity as cosine of the catalogue's item vectors (genre multi-hot or learned
embeddings) and relevance as the candidate scores min–max scaled to [0, 1] within the list, so
the trade-off weight ``lam`` means the same whatever the ranker's score scale:

* **MMR** (Carbonell & Goldstein 1998): pick ``argmax lam·rel(i) − (1−lam)·max_{j∈S} sim(i, j)``.
  ``lam = 1`` is plain top-k by score.
* **DPP** (Chen, Zhang & Zhou 2018, "Fast Greedy MAP Inference for DPP"): kernel
  ``L = diag(q) (S + jitter·I) diag(q)`` with quality ``q = exp(alpha·rel)``,
  ``alpha = lam / (2 (1 − lam))`` (their θ trade-off), greedy ``argmax log det L_S`` by
  incremental Cholesky. Each step computes one kernel row (O(M·d)), never the M×M kernel.
  ``lam = 1`` is plain top-k by score.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.decision.base import (
    DecisionStage,
    ItemCatalog,
    check_items,
    check_k,
    normalized_relevance,
    take,
)
from recsys.decision.rules import SlateCaps, capped_top_k
from recsys.types import IntArray, ItemList, Query


class TopKConfig(ComponentConfig):
    """No diversification: the best ``k`` by score (respecting caps when given)."""

    kind: Literal["topk"] = "topk"


class MMRConfig(ComponentConfig):
    """Maximal Marginal Relevance."""

    kind: Literal["mmr"] = "mmr"
    lam: float = Field(0.7, ge=0.0, le=1.0, description="Weight of relevance (1 = plain top-k).")


class DPPConfig(ComponentConfig):
    """Determinantal point process, fast greedy MAP inference."""

    kind: Literal["dpp"] = "dpp"
    lam: float = Field(0.7, ge=0.0, le=1.0, description="Weight of relevance (1 = plain top-k).")
    jitter: float = Field(
        0.1,
        gt=0.0,
        le=10.0,
        description="Added to the similarity diagonal so items with identical features are "
        "penalised, not excluded (genre vectors are low-rank).",
    )
    epsilon: float = Field(1e-10, gt=0.0, description="Stop when the marginal gain falls below.")


DiversityConfig = TopKConfig | MMRConfig | DPPConfig


class _Selector(DecisionStage):
    """Shared plumbing: validation, caps, the output list."""

    def __init__(self, config: ComponentConfig | None = None, catalog: ItemCatalog | None = None):
        super().__init__(config)
        self.catalog = catalog

    def __call__(
        self, query: Query, items: ItemList, k: int, caps: SlateCaps | None = None
    ) -> ItemList:
        """The ``k`` items to show, in slate order (input scores kept).

        Args:
            query: The request (unused by the selection itself).
            items: Candidates; any order.
            k: Slate size; fewer are returned only when caps or the candidates run out.
            caps: Optional slate constraint from :class:`~recsys.decision.rules.BusinessRules`.
        """
        k = check_k(k)
        check_items(items, None if self.catalog is None else self.catalog.n_items)
        if k == 0 or not len(items):
            return ItemList.empty()
        return take(items, self.select(items, min(k, len(items)), caps))

    def select(self, items: ItemList, k: int, caps: SlateCaps | None) -> IntArray:
        """Positions in ``items`` of the slate, in slate order."""
        return capped_top_k(items, k, caps)


class TopK(_Selector):
    """Plain top-k (the control arm of a diversity experiment)."""

    config_class = TopKConfig


class MMRReranker(_Selector):
    """Maximal Marginal Relevance re-ranking.

    Args:
        config: ``lam`` trades relevance (1.0) against novelty within the slate (0.0).
        catalog: Supplies the item vectors used for similarity.
    """

    config_class = MMRConfig
    config: MMRConfig

    def select(self, items: ItemList, k: int, caps: SlateCaps | None) -> IntArray:
        """Greedy MMR; O(k·M·d) with one similarity column update per pick."""
        lam = self.config.lam
        if lam >= 1.0:
            # exactly plain top-k, also where min-max scaling would merge near-equal scores
            return capped_top_k(items, k, caps)
        rel = normalized_relevance(items.scores)
        vectors = self._vectors(items)
        n = len(items)
        max_sim = np.zeros(n, dtype=np.float64)
        free = np.ones(n, dtype=bool)
        counts = None if caps is None else caps.start()
        chosen: list[int] = []
        for _ in range(k):
            gain = lam * rel - (1.0 - lam) * max_sim if chosen else rel.copy()
            ok = free if counts is None else free & caps.allowed(items.items, counts)  # type: ignore[union-attr]
            if not ok.any():
                break
            gain[~ok] = -np.inf
            pos = int(np.argmax(gain))
            chosen.append(pos)
            free[pos] = False
            if counts is not None:
                caps.add(int(items.items[pos]), counts)  # type: ignore[union-attr]
            np.maximum(max_sim, vectors @ vectors[pos], out=max_sim)
        return np.asarray(chosen, dtype=np.int64)

    def _vectors(self, items: ItemList) -> np.ndarray:
        if self.catalog is None:
            raise ValueError("catalog: MMRReranker needs an ItemCatalog with vectors")
        return self.catalog.require_vectors()[items.items].astype(np.float64)


class DPPReranker(_Selector):
    """DPP re-ranking by fast greedy MAP inference (Chen et al. 2018, Algorithm 1).

    Args:
        config: ``lam`` trades relevance (1.0) against diversity (0.0).
        catalog: Supplies the item vectors used for the similarity kernel.
    """

    config_class = DPPConfig
    config: DPPConfig

    def select(self, items: ItemList, k: int, caps: SlateCaps | None) -> IntArray:
        """Greedy log-det maximisation with incremental Cholesky; O(k·M·(d + k))."""
        lam = self.config.lam
        if lam >= 1.0:
            return capped_top_k(items, k, caps)
        if self.catalog is None:
            raise ValueError("catalog: DPPReranker needs an ItemCatalog with vectors")
        feats = self.catalog.require_vectors()[items.items].astype(np.float64)
        rel = normalized_relevance(items.scores)
        alpha = lam / (2.0 * (1.0 - lam))
        # quality in log space, centred so exp() cannot overflow for alpha near 1e3
        q = np.exp(alpha * (rel - 1.0))
        jitter = self.config.jitter
        n = len(items)
        cis = np.zeros((k, n), dtype=np.float64)
        d2 = q * q * (np.einsum("ij,ij->i", feats, feats) + jitter)
        free = np.ones(n, dtype=bool)
        counts = None if caps is None else caps.start()
        chosen: list[int] = []
        # ties (e.g. equal gains) fall back to relevance, then input position
        tie = 1e-12 * rel
        for t in range(k):
            ok = free if counts is None else free & caps.allowed(items.items, counts)  # type: ignore[union-attr]
            if not ok.any():
                break
            gain = np.where(ok, d2 + tie, -np.inf)
            pos = int(np.argmax(gain))
            if d2[pos] < self.config.epsilon:
                # the kernel is exhausted: fill the rest by relevance
                rest = np.flatnonzero(ok)
                order = rest[np.lexsort((rest, -rel[rest]))]
                for p in order:
                    if len(chosen) == k:
                        break
                    if counts is not None:
                        if not caps.allowed(items.items[[p]], counts)[0]:  # type: ignore[union-attr]
                            continue
                        caps.add(int(items.items[p]), counts)  # type: ignore[union-attr]
                    chosen.append(int(p))
                break
            chosen.append(pos)
            free[pos] = False
            if counts is not None:
                caps.add(int(items.items[pos]), counts)  # type: ignore[union-attr]
            if t == k - 1:
                break
            # kernel row of the new item only: L[pos, :] = q_pos q_i (f_pos·f_i + jitter·δ)
            row = q[pos] * q * (feats @ feats[pos])
            row[pos] += q[pos] * q[pos] * jitter
            e = (row - cis[:t].T @ cis[:t, pos]) / np.sqrt(d2[pos])
            cis[t] = e
            d2 = d2 - e * e
        return np.asarray(chosen, dtype=np.int64)


def make_selector(config: DiversityConfig | None, catalog: ItemCatalog | None) -> _Selector:
    """The selector for a diversity config (``None`` → plain top-k)."""
    if config is None or isinstance(config, TopKConfig):
        return TopK(config, catalog)
    if isinstance(config, MMRConfig):
        return MMRReranker(config, catalog)
    if isinstance(config, DPPConfig):
        return DPPReranker(config, catalog)
    raise TypeError(f"diversity: unknown config type {type(config).__name__}")
