"""MMR and DPP: hypothesis invariants, known answers, and DPP against brute-force log-det."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.decision import (
    CapRule,
    DPPConfig,
    DPPReranker,
    ItemCatalog,
    MMRConfig,
    MMRReranker,
    SlateCaps,
)
from recsys.types import ItemList, Query

N_ITEMS = 60
RNG = np.random.default_rng(7)
CATALOG = ItemCatalog(
    N_ITEMS,
    {"genres": [(f"g{i % 5}",) for i in range(N_ITEMS)]},
    RNG.normal(size=(N_ITEMS, 6)),
)
QUERY = Query(user=0)


@st.composite
def candidates(draw: st.DrawFn) -> tuple[ItemList, int]:
    n = draw(st.integers(0, 40))
    items = draw(st.permutations(range(N_ITEMS)))[:n]
    scores = draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=n, max_size=n))
    k = draw(st.integers(0, 50))
    return ItemList(np.asarray(items, dtype=np.int64), np.asarray(scores)), k


def _check_subset(out: ItemList, items: ItemList, k: int) -> None:
    assert len(out) == min(k, len(items))
    assert len(np.unique(out.items)) == len(out)
    assert set(out.items.tolist()) <= set(items.items.tolist())
    lookup = dict(zip(items.items.tolist(), items.scores.tolist(), strict=True))
    assert [lookup[i] for i in out.items.tolist()] == out.scores.tolist()


@settings(max_examples=150, deadline=None)
@given(candidates(), st.floats(0.0, 1.0))
def test_mmr_returns_duplicate_free_subset_of_size_k(data: tuple[ItemList, int], lam: float):
    items, k = data
    _check_subset(MMRReranker(MMRConfig(lam=lam), CATALOG)(QUERY, items, k), items, k)


@settings(max_examples=150, deadline=None)
@given(candidates(), st.floats(0.0, 1.0))
def test_dpp_returns_duplicate_free_subset_of_size_k(data: tuple[ItemList, int], lam: float):
    items, k = data
    _check_subset(DPPReranker(DPPConfig(lam=lam), CATALOG)(QUERY, items, k), items, k)


@settings(max_examples=150, deadline=None)
@given(candidates())
def test_lambda_one_equals_plain_top_k(data: tuple[ItemList, int]):
    items, k = data
    # plain top-k: descending score, ties by input position
    expected = items.items[np.lexsort((np.arange(len(items)), -items.scores))[:k]]
    stages = (MMRReranker(MMRConfig(lam=1.0), CATALOG), DPPReranker(DPPConfig(lam=1.0), CATALOG))
    for stage in stages:
        assert stage(QUERY, items, k).items.tolist() == expected.tolist()


def test_mmr_lambda_zero_avoids_near_duplicates():
    # items 0,1 identical vectors and top scores; item 2 orthogonal with a lower score
    vectors = np.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    catalog = ItemCatalog(3, {}, vectors)
    items = ItemList(np.asarray([0, 1, 2]), np.asarray([1.0, 0.9, 0.1]))
    assert MMRReranker(MMRConfig(lam=0.3), catalog)(QUERY, items, 2).items.tolist() == [0, 2]
    assert MMRReranker(MMRConfig(lam=1.0), catalog)(QUERY, items, 2).items.tolist() == [0, 1]
    assert DPPReranker(DPPConfig(lam=0.3), catalog)(QUERY, items, 2).items.tolist() == [0, 2]


def test_dpp_matches_brute_force_greedy_log_det():
    rng = np.random.default_rng(3)
    n, k = 25, 8
    vectors = rng.normal(size=(n, 5))
    catalog = ItemCatalog(n, {}, vectors)
    items = ItemList(np.arange(n), rng.random(n))
    config = DPPConfig(lam=0.6, jitter=0.1)
    got = DPPReranker(config, catalog)(QUERY, items, k).items.tolist()
    # brute force: the full kernel (fine at n=25) and greedy argmax log det
    f = catalog.vectors.astype(np.float64)
    rel = (items.scores - items.scores.min()) / np.ptp(items.scores)
    q = np.exp(config.lam / (2 * (1 - config.lam)) * rel)
    kernel = q[:, None] * (f @ f.T + config.jitter * np.eye(n)) * q[None, :]
    chosen: list[int] = []
    for _ in range(k):
        best = max(
            (i for i in range(n) if i not in chosen),
            key=lambda i: np.linalg.slogdet(kernel[np.ix_([*chosen, i], [*chosen, i])])[1],
        )
        chosen.append(best)
    assert got == chosen


@pytest.mark.parametrize("stage", ["mmr", "dpp"])
def test_caps_are_respected_by_diversity(stage: str):
    caps = SlateCaps([CapRule(attribute="genres", max_per_value=1)], CATALOG)
    selector = (
        MMRReranker(MMRConfig(lam=0.9), CATALOG)
        if stage == "mmr"
        else DPPReranker(DPPConfig(lam=0.9), CATALOG)
    )
    items = ItemList(np.arange(40), np.linspace(1, 0, 40))
    out = selector(QUERY, items, 10, caps=caps)
    # five genres, at most one each: the slate stops at five
    assert len(out) == 5
    assert caps.satisfied(out.items)


def test_diversity_raises_ild_on_genre_vectors():
    genres = [("a",)] * 10 + [("b",), ("c",), ("d",)]
    catalog = ItemCatalog.from_genres(genres)
    items = ItemList(np.arange(13), np.linspace(1.0, 0.5, 13))
    mmr = MMRReranker(MMRConfig(lam=0.5), catalog)(QUERY, items, 4).items
    assert len({genres[i] for i in mmr}) == 4


def test_bad_input_names_the_field():
    items = ItemList(np.asarray([1, 1]), np.asarray([0.5, 0.4]))
    with pytest.raises(ValueError, match="duplicate"):
        MMRReranker(MMRConfig(), CATALOG)(QUERY, items, 2)
    with pytest.raises(ValueError, match="k"):
        DPPReranker(DPPConfig(), CATALOG)(QUERY, ItemList.empty(), -1)
    with pytest.raises(ValueError, match="lam"):
        MMRConfig(lam=1.5)


def test_configs_round_trip_json():
    for config in (MMRConfig(lam=0.3), DPPConfig(lam=0.2, jitter=0.5)):
        assert type(config).from_json(config.to_json()) == config
