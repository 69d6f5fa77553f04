"""Cold start and fallbacks: context popularity, then global popularity.

:class:`ContextPopularity` learns, per context attribute (``device``, ``referrer``, ``geo``;
for MovieLens-100K ``age_band``, ``gender``, ``occupation``), how popular each item is among
requests with that value, and combines the attributes present in a request naive-Bayes style:

``score(i) = log p(i) + Σ_a [log p̂(i | a = v_a) − log p(i)]``,

with each ``p̂(i | a = v)`` shrunk towards the global ``p(i)`` by ``smoothing`` pseudo-events, so
a rare value (a small occupation) moves the list only as far as its data allows. With no known
context it is global popularity. Every list says which of the two it is (``reason``).

The same object serves three cases: a user with no history (cold start), a request without
personalisation consent (with only non-personal context keys), and a stage that failed or ran
late (:func:`run_with_fallback`).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import numpy as np
import pandas as pd
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.decision.base import check_k, context_value
from recsys.errors import NotFittedError
from recsys.features.definitions import derive_context, derive_context_columns
from recsys.types import ItemList, Query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FallbackList(ItemList):
    """An :class:`ItemList` that says why it was produced (``context:<keys>`` or ``global``)."""

    reason: str = "global"


class ContextPopularityConfig(ComponentConfig):
    """Context popularity with backoff to global popularity."""

    keys: tuple[str, ...] = Field(
        ("device", "referrer", "geo", "age_band", "gender", "occupation"),
        description="Context attributes to condition on, when present in data and request.",
    )
    smoothing: float = Field(
        1000.0,
        ge=0.0,
        le=1e7,
        description="Pseudo-events pulling p(i|a=v) towards p(i) (chosen on ML-100K held-out "
        "users of another seed than the benchmark's).",
    )
    min_support: int = Field(
        20, ge=0, description="Ignore context values seen in fewer training events."
    )
    exclude_history: bool = Field(True, description="Do not return items in the query history.")


class ContextPopularity:
    """Popularity conditioned on request context; ``fit(split_or_dataset)`` then ``(query, k)``.

    Example:
        >>> fallback = ContextPopularity().fit(split)          # doctest: +SKIP
        >>> fallback(Query(context={"age": 23, "gender": "F"}), 10).reason  # doctest: +SKIP
        'context:age_band,gender'
    """

    config_class = ContextPopularityConfig

    def __init__(self, config: ContextPopularityConfig | None = None, **overrides: Any) -> None:
        base = config or ContextPopularityConfig()
        if overrides:
            base = ContextPopularityConfig.model_validate({**base.model_dump(), **overrides})
        self.config = base
        self.n_items: int | None = None
        self.log_global: np.ndarray | None = None
        # key -> (value -> row), (n_values, n_items) log-lift matrix
        self.tables: dict[str, tuple[dict[str, int], np.ndarray]] = {}

    def fit(self, data: Any) -> Self:
        """Count item popularity overall and per context value.

        Args:
            data: A :class:`~recsys.data.Split` (its ``train`` part is used) or a
                :class:`~recsys.data.Dataset` (all interactions). Context comes from columns of
                the interaction frame (per event, e.g. ``device``) and from ``dataset.users``
                (per user, e.g. ``age``/``gender``/``occupation``).
        """
        dataset = getattr(data, "dataset", data)
        frame = data.train if hasattr(data, "train") else dataset.interactions
        if not hasattr(dataset, "n_items"):
            raise TypeError("data: expected a recsys Split or Dataset")
        n_items = dataset.n_items
        items = frame["item"].to_numpy(np.int64)
        counts = np.bincount(items, minlength=n_items).astype(np.float64)
        # add-one so unseen items get a finite log-probability and ties break by count
        p_global = (counts + 1.0) / (counts.sum() + n_items)
        self.log_global = np.log(p_global)
        self.n_items = n_items
        self.tables = {}
        context = self._event_context(frame, dataset)
        m = self.config.smoothing
        for key in self.config.keys:
            if key not in context:
                continue
            values = context[key].astype(str).to_numpy()
            known = ~pd.isna(context[key]).to_numpy()
            if not known.any():
                continue
            labels, codes = np.unique(values[known], return_inverse=True)
            table = np.zeros((len(labels), n_items), dtype=np.float64)
            np.add.at(table, (codes, items[known]), 1.0)
            support = table.sum(axis=1)
            keep = support >= max(1, self.config.min_support)
            if not keep.any():
                continue
            table, support, labels = table[keep], support[keep], labels[keep]
            p_value = (table + m * p_global) / (support[:, None] + m)
            lift = (np.log(np.maximum(p_value, 1e-300)) - self.log_global).astype(np.float32)
            self.tables[key] = ({str(v): j for j, v in enumerate(labels)}, lift)
        return self

    @staticmethod
    def _event_context(frame: pd.DataFrame, dataset: Any) -> pd.DataFrame:
        """One row of context per event: event columns plus the user's attributes."""
        out = pd.DataFrame(index=frame.index)
        users = getattr(dataset, "users", pd.DataFrame())
        if len(users):
            per_user = users.iloc[frame["user"].to_numpy(np.int64)].reset_index(drop=True)
            per_user.index = frame.index
            for column in per_user.columns:
                out[column] = per_user[column]
        for column in frame.columns:
            if column not in {"user_id", "item_id", "timestamp", "value", "user", "item"}:
                out[column] = frame[column]
        return derive_context_columns(out)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore the fitted component (with its config)."""
        self._require_fitted()
        assert self.log_global is not None
        out: dict[str, np.ndarray] = {
            "log_global": self.log_global,
            "config_json": np.frombuffer(self.config.model_dump_json().encode(), dtype=np.uint8),
        }
        for key, (labels, lift) in self.tables.items():
            out[f"labels/{key}"] = np.asarray(sorted(labels, key=labels.__getitem__), dtype=str)
            out[f"lift/{key}"] = lift
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> ContextPopularity:
        """Inverse of :meth:`state` (never refits)."""
        config = ContextPopularityConfig.model_validate_json(bytes(state["config_json"]).decode())
        out = cls(config)
        out.log_global = np.asarray(state["log_global"])
        out.n_items = len(out.log_global)
        for name in state:
            if name.startswith("labels/"):
                key = name.removeprefix("labels/")
                labels = [str(v) for v in state[name]]
                out.tables[key] = ({v: j for j, v in enumerate(labels)}, state[f"lift/{key}"])
        return out

    def _require_fitted(self) -> int:
        if self.n_items is None or self.log_global is None:
            raise NotFittedError("ContextPopularity is not fitted: call fit(split_or_dataset)")
        return self.n_items

    def scores(self, context: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
        """Scores over the catalogue for a context, and the keys that were used."""
        self._require_fitted()
        assert self.log_global is not None
        ctx = derive_context(context)
        scores = self.log_global.astype(np.float64).copy()
        used: list[str] = []
        for key in self.config.keys:
            table = self.tables.get(key)
            value = context_value(ctx, key)
            if table is None or value is None:
                continue
            row = table[0].get(str(value))
            if row is None:
                continue
            scores += table[1][row]
            used.append(key)
        return scores, used

    def __call__(self, query: Query, k: int, exclude: Sequence[int] | None = None) -> FallbackList:
        """Top-``k`` items for the query's context (history and ``query.exclude`` left out)."""
        k = check_k(k)
        scores, used = self.scores(query.context)
        drop = [query.exclude, np.asarray([] if exclude is None else exclude, dtype=np.int64)]
        if self.config.exclude_history:
            drop.append(query.history)
        top = ItemList.from_scores(scores, k, exclude=np.concatenate(drop))
        reason = "context:" + ",".join(used) if used else "global"
        return FallbackList(top.items, top.scores, None, reason=reason)


T = TypeVar("T")


def run_with_fallback(
    stage: Callable[[], T],
    fallback: Callable[[], T],
    timeout_s: float | None = None,
    executor: concurrent.futures.Executor | None = None,
    name: str = "stage",
) -> tuple[T, str | None]:
    """Run ``stage``; serve ``fallback`` when it raises or misses its deadline.

    The deadline applies only when both ``timeout_s`` and ``executor`` are given.

    Args:
        stage: The work, e.g. ``lambda: ranker(query, candidates)``.
        fallback: What to serve instead, e.g. ``lambda: context_popularity(query, k)``.
        timeout_s: Deadline for the stage; needs ``executor`` (a late stage keeps running in
            the background, its result is dropped).
        executor: Thread pool to run the stage in when a deadline is set.
        name: Stage name for the reason string.

    Returns:
        The result and ``None``, or the fallback result and ``"failed:<name>"`` /
        ``"late:<name>"``.
    """
    try:
        if timeout_s is None or executor is None:
            return stage(), None
        future = executor.submit(stage)
        return future.result(timeout=timeout_s), None
    except concurrent.futures.TimeoutError:
        log.warning("%s ran past %.3f s; serving the fallback", name, timeout_s)
        return fallback(), f"late:{name}"
    except Exception:  # any stage failure must degrade, never surface as a 5xx
        log.exception("%s failed; serving the fallback", name)
        return fallback(), f"failed:{name}"
