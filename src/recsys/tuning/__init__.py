"""Tuning stage: Optuna studies whose search spaces are data (``experiments/configs/studies``).

``recsys tune STUDY`` (or :func:`run_study`) trains each trial on train, scores validation,
prunes weak neural trials per epoch, keeps the study in a shared storage (SQLite, any
SQLAlchemy URL, or a journal file) and writes the best trial as the model's config file,
where ``recsys bench quality`` and the Bento read it.
"""

from recsys.tuning.objectives import Objective, ranker_validation_metrics
from recsys.tuning.outputs import plot_pruning, plot_study, trials_frame, write_model_configs
from recsys.tuning.run import StudyRun, open_storage, resolve_storage, run_study, study_names
from recsys.tuning.study import (
    ParamSpec,
    StudyConfig,
    StudyError,
    find_study_file,
    load_study_config,
)

__all__ = [
    "Objective",
    "ParamSpec",
    "StudyConfig",
    "StudyError",
    "StudyRun",
    "find_study_file",
    "load_study_config",
    "open_storage",
    "plot_pruning",
    "plot_study",
    "ranker_validation_metrics",
    "resolve_storage",
    "run_study",
    "study_names",
    "trials_frame",
    "write_model_configs",
]
