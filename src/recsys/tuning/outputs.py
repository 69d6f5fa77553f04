"""What a study leaves behind: the tuned model config, a trials table, plots, a summary.

The best trial becomes a ready-to-train model file where the bench reads models
(``experiments/configs/models/<model>.yaml``): its values are deep-merged into that file's
``datasets.<dataset>`` overrides — other datasets' overrides and the base config are kept —
under a provenance comment (study, storage, trial, validation value, date). A parameter of a
slot another entry fills (``retriever.*`` of ``two_tower+ranker``, which ``uses`` the
``two_tower`` entry) is written to that entry's file, since the bench trains it there and
hands it over. So ``recsys bench quality`` and ``make bento`` pick tuned settings up with no
code change, and the same mechanism serves every model.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from recsys.bench.registry import BenchModel, deep_merge, load_registry
from recsys.tuning.objectives import from_params
from recsys.tuning.study import StudyConfig, StudyError, set_path

STATE = optuna.trial.TrialState
log = logging.getLogger(__name__)


def trials_frame(study: optuna.Study, config: StudyConfig) -> pd.DataFrame:
    """One row per trial: number, state, objective value(s), parameters, timing, extras."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        for i, metric in enumerate(config.metrics):
            row[f"value_{metric}"] = values[i] if i < len(values) else math.nan
        steps = sorted(t.intermediate_values)
        row["last_step"] = steps[-1] if steps else math.nan
        row["last_reported"] = t.intermediate_values[steps[-1]] if steps else math.nan
        row["seconds"] = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else math.nan
        )
        row["role"] = t.user_attrs.get("role", "")
        for path, value in from_params(config, t.params).items():
            row[f"param.{path}"] = json.dumps(value) if isinstance(value, list) else value
        for name, value in (t.user_attrs.get("valid") or {}).items():
            row[f"valid.{name}"] = value
        for name in ("epochs", "best_epoch", "retrieval_holdout_ndcg@10", "worker"):
            if name in t.user_attrs:
                row[name] = t.user_attrs[name]
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``trials.csv`` and ``trials.parquet``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, parquet = out_dir / "trials.csv", out_dir / "trials.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return [csv, parquet]


def best_trial(study: optuna.Study, config: StudyConfig) -> optuna.trial.FrozenTrial | None:
    """The best complete trial; with two objectives, the Pareto trial best on the first."""
    complete = study.get_trials(deepcopy=False, states=(STATE.COMPLETE,))
    if not complete:
        return None
    if not config.multi_objective:
        return study.best_trial
    sign = 1.0 if config.directions[0] == "maximize" else -1.0
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def pareto_frame(study: optuna.Study, config: StudyConfig) -> pd.DataFrame:
    """The Pareto-optimal trials (two objectives): number, values, parameters."""
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0]):
        row: dict[str, Any] = {"number": t.number}
        row.update({m: v for m, v in zip(config.metrics, t.values, strict=True)})
        for path, value in from_params(config, t.params).items():
            row[f"param.{path}"] = json.dumps(value) if isinstance(value, list) else value
        rows.append(row)
    return pd.DataFrame(rows)


def plot_study(study: optuna.Study, config: StudyConfig, out_dir: Path) -> dict[str, Path]:
    """PNG plots: optimisation history, intermediate values (pruning), importances, Pareto.

    Plots that need more data than the study has (importances with one complete trial, a
    Pareto front of a single objective) are skipped, not errors.
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(STATE.COMPLETE,))
    made: dict[str, Path] = {}
    jobs: list[tuple[str, Any]] = []
    names = config.metrics
    if config.multi_objective:
        for i, metric in enumerate(names):
            jobs.append(
                (
                    f"history_{metric}",
                    lambda i=i, m=metric: ovm.plot_optimization_history(
                        study, target=lambda t: t.values[i], target_name=m
                    ),
                )
            )
        if complete:
            jobs.append(("pareto", lambda: ovm.plot_pareto_front(study, target_names=names)))
    else:
        jobs.append(("history", lambda: ovm.plot_optimization_history(study, target_name=names[0])))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            jobs.append(("intermediate", lambda: plot_pruning(study)))
    if len(complete) >= 2 and len(config.params) >= 1:
        target = (lambda t: t.values[0]) if config.multi_objective else None
        jobs.append(
            (
                "importances",
                lambda: ovm.plot_param_importances(study, target=target, target_name=names[0]),
            )
        )
    for name, draw in jobs:
        with warnings.catch_warnings():
            # optuna's matplotlib module is "experimental"; its layouts warn on resizing
            warnings.simplefilter("ignore")
            try:
                ax = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.warning("plot %s skipped: %s", name, exc)
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            height = max(4.5, 0.3 * len(config.params)) if name == "importances" else 4.5
            fig.set_size_inches(8, height)
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made[name] = path
    return made


def plot_pruning(study: optuna.Study, ax: Any = None, step_name: str = "step") -> Any:
    """Each trial's reported validation values per step: pruned trials red, ending in ×.

    Args:
        study: The study.
        ax: Matplotlib axes to draw on (default: a new figure).
        step_name: The x label (``epoch`` for the two-tower, ``fold`` for the ranker).

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        pruned = t.state == STATE.PRUNED
        ax.plot(steps, values, color="#c44e52" if pruned else "#4c72b0", alpha=0.7, linewidth=1)
        if pruned:
            ax.plot(steps[-1:], values[-1:], "x", color="#c44e52")
    counts = pd.Series([t.state.name.lower() for t in trials]).value_counts()
    ax.set(
        xlabel=step_name,
        ylabel="validation (reported)",
        title=f"{study.study_name}: " + ", ".join(f"{n} {state}" for state, n in counts.items()),
    )
    return ax


def tuned_overrides(
    config: StudyConfig, params: Mapping[str, Any], registry: Mapping[str, BenchModel]
) -> dict[str, dict[str, Any]]:
    """Model file → the dataset override a trial's values become (fixed values included).

    A path whose first part is a ``uses`` slot goes to the entry that fills that slot.
    """
    entry = registry[config.model]
    values = {**config.fixed, **from_params(config, params)}
    out: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if head in entry.uses and rest:
            target, sub = entry.uses[head], rest
        else:
            target, sub = entry.name, path
        plain = list(value) if isinstance(value, tuple) else value
        set_path(out.setdefault(target, {}), sub, plain)
    return out


def write_model_configs(
    config: StudyConfig,
    trial: optuna.trial.FrozenTrial,
    configs: Path,
    provenance: str,
) -> list[Path]:
    """Merge a trial's values into the model files under ``configs``; check they still load.

    Args:
        config: The study.
        trial: The trial whose parameters are written.
        configs: The model config folder (``experiments/configs/models``).
        provenance: The comment (without the first ``#``; further lines start ``#   ``)
            naming study, trial, validation value, date and storage.

    Returns:
        The files written.

    Raises:
        StudyError: The merged files do not load (they are restored first).
    """
    registry = load_registry(configs)
    written: list[Path] = []
    backups: dict[Path, str] = {}
    for name, override in tuned_overrides(config, trial.params, registry).items():
        path = configs / f"{name}.yaml"
        text = path.read_text()
        backups[path] = text
        head = _header(text, config.dataset)
        spec = yaml.safe_load(text) or {}
        datasets = dict(spec.get("datasets") or {})
        datasets[config.dataset] = deep_merge(datasets.get(config.dataset) or {}, override)
        spec["datasets"] = datasets
        body = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=10_000)
        lines = [*head, f"# tuned {config.dataset}: {provenance}"]
        path.write_text("\n".join(lines) + "\n" + body)
        written.append(path)
    try:
        load_registry(configs)
    except Exception as exc:
        for path, text in backups.items():
            path.write_text(text)
        raise StudyError(f"the tuned config does not load (files restored): {exc}") from exc
    return written


def _header(text: str, dataset: str) -> list[str]:
    """The file's leading comment lines, without an earlier provenance line for ``dataset``."""
    head: list[str] = []
    dropping = False
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(f"# tuned {dataset}:"):
            dropping = True
        elif not (dropping and line.startswith("#   ")):  # the entry's continuation lines
            dropping = False
            head.append(line)
    return head


def provenance_line(
    config: StudyConfig,
    trial: optuna.trial.FrozenTrial,
    storage: str,
    n_trials: int,
    default: optuna.trial.FrozenTrial | None,
) -> str:
    """``study …, trial 17 of 48, valid ndcg@10 0.3012 (default 0.2950), 2026-11-28, …``."""
    values = ", ".join(
        f"valid {m} {v:.4f}" for m, v in zip(config.metrics, trial.values, strict=True)
    )
    if default is not None and default.values:
        values += f" (default {default.values[0]:.4f})"
    return (
        f"study {config.name} ({config.protocol}, seed {config.seed}), trial {trial.number} "
        f"of {n_trials}, {values}, {time.strftime('%Y-%m-%d')}\n#   storage {_portable(storage)}"
    )


def _portable(storage: str) -> str:
    """A storage URL with the checkout's own path made relative (committed files travel)."""
    from recsys.data.paths import project_root

    root = project_root()
    if root is None:
        return storage
    for prefix in ("sqlite:///", "journal:"):
        if storage.startswith(prefix):
            path = Path(storage.removeprefix(prefix))
            if path.is_relative_to(root):
                return prefix + str(path.relative_to(root))
    return storage


def summary_table(summary: Mapping[str, Any]) -> str:
    """A short Markdown summary of a study run (for the CLI and the notebook)."""
    lines = [
        f"**study {summary['study']}** ({summary['model']} on {summary['dataset']} "
        f"{summary['protocol']}, validation), storage `{summary['storage']}`",
        "",
        "| trials | complete | pruned | failed | wall seconds | best trial | best | default |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    best = summary.get("best") or {}
    default = summary.get("default") or {}

    def fmt(values: Mapping[str, float] | None) -> str:
        return ", ".join(f"{k} {v:.4f}" for k, v in (values or {}).items()) or "—"

    lines.append(
        f"| {summary['trials']} | {summary['complete']} | {summary['pruned']} | "
        f"{summary['failed']} | {summary['wall_seconds']:.0f} | {best.get('number', '—')} | "
        f"{fmt(best.get('values'))} | {fmt(default.get('values'))} |"
    )
    return "\n".join(lines)


def values_by_metric(config: StudyConfig, values: Sequence[float] | None) -> dict[str, float]:
    """``{metric: value}`` of a trial's objective values."""
    return {m: float(v) for m, v in zip(config.metrics, values or [], strict=False)}
