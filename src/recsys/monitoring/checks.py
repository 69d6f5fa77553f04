"""The Evidently 0.7 reports of a drift run, one per check, and what each one concluded.

* ``data`` / ``context`` / ``prediction``: ``DataDriftPreset`` over the table's columns with
  a method and threshold per column (:class:`DriftConfig`: normed Wasserstein for numbers,
  Jensen–Shannon for categories by default). It generates one ``ValueDrift`` per column, each
  with a pass/fail test, and ``DriftedColumnsCount``; a column *moved* when its test failed.
* ``latency``: :class:`~evidently.metrics.QuantileValue` per stage and percentile, with the
  p99 limit of :mod:`recsys.monitoring.latency` as the test.
* ``embedding``: :class:`~evidently.metrics.EmbeddingsDrift` on user vectors.
* ``quality``: :class:`~evidently.presets.RecsysPreset` (see :mod:`recsys.monitoring.quality`).

Evidently is imported lazily (it takes seconds), inside the functions that need it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from recsys.monitoring.frames import Table
from recsys.monitoring.latency import LatencyResult, percentile_label
from recsys.monitoring.thresholds import DriftConfig

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

Status = Literal["drift", "ok", "skipped"]
DISTANCE_METHODS = frozenset({"wasserstein", "psi", "jensenshannon", "kl_div", "hellinger", "ed"})


@dataclass
class CheckResult:
    """What one check found.

    Attributes:
        name: ``data``, ``context``, ``prediction``, ``embedding``, ``quality`` or ``latency``.
        status: ``drift`` (above thresholds), ``ok`` or ``skipped``.
        moved: Columns / stages / metrics that moved, most severe first.
        reason: Why the check was skipped (or a note on the verdict).
        details: Per-column scores, percentiles, metric values (JSON-ready).
        snapshot: The Evidently snapshot (``None`` when skipped).
        seconds: Wall time of the check.
    """

    name: str
    status: Status
    moved: list[str] = field(default_factory=list)
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    snapshot: Snapshot | None = field(default=None, repr=False)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (without the snapshot)."""
        return {
            "status": self.status,
            "moved": self.moved,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            **self.details,
        }


def skipped(name: str, reason: str) -> CheckResult:
    """A check that did not run, and why."""
    return CheckResult(name, "skipped", reason=reason)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the numeric warnings Evidently's internals raise on empty bins and slices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(sklearn|evidently)\b")
        yield


def _run(
    metrics: list[Any],
    reference: pd.DataFrame,
    current: pd.DataFrame,
    definition: Any,
    *,
    timestamp: datetime | None,
    name: str,
    metadata: dict[str, Any],
    include_tests: bool = True,
    additional: dict[str, Any] | None = None,
) -> Snapshot:
    from evidently import Dataset, Report
    from threadpoolctl import threadpool_limits

    report = Report(metrics, include_tests=include_tests)
    # one BLAS/OpenMP thread: Evidently's t-SNE of the user vectors took 40 s instead of 4 s
    # with the default thread pools on a shared two-core machine (oversubscription)
    with quiet(), threadpool_limits(limits=1):
        return report.run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
            additional_data=additional,
            timestamp=timestamp,
            tags=["recsys-drift", name],
            metadata={k: str(v) for k, v in metadata.items()},
            name=name,
        )


def metric_results(snapshot: Snapshot) -> Iterator[tuple[Any, Any, Any]]:
    """(metric, current result, reference result or ``None``) for each metric of a snapshot."""
    from evidently.core.report import ReferenceMetricNotFound

    for metric_id, result in snapshot.metric_results.items():
        metric = snapshot.context.get_metric(metric_id).to_metric()
        try:
            reference = snapshot.context.get_reference_metric_result(metric_id)
        except ReferenceMetricNotFound:  # a BaseException in Evidently 0.7
            reference = None
        yield metric, result, reference


def _failed(result: Any) -> bool:
    return any(str(getattr(t.status, "value", t.status)) == "FAIL" for t in result.tests)


def _severity(method: str, score: float, threshold: float) -> float:
    if method in DISTANCE_METHODS:
        return score / threshold if threshold > 0 else float("inf")
    return threshold / max(score, 1e-300)


# --------------------------------------------------------------------------- column drift


def table_check(
    table: Table,
    config: DriftConfig,
    *,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> CheckResult:
    """Column drift of one :class:`~recsys.monitoring.frames.Table` with Evidently."""
    from evidently import DataDefinition
    from evidently.presets import DataDriftPreset

    start = time.perf_counter()
    base = {
        "rows": table.rows,
        "sampled_rows": table.sampled,
        "not_compared": table.notes,
    }
    if not table.columns:
        result = skipped(table.name, "no column varies in either window")
        result.details = base
        return result
    methods = {c: config.method_for(c, c in table.numeric) for c in table.columns}
    thresholds = {c: config.threshold_for(c, c in table.numeric) for c in table.columns}
    # the preset's DriftedColumnsCount test fails when share >= drift_share: with
    # drift_share = k / n it fails exactly when k columns moved, our verdict
    share = config.min_drifted_columns / len(table.columns)
    metrics: list[Any] = [
        DataDriftPreset(
            columns=table.columns,
            per_column_method=methods,
            per_column_threshold=thresholds,
            drift_share=min(1.0, share),
        )
    ]
    definition = DataDefinition(
        numerical_columns=table.numeric, categorical_columns=table.categorical
    )
    snapshot = _run(
        metrics,
        table.reference,
        table.current,
        definition,
        timestamp=timestamp,
        name=table.name,
        metadata=metadata or {},
    )
    columns: dict[str, dict[str, Any]] = {}
    for metric, result, _ in metric_results(snapshot):
        if type(metric).__name__ != "ValueDrift":
            continue
        column = metric.column
        score = float(result.value)
        columns[column] = {
            "type": "numeric" if column in table.numeric else "categorical",
            "method": methods[column],
            "score": score,
            "threshold": thresholds[column],
            "drifted": _failed(result),
        }
    moved = sorted(
        (c for c, v in columns.items() if v["drifted"]),
        key=lambda c: (
            -_severity(columns[c]["method"], columns[c]["score"], columns[c]["threshold"])
        ),
    )
    status: Status = "drift" if len(moved) >= config.min_drifted_columns else "ok"
    return CheckResult(
        table.name,
        status,
        moved,
        None,
        {**base, "columns": columns},
        snapshot,
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- latency


def latency_check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    latency: LatencyResult,
    config: DriftConfig,
    *,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> CheckResult:
    """Evidently report of per-stage percentiles; the verdict comes from ``latency`` (exact)."""
    from evidently import DataDefinition
    from evidently.metrics import QuantileValue
    from evidently.tests import lte

    from recsys.monitoring.frames import sample
    from recsys.monitoring.inputs import LATENCY_PREFIX

    start = time.perf_counter()
    compared = [s for s, entry in latency.stages.items() if entry.limit_ms is not None]
    details = {
        "stages": {s: e.to_dict() for s, e in latency.stages.items()},
        "over_budget": latency.over_budget,
        "budget_ms": config.latency_budget_ms,
    }
    if not latency.stages:
        return skipped("latency", "no timings_ms in the decisions")
    if not compared:
        result = skipped("latency", "no stage is timed in both windows")
        result.details = details
        return result
    columns = [LATENCY_PREFIX + s for s in compared]
    ref = sample(reference[columns], config.max_rows, config.seed)
    cur = sample(current[columns], config.max_rows, config.seed + 1)
    metrics: list[Any] = []
    for stage in compared:
        entry = latency.stages[stage]
        for q in sorted(set(config.latency_percentiles) | {99.0}):
            tests = [lte(entry.limit_ms)] if q == 99.0 else []
            metrics.append(
                QuantileValue(column=LATENCY_PREFIX + stage, quantile=q / 100.0, tests=tests)
            )
    snapshot = _run(
        metrics,
        ref.reset_index(drop=True),
        cur.reset_index(drop=True),
        DataDefinition(numerical_columns=columns),
        timestamp=timestamp,
        name="latency",
        metadata=metadata or {},
    )
    status: Status = "drift" if latency.moved else "ok"
    details["sampled_rows"] = {"reference": len(ref), "current": len(cur)}
    details["percentile_labels"] = [percentile_label(q) for q in config.latency_percentiles]
    return CheckResult(
        "latency", status, list(latency.moved), None, details, snapshot, time.perf_counter() - start
    )


# --------------------------------------------------------------------------- embeddings


def embedding_limit(config: DriftConfig, n_reference: int, n_current: int) -> float:
    """The score above which user vectors drifted.

    For the ``model`` method (a classifier telling the windows apart, scored by ROC AUC on a
    random half of the users) this is the larger of ``embedding_threshold`` and the
    ``embedding_null_quantile`` of the AUC without drift: the AUC of scores unrelated to the
    labels, ~N(0.5, sd) with sd = sqrt((n1 + n2 + 1) / (12 n1 n2)) for n1, n2 test users per
    window (Mann-Whitney). Other methods use the fixed threshold.
    """
    if config.embedding_method != "model":
        return config.embedding_threshold
    from scipy.stats import norm

    n1, n2 = max(1.0, n_reference / 2.0), max(1.0, n_current / 2.0)
    sd = math.sqrt((n1 + n2 + 1.0) / (12.0 * n1 * n2))
    null = 0.5 + float(norm.ppf(config.embedding_null_quantile)) * sd
    return max(config.embedding_threshold, null)


def _embedding_method(config: DriftConfig, limit: float) -> Any:
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as m

    if config.embedding_method == "model":
        return m.model(threshold=limit)
    if config.embedding_method == "distance":
        return m.distance(threshold=config.embedding_threshold)
    if config.embedding_method == "mmd":
        return m.mmd(threshold=config.embedding_threshold)
    return m.ratio(threshold=config.embedding_threshold)


def embedding_check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    *,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> CheckResult:
    """Evidently ``EmbeddingsDrift`` of user vectors (one row per user, one column per dim)."""
    from evidently import DataDefinition
    from evidently.metrics import EmbeddingsDrift

    from recsys.monitoring.frames import sample

    start = time.perf_counter()
    if len(reference) < 2 or len(current) < 2:
        return skipped("embedding", "fewer than two user vectors in a window")
    ref = sample(reference, config.max_embedding_rows, config.seed).reset_index(drop=True)
    cur = sample(current, config.max_embedding_rows, config.seed + 1).reset_index(drop=True)
    columns = [str(c) for c in ref.columns]
    ref.columns = cur.columns = columns
    definition = DataDefinition(numerical_columns=columns, embeddings={"user_vectors": columns})
    limit = embedding_limit(config, len(ref), len(cur))
    metric = EmbeddingsDrift(
        embeddings_name="user_vectors", drift_method=_embedding_method(config, limit)
    )
    snapshot = _run(
        [metric],
        ref.astype(np.float64),
        cur.astype(np.float64),
        definition,
        timestamp=timestamp,
        name="embedding",
        metadata=metadata or {},
    )
    score = float(next(iter(snapshot.metric_results.values())).value)
    drifted = score > limit
    details = {
        "method": config.embedding_method,
        "score": score,
        "threshold": config.embedding_threshold,
        "limit": limit,
        "users": {"reference": len(reference), "current": len(current)},
        "sampled_users": {"reference": len(ref), "current": len(cur)},
        "dimensions": len(columns),
    }
    return CheckResult(
        "embedding",
        "drift" if drifted else "ok",
        ["user_vectors"] if drifted else [],
        None,
        details,
        snapshot,
        time.perf_counter() - start,
    )
