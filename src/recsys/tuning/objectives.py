"""Study objectives: a trial trains on train and scores validation — never test.

One :class:`Objective` per process (the split is loaded once), three model families
(:func:`~recsys.tuning.study.objective_family`):

* ``fit`` (EASE, ItemKNN, the external peers, ...): fit on train, full-ranking validation
  metrics (:func:`recsys.evaluation.protocol.evaluate`, train masked).
* ``two_tower``: the retriever's own training loop with early stopping; after every epoch
  the validation NDCG@10 is ``trial.report``-ed, so the study's pruner stops weak trials.
* ``two_stage`` (``two_tower+ranker``): the ranker trains on the validation interactions, so
  its honest validation figure is the *out-of-fold* NDCG of its K-fold bagging
  (``Ranker.holdout_ndcg``); each fold reports the out-of-fold NDCG so far. When the study
  searches no ``retriever.*`` parameter the retriever is trained once and cached (memory and
  disk), so a trial costs one ranker fit; otherwise the retriever's epochs are the reported
  steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from recsys.bench.registry import BenchModel
from recsys.data import load_dataset, make_split
from recsys.data.splits import Split
from recsys.tuning.study import ParamSpec, StudyConfig, objective_family, set_path

log = logging.getLogger(__name__)


def structured(spec: ParamSpec) -> bool:
    """Categorical choices that are not scalars: Optuna stores them as JSON text."""
    return spec.type == "categorical" and not all(
        c is None or isinstance(c, bool | int | float | str) for c in spec.choices or []
    )


def suggest(trial: optuna.Trial, name: str, spec: ParamSpec) -> Any:
    """The trial's value for one parameter (lists among categorical choices round-trip)."""
    if spec.type == "float":
        assert spec.low is not None and spec.high is not None
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if spec.type == "int":
        assert spec.low is not None and spec.high is not None
        return trial.suggest_int(
            name, int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
        )
    if spec.type == "bool":
        return trial.suggest_categorical(name, [False, True])
    choices = list(spec.choices or [])
    if not structured(spec):
        return trial.suggest_categorical(name, choices)
    # Optuna stores only scalars: structured choices (e.g. MLP widths [64, 32]) go as JSON
    return json.loads(trial.suggest_categorical(name, [json.dumps(c) for c in choices]))


def storage_value(spec: ParamSpec, value: Any) -> Any:
    """How :func:`suggest` stores ``value`` in Optuna (to enqueue a known configuration)."""
    if structured(spec):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return value


def from_params(config: StudyConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial parameters (as Optuna stores them) → config values by path."""
    return {
        path: json.loads(params[path]) if structured(spec) else params[path]
        for path, spec in config.params.items()
        if path in params
    }


class Objective:
    """``objective(trial)`` → the validation metric(s) of one configuration.

    Args:
        config: The study.
        registry: The model registry (the base config and the entries it uses).
        cache_dir: Where a retriever that no parameter changes is cached between runs
            and worker processes (``None``: memory only).
        split: The split to use (default: loaded from the study's dataset/protocol/seed).
    """

    def __init__(
        self,
        config: StudyConfig,
        registry: Mapping[str, BenchModel],
        cache_dir: Path | None = None,
        split: Split | None = None,
    ) -> None:
        self.config = config
        self.entry = registry[config.model]
        self.family = objective_family(self.entry)
        self.base = copy.deepcopy(self.entry.values_for(config.dataset, registry))
        for path, value in config.fixed.items():
            set_path(self.base, path, value)
        self.cache_dir = cache_dir
        self._split = split
        self._retrievers: dict[str, Any] = {}
        # a searched retriever trains per trial; a fixed one is trained once and shared
        self.searches_retriever = any(p.startswith("retriever.") for p in config.params)

    @property
    def split(self) -> Split:
        """The study's split (train for fitting, validation for scoring)."""
        if self._split is None:
            c = self.config
            self._split = make_split(load_dataset(c.dataset), c.protocol, seed=c.seed)
        return self._split

    def values(self, trial: optuna.Trial) -> dict[str, Any]:
        """The component config values of a trial: base, fixed, then the sampled params."""
        values = copy.deepcopy(self.base)
        for path, spec in self.config.params.items():
            set_path(values, path, suggest(trial, path, spec))
        return values

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        """Train with the trial's configuration; return its validation metric(s)."""
        config_class = self.entry.component.config_class
        component_config = config_class.model_validate(self.values(trial))
        start = time.perf_counter()
        report = self._reporter(trial)
        if self.family == "two_tower":
            metrics = self._two_tower(component_config, report, trial)
        elif self.family == "two_stage":
            metrics = self._two_stage(component_config, report, trial)
        else:
            metrics = self._fit(component_config)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("valid", {k: float(v) for k, v in metrics.items()})
        values = [float(metrics[m]) for m in self.config.metrics]
        return values if self.config.multi_objective else values[0]

    # ------------------------------------------------------------------ families
    def _reporter(self, trial: optuna.Trial) -> Callable[[int, float], None] | None:
        """Report a step's validation NDCG@10 and prune (single-objective studies).

        The current config (the trial queued with ``role: default``) is reported but never
        pruned: it is the bar every other trial is compared with, so it runs to the end.
        """
        if self.config.multi_objective:
            return None
        prunable = trial.user_attrs.get("role") != "default"

        def report(step: int, value: float) -> None:
            trial.report(float(value), step)
            if prunable and trial.should_prune():
                raise optuna.TrialPruned(f"step {step}: valid ndcg@10 {value:.4f}")

        return report

    def _fit(self, component_config: Any) -> dict[str, float]:
        from recsys.evaluation.protocol import evaluate

        model = self.entry.component(component_config).fit(self.split)
        return evaluate(model.score, self.split, stage="valid", ks=(10,))

    def _two_tower(
        self, component_config: Any, report: Callable[[int, float], None] | None, trial: Any
    ) -> dict[str, float]:
        from recsys.evaluation.protocol import evaluate

        model = self.entry.component(component_config).fit(self.split, on_epoch=report)
        trial.set_user_attr("epochs", len(model.history))
        trial.set_user_attr("best_epoch", model.best_epoch)
        return evaluate(model.score, self.split, stage="valid", ks=(10,))

    def _two_stage(
        self, component_config: Any, report: Callable[[int, float], None] | None, trial: Any
    ) -> dict[str, float]:
        from recsys.ranking.ranker import Ranker

        retriever = self.retriever(
            component_config.retriever, on_epoch=report if self.searches_retriever else None
        )
        ranker = Ranker(component_config.ranker).fit(
            self.split,
            retriever,
            item_vectors=retriever.item_embeddings,
            on_fold=None if self.searches_retriever else report,
        )
        trial.set_user_attr("retrieval_holdout_ndcg@10", float(ranker.holdout_retrieval_ndcg))
        return ranker_validation_metrics(ranker, self.split)

    # ------------------------------------------------------------------ retriever cache
    def retriever(self, config: Any, on_epoch: Callable[[int, float], None] | None = None) -> Any:
        """A trained two-tower for ``config``: from the cache, else trained (and cached)."""
        from recsys.retrieval.base import Recommender
        from recsys.retrieval.two_tower import TwoTowerRetriever

        if on_epoch is not None:  # searched: every trial trains its own, pruned per epoch
            return TwoTowerRetriever(config).fit(self.split, on_epoch=on_epoch)
        key = self._retriever_key(config)
        if key in self._retrievers:
            return self._retrievers[key]
        folder = self.cache_dir / f"retriever-{key}" if self.cache_dir else None
        if folder is not None and (folder / "state.npz").is_file():
            model = Recommender.load(folder)
        else:
            model = TwoTowerRetriever(config).fit(self.split)
            if folder is not None:
                tmp = folder.with_name(f"{folder.name}.tmp{time.time_ns()}")
                model.save(tmp)
                try:
                    tmp.rename(folder)
                except OSError:  # another worker cached the same retriever first
                    shutil.rmtree(tmp, ignore_errors=True)
        self._retrievers[key] = model
        return model

    def _retriever_key(self, config: Any) -> str:
        c = self.config
        text = json.dumps(
            [c.dataset, c.protocol, c.seed, config.model_dump(mode="json")], sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def warm(self) -> None:
        """Load (or train) what every trial shares, before workers start.

        The split, and the retriever of a ranker-only study.
        """
        _ = self.split
        if self.family == "two_stage" and not self.searches_retriever:
            config_class = self.entry.component.config_class
            self.retriever(config_class.model_validate(self.base).retriever)


def ranker_validation_metrics(ranker: Any, split: Split) -> dict[str, float]:
    """Validation metrics of the ranker's out-of-fold top-10 lists (never its training fit).

    Each validation user is ranked by the bagged model that did not train on them, so the
    figures are clean validation estimates; accuracy, diversity and coverage come from the
    same lists (:func:`recsys.evaluation.protocol.summarize`).
    """
    from recsys.data.dataset import interaction_matrix
    from recsys.evaluation.protocol import summarize

    top = getattr(ranker, "holdout_top", None)
    if top is None:
        raise RuntimeError(
            "the ranker has no out-of-fold lists (folds < 2, or no validation positives "
            "among the candidates)"
        )
    data = split.dataset
    relevant = interaction_matrix(split.valid, data.n_users, data.n_items)[ranker.holdout_users]
    metrics = summarize(top, relevant, split, ks=(10,))
    metrics["ndcg@10"] = float(ranker.holdout_ndcg)  # the ranker's own figure (same lists)
    return metrics
