"""Monitoring stage: scheduled drift reports (Evidently 0.7) of the event and decision logs.

The entry point, shared by ``recsys drift``, notebook 08 and the tests::

    from recsys.monitoring import load_files, load_log_window, parse_window, run_drift

    ref = load_files("reference", ["ref_events.parquet", "ref_decisions.jsonl"])
    cur = load_log_window("current", "var/log", parse_window("last-7d"))
    result = run_drift(ref, cur, load_config(), out="experiments/reports/drift")
    result.summary(), result.exit_code          # 0 no drift, 1 drift (2: DataError raised)

Checks: ``data`` (events), ``context`` (request context), ``prediction`` (scores, recommended
items, fallbacks, variants), ``embedding`` (two-tower user vectors), ``quality`` (RecsysPreset
on slates joined to later events), ``latency`` (per-stage p99 creep).
"""

from recsys.monitoring.checks import CheckResult
from recsys.monitoring.embeddings import TwoTowerEmbedder, UserEmbedder, fit_two_tower_embedder
from recsys.monitoring.inputs import (
    DriftInput,
    Window,
    decisions_frame,
    from_frames,
    load_files,
    load_log_window,
    parse_window,
    read_decision_log,
    read_event_log,
)
from recsys.monitoring.run import (
    DEFAULT_OUT,
    EXIT_DRIFT,
    EXIT_ERROR,
    EXIT_OK,
    DriftResult,
    run_drift,
)
from recsys.monitoring.synthetic import (
    DRIFT_KINDS,
    Injection,
    SyntheticLog,
    SyntheticLogConfig,
    SyntheticWorld,
    synthetic_pair,
    write_log,
)
from recsys.monitoring.thresholds import CHECKS, DriftConfig, load_config

__all__ = [
    "CHECKS",
    "DEFAULT_OUT",
    "DRIFT_KINDS",
    "EXIT_DRIFT",
    "EXIT_ERROR",
    "EXIT_OK",
    "CheckResult",
    "DriftConfig",
    "DriftInput",
    "DriftResult",
    "Injection",
    "SyntheticLog",
    "SyntheticLogConfig",
    "SyntheticWorld",
    "TwoTowerEmbedder",
    "UserEmbedder",
    "Window",
    "decisions_frame",
    "fit_two_tower_embedder",
    "from_frames",
    "load_config",
    "load_files",
    "load_log_window",
    "parse_window",
    "read_decision_log",
    "read_event_log",
    "run_drift",
    "synthetic_pair",
    "write_log",
]
