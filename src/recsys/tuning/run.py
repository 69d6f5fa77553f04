"""Run a study: storage, workers, resume, progress, Ctrl-C, outputs.

Storage (``--storage``) survives the process and can be shared:

* nothing: SQLite at ``experiments/studies/<study>.db``;
* any SQLAlchemy URL (``sqlite:///path.db``, ``postgresql://user@host/db``, ...);
* ``journal:path`` or a path ending in ``.log``: Optuna's journal file (append-only, safe
  for several processes on one machine without a database server).

``workers=N`` starts N processes that each run ``study.optimize`` on the same storage — Optuna's
own distributed mode. The same command with the same PostgreSQL URL (``--resume`` on the
machines that join) spreads one study over machines. Trials are split across the workers
(N trials in total, never more), and each worker's sampler gets its own seed.

``resume=True`` continues a study that is in the storage (a fresh run refuses to reuse a
name, so a typo in the URL never silently starts over). Trials that a killed run left
``RUNNING`` (their process on this host is gone) and trials interrupted by Ctrl-C are marked
failed and their parameters queued again. Ctrl-C stops the run, writes the outputs of what
finished and leaves the study resumable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from tqdm.auto import tqdm

from recsys.bench.registry import load_registry, models_dir
from recsys.tuning.objectives import Objective, storage_value
from recsys.tuning.outputs import (
    best_trial,
    pareto_frame,
    plot_study,
    provenance_line,
    trials_frame,
    values_by_metric,
    write_model_configs,
    write_trials,
)
from recsys.tuning.study import StudyConfig, StudyError, get_path, load_study_config

log = logging.getLogger(__name__)
STATE = optuna.trial.TrialState
FINISHED = (STATE.COMPLETE, STATE.PRUNED, STATE.FAIL)
WriteConfig = Literal["if-better", "always", "never"]


def studies_root() -> Path:
    """``experiments/studies`` of the checkout (git-ignored), else of the working directory."""
    from recsys.data.paths import project_root

    root = project_root() or Path.cwd()
    return root / "experiments" / "studies"


def resolve_storage(storage: str | None, study_name: str) -> str:
    """A storage URL: SQLAlchemy URL, or ``journal:<absolute path>`` for a journal file."""
    if storage is None:
        folder = studies_root()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / f'{study_name}.db'}"
    if storage.startswith("journal:") or storage.endswith((".log", ".journal")):
        path = Path(storage.removeprefix("journal:")).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"journal:{path}"
    if "://" in storage:
        return storage
    if storage.endswith((".db", ".sqlite", ".sqlite3")):
        path = Path(storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    raise StudyError(
        f"storage {storage!r}: use a SQLAlchemy URL (sqlite:///x.db, postgresql://...), a .db "
        "file, or an Optuna journal file (journal:path or a path ending in .log)"
    )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage behind a :func:`resolve_storage` URL."""
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several worker processes write one file: wait for the lock instead of failing
        engine_kwargs["connect_args"] = {"timeout": 300}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            # a worker that dies (machine lost, SIGKILL) stops beating; its trial is failed
            # and retried once by whichever worker notices
            heartbeat_interval=60,
            grace_period=300,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def study_names(storage: str) -> list[str]:
    """The studies in a storage (a :func:`resolve_storage` URL); ``[]`` for a new one."""
    return sorted(s.study_name for s in optuna.get_all_study_summaries(open_storage(storage)))


def dashboard_command(url: str) -> str:
    """The ``optuna-dashboard`` command that opens this storage."""
    target = url.removeprefix("journal:") if url.startswith("journal:") else url
    return f"optuna-dashboard {target}"


@dataclass
class StudyRun:
    """What :func:`run_study` did (also written as ``summary.json``)."""

    study: str
    model: str
    dataset: str
    protocol: str
    storage: str
    out_dir: str
    metrics: list[str]
    trials: int
    complete: int
    pruned: int
    failed: int
    trials_this_run: int
    wall_seconds: float
    interrupted: bool
    best: dict[str, Any] | None
    default: dict[str, Any] | None
    written: list[str] = field(default_factory=list)
    write_note: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    dashboard: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _sampler(config: StudyConfig, offset: int, parallel: bool) -> optuna.samplers.BaseSampler:
    s = config.sampler
    seed = s.seed + offset
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # constant liar: running trials count as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=s.startup_trials, constant_liar=parallel, multivariate=True
    )


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
        )
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=p.max_resource,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _load(config: StudyConfig, url: str, offset: int, parallel: bool) -> optuna.Study:
    return optuna.load_study(
        study_name=config.name,
        storage=open_storage(url),
        sampler=_sampler(config, offset, parallel),
        pruner=_pruner(config),
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_trials(study: optuna.Study) -> list[int]:
    """Fail trials a dead run of this host left RUNNING; queue them and interrupted ones again.

    Returns:
        The numbers of the trials whose parameters were queued again.
    """
    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        if t.number in retried:
            continue
        owner_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        orphan = (
            t.state == STATE.RUNNING
            and owner_host == host
            and pid.isdigit()
            and not _alive(int(pid))
        )
        if orphan:
            study._storage.set_trial_state_values(t._trial_id, STATE.FAIL)
        if orphan or (t.state == STATE.FAIL and t.user_attrs.get("interrupted")):
            attrs = {"retry_of": t.number}
            if "role" in t.user_attrs:  # a cut trial 0 stays the current config's trial
                attrs["role"] = t.user_attrs["role"]
            study.enqueue_trial(t.params, user_attrs=attrs)
            queued.append(t.number)
    return queued


class _TrialRunner:
    """The objective as Optuna calls it: records the owner, marks Ctrl-C interruptions."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr("worker", _owner())
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise


# a trial that raises one of these fails; the study goes on (a bad corner of the space)
CAUGHT = (RuntimeError, ValueError, ArithmeticError)


def _worker(payload: dict[str, Any]) -> None:
    """One worker process: run ``n_trials`` of the study from the shared storage."""
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = StudyConfig.model_validate(payload["config"])
    configs = Path(payload["configs"]) if payload["configs"] else None
    registry = load_registry(configs)
    study = _load(config, payload["storage"], payload["seed_offset"], parallel=True)
    cache = Path(payload["cache_dir"]) if payload["cache_dir"] else None
    objective = Objective(config, registry, cache_dir=cache)
    with contextlib.suppress(KeyboardInterrupt):
        study.optimize(
            _TrialRunner(objective),
            n_trials=payload["n_trials"],
            timeout=payload["timeout"],
            catch=CAUGHT,
        )


def _split_trials(total: int, workers: int) -> list[int]:
    return [total // workers + (i < total % workers) for i in range(workers)]


@contextlib.contextmanager
def _quiet_optuna(progress: bool) -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    if progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _postfix(study: optuna.Study, config: StudyConfig) -> dict[str, str]:
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    out = {"pruned": str(sum(t.state == STATE.PRUNED for t in trials))}
    complete = [t for t in trials if t.state == STATE.COMPLETE]
    if complete and not config.multi_objective:
        out[f"best {config.metrics[0]}"] = f"{study.best_value:.4f}"
    elif complete:
        out["pareto"] = str(len(study.best_trials))
    return out


def run_study(
    study: StudyConfig | str | Path,
    trials: int | None = None,
    storage: str | None = None,
    workers: int = 1,
    resume: bool = False,
    out: Path | None = None,
    configs: Path | None = None,
    write_config: WriteConfig = "if-better",
    progress: bool = True,
    plots: bool = True,
) -> StudyRun:
    """Run (or continue) a study and write its outputs.

    Args:
        study: A :class:`StudyConfig`, a study file, or a study name.
        trials: Trials of this run, over all workers (default: the study file's ``trials``);
            ``0`` with ``resume`` only writes the outputs (and the best config) of the study.
        storage: Where the study lives (see the module docstring; default SQLite under
            ``experiments/studies/``).
        workers: Processes optimising the study at once through the storage.
        resume: Continue the study of that name in the storage.
        out: Output folder (default ``experiments/studies/<study>/``).
        configs: Model config folder read for the base configs and written with the tuned
            one (default ``experiments/configs/models``).
        write_config: ``if-better`` writes the best trial's config only if it beats the
            current config (enqueued as the study's first trial) on validation; ``always``;
            ``never``.
        progress: Show a progress bar with the best value so far.
        plots: Write the PNG plots.

    Returns:
        The run's summary (also ``<out>/summary.json``).

    Raises:
        StudyError: Invalid study file, storage, or a name clash without ``resume``.
    """
    with _quiet_optuna(progress):
        return _run(
            study, trials, storage, workers, resume, out, configs, write_config, progress, plots
        )


def _run(
    study: StudyConfig | str | Path,
    trials: int | None,
    storage: str | None,
    workers: int,
    resume: bool,
    out: Path | None,
    configs: Path | None,
    write_config: WriteConfig,
    progress: bool,
    plots: bool,
) -> StudyRun:
    configs = configs or models_dir()
    config = study if isinstance(study, StudyConfig) else load_study_config(study, configs=configs)
    registry = load_registry(configs)
    if workers < 1:
        raise StudyError(f"workers: must be at least 1, not {workers}")
    n_trials = trials if trials is not None else config.trials
    url = resolve_storage(storage, config.name)
    out_dir = Path(out) if out else studies_root() / config.name
    out_dir.mkdir(parents=True, exist_ok=True)
    store = open_storage(url)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(store)}
    if config.name in existing and not resume:
        raise StudyError(
            f"study {config.name!r} already exists in {url} with "
            f"{existing[config.name].n_trials} trials: pass --resume to continue it, or "
            "--storage for a new one"
        )
    if config.name not in existing and resume:
        raise StudyError(f"--resume: no study {config.name!r} in {url}")
    if config.name not in existing:
        created = optuna.create_study(
            study_name=config.name, storage=store, directions=config.directions
        )
        created.set_user_attr("config", config.model_dump(mode="json", exclude={"source"}))
        _enqueue_default(created, config, registry)
    study_obj = _load(config, url, 0, parallel=workers > 1)
    saved = study_obj.user_attrs.get("config")
    if saved and saved != config.model_dump(mode="json", exclude={"source"}):
        log.warning("study %s: the study file changed since the study was created", config.name)
    requeued = recover_trials(study_obj) if resume else []
    if requeued:
        log.warning("study %s: queued again the interrupted trials %s", config.name, requeued)
    start_count = len(study_obj.trials)
    objective = Objective(config, registry, cache_dir=out_dir / "cache")
    if n_trials > 0:
        objective.warm()  # the split and a shared retriever, once, before any worker starts
    started = time.perf_counter()
    interrupted = False
    bar = tqdm(total=n_trials, desc=f"tune {config.name}", unit="trial", disable=not progress)
    try:
        if workers == 1:
            study_obj = _load(config, url, start_count, parallel=False)

            def tick(s: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
                bar.update(1)
                bar.set_postfix(_postfix(s, config))

            study_obj.optimize(
                _TrialRunner(objective),
                n_trials=n_trials,
                timeout=config.timeout,
                catch=CAUGHT,
                callbacks=[tick],
            )
        else:
            _run_workers(config, url, configs, out_dir, n_trials, workers, start_count, bar)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: study %s in %s is resumable (--resume)", config.name, url)
    finally:
        bar.close()
    wall = time.perf_counter() - started
    study_obj = _load(config, url, 0, parallel=False)
    run = _finish(
        study_obj, config, registry, url, out_dir, configs, wall, interrupted, start_count,
        write_config, plots,
    )  # fmt: skip
    return run


def _run_workers(
    config: StudyConfig,
    url: str,
    configs: Path | None,
    out_dir: Path,
    n_trials: int,
    workers: int,
    start_count: int,
    bar: Any,
) -> None:
    """Start the worker processes and follow the storage until they end."""
    context = multiprocessing.get_context("spawn")  # no forked torch/sqlite state
    processes = []
    for index, count in enumerate(_split_trials(n_trials, workers)):
        if count == 0:
            continue
        payload = {
            "config": config.model_dump(mode="json"),
            "configs": str(configs) if configs else None,
            "storage": url,
            "n_trials": count,
            "timeout": config.timeout,
            "seed_offset": start_count + 7919 * (index + 1),
            "cache_dir": str(out_dir / "cache"),
        }
        process = context.Process(target=_worker, args=(payload,), name=f"tune-{index}")
        process.start()
        processes.append(process)
    study = _load(config, url, 0, parallel=True)
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(1.0)
            finished = [
                t
                for t in study.get_trials(deepcopy=False, states=FINISHED)
                if t.number >= start_count
            ]
            if len(finished) != bar.n:  # redraw on news only (a log file gets every redraw)
                bar.n = min(len(finished), n_trials)
                bar.set_postfix(_postfix(study, config))
    except KeyboardInterrupt:
        for p in processes:  # a terminal sends SIGINT to the group; `kill -INT` only to us
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGINT)
        for p in processes:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
        raise
    for p in processes:
        p.join()
    bar.n = min(
        n_trials,
        sum(t.number >= start_count for t in study.get_trials(deepcopy=False, states=FINISHED)),
    )
    bar.set_postfix(_postfix(study, config))
    failed = [p.name for p in processes if p.exitcode]
    if failed:
        raise StudyError(f"workers {failed} exited with an error (see their log above)")


def _enqueue_default(study: optuna.Study, config: StudyConfig, registry: Mapping) -> bool:
    """Queue the current config as trial 0 when it lies in the space: the bar to beat."""
    entry = registry[config.model]
    values = entry.config_for(config.dataset, registry).model_dump(mode="json")
    params = {}
    for path, spec in config.params.items():
        value = get_path(values, path)
        if not spec.contains(value):
            log.warning(
                "study %s: the current %s=%r is outside the space; no default trial",
                config.name,
                path,
                value,
            )
            return False
        params[path] = storage_value(spec, value)
    study.enqueue_trial(params, user_attrs={"role": "default"})
    return True


def _trial_info(t: optuna.trial.FrozenTrial | None, config: StudyConfig) -> dict | None:
    if t is None:
        return None
    from recsys.tuning.objectives import from_params

    return {
        "number": t.number,
        "values": values_by_metric(config, t.values),
        "params": from_params(config, t.params),
        "valid": t.user_attrs.get("valid", {}),
    }


def _finish(
    study: optuna.Study,
    config: StudyConfig,
    registry: Mapping,
    url: str,
    out_dir: Path,
    configs: Path | None,
    wall: float,
    interrupted: bool,
    start_count: int,
    write_config: WriteConfig,
    plots: bool,
) -> StudyRun:
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study, config)
    queued_default = [t for t in trials if t.user_attrs.get("role") == "default"]
    default = next((t for t in queued_default if t.state == STATE.COMPLETE), None)
    outputs = {p.name: str(p) for p in write_trials(trials_frame(study, config), out_dir)}
    if config.multi_objective and best is not None:
        pareto = out_dir / "pareto.csv"
        pareto_frame(study, config).to_csv(pareto, index=False)
        outputs[pareto.name] = str(pareto)
    if plots and trials:
        outputs.update({f"{k}.png": str(v) for k, v in plot_study(study, config, out_dir).items()})
    written: list[str] = []
    note = ""
    if best is None:
        note = "no complete trial: nothing written"
    elif write_config == "never":
        note = "write_config=never"
    elif interrupted and write_config == "if-better":
        note = "interrupted: nothing written (--resume to finish the study)"
    elif write_config == "if-better" and queued_default and default is None:
        note = "the current config (trial 0) has no validation value yet: nothing written"
    elif write_config == "if-better" and default is not None and not _better(best, default, config):
        note = (
            f"the current config (trial {default.number}) is still best on validation: "
            "nothing written"
        )
    elif configs is None:
        note = "no model config folder"
    else:
        line = provenance_line(config, best, url, len(trials), default)
        written = [str(p) for p in write_model_configs(config, best, configs, line)]
        note = f"trial {best.number} written"
        best_yaml = out_dir / "best_config.json"
        best_yaml.write_text(json.dumps(_trial_info(best, config), indent=2) + "\n")
        outputs[best_yaml.name] = str(best_yaml)
    run = StudyRun(
        study=config.name,
        model=config.model,
        dataset=config.dataset,
        protocol=config.protocol,
        storage=url,
        out_dir=str(out_dir),
        metrics=config.metrics,
        trials=len(trials),
        complete=sum(t.state == STATE.COMPLETE for t in trials),
        pruned=sum(t.state == STATE.PRUNED for t in trials),
        failed=sum(t.state == STATE.FAIL for t in trials),
        trials_this_run=sum(t.number >= start_count for t in trials),
        wall_seconds=round(wall, 1),
        interrupted=interrupted,
        best=_trial_info(best, config),
        default=_trial_info(default, config),
        written=written,
        write_note=note,
        outputs=outputs,
        dashboard=dashboard_command(url),
    )
    (out_dir / "summary.json").write_text(json.dumps(run.as_dict(), indent=2, default=str) + "\n")
    return run


def _better(
    best: optuna.trial.FrozenTrial, default: optuna.trial.FrozenTrial, config: StudyConfig
) -> bool:
    sign = 1.0 if config.directions[0] == "maximize" else -1.0
    return best.number != default.number and sign * best.values[0] > sign * default.values[0]
