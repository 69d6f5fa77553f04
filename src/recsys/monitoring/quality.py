"""Recommendation quality where outcomes are known: logged slates joined to later events.

A decision shown to user ``u`` at time ``t`` is scored against the items ``u`` used in
``(t, t + outcome_horizon_hours]``. Each decision is one ranking query for Evidently's
``RecsysPreset`` (its ``user_id`` column carries the decision id): shown items get a score
that follows their slate position (``len(slate) - position``: the order shown, not the
model's raw score, since diversity and exploration reorder), later-used items that were not
shown are added with score 0 and relevance 1, so that recall counts them. Novelty and
popularity bias are measured against the reference window's events, one yardstick for both
windows; diversity uses item features when item attributes are given.

Only decisions whose whole horizon lies inside the observed events count (the last ones of a
window have no known outcome yet). Anonymous decisions (no ``user_id``) are left out.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.monitoring.checks import CheckResult, Status, _run, metric_results, skipped
from recsys.monitoring.frames import sample
from recsys.monitoring.thresholds import DriftConfig

# metric class in Evidently → our key
_METRIC_KEYS = {
    "NDCG": "ndcg",
    "RecallTopK": "recall",
    "PrecisionTopK": "precision",
    "MAP": "map",
    "MRR": "mrr",
    "HitRate": "hitrate",
    "FBetaTopK": "fbeta",
    "Personalization": "personalization",
    "Novelty": "novelty",
    "Diversity": "diversity",
    "Serendipity": "serendipity",
    "PopularityBiasMetric": "popularity_bias_arp",
}


def outcome_rows(
    decisions: pd.DataFrame, events: pd.DataFrame, config: DriftConfig, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Evidently recsys rows (``user_id`` = decision id, ``item_id``, ``prediction``, ``target``).

    Returns:
        The rows and counts: decisions with a user, with a known outcome window, joined.
    """
    horizon = config.outcome_horizon_hours * 3600.0
    last_seen = float(events["timestamp"].max()) if len(events) else -np.inf
    known = decisions[decisions["user_id"].notna()] if "user_id" in decisions else decisions[:0]
    with_user = len(known)
    known = known[known["timestamp"].to_numpy() + horizon <= last_seen]
    counts = {"decisions": len(decisions), "with_user": with_user, "outcome_known": len(known)}
    known = sample(known, config.max_quality_decisions, seed)
    counts["joined"] = len(known)
    if known.empty:
        return pd.DataFrame(columns=["user_id", "item_id", "prediction", "target"]), counts
    left = pd.DataFrame(
        {
            "decision_id": known["decision_id"].astype(str).to_numpy(),
            "user_id": known["user_id"].astype(str).to_numpy(),
            "t": known["timestamp"].to_numpy(dtype=np.float64),
        }
    )
    users = set(left["user_id"])
    ev = events[events["user_id"].astype(str).isin(users)]
    right = pd.DataFrame(
        {
            "user_id": ev["user_id"].astype(str).to_numpy(),
            "item_id": ev["item_id"].astype(str).to_numpy(),
            "te": ev["timestamp"].to_numpy(dtype=np.float64),
        }
    )
    pairs = left.merge(right, on="user_id")
    pairs = pairs[(pairs["te"] > pairs["t"]) & (pairs["te"] <= pairs["t"] + horizon)]
    relevant = pairs.groupby("decision_id")["item_id"].agg(set).to_dict()
    rows_d, rows_i, rows_p, rows_t = [], [], [], []
    for decision_id, items in zip(left["decision_id"], known["items"], strict=True):
        used = relevant.get(decision_id, set())
        n = len(items)
        for position, item in enumerate(items):
            rows_d.append(decision_id)
            rows_i.append(item)
            rows_p.append(float(n - position))
            rows_t.append(1 if item in used else 0)
        for item in sorted(used.difference(items)):
            rows_d.append(decision_id)
            rows_i.append(item)
            rows_p.append(0.0)
            rows_t.append(1)
    frame = pd.DataFrame(
        {"user_id": rows_d, "item_id": rows_i, "prediction": rows_p, "target": rows_t}
    )
    counts["with_outcome"] = len(relevant)
    return frame, counts


def item_feature_frame(items: pd.DataFrame | None) -> pd.DataFrame | None:
    """Numeric item features for diversity: numeric columns and multi-hot ``genres``."""
    if items is None or items.empty:
        return None
    parts = []
    numeric = [
        c
        for c in items.columns
        if pd.api.types.is_numeric_dtype(items[c]) and not pd.api.types.is_bool_dtype(items[c])
    ]
    if numeric:
        values = items[numeric].astype(np.float64)
        parts.append((values - values.mean()) / values.std().replace(0, 1.0))
    if "genres" in items.columns:
        genres = items["genres"].map(
            lambda g: tuple(g) if isinstance(g, (tuple, list)) else tuple(str(g).split("|"))
        )
        names = sorted({x for gs in genres for x in gs if x})
        hot = pd.DataFrame(
            {f"genre_{n}": genres.map(lambda gs, n=n: float(n in gs)) for n in names},
            index=items.index,
        )
        parts.append(hot)
    if not parts:
        return None
    out = pd.concat(parts, axis=1).fillna(0.0)
    out.index = out.index.astype(str)
    return out


def _value_at_k(result: Any, k: int) -> float | None:
    value = getattr(result, "value", None)
    if isinstance(value, pd.DataFrame):
        if value.empty:
            return None
        if "rank" in value.columns:
            at = value[value["rank"] <= k]
            row = at.iloc[-1] if len(at) else value.iloc[-1]
        else:
            row = value.iloc[-1]
        return float(row["value"])
    if value is None:
        return None
    number = float(value)
    return None if np.isnan(number) else number


def quality_check(
    reference: tuple[pd.DataFrame, pd.DataFrame],
    current: tuple[pd.DataFrame, pd.DataFrame],
    config: DriftConfig,
    items: pd.DataFrame | None = None,
    *,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> CheckResult:
    """RecsysPreset on both windows.

    A metric of ``config.quality_metrics`` moved when it dropped by more than
    ``quality_max_relative_drop`` relative to the reference.

    Args:
        reference: (decisions, outcome events) of the reference window.
        current: (decisions, outcome events) of the current window.
        config: Thresholds.
        items: Item attributes by item id (diversity and serendipity).
        timestamp: Snapshot time.
        metadata: Snapshot metadata.
    """
    from evidently import DataDefinition, Recsys
    from evidently.presets import RecsysPreset

    start = time.perf_counter()
    ref_rows, ref_counts = outcome_rows(*reference, config, config.seed)
    cur_rows, cur_counts = outcome_rows(*current, config, config.seed + 1)
    details: dict[str, Any] = {
        "k": config.quality_k,
        "outcome_horizon_hours": config.outcome_horizon_hours,
        "decisions": {"reference": ref_counts, "current": cur_counts},
    }
    few = [
        side
        for side, counts in (("reference", ref_counts), ("current", cur_counts))
        if counts["joined"] < config.quality_min_decisions
    ]
    if few:
        result = skipped(
            "quality",
            f"fewer than {config.quality_min_decisions} decisions with known outcomes in "
            f"{' and '.join(few)}",
        )
        result.details = details
        return result
    features = item_feature_frame(items)
    feature_names = None if features is None else list(features.columns)
    train = reference[1]
    train = sample(train, config.max_rows, config.seed)
    train_frame = pd.DataFrame(
        {
            "user_id": train["user_id"].astype(str).to_numpy(),
            "item_id": train["item_id"].astype(str).to_numpy(),
            "target": 1,
        }
    )
    frames = [ref_rows, cur_rows, train_frame]
    if features is not None:
        frames = [
            f.join(features, on="item_id").fillna({c: 0.0 for c in feature_names or []})
            for f in frames
        ]
    ranking = Recsys(
        user_id="user_id",
        item_id="item_id",
        target="target",
        prediction="prediction",
        recommendations_type="score",
    )
    definition = DataDefinition(numerical_columns=feature_names or [], ranking=[ranking])
    train_definition = DataDefinition(ranking=[Recsys()], numerical_columns=feature_names or [])
    from evidently import Dataset

    train_data = Dataset.from_pandas(frames[2], data_definition=train_definition)
    snapshot = _run(
        [RecsysPreset(k=config.quality_k, item_features=feature_names, include_tests=False)],
        frames[0],
        frames[1],
        definition,
        timestamp=timestamp,
        name="quality",
        metadata=metadata or {},
        include_tests=False,
        additional={"current_train_data": train_data, "reference_train_data": train_data},
    )
    metrics: dict[str, dict[str, Any]] = {}
    for metric, result, ref_result in metric_results(snapshot):
        key = _METRIC_KEYS.get(type(metric).__name__)
        if key is None:
            continue
        cur_v = _value_at_k(result, config.quality_k)
        ref_v = None if ref_result is None else _value_at_k(ref_result, config.quality_k)
        change = None
        if cur_v is not None and ref_v is not None and ref_v != 0:
            change = cur_v / ref_v - 1.0
        drifted = bool(
            key in config.quality_metrics
            and change is not None
            and -change > config.quality_max_relative_drop
        )
        metrics[f"{key}@{config.quality_k}"] = {
            "reference": ref_v,
            "current": cur_v,
            "relative_change": change,
            "drifted": drifted,
        }
    moved = [name for name, v in metrics.items() if v["drifted"]]
    details["metrics"] = metrics
    details["item_features"] = feature_names
    status: Status = "drift" if moved else "ok"
    return CheckResult(
        "quality", status, moved, None, details, snapshot, time.perf_counter() - start
    )
