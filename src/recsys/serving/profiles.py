"""Profiles for the engine from the online feature store (+ the offline history)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.data.dataset import IdIndex
from recsys.features.store import OnlineStore, profile_to_query
from recsys.serving.engine import Profile, ProfileSource
from recsys.types import IntArray


def store_profiles(
    store: OnlineStore,
    items: IdIndex,
    users: IdIndex | None = None,
    offline_histories: Sequence[IntArray] | None = None,
) -> ProfileSource:
    """A ``user_id -> Profile`` lookup reading the online store on every request.

    Args:
        store: In-process or Redis online store (never raises; degraded profiles say why).
        items: External ↔ dense item ids of the served models.
        users: External ↔ dense user ids (to find the offline history).
        offline_histories: Per dense user, the batch history (e.g. training interactions);
            the store's recent items are appended after it, so the freshest events count.

    Returns:
        The lookup the :class:`~recsys.serving.Engine` calls as ``profiles``.
    """
    empty = np.zeros(0, dtype=np.int64)

    def lookup(user_id: str) -> Profile:
        profile = store.get_profile(user_id)
        base = empty
        if users is not None and offline_histories is not None:
            index = users.index(user_id)
            if index is not None and index < len(offline_histories):
                base = offline_histories[index]
        query = profile_to_query(profile, items, base_history=base)
        context = {"session_id": profile.session_id} if profile.session_id else {}
        return Profile(
            history=query.history,
            context=context,
            degraded=profile.reason if profile.degraded else None,
        )

    return lookup
