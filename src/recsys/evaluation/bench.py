"""``recsys bench quality``: every model, one split, full ranking, one JSON + one Markdown table.

A model enters the benchmark through :data:`QUALITY_MODELS`: a name and a factory that returns
an *untrained* :class:`~recsys.retrieval.base.Recommender`-like object with ``fit(split)`` and
``score(queries)``. Factories receive the dataset name so they can pick per-dataset settings
(chosen on validation data, never on test).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from recsys.data import load_dataset, make_split
from recsys.data.splits import Split
from recsys.evaluation.protocol import evaluate
from recsys.types import Query

log = logging.getLogger(__name__)


class Trainable(Protocol):
    """What the benchmark needs from a model."""

    def fit(self, split: Split) -> Any:
        """Train on ``split``."""

    def score(self, queries: Sequence[Query]) -> Any:
        """(B, n_items) scores."""


@dataclass(frozen=True)
class BenchModel:
    """A benchmark entry: a name and a factory ``(dataset_name) -> untrained model``."""

    name: str
    factory: Callable[[str], Trainable]
    description: str = ""


def _baselines() -> list[BenchModel]:
    from recsys.evaluation.peers import ImplicitALS, ImplicitBPR
    from recsys.retrieval.baselines import EASE, ItemKNN, Popularity

    return [
        BenchModel("popularity", lambda _: Popularity(), "most interactions in train"),
        BenchModel("itemknn", lambda _: ItemKNN(), "item kNN, cosine, k=100"),
        BenchModel(
            "ease",
            lambda ds: EASE(l2=250.0 if ds == "ml-100k" else 500.0),
            "EASE, λ=250 (ml-100k) / 500",
        ),
        BenchModel("implicit_als", lambda _: ImplicitALS(), "implicit ALS (external peer)"),
        BenchModel("implicit_bpr", lambda _: ImplicitBPR(), "implicit BPR (external peer)"),
    ]


def quality_models() -> list[BenchModel]:
    """All registered benchmark models, baselines first.

    Stages other than retrieval baselines add theirs in :func:`_extra_models`.
    """
    return [*_baselines(), *_extra_models()]


def _extra_models() -> list[BenchModel]:
    """Neural models registered by other stages (imported lazily: torch is heavy)."""
    extra: list[BenchModel] = []
    try:
        from recsys.retrieval.two_tower.bench import bench_models  # type: ignore[import-not-found]
    except ImportError:
        return extra
    extra.extend(bench_models())
    return extra


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


def run_quality(
    dataset: str,
    protocol: str,
    out_dir: Path,
    models: Sequence[str] | None = None,
    seed: int = 2020,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate models on one split; write ``quality.json`` and ``quality.md``.

    Args:
        dataset: ``ml-100k``, ``ml-latest-small`` or ``synthetic``.
        protocol: ``random`` (per-user 80/10/10) or ``temporal`` (per-user by time).
        out_dir: Folder for the two output files (created).
        models: Names to run (default: all registered).
        seed: Split seed.
        progress: Show progress bars.

    Returns:
        The report written to ``quality.json``.
    """
    registry = {m.name: m for m in quality_models()}
    names = list(models) if models else list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; available {sorted(registry)}")
    data = load_dataset(dataset)
    split = make_split(data, protocol, seed=seed)
    results: dict[str, dict[str, float]] = {}
    for name in tqdm(names, desc=f"{dataset}/{protocol}", disable=not progress):
        model = registry[name].factory(dataset)
        start = time.perf_counter()
        model.fit(split)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        metrics = evaluate(model.score, split, stage="test")
        metrics["eval_seconds"] = time.perf_counter() - start
        metrics["train_seconds"] = train_seconds
        extra = getattr(model, "bench_info", None)
        if callable(extra):
            metrics.update(extra())
        results[name] = metrics
        log.info("%s: ndcg@10=%.4f", name, metrics["ndcg@10"])
    report = {
        "dataset": dataset,
        "protocol": protocol,
        "seed": seed,
        "split_sizes": split.sizes(),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "descriptions": {n: registry[n].description for n in names},
        "models": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "quality.md").write_text(quality_table(report) + "\n")
    return report


TABLE_COLUMNS = (
    "ndcg@10", "recall@10", "hr@10", "mrr@10", "ndcg@20", "recall@20",
    "coverage@10", "ild@10", "novelty@10", "gini@10", "train_seconds",
)  # fmt: skip


def quality_table(report: dict[str, Any]) -> str:
    """Markdown table of a quality report (one row per model)."""
    head = (
        f"**{report['dataset']}**, protocol `{report['protocol']}`, seed {report['seed']}, "
        f"test users {int(next(iter(report['models'].values()))['users'])}"
    )
    lines = [head, "", "| model | " + " | ".join(TABLE_COLUMNS) + " |"]
    lines.append("|---|" + "---:|" * len(TABLE_COLUMNS))
    for name, values in report["models"].items():
        cells = [
            f"{values[c]:.1f}" if c == "train_seconds" else f"{values[c]:.4f}"
            for c in TABLE_COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
