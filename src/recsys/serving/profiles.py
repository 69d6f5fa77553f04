"""Profiles for the engine: the offline history, the online store's events, the user table.

The one profile lookup of the engine: offline history (a batch snapshot, e.g. the training
events) merged with the online store's recent events by
:func:`~recsys.features.definitions.merge_history`, and the user table's context derived by
:func:`~recsys.features.definitions.derive_context` — the same derivation training and the
offline protocol use (:func:`recsys.evaluation.protocol.build_queries`), so a served query
carries what the models were trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recsys.data.dataset import IdIndex, TimedHistory, timed_histories
from recsys.data.splits import Split
from recsys.features.definitions import merge_history, user_contexts
from recsys.features.store import OnlineStore, recent_events
from recsys.serving.engine import Profile, ProfileSource


def store_profiles(
    store: OnlineStore | None,
    items: IdIndex,
    users: IdIndex | None = None,
    offline: Sequence[TimedHistory] | None = None,
    contexts: Sequence[Mapping[str, Any]] | None = None,
) -> ProfileSource:
    """A ``(user_id, now) -> Profile`` lookup reading the online store on every request.

    Args:
        store: In-process or Redis online store (never raises; degraded profiles say why), or
            ``None`` for offline histories only.
        items: External ↔ dense item ids of the served models.
        users: External ↔ dense user ids (to find the offline history and context).
        offline: Per dense user, the batch history (e.g. training events, in time order).
        contexts: Per dense user, the stored context (the user table, derived).

    Returns:
        The lookup the :class:`~recsys.serving.Engine` calls as ``profiles``.
    """
    empty = np.zeros(0, dtype=np.int64)
    no_times = np.zeros(0, dtype=np.float64)

    def lookup(user_id: str, now: float | None = None) -> Profile:
        index = users.index(user_id) if users is not None else None
        base_items, base_times, base_types = empty, no_times, ()
        if index is not None and offline is not None and index < len(offline):
            events = offline[index]
            base_items, base_times, base_types = events.items, events.times, events.types
        context: Mapping[str, Any] = {}
        if index is not None and contexts is not None and index < len(contexts):
            context = contexts[index]
        if store is None:
            return Profile(base_items, base_times, base_types, context)
        profile = store.get_profile(user_id, now=now)
        recent, times, types = recent_events(profile, items)
        history, history_times, history_types = merge_history(
            base_items, base_times, recent, times, base_types, types
        )
        return Profile(
            history=history,
            history_times=history_times,
            history_types=history_types,
            context=context,
            session_id=profile.session_id or None,
            session_start=profile.session_start,
            degraded=profile.reason if profile.degraded else None,
        )

    return lookup


def split_profiles(
    split: Split, store: OnlineStore | None = None, context: bool = True
) -> ProfileSource:
    """The engine's profile lookup for a split: training events + store, user table context.

    Args:
        split: Its training events are the offline history; its dataset's user table the
            stored context.
        store: The online store with live events (``None``: offline history only).
        context: Serve the user table's context (``False`` measures what serving without it
            — the old training/serving skew — costs).
    """
    data = split.dataset
    return store_profiles(
        store,
        data.item_index,
        data.user_index,
        timed_histories(split.train, data.n_users),
        user_contexts(data.users) if context else None,
    )
