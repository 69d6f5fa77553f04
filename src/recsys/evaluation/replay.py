"""Value of freshness: batch / session / real-time profiles, one trained model, one replay.

The test period is replayed in time order and each next interaction is recommended from a
profile of a different freshness.

Protocol (``recsys bench freshness``):

* **Split**: one *global* time cutoff (:func:`~recsys.data.splits.time_cutoff_split`): the
  model trains on everything before it and the test period is everything after, replayed in
  global time order. A per-user temporal split would not do here: it puts some users' test
  events before other users' training events, so there is no single moment at which "the
  model was trained" and "the daily refresh ran" — the very clock this comparison needs.
  By default test events of users unseen before the cutoff are dropped; the ``(+ new
  users)`` variant keeps them: their profiles start empty, and an empty profile gets the
  engine's cold-start answer (context popularity), so the real-time profile is what turns a
  new user from "popular items" into personal recommendations.
* **Task**: for each test event of user *u* at time *t*, the engine serves *u* a slate of
  ``k`` from the profile, and the event's item is looked for in it (next-item HR@k, NDCG@k,
  MRR@k, averaged over events). Every slate comes from :meth:`recsys.serving.Engine.serve`,
  the stages a request runs.
* **Profiles** (what the model sees as *u*'s history; the model is never retrained):

  - ``static``: the training history only (frozen at the cutoff; reference);
  - ``batch``: plus *u*'s test events before the last daily refresh (UTC midnight);
  - ``session``: plus *u*'s test events before the start of the current session (a session
    starts after a gap of more than ``session_gap_seconds``);
  - ``realtime``: plus every earlier test event of *u* (updated with every event).

* **Masking**: by default each profile masks the items it knows (``metrics``): a stale
  profile may re-recommend what the user just consumed, which is part of the cost of
  staleness. ``metrics_seen_masked`` masks everything the user consumed before *t* for every
  profile, isolating the value of a fresher *model input*.

The profile-masked slate depends on the profile only, so it is served once per
(user, profile); the seen-masked one once per event whose profile lacks consumed items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import Dataset, timed_histories
from recsys.data.splits import Split, time_cutoff_split
from recsys.evaluation.protocol import Server
from recsys.features.definitions import user_contexts
from recsys.types import IntArray, ItemList, Query

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("static", "batch", "session", "realtime")


class FreshnessConfig(ComponentConfig):
    """Settings of the freshness replay."""

    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Last share of events tested.")
    session_gap_seconds: float = Field(1800.0, gt=0.0, description="Gap that starts a session.")
    refresh_seconds: float = Field(86400.0, gt=0.0, description="Batch refresh period (daily).")
    k: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=100_000, description="Queries per scoring call.")
    max_events: int | None = Field(None, ge=1, description="Replay only the first N test events.")


def freshness_split(dataset: Dataset, test_fraction: float = 0.1, new_users: bool = False) -> Split:
    """Global time cutoff at the ``1 - test_fraction`` quantile of event times (no validation).

    Args:
        dataset: The dataset.
        test_fraction: Share of events (by time) after the cutoff.
        new_users: Keep the test events of users first seen after the cutoff (their profiles
            start empty; :func:`replay_freshness` scores an empty profile with its
            ``fallback``). By default only users seen before the cutoff are tested.
    """
    times = dataset.interactions["timestamp"].to_numpy()
    cutoff = float(np.quantile(times, 1.0 - test_fraction))
    split = time_cutoff_split(dataset, valid_start=cutoff, test_start=cutoff)
    split.protocol = f"time_cutoff@{cutoff:.0f}"
    if new_users:
        frame = dataset.interactions
        split.test = frame[frame["timestamp"].to_numpy() >= cutoff].reset_index(drop=True)
        split.protocol += "+new_users"
    return split


def profile_prefixes(test: pd.DataFrame, config: FreshnessConfig) -> dict[str, IntArray]:
    """How many of the user's earlier test events each profile holds, per test event.

    Args:
        test: Test events in time order (``user``, ``timestamp``).
        config: Session gap and refresh period. A session that began before the cutoff
            gets prefix 0, like one that begins with the user's first test event: the
            training history is in every profile.

    Returns:
        ``{mode: prefix}`` with one int per test row: the realtime prefix is the number of the
        user's earlier test events, the others are never larger.
    """
    n = len(test)
    users = test["user"].to_numpy(np.int64)
    times = test["timestamp"].to_numpy(np.float64)
    out = {mode: np.zeros(n, dtype=np.int64) for mode in MODES}
    order = np.lexsort((np.arange(n), users))  # by user, keeping time order inside
    boundaries = np.flatnonzero(np.diff(users[order])) + 1
    for rows in np.split(order, boundaries):
        if len(rows) == 0:
            continue
        t = times[rows]
        position = np.arange(len(rows))
        out["realtime"][rows] = position
        # session start: last index s <= j with a gap > threshold before it (0 if none)
        new_session = np.concatenate([[True], np.diff(t) > config.session_gap_seconds])
        starts = np.maximum.accumulate(np.where(new_session, position, 0))
        out["session"][rows] = starts
        # batch: events strictly before the last refresh boundary at or before t
        refresh = np.floor(t / config.refresh_seconds) * config.refresh_seconds
        out["batch"][rows] = np.searchsorted(t, refresh, side="left")
        # static stays 0
    return out


def replay_freshness(
    serve: Server,
    split: Split,
    config: FreshnessConfig | None = None,
    modes: Sequence[str] = MODES,
) -> dict[str, Any]:
    """Replay ``split.test`` in time order; serve each event under each profile.

    Args:
        serve: ``(queries, k) -> slates`` — :meth:`recsys.serving.Engine.serve` of an engine
            without a decision stage, so an empty profile (a new user) gets the engine's
            cold-start fallback, as in production.
        split: A global time-cutoff split (see :func:`freshness_split`).
        config: Replay settings.
        modes: Which of ``static``, ``batch``, ``session``, ``realtime`` to run.

    Returns:
        ``metrics[mode]`` (profile-masked) and ``metrics_seen_masked[mode]``, each with
        ``hr@k``, ``ndcg@k``, ``mrr@k``, their standard errors and ``missing_events`` (the
        mean number of the user's test events the profile lacks); ``delta_vs_batch`` (paired
        mean difference and standard error of NDCG@k); ``events`` and ``users``.
    """
    config = config or FreshnessConfig()
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"modes: unknown {unknown}; choose from {MODES}")
    test = split.test.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if config.max_events is not None:
        test = test.iloc[: config.max_events].reset_index(drop=True)
    if test.empty:
        raise ValueError("split.test: no test events to replay")
    k = config.k
    data = split.dataset
    train = timed_histories(split.train, data.n_users)
    contexts = user_contexts(data.users)
    users = test["user"].to_numpy(np.int64)
    targets = test["item"].to_numpy(np.int64)
    times = test["timestamp"].to_numpy(np.float64)
    prefixes = profile_prefixes(test, config)
    # each user's test events in time order, and each event's position among them
    test_events = {
        int(u): (g["item"].to_numpy(np.int64), g["timestamp"].to_numpy(np.float64))
        for u, g in test.groupby("user", sort=False)
    }
    position = prefixes["realtime"]

    def query(user: int, prefix: int, at: float, exclude: IntArray | None = None) -> Query:
        items, stamps = test_events[user]
        return Query(
            user=user,
            user_id=data.user_index.ids[user],
            history=np.concatenate([train[user].items, items[:prefix]]),
            history_times=np.concatenate([train[user].times, stamps[:prefix]]),
            context=contexts[user] if user < len(contexts) else {},
            timestamp=at,
            exclude=np.zeros(0, dtype=np.int64) if exclude is None else exclude,
        )

    per_event: dict[str, dict[str, np.ndarray]] = {}
    for mode in modes:
        prefix = prefixes[mode]
        # the profile-masked answer depends on (user, prefix) only: serve each once
        keys = users * (len(test) + 1) + prefix
        unique_keys, first, key_of_event = np.unique(keys, return_index=True, return_inverse=True)
        slates = _serve_batched(
            serve,
            [query(int(users[e]), int(prefix[e]), float(times[e])) for e in first],
            k,
            config.batch_size,
        )
        ranks_profile = np.asarray(
            [_rank(slates[key_of_event[e]], targets[e]) for e in range(len(test))], dtype=np.int64
        )
        # seen-masked: also exclude what the user consumed that the profile does not hold
        ranks_seen = ranks_profile.copy()
        stale = np.flatnonzero(position > prefix)
        masked = _serve_batched(
            serve,
            [
                query(
                    int(users[e]),
                    int(prefix[e]),
                    float(times[e]),
                    test_events[int(users[e])][0][int(prefix[e]) : int(position[e])],
                )
                for e in stale
            ],
            k,
            config.batch_size,
        )
        for e, slate in zip(stale, masked, strict=True):
            ranks_seen[e] = _rank(slate, targets[e])
        per_event[mode] = {
            "profile": ranks_profile,
            "seen": ranks_seen,
            "missing": (position - prefix).astype(np.float64),
        }
        log.info("freshness %s: %d profiles served", mode, len(unique_keys))

    report: dict[str, Any] = {
        "events": len(test),
        "users": int(np.unique(users).size),
        "events_of_new_users": int(sum(train[int(u)].items.size == 0 for u in users)),
        "k": k,
        "metrics": {},
        "metrics_seen_masked": {},
        "delta_vs_batch": {},
    }
    for mode, values in per_event.items():
        report["metrics"][mode] = _summarize(values["profile"], k)
        report["metrics"][mode]["missing_events"] = float(values["missing"].mean())
        report["metrics_seen_masked"][mode] = _summarize(values["seen"], k)
    if "batch" in per_event:
        base = _ndcg(per_event["batch"]["profile"])
        for mode, values in per_event.items():
            diff = _ndcg(values["profile"]) - base
            report["delta_vs_batch"][mode] = {
                f"ndcg@{k}": float(diff.mean()),
                f"ndcg@{k}_se": float(diff.std(ddof=1) / np.sqrt(len(diff)))
                if len(diff) > 1
                else 0.0,
            }
    return report


def _serve_batched(serve: Server, queries: list[Query], k: int, batch_size: int) -> list[ItemList]:
    out: list[ItemList] = []
    for start in range(0, len(queries), batch_size):
        out.extend(serve(queries[start : start + batch_size], k))
    return out


def _rank(slate: ItemList, target: int) -> int:
    """0-based position of ``target`` in the served slate, -1 if absent."""
    hit = np.flatnonzero(slate.items == target)
    return int(hit[0]) if hit.size else -1


def _ndcg(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks >= 0, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def _summarize(ranks: np.ndarray, k: int) -> dict[str, float]:
    """Event-averaged HR@k, NDCG@k, MRR@k (one relevant item per event) with standard errors."""
    hits = (ranks >= 0).astype(np.float64)
    values = {
        f"hr@{k}": hits,
        f"ndcg@{k}": _ndcg(ranks),
        f"mrr@{k}": np.where(ranks >= 0, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0),
    }
    n = len(ranks)
    out: dict[str, float] = {}
    for name, v in values.items():
        out[name] = float(v.mean())
        out[f"{name}_se"] = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return out
