"""``recsys bench freshness``: the value of fresh profiles, and what ingesting costs.

The replay (:func:`recsys.evaluation.replay.replay_freshness`) serves every test event from a
static, batch, session and real-time profile through the Engine; the ingest part measures
events/s and the event → feature latency of the in-process and Redis online stores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recsys.bench.quality import package_versions, served_engine
from recsys.bench.registry import load_registry
from recsys.data import load_dataset
from recsys.data.dataset import Dataset
from recsys.evaluation.replay import FreshnessConfig, freshness_split, replay_freshness
from recsys.features.definitions import ItemInfoCatalog
from recsys.features.events import events_from_frame
from recsys.features.ingest import benchmark_ingest
from recsys.features.store import InProcessStore, OnlineStore, RedisStore

log = logging.getLogger(__name__)


def _load_average() -> float | None:
    """1-minute load average of the host (the machine is shared; numbers depend on it)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:  # pragma: no cover - platforms without getloadavg
        return None


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
    config = config or FreshnessConfig()
    registry = load_registry()
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.model_dump(mode="json"),
        "model": "the registered `ease` entry, trained once before the cutoff, served by the "
        "Engine (decision stage off; empty profiles get its cold-start fallback)",
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
        model = registry["ease"].create(name, registry, {})
        model.fit(freshness_split(dataset, config.test_fraction))
        train_seconds = time.perf_counter() - start
        report["ease_l2"] = model.config.l2
        # both splits share the training part, so one model serves both replays
        for new_users in (False, True):
            split = freshness_split(dataset, config.test_fraction, new_users=new_users)
            engine = served_engine(split, model)
            start = time.perf_counter()
            result = replay_freshness(engine.serve, split, config)
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
