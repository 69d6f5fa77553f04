"""Latency creep: per-stage percentiles of the decision log, current against reference.

A stage is flagged when its current p99 exceeds the reference p99 by more than
``latency_p99_max_growth`` (relative) *and* by at least ``latency_min_increase_ms`` (so that
0.05 → 0.07 ms is not an alarm); the run is also flagged when the current ``total`` p99 is
over the ``latency_budget_ms`` budget, whatever the reference did. Percentiles are exact, over
every decision that timed the stage; a stage timed in only one window is reported, not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.monitoring.frames import latency_stages
from recsys.monitoring.inputs import LATENCY_PREFIX
from recsys.monitoring.thresholds import DriftConfig


@dataclass
class StageLatency:
    """Percentiles of one stage in both windows and the verdict.

    Attributes:
        stage: Stage name as logged in ``timings_ms``.
        reference: Percentile label (``p50``) → milliseconds; empty if not timed.
        current: Same for the current window.
        count: Timed decisions per side.
        p99_growth: Relative growth of p99 (``None`` when not comparable).
        limit_ms: The p99 above which the stage is flagged (``None`` when not comparable).
        drifted: Whether the stage is flagged.
        reason: Why it is flagged or not compared.
    """

    stage: str
    reference: dict[str, float]
    current: dict[str, float]
    count: dict[str, int]
    p99_growth: float | None = None
    limit_ms: float | None = None
    drifted: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "reference": self.reference,
            "current": self.current,
            "count": self.count,
            "p99_growth": self.p99_growth,
            "limit_ms": self.limit_ms,
            "drifted": self.drifted,
            "reason": self.reason,
        }


@dataclass
class LatencyResult:
    """Per-stage latency comparison.

    Attributes:
        stages: One entry per stage timed in either window.
        over_budget: Current total p99 above the budget.
        moved: Flagged stages (and ``total>budget`` when over budget).
    """

    stages: dict[str, StageLatency]
    over_budget: bool = False
    moved: list[str] = field(default_factory=list)


def percentile_label(q: float) -> str:
    """``99.0`` → ``p99``, ``99.9`` → ``p99.9``."""
    return f"p{q:g}"


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return {}
    return {
        percentile_label(q): float(v) for q, v in zip(qs, np.percentile(values, qs), strict=True)
    }


def p99_limit(reference_p99: float, config: DriftConfig) -> float:
    """The current p99 above which a stage is flagged."""
    return max(
        reference_p99 * (1.0 + config.latency_p99_max_growth),
        reference_p99 + config.latency_min_increase_ms,
    )


def compare_latency(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig
) -> LatencyResult:
    """Compare per-stage latency of two decision frames (``latency_<stage>`` columns)."""
    qs = tuple(sorted(set(config.latency_percentiles) | {99.0}))
    stages = list(dict.fromkeys([*latency_stages(reference), *latency_stages(current)]))
    result: dict[str, StageLatency] = {}
    moved: list[str] = []
    for stage in stages:
        column = LATENCY_PREFIX + stage
        ref = reference[column].to_numpy(dtype=np.float64) if column in reference else np.zeros(0)
        cur = current[column].to_numpy(dtype=np.float64) if column in current else np.zeros(0)
        entry = StageLatency(
            stage,
            _percentiles(ref, qs),
            _percentiles(cur, qs),
            {"reference": int(np.sum(~np.isnan(ref))), "current": int(np.sum(~np.isnan(cur)))},
        )
        if not entry.reference or not entry.current:
            entry.reason = "timed in one window only: not compared"
        else:
            ref99, cur99 = entry.reference["p99"], entry.current["p99"]
            entry.limit_ms = p99_limit(ref99, config)
            entry.p99_growth = cur99 / ref99 - 1.0 if ref99 > 0 else None
            if cur99 > entry.limit_ms:
                entry.drifted = True
                entry.reason = f"p99 {ref99:.2f} → {cur99:.2f} ms (limit {entry.limit_ms:.2f})"
                moved.append(stage)
        result[stage] = entry
    # most severe first: the stage whose p99 grew the most leads the summary
    moved.sort(key=lambda s: -(result[s].p99_growth or 0.0))
    over = False
    total = result.get("total")
    if total is not None and total.current.get("p99", 0.0) > config.latency_budget_ms:
        over = True
        moved.append("total>budget")
    return LatencyResult(result, over, moved)
