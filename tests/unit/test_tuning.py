"""recsys.tuning: study files as data, validation-only objectives, pruning, shared storage,
workers, resume after a kill or Ctrl-C, multi-objective, tuned configs reaching the bench.

Everything runs on the small synthetic dataset into temporary folders: no test depends on a
tuned file being in the checkout, and none writes to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from recsys.bench.registry import load_registry
from recsys.cli import app
from recsys.tuning import StudyError, load_study_config, run_study
from recsys.tuning.objectives import Objective
from recsys.tuning.outputs import tuned_overrides
from recsys.tuning.run import open_storage, resolve_storage

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "experiments" / "configs" / "models"
STUDIES = ROOT / "experiments" / "configs" / "studies"
STATE = optuna.trial.TrialState


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """A private copy of the model configs (the study writes its best config here)."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    return folder


def ease_study(**overrides) -> dict:
    spec = {
        "name": "ease-syn",
        "model": "ease",
        "dataset": "synthetic",
        "sampler": {"kind": "tpe", "seed": 0, "startup_trials": 3},
        "pruner": {"kind": "none"},
        "params": {"l2": {"type": "float", "low": 1.0, "high": 2000.0, "log": True}},
    }
    spec.update(overrides)
    return spec


def two_tower_study(epochs: int = 3, **overrides) -> dict:
    spec = {
        "name": "tt-syn",
        "model": "two_tower",
        "dataset": "synthetic",
        "fixed": {
            "epochs": epochs,
            "patience": epochs,
            "embedding_size": 16,
            "table_dim": 16,
            "batch_size": 256,
        },
        "pruner": {"kind": "median", "startup_trials": 1, "warmup_steps": 0},
        "params": {
            "temperature": {"type": "float", "low": 0.02, "high": 1.0, "log": True},
            "hidden_size": {"type": "categorical", "choices": [0, 32, 64]},
        },
    }
    spec.update(overrides)
    return spec


def _write(tmp_path: Path, spec: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


# ---------------------------------------------------------------------- study files as data
def test_committed_studies_validate() -> None:
    names = {p.stem: load_study_config(p) for p in sorted(STUDIES.glob("*.yaml"))}
    models = {c.model for c in names.values()}
    assert {"ease", "itemknn", "two_tower", "two_tower+ranker"} <= models
    assert any("ease" in n and c.model == "ease" for n, c in names.items())
    tower = next(c for c in names.values() if c.model == "two_tower")
    assert {
        "embedding_size",
        "hidden_size",
        "temperature",
        "learning_rate",
        "batch_size",
        "history_length",
    } <= set(tower.params)
    assert tower.pruner.kind in ("median", "hyperband")
    ranker = next(c for c in names.values() if c.model == "two_tower+ranker")
    assert any(p.startswith("ranker.features.groups.") for p in ranker.params)
    assert {"ranker.cross_layers", "ranker.folds"} <= set(ranker.params)
    assert {c.pruner.kind for c in names.values()} >= {"median", "hyperband"}
    assert any(c.multi_objective for c in names.values())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"params": {"temprature": {"type": "float", "low": 0.1, "high": 1.0}}},
            ["params.temprature", "unknown parameter", "no field 'temprature'"],
        ),
        (
            {"params": {"temperature": {"type": "float", "low": 0.5, "high": 0.1}}},
            ["params.temperature", "inverted bounds", "low (0.5)"],
        ),
        ({"model": "two_towr"}, ["model 'two_towr' is not registered", "two_tower"]),
        (
            {"params": {"temperature": {"type": "float", "low": 0.1, "high": 50.0}}},
            ["params.temperature", "50.0 is outside what TwoTowerConfig accepts"],
        ),
        (
            {"params": {"index.kind.x": {"type": "bool"}}},
            ["params.index.kind.x", "index.kind is a value"],
        ),
        ({"fixed": {"epoch": 3}}, ["fixed.epoch", "unknown parameter"]),
        ({"trails": 3}, ["trails: unknown key"]),
        ({"dataset": "ml-10m"}, ["dataset: unknown dataset 'ml-10m'"]),
        (
            {"params": {"batch_size": {"type": "categorical", "choices": []}}},
            ["params.batch_size", "non-empty list of choices"],
        ),
        (
            {"objectives": ["ndcg@10", "ild@10"]},
            ["Optuna cannot prune multi-objective trials"],
        ),
    ],
)
def test_bad_study_is_a_clear_error_naming_it(
    tmp_path: Path, configs: Path, change: dict, expected: list[str]
) -> None:
    path = _write(tmp_path, two_tower_study(**change))
    with pytest.raises(StudyError) as info:
        load_study_config(path, configs=configs)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_model_key_and_ranker_without_folds_are_errors(
    tmp_path: Path, configs: Path
) -> None:
    spec = ease_study()
    del spec["model"]
    with pytest.raises(StudyError, match="model: Field required"):
        load_study_config(_write(tmp_path, spec), configs=configs)
    ranker = {
        "name": "r",
        "model": "two_tower+ranker",
        "dataset": "synthetic",
        "params": {"ranker.folds": {"type": "int", "low": 1, "high": 4}},
    }
    with pytest.raises(StudyError, match=r"ranker.folds: .*needs folds >= 2"):
        load_study_config(_write(tmp_path, ranker, "r.yaml"), configs=configs)


def test_cli_bad_study_exits_2_naming_the_parameter(tmp_path: Path, configs: Path) -> None:
    path = _write(tmp_path, two_tower_study(params={"tempreture": {"type": "bool"}}))
    result = CliRunner().invoke(app, ["tune", str(path), "--configs", str(configs)])
    assert result.exit_code == 2
    assert "params.tempreture: unknown parameter" in result.output


# ---------------------------------------------------------------------- objectives
def test_objective_never_reads_test(configs: Path) -> None:
    """The same trial scores the same whatever the test interactions are."""
    import dataclasses

    from recsys.data import load_dataset, make_split

    config = load_study_config(ease_study(), configs=configs)
    registry = load_registry(configs)
    split = make_split(load_dataset("synthetic"), "random", seed=config.seed)
    no_test = dataclasses.replace(split, test=split.test.iloc[:0])
    values = []
    for s in (split, no_test):
        study = optuna.create_study(direction="maximize")
        study.enqueue_trial({"l2": 50.0})
        study.optimize(Objective(config, registry, split=s), n_trials=1)
        values.append(study.trials[0].value)
    assert values[0] == values[1] > 0


def test_two_tower_reports_every_epoch_and_a_pruner_stops_it(configs: Path) -> None:
    config = load_study_config(two_tower_study(epochs=3), configs=configs)
    objective = Objective(config, load_registry(configs))
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == STATE.COMPLETE
    assert (
        sorted(trial.intermediate_values)
        == [1, 2, 3]
        == list(range(1, trial.user_attrs["epochs"] + 1))
    )
    assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
    # a pruner that stops everything below NDCG 1.0 stops the next trial after its first epoch
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.0)
    )
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == STATE.PRUNED
    assert list(study.trials[0].intermediate_values) == [1]
    # ...but never the current config, queued as the bar to beat: it runs to its end
    study.enqueue_trial(study.trials[0].params, user_attrs={"role": "default"})
    study.optimize(objective, n_trials=1)
    assert study.trials[1].state == STATE.COMPLETE
    assert sorted(study.trials[1].intermediate_values) == [1, 2, 3]


def test_ranker_objective_is_out_of_fold_and_reports_each_fold(configs: Path) -> None:
    spec = {
        "name": "rk",
        "model": "two_tower+ranker",
        "dataset": "synthetic",
        "fixed": {
            "retriever.epochs": 2,
            "retriever.embedding_size": 16,
            "ranker.epochs": 3,
            "ranker.candidates": 30,
            "ranker.hidden": [16],
        },
        "pruner": {"kind": "median"},
        "params": {
            "ranker.folds": {"type": "int", "low": 2, "high": 3},
            "ranker.features.groups.ease": {"type": "bool"},
        },
    }
    config = load_study_config(spec, configs=configs)
    objective = Objective(config, load_registry(configs))
    assert not objective.searches_retriever
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"ranker.folds": 3, "ranker.features.groups.ease": False})
    study.enqueue_trial({"ranker.folds": 2, "ranker.features.groups.ease": True})
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert sorted(first.intermediate_values) == [1, 2, 3]
    assert sorted(second.intermediate_values) == [1, 2]
    # after the last fold the running out-of-fold NDCG is the ranker's holdout NDCG
    assert first.intermediate_values[3] == pytest.approx(first.value)
    valid = first.user_attrs["valid"]
    assert 0 < valid["ndcg@10"] <= 1 and 0 < valid["coverage@10"] <= 1
    assert len(objective._retrievers) == 1  # trained once for both trials


# ---------------------------------------------------------------------- outputs
def test_run_writes_tuned_config_that_the_bench_reads(tmp_path: Path, configs: Path) -> None:
    from recsys.bench.quality import run_quality

    before = yaml.safe_load((configs / "ease.yaml").read_text())
    run = run_study(
        load_study_config(ease_study(), configs=configs),
        trials=6,
        storage=str(tmp_path / "s.db"),
        out=tmp_path / "out",
        configs=configs,
        progress=False,
    )
    assert run.trials == 6 and run.complete == 6 and run.default["number"] == 0
    assert run.default["params"] == {"l2": 250.0}  # the current config is the bar to beat
    best = run.best
    assert best["values"]["ndcg@10"] >= run.default["values"]["ndcg@10"]
    out = tmp_path / "out"
    for name in ("trials.csv", "trials.parquet", "summary.json", "history.png"):
        assert (out / name).is_file(), name
    if best["number"] == 0:
        assert run.written == [] and "still best" in run.write_note
        return
    text = (configs / "ease.yaml").read_text()
    after = yaml.safe_load(text)
    assert after["datasets"]["synthetic"]["l2"] == best["params"]["l2"]
    assert after["datasets"]["ml-latest-small"] == before["datasets"]["ml-latest-small"]
    assert after["config"] == before["config"]
    assert f"# tuned synthetic: study ease-syn (random, seed 2020), trial {best['number']}" in text
    assert text.startswith("# EASE^R closed form")  # the file's own comment is kept
    report = run_quality(
        "synthetic",
        "random",
        tmp_path / "q",
        models=["ease"],
        progress=False,
        parity_users=0,
        configs=configs,
    )
    assert report["configs"]["ease"]["l2"] == best["params"]["l2"]


def test_tuned_retriever_values_go_to_the_entry_that_trains_it(configs: Path) -> None:
    spec = {
        "name": "both",
        "model": "two_tower+ranker",
        "dataset": "synthetic",
        "fixed": {"ranker.epochs": 3},
        "params": {
            "retriever.temperature": {"type": "float", "low": 0.05, "high": 0.5},
            "ranker.hidden": {"type": "categorical", "choices": [[16], [32, 16]]},
        },
    }
    registry = load_registry(configs)
    config = load_study_config(spec, registry=registry)
    params = {"retriever.temperature": 0.2, "ranker.hidden": "[32, 16]"}
    assert tuned_overrides(config, params, registry) == {
        "two_tower": {"temperature": 0.2},
        "two_tower+ranker": {"ranker": {"epochs": 3, "hidden": [32, 16]}},
    }


def test_multi_objective_writes_the_pareto_front(tmp_path: Path, configs: Path) -> None:
    spec = {
        "name": "knn-pareto",
        "model": "itemknn",
        "dataset": "synthetic",
        "objectives": ["ndcg@10", "coverage@10"],
        "sampler": {"kind": "nsga2", "seed": 1},
        "pruner": {"kind": "none"},
        "params": {
            "neighbors": {"type": "int", "low": 2, "high": 200, "log": True},
            "shrink": {"type": "float", "low": 0.0, "high": 50.0},
        },
    }
    run = run_study(
        load_study_config(spec, configs=configs),
        trials=8,
        storage=str(tmp_path / "p.db"),
        out=tmp_path / "out",
        configs=configs,
        write_config="always",
        progress=False,
    )
    import pandas as pd

    front = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert {"number", "ndcg@10", "coverage@10", "param.neighbors"} <= set(front.columns)
    # no front member is dominated by another
    for _, a in front.iterrows():
        assert not any(
            b["ndcg@10"] >= a["ndcg@10"]
            and b["coverage@10"] >= a["coverage@10"]
            and (b["ndcg@10"], b["coverage@10"]) != (a["ndcg@10"], a["coverage@10"])
            for _, b in front.iterrows()
        )
    assert run.best["values"]["ndcg@10"] == front["ndcg@10"].max()
    assert (tmp_path / "out" / "pareto.png").is_file()
    tuned = yaml.safe_load((configs / "itemknn.yaml").read_text())["datasets"]["synthetic"]
    assert tuned["neighbors"] == run.best["params"]["neighbors"]


# ---------------------------------------------------------------------- storage, workers, resume
def test_storage_urls() -> None:
    assert resolve_storage("postgresql://u@h/db", "s") == "postgresql://u@h/db"
    assert resolve_storage("/tmp/x/s.db", "s") == "sqlite:////tmp/x/s.db"
    assert resolve_storage("journal:/tmp/x/s.jsonl", "s") == "journal:/tmp/x/s.jsonl"
    assert resolve_storage("/tmp/x/s.log", "s") == "journal:/tmp/x/s.log"
    assert resolve_storage(None, "s").endswith("/experiments/studies/s.db")
    with pytest.raises(StudyError, match="storage 'nowhere'"):
        resolve_storage("nowhere", "s")


def test_two_workers_one_sqlite_study_no_lost_or_duplicated_trials(
    tmp_path: Path, configs: Path
) -> None:
    url = resolve_storage(str(tmp_path / "shared.db"), "ease-syn")
    run = run_study(
        load_study_config(ease_study(), configs=configs),
        trials=8,
        storage=url,
        workers=2,
        out=tmp_path / "out",
        configs=configs,
        progress=False,
        plots=False,
    )
    study = optuna.load_study(study_name="ease-syn", storage=open_storage(url))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(8))  # exactly the trials asked for, none lost, none twice
    assert all(t.state == STATE.COMPLETE for t in study.trials)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2 and str(os.getpid()) not in {w.rsplit(":")[1] for w in workers}
    assert run.trials == run.complete == 8


def _cli(args: list[str]) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "tune", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_running_trial(url: str, name: str, process: subprocess.Popen) -> optuna.Study:
    """Poll the storage until one trial is complete and the next one is running."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(url))
        except KeyError:
            time.sleep(0.3)
            continue
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if STATE.COMPLETE in states and states[-1] == STATE.RUNNING:
            return study
        time.sleep(0.3)
    raise AssertionError("the study never had a running trial")


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_resume_after_kill_or_ctrl_c_continues_the_same_study(
    tmp_path: Path, configs: Path, how: str
) -> None:
    # trials of several seconds, so the signal lands in the middle of one
    spec = two_tower_study(epochs=20, name="tt-resume")
    path = _write(tmp_path, spec)
    url = resolve_storage(str(tmp_path / "study.log"), "tt-resume")  # the journal file backend
    args = [str(path), "--storage", url, "--configs", str(configs), "--out", str(tmp_path / "o")]
    process = _cli([*args, "--trials", "50", "--no-progress", "--no-plots"])
    _wait_for_running_trial(url, "tt-resume", process)
    process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == (-signal.SIGKILL if how == "kill" else 130), output
    before = optuna.load_study(study_name="tt-resume", storage=open_storage(url)).trials
    assert (configs / "two_tower.yaml").read_text() == (MODELS / "two_tower.yaml").read_text()
    cut = before[-1]
    expected = STATE.RUNNING if how == "kill" else STATE.FAIL
    assert cut.state == expected, (cut.state, output)

    run = run_study(
        path, trials=2, storage=url, resume=True, configs=configs, progress=False, plots=False
    )
    after = optuna.load_study(study_name="tt-resume", storage=open_storage(url)).trials
    assert run.study == "tt-resume" and len(after) == len(before) + 2
    for old, new in zip(before[:-1], after, strict=False):  # finished trials kept as they were
        assert (old.number, old.state, old.values) == (new.number, new.state, new.values)
    assert after[cut.number].state == STATE.FAIL  # the cut trial is failed, not left running
    retry = after[len(before)]
    assert retry.user_attrs["retry_of"] == cut.number and retry.params == cut.params
    assert retry.state in (STATE.COMPLETE, STATE.PRUNED)  # it ran to its end this time
    assert not [t for t in after if t.state == STATE.RUNNING]


def test_fresh_run_refuses_an_existing_study_and_resume_needs_one(
    tmp_path: Path, configs: Path
) -> None:
    config = load_study_config(ease_study(), configs=configs)
    storage = str(tmp_path / "s.db")
    with pytest.raises(StudyError, match="--resume: no study 'ease-syn'"):
        run_study(config, trials=1, storage=storage, resume=True, configs=configs, progress=False)
    run_study(config, trials=1, storage=storage, configs=configs, progress=False, plots=False)
    with pytest.raises(StudyError, match=r"already exists .* with 1 trials: pass --resume"):
        run_study(config, trials=1, storage=storage, configs=configs, progress=False)
    run = run_study(
        config,
        trials=2,
        storage=storage,
        resume=True,
        configs=configs,
        progress=False,
        write_config="never",
    )
    assert run.trials == 3 and run.trials_this_run == 2 and run.written == []
    # --resume --trials 0: no new trial, the study's best written as it stands
    run = run_study(
        config,
        trials=0,
        storage=storage,
        resume=True,
        configs=configs,
        progress=False,
        write_config="always",
    )
    assert run.trials == 3 and run.trials_this_run == 0
    tuned = yaml.safe_load((configs / "ease.yaml").read_text())["datasets"]["synthetic"]
    assert tuned == {"l2": run.best["params"]["l2"]}
