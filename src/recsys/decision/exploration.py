"""Exploration over slate positions, every shown item carrying its propensity.

The propensity of an entry is the probability that the policy shows *that item at that
position* (the item–position marginal), which is what item-position off-policy estimators
(:mod:`recsys.evaluation.off_policy`) divide by.

* :class:`EpsilonGreedy`: with probability ``epsilon`` one slot of the exploit slate, chosen
  uniformly, is replaced by a uniformly drawn candidate from outside the slate that keeps the
  slate within its caps. Propensities are exact: ``1 − epsilon/k`` for an exploit item at its
  slot, ``epsilon/k · 1/|pool|`` for an explored item.
* :class:`ThompsonSampling`: a Beta posterior of each item's click rate, its prior mean taken
  from the ranker's score; each request samples a click rate per candidate and fills the slate
  by the samples (caps respected). Propensities are estimated by re-running the same draw
  ``n_propensity_samples`` times (Monte Carlo); the actual draw is one of them, so no shown
  item gets propensity 0.

Both are seeded: the same seed and the same sequence of calls give the same slates.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
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
from recsys.types import ItemList, Query, top_k_indices


class EpsilonGreedyConfig(ComponentConfig):
    """Epsilon-greedy exploration of one slot per slate."""

    kind: Literal["epsilon_greedy"] = "epsilon_greedy"
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="Probability of exploring a slot.")
    seed: int = 0


class ThompsonConfig(ComponentConfig):
    """Thompson sampling over candidate click rates."""

    kind: Literal["thompson"] = "thompson"
    prior_strength: float = Field(
        10.0, gt=0.0, le=1e6, description="Pseudo-impressions behind the score-derived prior."
    )
    prior_low: float = Field(0.01, gt=0.0, lt=1.0, description="Prior CTR of the worst candidate.")
    prior_high: float = Field(0.2, gt=0.0, lt=1.0, description="Prior CTR of the best candidate.")
    n_propensity_samples: int = Field(200, ge=1, le=100_000)
    seed: int = 0


ExplorationConfig = EpsilonGreedyConfig | ThompsonConfig


class _Explorer(DecisionStage):
    """Shared plumbing: seeded generator, exploit slate."""

    def __init__(
        self, config: ComponentConfig | None = None, catalog: ItemCatalog | None = None
    ) -> None:
        super().__init__(config)
        self.catalog = catalog
        self.rng = np.random.default_rng(self.config.seed)  # type: ignore[attr-defined]

    def reseed(self, seed: int) -> None:
        """Restart the random stream (for replays)."""
        self.rng = np.random.default_rng(seed)


class EpsilonGreedy(_Explorer):
    """Epsilon-greedy over slate positions with exact propensities.

    ``items`` are the candidates in preference order (e.g. after diversity, with the exploit
    slate first); the first ``k`` entries are the exploit slate.
    """

    config_class = EpsilonGreedyConfig
    config: EpsilonGreedyConfig

    def __call__(
        self, query: Query, items: ItemList, k: int, caps: SlateCaps | None = None
    ) -> ItemList:
        """The slate with propensities; ``items[:k]`` is the exploit slate."""
        k = check_k(k)
        check_items(items)
        slate_pos = np.arange(min(k, len(items)))
        n = len(slate_pos)
        props = np.full(n, 1.0, dtype=np.float64)
        if n == 0:
            return ItemList.empty()
        eps = self.config.epsilon
        # always draw the same number of variates so the stream does not depend on the branch
        u, slot_u, pick_u = self.rng.random(3)
        tail = np.arange(n, len(items))
        if eps > 0 and len(tail):
            pools = self._pools(items, slate_pos, tail, caps)
            # a slot with nothing admissible to swap in keeps its exploit item when explored
            can_swap = np.asarray([len(p) > 0 for p in pools])
            props = np.where(can_swap, 1.0 - eps / n, 1.0)
            slot = int(slot_u * n)
            if u < eps and can_swap[slot]:
                pool = pools[slot]
                slate_pos = slate_pos.copy()
                slate_pos[slot] = pool[int(pick_u * len(pool))]
                props[slot] = eps / n / len(pool)
        return take(items, slate_pos, props.astype(np.float32))

    @staticmethod
    def _pools(
        items: ItemList,
        slate_pos: npt.NDArray[np.int64],
        tail: npt.NDArray[np.int64],
        caps: SlateCaps | None,
    ) -> list[npt.NDArray[np.int64]]:
        """Per slot: tail positions that may replace it without breaking a cap."""
        if caps is None or caps.membership.shape[1] == 0:
            return [tail] * len(slate_pos)
        member = caps.membership[items.items[slate_pos]].astype(np.int64)
        total = member.sum(axis=0)
        tail_items = items.items[tail]
        # the slate without slot s: subtract that slot's labels from the slate's counts
        return [tail[caps.allowed(tail_items, total - member[s])] for s in range(len(slate_pos))]


class ThompsonSampling(_Explorer):
    """Beta–Bernoulli Thompson sampling over candidates, propensities by Monte Carlo.

    The posterior lives over the whole catalogue (``n_items``); :meth:`update` feeds clicks.
    """

    config_class = ThompsonConfig
    config: ThompsonConfig

    def __init__(
        self, config: ThompsonConfig | None = None, catalog: ItemCatalog | None = None, **kw: int
    ) -> None:
        super().__init__(config, catalog)
        n_items = kw.get("n_items", catalog.n_items if catalog is not None else None)
        if n_items is None:
            raise ValueError("n_items: ThompsonSampling needs a catalog or n_items")
        self.clicks = np.zeros(int(n_items), dtype=np.float64)
        self.impressions = np.zeros(int(n_items), dtype=np.float64)

    def update(self, items: npt.ArrayLike, rewards: npt.ArrayLike) -> None:
        """Record impressions of ``items`` with their 0/1 ``rewards``."""
        idx = np.asarray(items, dtype=np.int64)
        np.add.at(self.impressions, idx, 1.0)
        np.add.at(self.clicks, idx, np.asarray(rewards, dtype=np.float64))

    def _posterior(self, items: ItemList) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        mean = cfg.prior_low + (cfg.prior_high - cfg.prior_low) * normalized_relevance(items.scores)
        a = mean * cfg.prior_strength + self.clicks[items.items]
        b = (
            (1.0 - mean) * cfg.prior_strength
            + self.impressions[items.items]
            - self.clicks[items.items]
        )
        return a, b

    def __call__(
        self, query: Query, items: ItemList, k: int, caps: SlateCaps | None = None
    ) -> ItemList:
        """A sampled slate with Monte-Carlo item–position propensities."""
        k = check_k(k)
        check_items(items, len(self.clicks))
        if k == 0 or not len(items):
            return ItemList.empty()
        a, b = self._posterior(items)
        draws = self.rng.beta(a, b, size=(self.config.n_propensity_samples, len(items)))
        kk = min(k, len(items))
        if caps is None or caps.membership.shape[1] == 0:
            slates = top_k_indices(draws, kk)
            shown = slates[0]
            props = (slates == shown).mean(axis=0)
        else:
            rows = [capped_top_k(ItemList(items.items, row), kk, caps) for row in draws]
            shown = rows[0]
            hits = np.zeros(len(shown), dtype=np.float64)
            for slate in rows:
                m = min(len(slate), len(shown))
                hits[:m] += slate[:m] == shown[:m]
            props = hits / len(rows)
        return take(items, shown, props.astype(np.float32))


def make_explorer(config: ExplorationConfig | None, catalog: ItemCatalog) -> _Explorer | None:
    """The explorer for a config (``None`` → no exploration)."""
    if config is None:
        return None
    if isinstance(config, EpsilonGreedyConfig):
        return EpsilonGreedy(config, catalog)
    if isinstance(config, ThompsonConfig):
        return ThompsonSampling(config, catalog)
    raise TypeError(f"exploration: unknown config type {type(config).__name__}")
