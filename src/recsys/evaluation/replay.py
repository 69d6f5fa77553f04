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
  users)`` variant keeps them: their profiles start empty, and an empty profile is scored
  with training popularity (the engine's fallback), so the real-time profile is what turns a
  new user from "popular items" into personal recommendations.
* **Task**: for each test event of user *u* at time *t*, rank the whole catalogue for *u* and
  look for the event's item in the top ``k`` (next-item HR@k, NDCG@k, MRR@k, averaged over
  events).
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

Both tables come from one scoring pass (the score depends on the profile, not the mask).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import Dataset, histories
from recsys.data.splits import Split, time_cutoff_split
from recsys.types import IntArray, Query, top_k_indices

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
    scorer: Callable[[Sequence[Query]], np.ndarray],
    split: Split,
    config: FreshnessConfig | None = None,
    modes: Sequence[str] = MODES,
    fallback: np.ndarray | None = None,
) -> dict[str, Any]:
    """Replay ``split.test`` in time order and score each event under each profile.

    Args:
        scorer: ``(queries) -> (B, n_items)`` scores, e.g. a trained ``Recommender.score``.
        split: A global time-cutoff split (see :func:`freshness_split`).
        config: Replay settings.
        modes: Which of ``static``, ``batch``, ``session``, ``realtime`` to run.
        fallback: Scores (n_items,) used for an empty profile (a new user), as the engine's
            popularity fallback would; ``None`` leaves them to ``scorer``.

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
    train_hist = histories(split.train, split.dataset.n_users)
    users = test["user"].to_numpy(np.int64)
    targets = test["item"].to_numpy(np.int64)
    prefixes = profile_prefixes(test, config)
    # each user's test items in time order, and each event's position among them
    test_items: dict[int, IntArray] = {
        int(u): g.to_numpy(np.int64) for u, g in test.groupby("user", sort=False)["item"]
    }
    position = prefixes["realtime"]

    per_event: dict[str, dict[str, np.ndarray]] = {}
    for mode in modes:
        prefix = prefixes[mode]
        keys = users * (len(test) + 1) + prefix  # (user, prefix) identifies the history
        unique_keys, key_of_event = np.unique(keys, return_inverse=True)
        event_order = np.argsort(key_of_event, kind="stable")
        key_starts = np.searchsorted(key_of_event[event_order], np.arange(len(unique_keys) + 1))
        ranks_profile = np.full(len(test), -1, dtype=np.int64)
        ranks_seen = np.full(len(test), -1, dtype=np.int64)
        for start in range(0, len(unique_keys), config.batch_size):
            stop = min(start + config.batch_size, len(unique_keys))
            batch_keys = unique_keys[start:stop]
            key_users = batch_keys // (len(test) + 1)
            key_prefix = batch_keys % (len(test) + 1)
            queries = [
                Query(
                    user=int(u),
                    history=np.concatenate([train_hist[int(u)], test_items[int(u)][: int(p)]]),
                )
                for u, p in zip(key_users, key_prefix, strict=True)
            ]
            scores = np.asarray(scorer(queries), dtype=np.float32)
            if fallback is not None:
                empty = [row for row, q in enumerate(queries) if q.history.size == 0]
                scores[empty] = fallback
            for row, query in enumerate(queries):
                events = event_order[key_starts[start + row] : key_starts[start + row + 1]]
                base = scores[row].copy()
                base[query.history] = -np.inf
                for e in events:
                    ranks_profile[e] = _rank(base, targets[e], k)
                    # mask everything consumed before the event, whatever the profile knew
                    unseen = test_items[int(users[e])][int(prefix[e]) : int(position[e])]
                    if len(unseen):
                        seen_scores = base.copy()
                        seen_scores[unseen] = -np.inf
                        ranks_seen[e] = _rank(seen_scores, targets[e], k)
                    else:
                        ranks_seen[e] = ranks_profile[e]
        per_event[mode] = {
            "profile": ranks_profile,
            "seen": ranks_seen,
            "missing": (position - prefix).astype(np.float64),
        }
        log.info("freshness %s: %d histories scored", mode, len(unique_keys))

    report: dict[str, Any] = {
        "events": len(test),
        "users": int(np.unique(users).size),
        "events_of_new_users": int(sum(train_hist[int(u)].size == 0 for u in users)),
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


def _rank(scores: np.ndarray, target: int, k: int) -> int:
    """0-based rank of ``target`` in the top ``k`` of ``scores`` (ties by index), -1 if absent."""
    if not np.isfinite(scores[target]):
        return -1
    top = top_k_indices(scores, k)
    hit = np.flatnonzero(top == target)
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


# --------------------------------------------------------------------------- benchmark


def _load_average() -> float | None:
    """1-minute load average of the host (the machine is shared; numbers depend on it)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:  # pragma: no cover - platforms without getloadavg
        return None


def _ease_l2(dataset: str) -> float:
    # the per-dataset λ the quality benchmark uses (recsys.evaluation.bench)
    return 250.0 if dataset in ("ml-100k", "synthetic") else 500.0


def run_freshness(
    datasets: Sequence[str],
    out_dir: Path,
    config: FreshnessConfig | None = None,
    throughput_events: int = 100_000,
    latency_samples: int = 1000,
    batch_size: int = 500,
    redis: bool = True,
    replay: bool = True,
    sweep: Sequence[int] = (100, 2000),
) -> dict[str, Any]:
    """``recsys bench freshness``: replay table per dataset + ingest throughput and latency.

    Args:
        datasets: Dataset names (``ml-100k``, ``ml-latest-small``, ``synthetic``).
        out_dir: Folder for ``freshness.json`` and ``freshness.md`` (created).
        config: Replay settings.
        throughput_events: Events of the first dataset ingested for the throughput run.
        latency_samples: Single-event ingest→profile round trips timed.
        batch_size: Events per ingest call in the throughput run.
        redis: Also measure the Redis backend (needs ``redis-server``; skipped with a note
            when absent).
        replay: Run the replay tables (``False``: only the ingest measurements, on the first
            dataset).
        sweep: Further batch sizes whose throughput is measured (no latency run).

    Returns:
        The report written to ``freshness.json``.
    """
    from recsys.data import load_dataset
    from recsys.evaluation.bench import package_versions
    from recsys.features.definitions import ItemInfoCatalog
    from recsys.features.events import events_from_frame
    from recsys.features.ingest import benchmark_ingest
    from recsys.features.store import InProcessStore, OnlineStore, RedisStore
    from recsys.retrieval.baselines import EASE

    config = config or FreshnessConfig()
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.model_dump(mode="json"),
        "model": "EASE (λ=250 ml-100k / 500 ml-latest-small), trained once before the cutoff",
        "versions": package_versions(),
        "datasets": {},
    }
    first: Dataset | None = None
    for name in datasets:
        dataset = load_dataset(name)
        first = first or dataset
        if not replay:
            break
        start = time.perf_counter()
        model = EASE(l2=_ease_l2(name)).fit(freshness_split(dataset, config.test_fraction))
        train_seconds = time.perf_counter() - start
        # both splits share the training part, so one model serves both replays
        for new_users in (False, True):
            split = freshness_split(dataset, config.test_fraction, new_users=new_users)
            popularity = np.bincount(split.train["item"], minlength=dataset.n_items)
            start = time.perf_counter()
            result = replay_freshness(
                model.score, split, config, fallback=popularity.astype(np.float32)
            )
            result["train_seconds"] = train_seconds
            result["replay_seconds"] = time.perf_counter() - start
            result["cutoff"] = split.protocol
            result["split_sizes"] = split.sizes()
            key = f"{name} (+ new users)" if new_users else name
            report["datasets"][key] = result
            log.info("freshness %s: %s", key, result["metrics"])

    if first is not None:
        frame = first.interactions.sort_values("timestamp", kind="stable")
        events = events_from_frame(frame.iloc[: throughput_events + latency_samples])
        catalog = ItemInfoCatalog.from_dataset(first)
        ingest: dict[str, Any] = {"dataset": first.name, "host_load_1min": _load_average()}

        throughput_part = events[: max(0, len(events) - latency_samples)]

        def measure(make_store: Callable[[], OnlineStore]) -> dict[str, Any]:
            result = benchmark_ingest(events, make_store(), batch_size, latency_samples)
            # throughput at other batch sizes (each batch pays one fsync and one round trip)
            result["events_per_second_by_batch_size"] = {
                str(size): benchmark_ingest(throughput_part, make_store(), size, 0)[
                    "events_per_second"
                ]
                for size in sweep
            }
            result["events_per_second_by_batch_size"][str(batch_size)] = result["events_per_second"]
            return result

        ingest["in_process"] = measure(lambda: InProcessStore(catalog))
        if redis:
            from recsys.features.redis_local import RedisNotInstalledError, start_redis

            try:
                with start_redis() as server:
                    ingest["redis"] = measure(lambda: RedisStore(server.url, catalog))
            except RedisNotInstalledError as exc:
                ingest["redis"] = {"skipped": str(exc)}
        report["ingest"] = ingest

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "freshness.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "freshness.md").write_text(freshness_table(report) + "\n")
    return report


def freshness_table(report: dict[str, Any]) -> str:
    """Markdown tables of a freshness report."""
    lines: list[str] = []
    for name, result in report.get("datasets", {}).items():
        k = result["k"]
        lines += [
            f"**{name}** ({result['cutoff']}, {result['events']} test events, "
            f"{result['users']} users, {result['events_of_new_users']} events of new users)",
            "",
            f"| profile | HR@{k} | NDCG@{k} | MRR@{k} | missing events | "
            f"NDCG@{k} seen-masked | ΔNDCG vs batch (± se) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, m in result["metrics"].items():
            seen = result["metrics_seen_masked"][mode][f"ndcg@{k}"]
            delta = result["delta_vs_batch"].get(mode, {})
            delta_text = (
                f"{delta[f'ndcg@{k}']:+.4f} ± {delta[f'ndcg@{k}_se']:.4f}" if delta else "—"
            )
            lines.append(
                f"| {mode} | {m[f'hr@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} | {m[f'mrr@{k}']:.4f} | "
                f"{m['missing_events']:.2f} | {seen:.4f} | {delta_text} |"
            )
        lines.append("")
    ingest = report.get("ingest")
    if ingest:
        lines += [
            f"**ingest** ({ingest['dataset']} events; log fsynced per batch; "
            f"host load {ingest.get('host_load_1min') or float('nan'):.1f})",
            "",
            "| backend | events/s | batch | event→feature p50 ms | p99 ms "
            "| without log fsync p50 / p99 ms | events/s by batch |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for backend in ("in_process", "redis"):
            r = ingest.get(backend)
            if not r or "skipped" in r:
                lines.append(
                    f"| {backend} | skipped: {r.get('skipped') if r else 'not run'} | | | |"
                )
                continue
            by_size = r.get("events_per_second_by_batch_size", {})
            sweep_text = ", ".join(
                f"{size}: {eps:,.0f}"
                for size, eps in sorted(by_size.items(), key=lambda x: int(x[0]))
            )
            lines.append(
                f"| {backend} | {r['events_per_second']:,.0f} | {r['batch_size']:.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['store_only_p50_ms']:.3f} / {r['store_only_p99_ms']:.3f} | {sweep_text} |"
            )
    return "\n".join(lines)
