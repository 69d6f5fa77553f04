"""Offline features and point-in-time training sets.

Both fold the history with :func:`~recsys.features.definitions.fold_events` (the same fold
the online store runs per event) and read values with
:func:`~recsys.features.definitions.user_features` /
:func:`~recsys.features.definitions.item_features`.

Point-in-time correctness: a labelled interaction at time ``t`` gets the features as they were
from the events *strictly before* ``t``. Events are folded in time order and all labels at a
given timestamp are read before any event at that timestamp is applied, so neither the
labelled event itself nor any simultaneous or later event can leak into its features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.features.definitions import (
    FEATURES,
    FeatureConfig,
    ItemInfoCatalog,
    ItemState,
    UserState,
    feature_names,
    fold_events,
    item_features,
    user_features,
)
from recsys.features.events import Event, events_from_frame


@dataclass
class OfflineFeatures:
    """Feature tables materialised by the batch job at ``cutoff``.

    Attributes:
        cutoff: Only events with ``timestamp < cutoff`` were used.
        users: One row per user (index ``user_id``), one column per user feature.
        items: One row per catalogue or seen item (index ``item_id``), one column per item
            feature.
        user_states: The folded user states (an online store can be seeded with them).
    """

    cutoff: float
    users: pd.DataFrame
    items: pd.DataFrame
    user_states: dict[str, UserState]


def _as_events(events: pd.DataFrame | Iterable[Event]) -> list[Event]:
    if isinstance(events, pd.DataFrame):
        return events_from_frame(events)
    return list(events)


def build_offline_features(
    events: pd.DataFrame | Iterable[Event],
    cutoff: float,
    catalog: ItemInfoCatalog,
    config: FeatureConfig | None = None,
    item_ids: Sequence[str] | None = None,
) -> OfflineFeatures:
    """Fold the history before ``cutoff`` into user and item feature tables.

    Args:
        events: Interaction frame in the schema layout, or events.
        cutoff: Use events with ``timestamp < cutoff``; features are evaluated at ``cutoff``.
        catalog: Item side information (genres, year).
        config: Feature parameters (default :class:`FeatureConfig`).
        item_ids: Items to include even without events (e.g. the whole catalogue).

    Returns:
        The :class:`OfflineFeatures` tables.
    """
    config = config or FeatureConfig()
    history = sorted(
        (e for e in _as_events(events) if e.timestamp < cutoff), key=lambda e: e.timestamp
    )
    users, items = fold_events(history, catalog, config)
    user_rows = {u: user_features(s, cutoff, config) for u, s in users.items()}
    all_items = list(dict.fromkeys([*(item_ids or []), *items]))
    item_rows = {i: item_features(items.get(i), catalog.get(i), cutoff, config) for i in all_items}
    user_frame = pd.DataFrame.from_dict(user_rows, orient="index", columns=feature_names("user"))
    item_frame = pd.DataFrame.from_dict(item_rows, orient="index", columns=feature_names("item"))
    user_frame.index.name = "user_id"
    item_frame.index.name = "item_id"
    return OfflineFeatures(cutoff, user_frame, item_frame, users)


def point_in_time_features(
    labels: pd.DataFrame,
    events: pd.DataFrame | Iterable[Event],
    catalog: ItemInfoCatalog,
    config: FeatureConfig | None = None,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Attach to each labelled interaction the features as they were strictly before it.

    Args:
        labels: Rows with ``user_id``, ``item_id``, ``timestamp`` (and any label columns,
            kept as they are). Typically the interactions themselves plus sampled negatives.
        events: The event history (frame in the schema layout, or events).
        catalog: Item side information.
        config: Feature parameters.
        features: Feature names to attach (default: every declared feature).

    Returns:
        ``labels`` (same row order) with one column per feature.

    Raises:
        DataError: ``labels`` lacks a required column.
    """
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in labels.columns]
    if missing:
        raise DataError(f"labels: missing required column(s) {missing}")
    config = config or FeatureConfig()
    names = list(features) if features is not None else list(feature_names())
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"features: unknown {unknown[0]!r}; declared {sorted(FEATURES)}")
    user_names = [n for n in names if n in feature_names("user")]
    item_names = [n for n in names if n in feature_names("item")]
    history = sorted(_as_events(events), key=lambda e: e.timestamp)
    label_users = labels["user_id"].astype(str).to_numpy()
    label_items = labels["item_id"].astype(str).to_numpy()
    label_times = labels["timestamp"].astype(float).to_numpy()
    order = np.argsort(label_times, kind="stable")

    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    rows: list[dict[str, object]] = [{} for _ in range(len(labels))]
    cursor = 0
    for position in order:
        t = label_times[position]
        # apply every event strictly before t (events at t itself stay out)
        while cursor < len(history) and history[cursor].timestamp < t:
            fold_events((history[cursor],), catalog, config, users, items)
            cursor += 1
        user_id, item_id = label_users[position], label_items[position]
        row = rows[position]
        if user_names:
            row.update(user_features(users.get(user_id), t, config, user_names))
        if item_names:
            row.update(
                item_features(items.get(item_id), catalog.get(item_id), t, config, item_names)
            )
    feature_frame = pd.DataFrame.from_records(rows, columns=names, index=labels.index)
    return pd.concat([labels, feature_frame], axis=1)
