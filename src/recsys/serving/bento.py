"""``make bento``: train what is missing, export the engine, build the Bento, export the archive.

1. **Model**: the registered model (default ``two_tower+ranker``, the best of the quality
   bench, with its config-file settings) trained on the dataset's split — unless the model
   store already holds an export of the same model, dataset, split and commit — then
   labelled with its served validation and test metrics and exported
   (:func:`recsys.serving.export.export_engine`) with the serving decision config
   (``experiments/configs/decision/serving.yaml``).
2. **Bento**: ``bentoml build`` of ``bentos/personalisation`` with the model packed by tag.
   The build stays offline (``lock_packages: false``): the environment is the project's lock
   and a wheel of ``recsys`` itself, both written next to the service first.
3. **Archive**: ``bentoml export`` to ``bentos/dist/`` (git-ignored).

BentoML's standard stores (``$BENTOML_HOME``, default ``~/bentoml``) hold both, so
``bentoml models list``, ``bentoml list`` and ``bentoml serve personalisation:latest`` find them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys.data.paths import project_root
from recsys.errors import RecsysError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BentoBuild:
    """What ``make bento`` produced."""

    model_tag: str
    bento_tag: str
    archive: Path
    trained: bool
    metrics: dict[str, dict[str, float]]


def serving_decision_config(path: Path | None = None) -> Any:
    """The decision pipeline served by default (``experiments/configs/decision/serving.yaml``)."""
    from recsys.decision import DecisionPipelineConfig

    root = project_root()
    if path is None and root is not None:
        path = root / "experiments" / "configs" / "decision" / "serving.yaml"
    if path is None or not path.is_file():
        return DecisionPipelineConfig()
    return DecisionPipelineConfig.model_validate(yaml.safe_load(path.read_text()) or {})


def find_export(dataset: str, model: str, protocol: str, commit: str) -> Any | None:
    """The newest export in the model store of this model, dataset, split and clean commit."""
    import bentoml

    if commit.endswith("+dirty") or commit == "unknown":
        return None
    try:
        exports = bentoml.models.list("recsys-engine")
    except bentoml.exceptions.NotFound:  # a fresh model store
        return None
    for candidate in sorted(exports, key=lambda m: m.creation_time, reverse=True):
        labels = candidate.info.labels
        if (labels.get("dataset"), labels.get("model"), labels.get("protocol")) == (
            dataset,
            model,
            protocol,
        ) and labels.get("git_commit") == commit:
            return candidate
    return None


def train_and_export(
    dataset: str,
    model: str,
    protocol: str = "random",
    seed: int = 2020,
    decision: Any = None,
) -> tuple[Any, dict[str, dict[str, float]]]:
    """Train a registered model (and what it reuses), measure it served, export it."""
    from recsys.bench.quality import served_engine
    from recsys.bench.registry import load_registry, training_order
    from recsys.data import load_dataset, make_split
    from recsys.evaluation.protocol import evaluate_served
    from recsys.serving.export import export_engine

    registry = load_registry()
    if model not in registry:
        raise RecsysError(f"model: unknown {model!r}; registered {sorted(registry)}")
    split = make_split(load_dataset(dataset), protocol, seed=seed)
    trained: dict[str, Any] = {}
    for name in training_order([model], registry):
        log.info("training %s on %s/%s", name, dataset, protocol)
        trained[name] = registry[name].create(dataset, registry, trained).fit(split)
    engine = served_engine(split, trained[model])
    metrics = {
        stage: {k: v for k, v in evaluate_served(engine.serve, split, stage).items() if "@" in k}
        for stage in ("valid", "test")
    }
    decision = decision or serving_decision_config()
    saved = export_engine(split, trained[model], model, decision=decision, metrics=metrics)
    return saved, metrics


def build_bento(
    dataset: str = "ml-latest-small",
    model: str = "two_tower+ranker",
    protocol: str = "random",
    seed: int = 2020,
    retrain: bool = False,
    out_dir: Path | None = None,
) -> BentoBuild:
    """The whole ``make bento``: model (trained if missing), ``bentoml build``, archive.

    Raises:
        RecsysError: Outside a checkout, or when ``bentoml build`` / ``export`` fails.
    """
    import bentoml

    from recsys.serving.export import git_commit
    from recsys.serving.server import service_dir

    root = project_root()
    if root is None:
        raise RecsysError("make bento: run it from a checkout of the project")
    commit = git_commit()
    saved = None if retrain else find_export(dataset, model, protocol, commit)
    trained = saved is None
    if saved is None:
        saved, metrics = train_and_export(dataset, model, protocol, seed)
    else:
        metrics = {}
        log.info("reusing %s (same model, data and commit)", saved.tag)
    service = service_dir()
    _stage_environment(root, service)
    env_tag = str(saved.tag)
    # from the service folder: bentoml refuses build files outside its working directory
    bento = _bentoml(["build", ".", "--output", "tag"], {"RECSYS_MODEL_TAG": env_tag}, service)
    bento_tag = bento.strip().splitlines()[-1].removeprefix("__tag__:")
    out_dir = out_dir or root / "bentos" / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{bento_tag.replace(':', '-')}.bento"
    bentoml.bentos.export_bento(bento_tag, str(archive))
    return BentoBuild(env_tag, bento_tag, archive, trained, metrics)


def _stage_environment(root: Path, service: Path) -> None:
    """Write the lock and a wheel of ``recsys`` beside the service (git-ignored)."""
    shutil.copyfile(root / "requirements.lock", service / "requirements.txt")
    wheels = service / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(root)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RecsysError(f"building the recsys wheel failed:\n{result.stderr[-2000:]}")


def _bentoml(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the ``bentoml`` CLI of this environment in ``cwd``; its stdout."""
    import os

    command = [str(Path(sys.executable).with_name("bentoml")), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, check=False
    )
    if result.returncode != 0:
        raise RecsysError(f"bentoml {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout
