"""Drift thresholds and methods: one bounded config, also read from ``configs/drift.yaml``.

The file is ``experiments/configs/drift.yaml`` (a ``drift:`` mapping of the fields below).

The defaults are *distance* tests (normed Wasserstein for numbers, Jensen–Shannon for
categories), not p-value tests: on windows of 10⁵ events a K-S or chi-square test calls a
0.01-star change in the mean rating "significant", which is true and useless to a scheduler.
A distance says how far a distribution moved, whatever the sample size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from recsys.config import ComponentConfig
from recsys.errors import DataError

DEFAULT_CONFIG_PATH = Path("experiments/configs/drift.yaml")

CheckName = Literal["data", "context", "prediction", "embedding", "quality", "latency"]
CHECKS: tuple[CheckName, ...] = ("data", "context", "prediction", "embedding", "quality", "latency")

# Evidently 0.7.23's registered column drift methods (evidently.legacy.calculations.stattests)
StatTestName = Literal[
    "wasserstein", "ks", "psi", "jensenshannon", "kl_div", "hellinger", "chisquare", "z",
    "anderson", "cramer_von_mises", "ed", "es", "mannw", "t_test", "TVD", "g_test",
    "fisher_exact", "empirical_mmd",
]  # fmt: skip


class DriftConfig(ComponentConfig):
    """Thresholds, methods and sizes of one drift run (data only; the seed is config).

    A column *moves* when Evidently's per-column test fails: for a distance method the
    distance is at least the threshold; for a p-value method (``ks``, ``chisquare``, ...) the
    p-value is below it.
    """

    checks: tuple[CheckName, ...] = Field(
        CHECKS, min_length=1, description="Checks to run; the others are reported as skipped."
    )
    num_method: StatTestName = Field("wasserstein", description="Numeric columns.")
    num_threshold: float = Field(0.1, gt=0.0, le=10.0, description="Normed Wasserstein: σ units.")
    cat_method: StatTestName = Field("jensenshannon", description="Categorical columns.")
    cat_threshold: float = Field(0.1, gt=0.0, le=1.0)
    column_methods: dict[str, StatTestName] = Field(
        default_factory=dict, description="Per-column method overrides (by column name)."
    )
    column_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"variant": 0.05},
        description="Per-column threshold overrides (by column name). The variant mix is the "
        "experiment's design, so a smaller move of it (a sample-ratio mismatch) is flagged.",
    )
    min_drifted_columns: int = Field(
        1, ge=1, le=1000, description="A table drifts when at least this many columns move."
    )
    max_categories: int = Field(
        50, ge=2, le=10_000, description="Rarer categories of a column are pooled as __other__."
    )
    min_category_count: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="A category (or head item) stands alone only if the smaller window is "
        "expected to hold it this often; rarer ones are pooled. The Jensen-Shannon distance "
        "of two samples of one distribution is about 0.5/sqrt(count per category), so 200 "
        "keeps its noise near 0.035, well under the 0.1 threshold.",
    )
    popularity_top_items: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Item popularity is compared over the reference's top items, the pooled "
        "tail (__tail__) and items absent from the reference (__new__).",
    )
    time_features: bool = Field(True, description="Compare the hour-of-day mix (UTC).")
    max_rows: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="Rows per side given to Evidently; larger inputs are sampled (seeded). "
        "Exact aggregates (popularity, shares, latency percentiles) use every row.",
    )
    embedding_method: Literal["model", "distance", "mmd", "ratio"] = Field(
        "model", description="Evidently EmbeddingsDrift method."
    )
    embedding_threshold: float = Field(
        0.55, gt=0.0, le=100.0, description="Model: ROC AUC; distance: Euclidean; mmd; ratio."
    )
    embedding_null_quantile: float = Field(
        0.99,
        ge=0.5,
        lt=1.0,
        description="Model method: the ROC AUC must also exceed this quantile of its no-drift "
        "distribution for the sample size (a fixed 0.55 flagged 15 % of no-drift pairs of 300 "
        "users).",
    )
    max_embedding_rows: int = Field(
        1000, ge=20, le=100_000, description="Users per side (Evidently plots a t-SNE of them)."
    )
    quality_k: int = Field(10, ge=1, le=1000, description="Cut-off of the RecsysPreset metrics.")
    outcome_horizon_hours: float = Field(
        24.0, gt=0.0, le=24.0 * 90, description="A shown item is relevant if used this soon."
    )
    quality_metrics: tuple[str, ...] = Field(
        ("ndcg", "recall"), description="Metrics whose drop flags quality drift."
    )
    quality_max_relative_drop: float = Field(0.2, gt=0.0, le=1.0)
    quality_min_decisions: int = Field(
        30, ge=1, description="Fewer decisions with known outcomes per side: quality skipped."
    )
    max_quality_decisions: int = Field(
        5000, ge=10, le=1_000_000, description="Decisions per side joined to outcomes (sampled)."
    )
    latency_percentiles: tuple[float, ...] = Field((50.0, 95.0, 99.0), min_length=1)
    latency_p99_max_growth: float = Field(
        0.25, gt=0.0, le=100.0, description="Relative p99 growth of a stage that is flagged."
    )
    latency_min_increase_ms: float = Field(
        0.5, ge=0.0, le=10_000.0, description="...and only if p99 grew by at least this much."
    )
    latency_budget_ms: float = Field(
        50.0, gt=0.0, le=60_000.0, description="Flag when the current total p99 exceeds it."
    )
    workspace_project: str = Field("recsys drift", min_length=1, max_length=200)
    seed: int = Field(0, ge=0)

    def method_for(self, column: str, numeric: bool) -> str:
        """The drift method of one column."""
        default = self.num_method if numeric else self.cat_method
        return self.column_methods.get(column, default)

    def threshold_for(self, column: str, numeric: bool) -> float:
        """The drift threshold of one column."""
        default = self.num_threshold if numeric else self.cat_threshold
        return float(self.column_thresholds.get(column, default))


def load_config(path: str | Path | None = None, **overrides: object) -> DriftConfig:
    """Load a :class:`DriftConfig` from YAML (``drift:`` section or top level) plus overrides.

    Args:
        path: A YAML file; ``None`` reads ``experiments/configs/drift.yaml`` when it exists
            (relative to the working directory), else uses the defaults.
        **overrides: Fields that win over the file.

    Raises:
        DataError: The file is missing, not YAML, or has unknown / out-of-bounds keys.
    """
    data: dict[str, object] = {}
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: drift config not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise DataError(f"{path}: expected a mapping of thresholds")
        section = loaded.get("drift", loaded)
        if not isinstance(section, dict):
            raise DataError(f"{path}: 'drift' must be a mapping")
        data.update(section)
    data.update(overrides)
    try:
        return DriftConfig.model_validate(data)
    except ValidationError as exc:
        where = path if path is not None else "drift config"
        raise DataError(f"{where}: {exc}") from exc
