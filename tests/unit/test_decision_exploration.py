"""Exploration: propensities are correct probabilities, and everything is reproducible."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recsys.decision import (
    CapRule,
    EpsilonGreedy,
    EpsilonGreedyConfig,
    ItemCatalog,
    SlateCaps,
    ThompsonConfig,
    ThompsonSampling,
)
from recsys.types import ItemList, Query

N = 12
CATALOG = ItemCatalog(N, {"genres": [(f"g{i % 3}",) for i in range(N)]}, np.eye(N))
ITEMS = ItemList(np.arange(N), np.linspace(1.0, 0.0, N))
QUERY = Query(user=1)


def test_epsilon_greedy_propensities_match_empirical_frequencies():
    explorer = EpsilonGreedy(EpsilonGreedyConfig(epsilon=0.4, seed=1))
    k, trials = 4, 20_000
    counts: Counter[tuple[int, int]] = Counter()
    logged: dict[tuple[int, int], float] = {}
    for _ in range(trials):
        out = explorer(QUERY, ITEMS, k)
        assert len(out) == k and len(set(out.items)) == k
        for pos, (item, p) in enumerate(zip(out.items, out.propensities, strict=True)):
            counts[(pos, int(item))] += 1
            logged[(pos, int(item))] = float(p)
    for key, p in logged.items():
        assert counts[key] / trials == pytest.approx(p, abs=0.01)
    # per position, the logged propensities of every item that can appear sum to 1
    for pos in range(k):
        exploit = logged[(pos, pos)]
        explore = {item: p for (slot, item), p in logged.items() if slot == pos and item >= k}
        assert exploit + sum(explore.values()) * (N - k) / len(explore) == pytest.approx(1.0)


def test_epsilon_zero_is_deterministic_with_propensity_one():
    out = EpsilonGreedy(EpsilonGreedyConfig(epsilon=0.0))(QUERY, ITEMS, 5)
    assert out.items.tolist() == [0, 1, 2, 3, 4]
    assert out.propensities.tolist() == [1.0] * 5


def test_epsilon_greedy_respects_caps():
    caps = SlateCaps([CapRule(max_per_value=1)], CATALOG)
    explorer = EpsilonGreedy(EpsilonGreedyConfig(epsilon=1.0, seed=3))
    for _ in range(200):
        out = explorer(QUERY, ITEMS, 3, caps)
        assert caps.satisfied(out.items)


@pytest.mark.parametrize(
    "make",
    [
        lambda: EpsilonGreedy(EpsilonGreedyConfig(epsilon=0.5, seed=11)),
        lambda: ThompsonSampling(ThompsonConfig(seed=11, n_propensity_samples=50), CATALOG),
    ],
)
def test_same_seed_same_decisions(make):
    a, b = make(), make()
    for _ in range(20):
        x, y = a(QUERY, ITEMS, 5), b(QUERY, ITEMS, 5)
        assert x.items.tolist() == y.items.tolist()
        assert x.propensities.tolist() == y.propensities.tolist()


def test_thompson_propensities_are_probabilities_and_learn_from_clicks():
    sampler = ThompsonSampling(ThompsonConfig(seed=0, n_propensity_samples=400), CATALOG)
    out = sampler(QUERY, ITEMS, 3)
    assert len(set(out.items)) == 3
    assert np.all((out.propensities > 0) & (out.propensities <= 1))
    # the last-ranked item clicks every time: it must rise to the top slot
    for _ in range(30):
        sampler.update([N - 1] * 10, [1.0] * 10)
        sampler.update(list(range(N - 1)), [0.0] * (N - 1))
    shown = [sampler(QUERY, ITEMS, 3).items[0] for _ in range(20)]
    assert Counter(shown).most_common(1)[0][0] == N - 1


def test_thompson_propensities_estimate_slot_probabilities():
    sampler = ThompsonSampling(ThompsonConfig(seed=5, n_propensity_samples=2000), CATALOG)
    firsts = Counter()
    reported: dict[int, float] = {}
    for _ in range(300):
        out = sampler(QUERY, ITEMS, 1)
        firsts[int(out.items[0])] += 1
        reported[int(out.items[0])] = float(out.propensities[0])
    top, n = firsts.most_common(1)[0]
    assert n / 300 == pytest.approx(reported[top], abs=0.08)
