"""``recsys bench latency``: the in-process Engine's per-stage latency on real users.

Trains the registered models on a split, builds the engine each one is served by (decision
stage on, as deployed), warms it up and times ``Engine.recommend`` for a fixed set of users:
p50/p95/p99 per stage (``profile``, ``retrieval``, ``ranking``, ``decision``, ``total``).
This is the engine's own cost, before any HTTP; ``recsys bench serve`` adds the server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.bench.quality import package_versions
from recsys.bench.registry import load_registry, training_order
from recsys.data import load_dataset, make_split


def run_latency(
    dataset: str,
    out_dir: Path,
    models: Sequence[str] = ("ease", "two_tower+ranker"),
    protocol: str = "random",
    users: int = 500,
    warmup: int = 50,
    k: int = 10,
    seed: int = 2020,
) -> dict[str, Any]:
    """Per-stage in-process latency of each model's engine; writes ``latency.json``/``.md``.

    Args:
        dataset: Dataset name.
        out_dir: Output folder (created).
        models: Registered models to serve.
        protocol: Split protocol the models are trained on.
        users: Requests timed (one per user, the first ``users`` users of the index).
        warmup: Untimed requests first (caches, lazy builds).
        k: Slate size.
        seed: Split seed.
    """
    from recsys.serving.build import build_engine, stage_latency

    registry = load_registry()
    split = make_split(load_dataset(dataset), protocol, seed=seed)
    user_ids = list(split.dataset.user_index.ids[:users])
    trained: dict[str, Any] = {}
    report: dict[str, Any] = {
        "dataset": dataset,
        "protocol": protocol,
        "n_items": split.dataset.n_items,
        "requests": len(user_ids),
        "k": k,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host_load_1min": os.getloadavg()[0],
        "versions": package_versions(),
        "models": {},
    }
    for name in training_order(list(models), registry):
        trained[name] = registry[name].create(dataset, registry, trained).fit(split)
        if name not in models:
            continue
        engine = build_engine(split, retriever=trained[name])
        stage_latency(engine, user_ids[:warmup], k=k)
        report["models"][name] = stage_latency(engine, user_ids, k=k)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latency.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "latency.md").write_text(latency_table(report) + "\n")
    return report


def latency_table(report: dict[str, Any]) -> str:
    """Markdown: one row per model and stage, p50 / p95 / p99 ms."""
    lines = [
        f"**{report['dataset']}** ({report['n_items']} items), in-process `Engine.recommend`, "
        f"{report['requests']} users, k={report['k']}, host load {report['host_load_1min']:.1f}",
        "",
        "| model | stage | p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, result in report["models"].items():
        for stage, q in result["stages_ms"].items():
            lines.append(f"| {name} | {stage} | {q['p50']:.3f} | {q['p95']:.3f} | {q['p99']:.3f} |")
    return "\n".join(lines)
