"""``recsys bench quality``: every model, one split, full ranking, served by the Engine.

Each registered model (:mod:`recsys.bench.registry`) is trained on the split, put into an
:class:`~recsys.serving.Engine` with the decision stage off, and evaluated on the lists the
engine serves (:func:`~recsys.evaluation.protocol.evaluate_served`): retrieval of the
engine's candidate count, the ranker as its own stage, the top k. So a figure in the table is
a figure of the served system, not of a separate offline scoring path. For a sample of users
the run also checks that :meth:`Engine.recommend` — the public request path, with its
profile lookup — returns the very lists that were evaluated (``parity`` in the report).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recsys.bench.registry import BenchModel, load_registry, training_order
from recsys.data import load_dataset, make_split
from recsys.data.splits import Split
from recsys.evaluation.protocol import build_queries, evaluate_served

log = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for name in (
        "recsys",
        "numpy",
        "scipy",
        "pandas",
        "torch",
        "torchrec",
        "faiss-cpu",
        "implicit",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def quality_models(configs: Path | None = None) -> dict[str, BenchModel]:
    """All registered benchmark models, baselines first (``configs``: another model folder)."""
    return load_registry(configs)


def served_engine(split: Split, model: Any, user_context: bool = True) -> Any:
    """The engine a benchmark evaluates: the model's stages, no decision stage."""
    from recsys.serving.build import build_engine

    return build_engine(split, retriever=model, decisions=False, user_context=user_context)


def parity(
    engine: Any, split: Split, users: np.ndarray, k: int = 10, user_context: bool = True
) -> dict[str, Any]:
    """Do ``Engine.recommend`` (by user id) and the benchmark path give the same top-k?

    The benchmark path serves queries built offline; ``recommend`` builds them itself from
    the profile lookup. Equal lists mean the evaluated system is the served one.
    """
    data = split.dataset
    queries = build_queries(split, users, exclude_valid=True, user_context=user_context)
    offline = engine.serve(queries, k)
    identical = 0
    first_mismatch = None
    for query, expected in zip(queries, offline, strict=True):
        answer = engine.recommend(
            user_id=query.user_id, k=k, exclude=data.item_index.to_ids(query.exclude)
        )
        if answer.items == data.item_index.to_ids(expected.items):
            identical += 1
        elif first_mismatch is None:
            first_mismatch = query.user_id
    return {
        "users": len(queries),
        "identical_top_k": identical,
        "k": k,
        "first_mismatch": first_mismatch,
    }


def run_quality(
    dataset: str,
    protocol: str,
    out_dir: Path,
    models: Sequence[str] | None = None,
    seed: int = 2020,
    progress: bool = True,
    parity_users: int = 50,
    user_context: bool = True,
    configs: Path | None = None,
) -> dict[str, Any]:
    """Train, serve and evaluate models on one split; write ``quality.json`` and ``quality.md``.

    Args:
        dataset: ``ml-100k``, ``ml-latest-small`` or ``synthetic``.
        protocol: ``random`` (per-user 80/10/10) or ``temporal`` (per-user by time).
        out_dir: Folder for the two output files (created).
        models: Names to run (default: all registered). Entries they reuse are trained
            too, and reported only when asked for.
        seed: Split seed.
        progress: Show progress bars.
        parity_users: Test users on which ``Engine.recommend`` is checked against the
            evaluated lists (0: skip).
        user_context: Serve the user table's context (``False`` measures what serving
            without it — the old training/serving skew — costs).
        configs: The model config folder (default ``experiments/configs/models``), e.g. a
            study's tuned configs beside the defaults.

    Returns:
        The report written to ``quality.json``.
    """
    registry = quality_models(configs)
    names = list(models) if models else list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; available {sorted(registry)}")
    data = load_dataset(dataset)
    split = make_split(data, protocol, seed=seed)
    test_users = split.target_users("test")
    sample = np.random.default_rng(seed).permutation(test_users)[:parity_users]
    trained: dict[str, Any] = {}
    train_seconds: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    parities: dict[str, dict[str, Any]] = {}
    for name in tqdm(
        training_order(names, registry), desc=f"{dataset}/{protocol}", disable=not progress
    ):
        model = registry[name].create(dataset, registry, trained)
        start = time.perf_counter()
        model.fit(split)
        train_seconds[name] = time.perf_counter() - start
        trained[name] = model
        if name not in names:
            continue
        engine = served_engine(split, model, user_context=user_context)
        start = time.perf_counter()
        metrics = evaluate_served(engine.serve, split, stage="test", user_context=user_context)
        metrics["eval_seconds"] = time.perf_counter() - start
        metrics["train_seconds"] = train_seconds[name]
        metrics.update(_reused(registry[name], train_seconds))
        extra = getattr(model, "bench_info", None)
        if callable(extra):
            metrics.update(extra())
        results[name] = metrics
        if len(sample):
            parities[name] = parity(engine, split, sample, user_context=user_context)
        log.info("%s: ndcg@10=%.4f", name, metrics["ndcg@10"])
    report = {
        "dataset": dataset,
        "protocol": protocol,
        "seed": seed,
        "split_sizes": split.sizes(),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "served_by": "recsys.serving.Engine (decision stage off), lists cut to k",
        "user_context": user_context,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "descriptions": {n: registry[n].description for n in names},
        "configs": {
            n: registry[n].config_for(dataset, registry).model_dump(mode="json") for n in names
        },
        "models": results,
        "parity": parities,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "quality.md").write_text(quality_table(report) + "\n")
    return report


def _reused(entry: BenchModel, train_seconds: Mapping[str, float]) -> dict[str, float]:
    """Training seconds of the entries this one reused (not included in its own)."""
    return {f"{slot}_train_seconds": train_seconds[other] for slot, other in entry.uses.items()}


TABLE_COLUMNS = (
    "ndcg@10", "recall@10", "hr@10", "mrr@10", "ndcg@20", "recall@20",
    "coverage@10", "ild@10", "novelty@10", "gini@10", "train_seconds",
)  # fmt: skip


def quality_table(report: dict[str, Any]) -> str:
    """Markdown table of a quality report (one row per model)."""
    head = (
        f"**{report['dataset']}**, protocol `{report['protocol']}`, seed {report['seed']}, "
        f"test users {int(next(iter(report['models'].values()))['users'])}, served by the Engine"
        + ("" if report.get("user_context", True) else " without user context")
    )
    lines = [head, "", "| model | " + " | ".join(TABLE_COLUMNS) + " | parity |"]
    lines.append("|---|" + "---:|" * len(TABLE_COLUMNS) + "---:|")
    for name, values in report["models"].items():
        cells = [
            f"{values[c]:.1f}" if c == "train_seconds" else f"{values[c]:.4f}"
            for c in TABLE_COLUMNS
        ]
        check = report.get("parity", {}).get(name)
        cells.append(f"{check['identical_top_k']}/{check['users']}" if check else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
