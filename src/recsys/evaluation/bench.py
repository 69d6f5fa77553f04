"""``recsys bench quality``: every model, one split, full ranking, one JSON + one Markdown table.

A model enters the benchmark through a file in ``experiments/configs/models/`` (component
import path + config + per-dataset overrides) or, for models assembled in code, through
``bench_models()`` of its stage. Either way a factory returns an *untrained*
:class:`~recsys.retrieval.base.Recommender`-like object with ``fit(split)`` and
``score(queries)``. Settings are chosen on validation data, never on test.
"""

from __future__ import annotations

import importlib
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import yaml
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


def configured_models(folder: Path | None = None) -> list[BenchModel]:
    """Benchmark entries from ``experiments/configs/models/*.yaml`` (one file per model).

    Each file names a ``component`` (import path), its ``config`` and optional per-dataset
    overrides under ``datasets``; the file stem is the model's benchmark name.
    """
    folder = folder or _config_dir()
    if folder is None or not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        entries.append(
            BenchModel(path.stem, _factory_from_spec(spec, path), spec.get("description", ""))
        )
    order = {name: i for i, name in enumerate(BASELINE_ORDER)}
    return sorted(entries, key=lambda m: (order.get(m.name, len(order)), m.name))


BASELINE_ORDER = ("popularity", "itemknn", "ease", "implicit_als", "implicit_bpr")


def _config_dir() -> Path | None:
    from recsys.data.paths import project_root

    root = project_root()
    return root / "experiments" / "configs" / "models" if root else None


def load_component_class(path: str) -> type:
    """Import ``package.module.Class``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _factory_from_spec(spec: dict[str, Any], source: Path) -> Callable[[str], Trainable]:
    if "component" not in spec:
        raise ValueError(f"{source}: missing 'component'")
    klass = load_component_class(spec["component"])
    base = dict(spec.get("config") or {})
    per_dataset = spec.get("datasets") or {}
    klass.config_class.model_validate(base)  # fail at load time, naming the file
    for overrides in per_dataset.values():
        klass.config_class.model_validate({**base, **overrides})

    def factory(dataset: str) -> Trainable:
        values = {**base, **(per_dataset.get(dataset) or {})}
        return klass(klass.config_class.model_validate(values))

    return factory


def quality_models() -> list[BenchModel]:
    """All registered benchmark models, baselines first.

    Config-file models (``experiments/configs/models``) first, then models registered in
    code by other stages (:func:`_extra_models`).
    """
    return [*configured_models(), *_extra_models()]


def _extra_models() -> list[BenchModel]:
    """Neural models registered in code (imported here, not at module load: torch is heavy)."""
    from recsys.retrieval.two_tower.bench import bench_models

    return list(bench_models())


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
