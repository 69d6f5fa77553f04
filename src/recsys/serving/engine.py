"""The online engine: the one object that composes the stages for a request.

``profile → retrieval → ranking → decision``, each timed; any stage that fails or would
overrun the latency budget degrades to the fallback (context popularity) instead of failing
the request, and the response says which stage degraded and why. Notebooks, benchmarks and the
Bento all call :meth:`Engine.recommend`, so what is evaluated is what is served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import IdIndex
from recsys.types import IntArray, ItemList, Query

log = logging.getLogger(__name__)


class Retriever(Protocol):
    """``(query, n) -> ItemList``: candidate generation (e.g. any Recommender)."""

    def __call__(self, query: Query, n: int) -> ItemList:  # noqa: D102
        ...


class Reranker(Protocol):
    """``(query, candidates) -> ItemList``: ranking model."""

    def __call__(self, query: Query, items: ItemList) -> ItemList:  # noqa: D102
        ...


class Decider(Protocol):
    """``(query, ranked | None, k) -> ItemList | Decision``: rules, diversity, exploration.

    ``ranked`` is None on cold start, without consent, or when retrieval failed: the decision
    stage then decides over its own fallback list (``recsys.decision.DecisionPipeline`` does).
    It may return a plain ItemList or an object with ``slate`` and ``variant``.
    """

    def __call__(self, query: Query, items: ItemList | None, k: int) -> Any:  # noqa: D102
        ...


class Fallback(Protocol):
    """``(query, k) -> ItemList``: never fails (context / global popularity)."""

    def __call__(self, query: Query, k: int) -> ItemList:  # noqa: D102
        ...


@dataclass(frozen=True)
class Profile:
    """What the engine knows about a user at request time.

    Attributes:
        history: Dense item indices, oldest first (batch history + live events).
        context: Stored user context (e.g. age band) merged under the request's context.
        degraded: Why the profile is incomplete (e.g. ``"online store unavailable"``), or None.
    """

    history: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    context: Mapping[str, Any] = field(default_factory=dict)
    degraded: str | None = None


ProfileSource = Callable[[str], Profile]


class EngineConfig(ComponentConfig):
    """Request-path settings."""

    candidates: int = Field(100, ge=1, le=10_000, description="Retrieved before ranking.")
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(100, ge=1, le=10_000)
    budget_ms: float = Field(
        50.0, gt=0.0, description="Past this, remaining optional stages are skipped."
    )


@dataclass
class Recommendation:
    """The engine's answer.

    Attributes:
        items: External item ids, best first.
        scores: Score per item.
        propensities: Probability each item was shown at its position (exploration), or None.
        timings_ms: Milliseconds per stage (``profile``, ``retrieval``, ``ranking``,
            ``decision``, ``fallback``, ``total``).
        fallback: Why the fallback served (part of) the answer, or None.
        degraded: Stages that were skipped or degraded, with reasons.
        variant: The experiment variant that chose the pipeline, or None.
    """

    items: list[str]
    scores: list[float]
    propensities: list[float] | None
    timings_ms: dict[str, float]
    fallback: str | None = None
    degraded: dict[str, str] = field(default_factory=dict)
    variant: str | None = None


class Engine:
    """Composes the online stages for one request.

    Args:
        items: External ↔ dense item ids (the catalogue the models were trained on).
        retriever: Candidate generator.
        fallback: Non-personalised answer used on cold start, consent-off, or any failure.
        ranker: Optional ranking model over the candidates.
        decision: Optional decision pipeline (rules → diversity → exploration).
        profiles: Optional ``user_id -> Profile`` (online feature store); without it the
            request's own history is the profile.
        users: External ↔ dense user ids (models with user embeddings need the index).
        config: Request-path settings.
        ingestor: Optional ``recsys.features.Ingestor`` behind :meth:`ingest`.

    Example:
        >>> engine = Engine(items, retriever=EASE().fit(split), fallback=popularity)
        >>> engine.recommend(user_id="42", k=10).items  # doctest: +SKIP
    """

    def __init__(
        self,
        items: IdIndex,
        retriever: Retriever,
        fallback: Fallback,
        ranker: Reranker | None = None,
        decision: Decider | None = None,
        profiles: ProfileSource | None = None,
        users: IdIndex | None = None,
        config: EngineConfig | None = None,
        ingestor: Any = None,
    ) -> None:
        self.items = items
        self.users = users
        self.retriever = retriever
        self.fallback = fallback
        self.ranker = ranker
        self.decision = decision
        self.profiles = profiles
        self.config = config or EngineConfig()
        self.ingestor = ingestor

    def ingest(self, events: Any) -> Any:
        """Validate, log and apply user events (``recsys.features.Ingestor.ingest``).

        Raises:
            RuntimeError: The engine was built without an ingestor (no event log).
        """
        if self.ingestor is None:
            raise RuntimeError("this engine has no ingestor: build it with an event log")
        return self.ingestor.ingest(events)

    def recommend(
        self,
        user_id: str | None = None,
        k: int | None = None,
        context: Mapping[str, Any] | None = None,
        history: list[str] | None = None,
        consent: bool = True,
        exclude: list[str] | None = None,
    ) -> Recommendation:
        """Recommend ``k`` items for a user (or an anonymous request).

        Args:
            user_id: External user id; None or unknown → cold start from context.
            k: Slate size (default ``config.default_k``).
            context: Request context (device, referrer, age band, ...).
            history: External item ids the caller knows about (merged after the stored
                profile: the freshest signal wins).
            consent: Without personalisation consent nothing about the user is read.
            exclude: External item ids that must not be shown.

        Raises:
            ValueError: ``k`` outside 1..max_k (the API turns it into a 4xx naming ``k``).
        """
        k = self.config.default_k if k is None else k
        if not 1 <= k <= self.config.max_k:
            raise ValueError(f"k: must be between 1 and {self.config.max_k}, got {k}")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        degraded: dict[str, str] = {}
        query = self._query(
            user_id, context or {}, history or [], consent, exclude or [], timings, degraded
        )
        result: ItemList | None = None
        fallback_reason: str | None = None
        variant: str | None = None
        if not consent:
            fallback_reason = "no personalisation consent"
        elif query.user is None and len(query.history) == 0:
            fallback_reason = "cold start: no history"
        else:
            result, fallback_reason, variant = self._personalised(
                query, k, start, timings, degraded
            )
        stage_start = time.perf_counter()
        if result is None and self.decision is not None:
            # the decision stage serves its own fallback list under rules and diversity
            result, variant = self._decide(query, None, k, degraded)
        if result is None or len(result) < k:
            filler = self._fallback(query, k, degraded)
            if result is None:
                result = filler
            else:
                fallback_reason = fallback_reason or f"only {len(result)} personalised items"
                result = _append_unique(result, filler, k)
        if fallback_reason is not None:
            timings["fallback"] = _ms(stage_start)
        timings["total"] = _ms(start)
        return Recommendation(
            items=self.items.to_ids(result.items),
            scores=[float(s) for s in result.scores],
            propensities=None if result.propensities is None else result.propensities.tolist(),
            timings_ms=timings,
            fallback=fallback_reason,
            degraded=degraded,
            variant=variant,
        )

    # ------------------------------------------------------------------ stages
    def _query(
        self,
        user_id: str | None,
        context: Mapping[str, Any],
        history: list[str],
        consent: bool,
        exclude: list[str],
        timings: dict[str, float],
        degraded: dict[str, str],
    ) -> Query:
        stage_start = time.perf_counter()
        stored = Profile()
        if consent and user_id is not None and self.profiles is not None:
            try:
                stored = self.profiles(user_id)
            except Exception as exc:  # noqa: BLE001 - a profile failure must not fail the request
                log.warning("profile lookup failed: %s", exc)
                degraded["profile"] = f"profile lookup failed: {exc}"
        if stored.degraded:
            degraded["profile"] = stored.degraded
        timings["profile"] = _ms(stage_start)
        if not consent:
            # anonymous: request context only, no user id, no history
            return Query(context=dict(context), consent=False, exclude=self.items.indices(exclude))
        fresh = self.items.indices(history)
        merged = np.concatenate([stored.history, fresh]) if len(fresh) else stored.history
        user = None
        if user_id is not None and self.users is not None:
            user = self.users.index(user_id)
        return Query(
            user=user,
            history=merged,
            context={**dict(stored.context), **dict(context)},
            consent=True,
            exclude=self.items.indices(exclude),
        )

    def _personalised(
        self,
        query: Query,
        k: int,
        start: float,
        timings: dict[str, float],
        degraded: dict[str, str],
    ) -> tuple[ItemList | None, str | None, str | None]:
        stage_start = time.perf_counter()
        try:
            candidates = self.retriever(query, self.config.candidates)
        except Exception as exc:  # noqa: BLE001 - degrade, never 5xx
            log.warning("retrieval failed: %s", exc)
            timings["retrieval"] = _ms(stage_start)
            return None, f"retrieval failed: {type(exc).__name__}: {exc}", None
        timings["retrieval"] = _ms(stage_start)
        if self.ranker is not None:
            if _ms(start) > self.config.budget_ms:
                degraded["ranking"] = "skipped: latency budget spent before ranking"
            else:
                stage_start = time.perf_counter()
                try:
                    candidates = self.ranker(query, candidates)
                except Exception as exc:  # noqa: BLE001 - keep the retrieval order
                    log.warning("ranking failed: %s", exc)
                    degraded["ranking"] = f"failed, retrieval order kept: {exc}"
                timings["ranking"] = _ms(stage_start)
        stage_start = time.perf_counter()
        if self.decision is not None:
            slate, variant = self._decide(query, candidates, k, degraded)
        else:
            slate, variant = candidates.head(k), None
        timings["decision"] = _ms(stage_start)
        return slate if slate is not None else candidates.head(k), None, variant

    def _decide(
        self, query: Query, candidates: ItemList | None, k: int, degraded: dict[str, str]
    ) -> tuple[ItemList | None, str | None]:
        assert self.decision is not None
        try:
            decided = self.decision(query, candidates, k)
        except Exception as exc:  # noqa: BLE001 - top-k of the ranked list instead
            log.warning("decision failed: %s", exc)
            degraded["decision"] = f"failed, top-k shown: {exc}"
            return (None if candidates is None else candidates.head(k)), None
        if isinstance(decided, ItemList):
            return decided, None
        for reason in getattr(decided, "reasons", []) or []:
            degraded.setdefault("decision", reason)
        return decided.slate, getattr(decided, "variant", None)

    def _fallback(self, query: Query, k: int, degraded: dict[str, str]) -> ItemList:
        try:
            return self.fallback(query, k)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            degraded["fallback"] = f"failed: {exc}"
            return ItemList.empty()


def _append_unique(head: ItemList, tail: ItemList, k: int) -> ItemList:
    seen = set(head.items.tolist())
    extra = [i for i, item in enumerate(tail.items.tolist()) if item not in seen]
    extra = extra[: max(0, k - len(head))]
    items = np.concatenate([head.items, tail.items[extra]])
    # fallback items rank below every personalised one
    low = (head.scores.min() if len(head) else 0.0) - 1.0
    scores = np.concatenate([head.scores, np.full(len(extra), low, dtype=np.float32)])
    return ItemList(items, scores)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
