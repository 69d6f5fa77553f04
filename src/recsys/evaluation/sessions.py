"""Next-event protocols: every position of a sequence is one prediction event.

* **Sessions** (session-rec's protocol, :func:`session_events`): each evaluated session of
  length n gives n − 1 events; the prefix of the first t clicks (a :class:`Query` with that
  ``history`` and ``history_times``, no user) predicts click t + 1. All catalogue items are
  ranked and the prefix's own items are **not** masked — re-clicks are a third of the targets.
* **Next event per user** (:func:`next_event_events`): each evaluated event of a user (the
  last one with leave-last-out, the last 10 % with the temporal split) is predicted from
  everything the user did before it, in time order (training, validation and earlier
  evaluated events); MovieLens-style, the history's items are masked.

:func:`evaluate_events` scores the lists a server returns (e.g. :meth:`Engine.serve`, so what
is evaluated is what is served) with **random tie-breaking**: the server is asked for the
whole catalogue, and the target's rank is drawn uniformly among the positions of the items
whose score equals its own (seeded), never the best of them. HR@k, MRR@k and NDCG@k are
averaged over events, as session-rec does; the exact expectation over tie orders is reported
beside each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.splits import Split
from recsys.features.definitions import user_contexts
from recsys.types import IntArray, ItemList, Query

Server = Callable[[Sequence[Query], int], Sequence[ItemList]]
SESSION_KS: tuple[int, ...] = (10, 20)


@dataclass
class PredictionEvents:
    """Prediction events: one query and one target item each.

    Attributes:
        queries: The request of each event (its prefix as ``history``).
        targets: (E,) the item clicked next.
        sequences: (E,) dense user index of the session / user the event belongs to.
        repeat: (E,) whether the target is an item of the prefix.
        repeat_last: (E,) whether the target is the prefix's last item.
    """

    queries: list[Query]
    targets: IntArray
    sequences: IntArray
    repeat: np.ndarray
    repeat_last: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def head(self, n: int) -> PredictionEvents:
        """The first ``n`` events (a quick run)."""
        return PredictionEvents(
            self.queries[:n],
            self.targets[:n],
            self.sequences[:n],
            self.repeat[:n],
            self.repeat_last[:n],
        )


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by user, then time, ties in file order."""
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    return frame.iloc[order]


def _events_of(
    frame: pd.DataFrame, is_target: np.ndarray, make: Callable[[int, int, np.ndarray], Query]
) -> PredictionEvents:
    """One event per target row: ``make(user, row, rows_before)`` builds its query."""
    users = frame["user"].to_numpy(np.int64)
    items = frame["item"].to_numpy(np.int64)
    queries: list[Query] = []
    targets, sequences, repeat, repeat_last = [], [], [], []
    bounds = np.flatnonzero(np.diff(users)) + 1
    for rows in np.split(np.arange(len(frame)), bounds):
        for t in rows:
            if not is_target[t] or t == rows[0]:
                continue
            before = np.arange(rows[0], t)
            query = make(int(users[t]), int(t), before)
            queries.append(query)
            targets.append(items[t])
            sequences.append(users[t])
            repeat.append(bool(np.isin(items[t], items[before])))
            repeat_last.append(bool(items[t] == items[before[-1]]))
    return PredictionEvents(
        queries,
        np.asarray(targets, dtype=np.int64),
        np.asarray(sequences, dtype=np.int64),
        np.asarray(repeat, dtype=bool),
        np.asarray(repeat_last, dtype=bool),
    )


def session_events(split: Split, stage: str = "test") -> PredictionEvents:
    """Session protocol events of ``split.test`` (or ``split.valid``): one per prefix.

    The query of the prefix ``x_1..x_t`` is anonymous (``user=None``): its ``history`` is the
    prefix with its click times and types, ``session_id`` the session, and ``timestamp`` the
    time of the last prefix click (the request is made right after it).
    """
    frame = _ordered(split.test if stage == "test" else split.valid)
    items = frame["item"].to_numpy(np.int64)
    times = frame["timestamp"].to_numpy(np.float64)
    types = frame["event_type"].astype(str).to_numpy()
    sessions = frame["session_id"].astype(str).to_numpy()

    def make(user: int, row: int, before: np.ndarray) -> Query:
        return Query(
            user=None,
            history=items[before],
            history_times=times[before],
            history_types=tuple(types[before].tolist()),
            timestamp=float(times[before[-1]]),
            session_id=sessions[row] or None,
        )

    return _events_of(frame, np.ones(len(frame), dtype=bool), make)


def next_event_events(
    split: Split, stage: str = "test", user_context: bool = True
) -> PredictionEvents:
    """Per-user next-event protocol: each ``stage`` event predicted from all earlier events.

    The prefix is the user's events before it in time order — training, validation and, for
    ``stage="test"``, the earlier test events (the user's sequence as it unfolded). The query
    carries the user (index and id) and the user table's context, as the engine builds it.
    """
    parts = [split.train, split.valid] + ([split.test] if stage == "test" else [])
    frame = pd.concat(
        [p.assign(_target=(p is (split.test if stage == "test" else split.valid))) for p in parts],
        ignore_index=True,
    )
    frame = _ordered(frame)
    items = frame["item"].to_numpy(np.int64)
    times = frame["timestamp"].to_numpy(np.float64)
    types = frame["event_type"].astype(str).to_numpy()
    data = split.dataset
    contexts = user_contexts(data.users) if user_context else []
    ids = data.user_index.ids

    def make(user: int, row: int, before: np.ndarray) -> Query:
        return Query(
            user=user,
            user_id=ids[user],
            history=items[before],
            history_times=times[before],
            history_types=tuple(types[before].tolist()),
            context=contexts[user] if user < len(contexts) else {},
            timestamp=float(times[row]),
        )

    return _events_of(frame, frame["_target"].to_numpy(bool), make)


def tie_aware_rank(
    items: IntArray, scores: np.ndarray, target: int, rng: np.random.Generator
) -> tuple[float, int, int]:
    """The target's rank in a scored list with ties broken at random.

    Args:
        items: The list's items, best first.
        scores: Their scores.
        target: The item whose rank is wanted.
        rng: Draws the position among equal scores.

    Returns:
        ``(rank, better, tied)``: the 1-based rank (``inf`` when the target is not listed),
        the number of items scored strictly higher, the number scored equal (target included).
    """
    where = np.flatnonzero(items == target)
    if not len(where):
        return float("inf"), len(items), 0
    score = scores[where[0]]
    better = int((scores > score).sum())
    tied = int((scores == score).sum())
    return float(better + 1 + rng.integers(tied)), better, tied


def _expected(better: np.ndarray, tied: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Exact expectation over tie orders of HR@k, MRR@k and NDCG@k per event."""
    hr, mrr, ndcg = (np.zeros(len(better)) for _ in range(3))
    for e, (a, t) in enumerate(zip(better.tolist(), tied.tolist(), strict=True)):
        if t == 0 or a >= k:
            continue
        ranks = np.arange(a + 1, min(a + t, k) + 1, dtype=np.float64)
        hr[e] = len(ranks) / t
        mrr[e] = (1.0 / ranks).sum() / t
        ndcg[e] = (1.0 / np.log2(ranks + 1.0)).sum() / t
    return {"hr": hr, "mrr": mrr, "ndcg": ndcg}


def evaluate_events(
    serve: Server,
    events: PredictionEvents,
    n_items: int,
    ks: Sequence[int] = SESSION_KS,
    seed: int = 0,
    list_length: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """HR@k, MRR@k, NDCG@k averaged over events, ties broken at random (seeded).

    Args:
        serve: ``(queries, k) -> one ItemList per query`` (e.g. ``Engine.serve``).
        events: The prediction events.
        n_items: Catalogue size.
        ks: Cut-offs.
        seed: Seed of the tie-breaking draws.
        list_length: Items requested per list (default: the whole catalogue, so every item
            tied with the target is listed). With shorter lists, an event whose target ties
            with the list's last item is counted in ``open_ties`` (its rank may be too good).
        batch_size: Queries per ``serve`` call.

    Returns:
        ``hr@k``, ``mrr@k``, ``ndcg@k`` (random tie-break), ``*_expected`` (the exact mean
        over tie orders), ``hr@20_repeat`` / ``hr@20_new`` (targets in / not in the prefix),
        ``events``, ``sequences``, ``tied_targets`` (targets sharing their score with
        another item) and ``open_ties``.
    """
    rng = np.random.default_rng(seed)
    length = list_length or n_items
    ranks = np.full(len(events), np.inf)
    better = np.zeros(len(events), dtype=np.int64)
    tied = np.zeros(len(events), dtype=np.int64)
    open_ties = 0
    for start in range(0, len(events), batch_size):
        batch = events.queries[start : start + batch_size]
        for offset, slate in enumerate(serve(batch, length)):
            e = start + offset
            rank, better[e], tied[e] = tie_aware_rank(
                slate.items, slate.scores, int(events.targets[e]), rng
            )
            ranks[e] = rank
            complete = len(slate) >= n_items
            if (
                np.isfinite(rank)
                and not complete
                and slate.scores[-1] == slate.scores[slate.items == events.targets[e]][0]
            ):
                open_ties += 1
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = (
            float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0
        )
        expected = _expected(better, tied, k)
        for name, values in expected.items():
            out[f"{name}@{k}_expected"] = float(values.mean()) if len(values) else 0.0
    k_max = max(ks)
    hit = ranks <= k_max
    if events.repeat.any():
        out[f"hr@{k_max}_repeat"] = float(hit[events.repeat].mean())
    if (~events.repeat).any():
        out[f"hr@{k_max}_new"] = float(hit[~events.repeat].mean())
    out["events"] = float(len(events))
    out["sequences"] = float(len(np.unique(events.sequences)))
    out["repeat_share"] = float(events.repeat.mean()) if len(events) else 0.0
    out["repeat_last_share"] = float(events.repeat_last.mean()) if len(events) else 0.0
    out["tied_targets"] = float((tied > 1).sum())
    out["open_ties"] = float(open_ties)
    return out
