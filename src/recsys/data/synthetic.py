"""Seeded synthetic interaction data: fast unit tests and drift demos.

Users and items live in a shared latent space; each item belongs to one or two categories
(which act as genres); item popularity follows a power law; users browse in sessions; an
optional drift shifts user tastes and popularity after a point in time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import Dataset


class SyntheticConfig(ComponentConfig):
    """Shape of a synthetic dataset."""

    n_users: int = Field(200, ge=2, le=1_000_000)
    n_items: int = Field(300, ge=2, le=1_000_000)
    n_categories: int = Field(8, ge=1, le=1000)
    latent_dim: int = Field(8, ge=1, le=256)
    sessions_per_user: tuple[int, int] = (2, 6)
    events_per_session: tuple[int, int] = (2, 8)
    popularity_exponent: float = Field(1.0, ge=0.0, le=3.0)
    preference_strength: float = Field(3.0, ge=0.0, le=50.0)
    drift_at: float | None = Field(None, ge=0.0, le=1.0)
    drift_strength: float = Field(1.0, ge=0.0, le=10.0)
    start_timestamp: float = 1_600_000_000.0
    span_days: float = Field(60.0, gt=0.0)
    seed: int = 0


def generate(config: SyntheticConfig | None = None) -> Dataset:
    """Generate a synthetic :class:`Dataset` (deterministic under ``config.seed``).

    Returns:
        A dataset with ``click`` events in sessions, items with ``genres`` (categories) and a
        ``year``, and users with ``age_band``, ``gender`` and ``device`` context. With
        ``drift_at`` set, the events after that fraction of the time span come from shifted
        tastes (a drift report should flag them).
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    categories = [f"cat{c}" for c in range(cfg.n_categories)]
    item_cat = rng.integers(0, cfg.n_categories, size=cfg.n_items)
    second = rng.integers(0, cfg.n_categories, size=cfg.n_items)
    has_second = rng.random(cfg.n_items) < 0.3
    centers = rng.normal(size=(cfg.n_categories, cfg.latent_dim))
    item_vec = centers[item_cat] + 0.5 * rng.normal(size=(cfg.n_items, cfg.latent_dim))
    ranks = rng.permutation(cfg.n_items) + 1
    log_pop = -cfg.popularity_exponent * np.log(ranks)

    user_vec = rng.normal(size=(cfg.n_users, cfg.latent_dim))
    age_band = rng.choice(["18-24", "25-34", "35-44", "45+"], size=cfg.n_users)
    gender = rng.choice(["F", "M"], size=cfg.n_users)
    device = rng.choice(["mobile", "desktop", "tablet"], size=cfg.n_users, p=[0.6, 0.3, 0.1])
    # context carries signal: each age band leans towards one category
    band_bias = {b: centers[i % cfg.n_categories] for i, b in enumerate(sorted(set(age_band)))}
    user_vec += np.stack([band_bias[b] for b in age_band])

    span = cfg.span_days * 86400.0
    drift_time = None if cfg.drift_at is None else cfg.start_timestamp + cfg.drift_at * span
    drift_shift = rng.normal(size=cfg.latent_dim) * cfg.drift_strength
    drift_pop = rng.permutation(log_pop)

    rows: list[tuple[int, int, float, str]] = []
    for user in range(cfg.n_users):
        n_sessions = int(rng.integers(cfg.sessions_per_user[0], cfg.sessions_per_user[1] + 1))
        starts = np.sort(rng.uniform(0.0, span, size=n_sessions)) + cfg.start_timestamp
        for s, start in enumerate(starts):
            drifted = drift_time is not None and start >= drift_time
            taste = user_vec[user] + (drift_shift if drifted else 0.0)
            pop = drift_pop if drifted else log_pop
            logits = cfg.preference_strength * (item_vec @ taste) / np.sqrt(cfg.latent_dim) + pop
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            n_events = int(rng.integers(cfg.events_per_session[0], cfg.events_per_session[1] + 1))
            n_events = min(n_events, cfg.n_items)
            chosen = rng.choice(cfg.n_items, size=n_events, replace=False, p=probs)
            gaps = np.cumsum(rng.exponential(90.0, size=n_events))
            for item, gap in zip(chosen, gaps, strict=True):
                rows.append((user, int(item), float(start + gap), f"u{user}-s{s}"))

    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "session_id"])
    frame["user_id"] = "u" + frame["user_id"].astype(str)
    frame["item_id"] = "i" + frame["item_id"].astype(str)
    frame["event_type"] = "click"
    frame["value"] = 1.0
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    genres = [
        tuple(sorted({categories[a], categories[b]})) if two else (categories[a],)
        for a, b, two in zip(item_cat, second, has_second, strict=True)
    ]
    items = pd.DataFrame(
        {
            "title": [f"Item {i}" for i in range(cfg.n_items)],
            "year": rng.integers(1980, 2020, size=cfg.n_items).astype(np.float64),
            "genres": genres,
        },
        index=pd.Index([f"i{i}" for i in range(cfg.n_items)], name="item_id"),
    )
    users = pd.DataFrame(
        {"age_band": age_band, "gender": gender, "device": device},
        index=pd.Index([f"u{u}" for u in range(cfg.n_users)], name="user_id"),
    )
    return Dataset(name=f"synthetic-{cfg.seed}", interactions=frame, items=items, users=users)
