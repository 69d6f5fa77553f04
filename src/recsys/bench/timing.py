"""``recsys bench timing``: do I need real time? Four architectures, one log, quality and cost.

The log is cut at one moment: the model trains on what came before, and what comes after is
replayed in time order. Every test event is first a request (a slate of ``k`` for its user,
the event's item looked for in it), then an event the system learns from. The same trained
model serves all four modes, so their answers differ only by what the profile knows:

* **batch** — lists precomputed for every known user at each daily refresh
  (:func:`recsys.serving.modes.precompute`), looked up at request time; users without a list
  get popularity. Maintenance: the refresh jobs (only users whose events changed are
  recomputed; the full-recompute cost is reported too).
* **session** — ``EngineConfig(mode="session")``: retrieval and ranking once per session on
  the profile as it was at session start. Maintenance: ingesting events.
* **real-time** — every event visible to the next request. Maintenance: ingesting events.
* **edge** — :class:`recsys.edge.EdgeBundle` built at the cut, scoring the current
  session's own events on the device; no server profile. Maintenance: building the bundle.

Per mode: NDCG@10 / HR@10 of the next event, staleness (events of the user the profile
misses, and the age of its newest event), request-time p50/p99 (in-process), compute to keep
it current (CPU seconds per 1,000 events), CPU per request, storage bytes. The verdict: the
cheapest mode whose NDCG@10 is within ``tolerance`` of the best, and the lift the next step
up would buy for its extra cost. Plots: quality against cost, quality against profile age.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.bench.quality import package_versions
from recsys.bench.registry import load_registry, training_order
from recsys.data import load_dataset
from recsys.data.splits import Split
from recsys.features.definitions import SESSION_GAP_SECONDS

log = logging.getLogger(__name__)

MODES = ("batch", "session", "realtime", "edge")
DAY = 86400.0


def timing_split(dataset: Any, test_fraction: float = 0.1) -> Split:
    """One cut in time: anonymous session logs by whole sessions (the last day), else events."""
    from recsys.data.splits import session_time_split
    from recsys.evaluation.replay import freshness_split

    if getattr(dataset, "session_keyed", False):
        split = session_time_split(dataset, test_days=1)
        if len(split.valid):  # the replay needs one training period only
            split.train = pd.concat([split.train, split.valid], ignore_index=True)
            split.valid = split.valid.iloc[0:0]
        return split
    return freshness_split(dataset, test_fraction, new_users=True)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def _dcg(rank: int) -> float:
    return 0.0 if rank < 0 else 1.0 / math.log2(rank + 2)


class _Outcome:
    """Per-request records of one mode."""

    def __init__(self) -> None:
        self.ranks: list[int] = []
        self.latency_ms: list[float] = []
        self.missing: list[int] = []
        self.age_s: list[float] = []
        self.request_cpu = 0.0
        self.maintenance_cpu = 0.0
        self.storage_bytes = 0
        self.notes: dict[str, Any] = {}

    def record(self, items: list[str], target: str, ms: float, missing: int, age: float) -> None:
        self.ranks.append(items.index(target) if target in items else -1)
        self.latency_ms.append(ms)
        self.missing.append(missing)
        self.age_s.append(age)

    def summary(self, k: int, events: int) -> dict[str, Any]:
        ranks = np.asarray(self.ranks)
        n = max(1, len(ranks))
        return {
            f"ndcg@{k}": float(np.mean([_dcg(r) for r in ranks])) if len(ranks) else 0.0,
            f"hr@{k}": float((ranks >= 0).mean()) if len(ranks) else 0.0,
            "requests": len(ranks),
            "missing_events_mean": float(np.mean(self.missing)) if self.missing else 0.0,
            "profile_age_hours_median": float(np.median(self.age_s) / 3600.0)
            if self.age_s
            else math.nan,
            "latency_ms": _percentiles(self.latency_ms),
            "request_cpu_ms": 1000.0 * self.request_cpu / n,
            "maintenance_cpu_s_per_1000_events": 1000.0 * self.maintenance_cpu / max(1, events),
            "cpu_ms_per_request": 1000.0 * (self.request_cpu + self.maintenance_cpu) / n,
            "storage_bytes": int(self.storage_bytes),
            **self.notes,
        }


def run_timing(
    dataset: str,
    out_dir: Path,
    model: str = "ease",
    test_fraction: float = 0.1,
    max_events: int | None = None,
    k: int = 10,
    tolerance: float = 0.05,
    refresh_seconds: float = DAY,
    plots: bool = True,
) -> dict[str, Any]:
    """Replay the log through the four modes; write ``timing.json``, ``timing.md`` and plots.

    Args:
        dataset: Any dataset name (built-in or registered).
        out_dir: Output folder.
        model: Registered model served by every mode.
        test_fraction: Share of events after the cut (user-keyed logs).
        max_events: Replay only the first N test events.
        k: Slate size.
        tolerance: Relative NDCG@k below the best that still counts as good enough.
        refresh_seconds: Batch refresh period.
        plots: Write ``quality_vs_cost.png`` and ``quality_vs_age.png``.
    """
    from recsys.edge import EdgeBundle
    from recsys.features import Ingestor, InProcessStore, ItemInfoCatalog
    from recsys.features.events import events_from_frame
    from recsys.serving.build import build_engine
    from recsys.serving.engine import Engine, EngineConfig
    from recsys.serving.modes import build_edge_bundle, precompute

    data = load_dataset(dataset)
    split = timing_split(data, test_fraction)
    test = split.test.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if max_events is not None:
        test = test.iloc[:max_events].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{dataset}: no events after the cut to replay")
    registry = load_registry()
    trained: dict[str, Any] = {}
    start_cpu = time.process_time()
    for name in training_order([model], registry):
        trained[name] = registry[name].create(dataset, registry, trained).fit(split)
    train_cpu = time.process_time() - start_cpu
    served = trained[model]
    catalog = ItemInfoCatalog.from_dataset(data)
    cut = float(test["timestamp"].min())

    def engine_for(mode: str) -> tuple[Engine, Ingestor]:
        store = InProcessStore(catalog)
        engine = build_engine(
            split, retriever=served, store=store, config=EngineConfig(mode=mode, candidates=100)
        )
        return engine, Ingestor(store)

    outcomes = {mode: _Outcome() for mode in MODES}
    engines = {mode: engine_for(mode) for mode in ("session", "realtime")}
    batch_engine, batch_ingestor = engine_for("realtime")
    start_cpu = time.process_time()
    bundle_dir = out_dir / "edge-bundle"
    bundle = build_edge_bundle(split, path=bundle_dir)
    outcomes["edge"].maintenance_cpu = time.process_time() - start_cpu
    outcomes["edge"].storage_bytes = EdgeBundle.size_bytes(bundle_dir)

    # the batch job: users known at the cut, then whoever was active since the last run
    known_users = set(split.train["user_id"].astype(str))
    lists, cpu = precompute(batch_engine, sorted(known_users), now=cut)
    batch = Engine(
        data.item_index,
        retriever=lists,
        fallback=batch_engine.fallback,
        decision=batch_engine.decision,
        profiles=batch_engine.profiles,
        users=data.user_index,
        config=EngineConfig(candidates=100),
    )
    per_user_cpu = cpu / max(1, len(lists.lists))
    outcomes["batch"].maintenance_cpu = cpu
    refreshes, full_recompute_cpu = 1, cpu
    next_refresh = (math.floor(cut / refresh_seconds) + 1) * refresh_seconds
    changed: set[str] = set()

    events = events_from_frame(test)
    history_times: dict[str, list[float]] = defaultdict(list)
    train_times = split.train.groupby(split.train["user_id"].astype(str))["timestamp"]
    for user_id, times in train_times:
        history_times[user_id] = sorted(times.tolist())
    last_refresh = cut
    session_items: dict[str, list[str]] = defaultdict(list)
    last_seen: dict[str, float] = {}
    known_at_session_start: dict[str, float] = {}
    for event in events:
        t, user = event.timestamp, event.user_id
        while t >= next_refresh:  # the nightly batch job(s) before this event
            start_cpu = time.process_time()
            fresh, _ = precompute(batch_engine, sorted(changed), now=next_refresh)
            outcomes["batch"].maintenance_cpu += time.process_time() - start_cpu
            lists.lists.update(fresh.lists)
            full_recompute_cpu += per_user_cpu * (len(known_users) + len(changed))
            known_users |= changed
            changed.clear()
            last_refresh, refreshes = next_refresh, refreshes + 1
            next_refresh += refresh_seconds
        prior = history_times[user]
        newest = prior[-1] if prior else math.nan
        if user not in last_seen or t - last_seen[user] > SESSION_GAP_SECONDS:
            session_items[user] = []  # a new session: its frozen profile knows up to here
            known_at_session_start[user] = newest
        for mode in MODES:
            outcome = outcomes[mode]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if mode == "edge":
                items = bundle.recommend(session_items[user], k=k)
            else:
                engine = batch if mode == "batch" else engines[mode][0]
                items = engine.recommend(user_id=user, k=k, now=t).items
            ms = (time.perf_counter() - wall0) * 1000.0
            outcome.request_cpu += time.process_time() - cpu0
            if mode == "realtime":
                missing, age = 0, t - newest
            elif mode == "batch":
                missing = (
                    sum(1 for x in prior if x >= last_refresh)
                    if user in lists.lists
                    else len(prior)
                )
                age = t - last_refresh if user in lists.lists else math.nan
            elif mode == "session":
                missing = len(session_items[user])
                age = t - known_at_session_start[user]
            else:
                missing, age = len(prior) - len(session_items[user]), 0.0
            outcome.record(items, event.item_id, ms, missing, age if math.isfinite(age) else 0.0)
        for mode, (_, ingestor) in (*engines.items(), ("batch", (None, batch_ingestor))):
            cpu0 = time.process_time()
            ingestor.ingest([event])
            outcomes[mode].maintenance_cpu += time.process_time() - cpu0
        changed.add(user)
        prior.append(t)
        session_items[user].append(event.item_id)
        last_seen[user] = t
    for mode in ("session", "realtime"):
        outcomes[mode].storage_bytes = _store_bytes(engines[mode][1].store)
    outcomes["batch"].storage_bytes = lists.nbytes
    outcomes["batch"].notes = {
        "refreshes": refreshes,
        "full_recompute_cpu_s_per_1000_events": 1000.0 * full_recompute_cpu / len(events),
    }
    outcomes["edge"].notes = {"bundle_bytes": outcomes["edge"].storage_bytes}
    report: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "key": getattr(data, "key", "user"),
        "cut": cut,
        "events": len(events),
        "users": int(test["user_id"].nunique()),
        "train_events": len(split.train),
        "train_cpu_s": train_cpu,
        "k": k,
        "tolerance": tolerance,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "modes": {mode: outcomes[mode].summary(k, len(events)) for mode in MODES},
    }
    report["verdict"] = verdict(report["modes"], k, tolerance)
    out_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        _plots(report, outcomes, out_dir)
    (out_dir / "timing.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "timing.md").write_text(timing_table(report) + "\n")
    return report


def _store_bytes(store: Any) -> int:
    return sum(len(json.dumps(state)) for state in store.snapshot().values())


def verdict(modes: dict[str, dict[str, Any]], k: int, tolerance: float) -> dict[str, Any]:
    """The cheapest mode within ``tolerance`` of the best NDCG@k, and the next step's price."""
    metric = f"ndcg@{k}"
    best = max(modes, key=lambda m: modes[m][metric])
    floor = (1.0 - tolerance) * modes[best][metric]
    by_cost = sorted(modes, key=lambda m: modes[m]["cpu_ms_per_request"])
    chosen = next(m for m in by_cost if modes[m][metric] >= floor)
    better = [m for m in by_cost if modes[m][metric] > modes[chosen][metric] and m != chosen]
    step = better[0] if better else None
    out: dict[str, Any] = {
        "best_quality": best,
        "choice": chosen,
        "tolerance": tolerance,
        "cost_order": by_cost,
    }
    cost = f"{modes[chosen]['cpu_ms_per_request']:.2f} CPU-ms per request"
    if chosen == best:
        words = (
            f"{chosen} has the best {metric} ({modes[best][metric]:.4f}) and is the cheapest "
            f"mode within {tolerance:.0%} of it ({cost})."
        )
    else:
        words = (
            f"{chosen} is the cheapest architecture within {tolerance:.0%} of the best "
            f"{metric} ({best}: {modes[best][metric]:.4f}; {chosen}: "
            f"{modes[chosen][metric]:.4f}, {cost})."
        )
    if step is not None:
        lift = modes[step][metric] / max(modes[chosen][metric], 1e-12) - 1.0
        extra = modes[step]["cpu_ms_per_request"] - modes[chosen]["cpu_ms_per_request"]
        out["next_step"] = {"mode": step, "lift": lift, "extra_cpu_ms_per_request": extra}
        words += (
            f" Moving to {step} would lift {metric} by {lift:+.1%} for "
            f"{extra:+.2f} CPU-ms per request: worth it only if that lift pays for the cost."
        )
    out["text"] = words
    return out


def timing_table(report: dict[str, Any]) -> str:
    """Markdown table and verdict."""
    k = report["k"]
    lines = [
        f"**{report['dataset']}** ({report['key']}-keyed), model `{report['model']}`, "
        f"{report['events']} replayed events of {report['users']} users/sessions",
        "",
        f"| mode | NDCG@{k} | HR@{k} | missing events | profile age h (median) | p50 ms | p99 ms "
        "| CPU-ms/request | upkeep CPU-s/1k events | storage bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, m in report["modes"].items():
        lines.append(
            f"| {mode} | {m[f'ndcg@{k}']:.4f} | {m[f'hr@{k}']:.4f} | "
            f"{m['missing_events_mean']:.2f} | {m['profile_age_hours_median']:.1f} | "
            f"{m['latency_ms']['p50']:.3f} | {m['latency_ms']['p99']:.3f} | "
            f"{m['cpu_ms_per_request']:.2f} | {m['maintenance_cpu_s_per_1000_events']:.3f} | "
            f"{m['storage_bytes']:,} |"
        )
    lines += ["", report["verdict"]["text"]]
    return "\n".join(lines)


def _plots(report: dict[str, Any], outcomes: dict[str, _Outcome], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = report["k"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, m in report["modes"].items():
        ax.scatter(m["cpu_ms_per_request"], m[f"ndcg@{k}"], s=60)
        ax.annotate(mode, (m["cpu_ms_per_request"], m[f"ndcg@{k}"]))
    ax.set(xlabel="CPU-ms per request (request + upkeep)", ylabel=f"NDCG@{k}",
           title=f"{report['dataset']}: quality against cost")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out_dir / "quality_vs_cost.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in ("batch", "session"):
        ages = np.asarray(outcomes[mode].age_s) / 3600.0
        gains = np.asarray([_dcg(r) for r in outcomes[mode].ranks])
        if not len(ages):
            continue
        edges = np.unique(np.quantile(ages, np.linspace(0, 1, 6)))
        if len(edges) < 2:
            continue
        bucket = np.clip(np.searchsorted(edges, ages, side="right") - 1, 0, len(edges) - 2)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(len(edges) - 1)]
        means = [
            gains[bucket == b].mean() if (bucket == b).any() else np.nan
            for b in range(len(edges) - 1)
        ]
        ax.plot(centres, means, marker="o", label=mode)
    ax.axhline(report["modes"]["realtime"][f"ndcg@{k}"], color="k", linestyle=":", label="realtime")
    ax.set(xlabel="profile age (hours)", ylabel=f"NDCG@{k}", title="quality against profile age")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "quality_vs_age.png", dpi=110)
    plt.close(fig)
