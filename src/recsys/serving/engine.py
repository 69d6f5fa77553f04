"""The online engine: the one object that composes the stages for a request.

``profile → retrieval → ranking → decision``, each its own timed stage. A stage that fails
degrades instead of failing the request: retrieval → the fallback (context popularity),
ranking → the retrieval order, decision → the rules alone. The response says which stage
degraded and why, failures are logged with their traceback and counted
(:meth:`Engine.failure_counts`).

Notebooks, benchmarks and the Bento all call this object: :meth:`Engine.recommend` for one
request (external ids in and out), :meth:`Engine.serve` for queries already built offline
(the benchmarks). Both run :meth:`Engine._serve`, so what is evaluated is what is served.

The engine checks at construction that its parts belong together: a retriever trained on
another item index, or a ranker trained on another retriever's candidates, is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import IdIndex
from recsys.decision.pipeline import DecisionPipeline
from recsys.features.definitions import derive_context, merge_history
from recsys.types import IntArray, ItemList, Query, TimeArray

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
    """``(query, k) -> ItemList``: context / global popularity."""

    def __call__(self, query: Query, k: int) -> ItemList:  # noqa: D102
        ...


class ComponentMismatchError(ValueError):
    """The engine's parts were not trained together (item index, retriever ↔ ranker)."""


@dataclass(frozen=True)
class Profile:
    """What the engine knows about a user at request time.

    Attributes:
        history: Dense item indices, oldest first (offline history + live events).
        history_times: Unix time of each history event (``None`` when unknown).
        history_types: Event type of each history event (``None`` when unknown).
        context: Stored user context (the user table's attributes), under the request's.
        session_id: The user's current session (online store), if any.
        degraded: Why the profile is incomplete (e.g. ``"online store unavailable"``), or None.
    """

    history: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    history_times: TimeArray | None = None
    history_types: tuple[str, ...] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    degraded: str | None = None


ProfileSource = Callable[[str, float], Profile]


class EngineConfig(ComponentConfig):
    """Request-path settings."""

    candidates: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Retrieved before ranking (None: as many as the ranker was trained on, "
        "else 100).",
    )
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(100, ge=1, le=10_000)
    budget_ms: float = Field(
        50.0, gt=0.0, description="Past this, the ranking stage is skipped (retrieval order)."
    )
    exclude_history: bool = Field(
        True,
        description="Retrieval leaves out the items of the user's history (off for "
        "session logs, where re-clicking an item is the likeliest next event).",
    )
    num_threads: int | None = Field(
        1,
        ge=1,
        le=1024,
        description="torch intra-op threads, set once when the engine is built (None: leave "
        "torch alone). One thread is fastest for single requests on small models.",
    )


@dataclass
class Recommendation:
    """The engine's answer.

    Attributes:
        items: External item ids, best first.
        scores: Score per item.
        propensities: Probability each item was shown at its position, or None without a
            decision stage.
        timings_ms: Milliseconds per stage (``profile``, ``retrieval``, ``ranking``,
            ``decision`` — the slate cut and fill when there is no decision stage —,
            ``total``).
        fallback: Why the fallback served (part of) the answer, or None.
        degraded: Stages that were skipped or degraded, with reasons.
        variant: The experiment variant that chose the pipeline, or None.
        filled: How many slots the fallback filled after the personalised items.
    """

    items: list[str]
    scores: list[float]
    propensities: list[float] | None
    timings_ms: dict[str, float]
    fallback: str | None = None
    degraded: dict[str, str] = field(default_factory=dict)
    variant: str | None = None
    filled: int = 0


@dataclass
class Served:
    """One query's outcome inside the engine (dense indices)."""

    slate: ItemList
    fallback: str | None = None
    variant: str | None = None
    filled: int = 0
    decision: Any = None


class Engine:
    """Composes the online stages for one request.

    Args:
        items: External ↔ dense item ids (the catalogue the models were trained on).
        retriever: Candidate generator. A two-stage model (anything with ``stages()``) is
            split into its retriever and ranker, so ranking is timed and degraded on its own.
        fallback: Non-personalised answer used on cold start, consent-off, or any failure.
        ranker: Optional ranking model over the candidates.
        decision: Optional decision pipeline (rules → diversity → exploration); without it
            the ranked list is cut to ``k`` (the "decisions off" path of the benchmarks).
        profiles: Optional ``(user_id, now) -> Profile`` (online feature store); without it
            the request's own history is the profile.
        users: External ↔ dense user ids (models with user embeddings need the index).
        config: Request-path settings.
        ingestor: Optional ``recsys.features.Ingestor`` behind :meth:`ingest`.

    Raises:
        ComponentMismatchError: The retriever or ranker was trained on another item index,
            or the ranker on another retriever's candidates.

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
        stages = getattr(retriever, "stages", None)
        if ranker is None and callable(stages):
            retriever, ranker = stages()
        self.items = items
        self.users = users
        self.retriever = retriever
        self.fallback = fallback
        self.ranker = ranker
        self.decision = decision
        self.profiles = profiles
        self.config = config or EngineConfig()
        self.ingestor = ingestor
        check_components(items, retriever, ranker)
        trained = getattr(ranker, "config", None)
        self.candidates = self.config.candidates or getattr(trained, "candidates", None) or 100
        self._failures: Counter[str] = Counter()
        self._failures_lock = threading.Lock()
        if self.config.num_threads is not None:
            _set_torch_threads(self.config.num_threads)

    # ------------------------------------------------------------------ public API
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
        history: Sequence[str] | None = None,
        consent: bool = True,
        exclude: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Recommendation:
        """Recommend ``k`` items for a user (or an anonymous request).

        Args:
            user_id: External user id; None or unknown → cold start from context.
            k: Slate size (default ``config.default_k``).
            context: Request context (device, referrer, age, ...).
            history: External item ids the caller knows the user just consumed; those the
                stored profile does not already hold are appended as the newest events.
            consent: Without personalisation consent nothing about the user is read.
            exclude: External item ids that must not be shown.
            now: Request time (Unix seconds; default: the wall clock).

        Raises:
            ValueError: ``k`` outside 1..max_k (the API turns it into a 4xx naming ``k``).
        """
        k = self.config.default_k if k is None else k
        if not 1 <= k <= self.config.max_k:
            raise ValueError(f"k: must be between 1 and {self.config.max_k}, got {k}")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        degraded: dict[str, str] = {}
        query = self.query_for(
            user_id, context, history, consent, exclude, now, timings=timings, degraded=degraded
        )
        served = self._serve(query, k, start, timings, degraded)
        timings["total"] = _ms(start)
        answer = Recommendation(
            items=self.items.to_ids(served.slate.items),
            scores=served.slate.scores.tolist(),
            propensities=None
            if served.slate.propensities is None
            else served.slate.propensities.tolist(),
            timings_ms=timings,
            fallback=served.fallback,
            degraded=degraded,
            variant=served.variant,
            filled=served.filled,
        )
        self._log_decision(query, served, answer)
        return answer

    def serve(self, queries: Sequence[Query], k: int) -> list[ItemList]:
        """The slates of queries built offline, through the same stages as :meth:`recommend`.

        Benchmarks and replays call this with queries from
        :func:`recsys.evaluation.protocol.build_queries` (nothing is logged).
        """
        out = []
        for query in queries:
            out.append(self._serve(query, k, time.perf_counter(), {}, {}).slate)
        return out

    def query_for(
        self,
        user_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        history: Sequence[str] | None = None,
        consent: bool = True,
        exclude: Sequence[str] | None = None,
        now: float | None = None,
        *,
        timings: dict[str, float] | None = None,
        degraded: dict[str, str] | None = None,
    ) -> Query:
        """The profile stage: the :class:`Query` a request becomes (timed as ``profile``)."""
        stage_start = time.perf_counter()
        degraded = {} if degraded is None else degraded
        now = time.time() if now is None else float(now)
        excluded = self.items.indices(exclude or ())
        if not consent:
            # anonymous: request context only, no user id, no history
            query = Query(
                context=derive_context(context or {}),
                timestamp=now,
                consent=False,
                exclude=excluded,
            )
        else:
            stored = Profile()
            if user_id is not None and self.profiles is not None:
                try:
                    stored = self.profiles(str(user_id), now)
                except Exception as exc:  # noqa: BLE001 - a profile failure must not fail the request
                    self._count_failure("profile", exc)
                    degraded["profile"] = f"profile lookup failed: {type(exc).__name__}: {exc}"
            if stored.degraded:
                degraded["profile"] = stored.degraded
            items, times, types = stored.history, stored.history_times, stored.history_types
            fresh = self.items.indices(history or ())
            if len(fresh):
                fresh = fresh[~np.isin(fresh, items)]
                if times is None:
                    times = np.full(len(items), -np.inf)
                items, times, types = merge_history(
                    items, times, fresh, np.full(len(fresh), now), types, None
                )
            query = Query(
                user=None if user_id is None or self.users is None else self.users.index(user_id),
                user_id=None if user_id is None else str(user_id),
                history=items,
                history_times=times,
                history_types=types,
                context=derive_context({**dict(stored.context), **dict(context or {})}),
                timestamp=now,
                session_id=stored.session_id,
                exclude=excluded,
            )
        if timings is not None:
            timings["profile"] = _ms(stage_start)
        return query

    def failure_counts(self) -> dict[str, int]:
        """Failures per ``stage:ExceptionType`` since the engine was built."""
        with self._failures_lock:
            return dict(self._failures)

    # ------------------------------------------------------------------ stages
    def _serve(
        self,
        query: Query,
        k: int,
        start: float,
        timings: dict[str, float],
        degraded: dict[str, str],
    ) -> Served:
        ranked: ItemList | None = None
        reason: str | None = None
        if not query.consent:
            reason = "no personalisation consent"
        elif len(query.history) == 0:
            # a user with no known event: an id alone (even one in the model's index, e.g.
            # registered but never active) carries no trained signal
            reason = "cold start: no history"
        else:
            ranked, reason = self._retrieve_and_rank(query, start, timings, degraded)
        stage_start = time.perf_counter()
        served = self._decide(query, ranked, k, degraded)
        if served.fallback is None:
            served.fallback = reason
        if served.filled and served.fallback is None:
            served.fallback = f"only {len(served.slate) - served.filled} personalised items"
        timings["decision"] = _ms(stage_start)
        return served

    def _retrieve_and_rank(
        self, query: Query, start: float, timings: dict[str, float], degraded: dict[str, str]
    ) -> tuple[ItemList | None, str | None]:
        stage_start = time.perf_counter()
        try:
            if self.config.exclude_history:
                candidates = self.retriever(query, self.candidates)
            else:
                candidates = self.retriever(query, self.candidates, exclude_seen=False)  # type: ignore[call-arg]
        except Exception as exc:  # noqa: BLE001 - degrade, never 5xx
            self._count_failure("retrieval", exc)
            timings["retrieval"] = _ms(stage_start)
            return None, f"retrieval failed: {type(exc).__name__}: {exc}"
        timings["retrieval"] = _ms(stage_start)
        if self.ranker is None or len(candidates) == 0:
            return candidates, None
        if _ms(start) > self.config.budget_ms:
            degraded["ranking"] = "skipped: latency budget spent before ranking"
            return candidates, None
        stage_start = time.perf_counter()
        try:
            candidates = self.ranker(query, candidates)
        except Exception as exc:  # noqa: BLE001 - keep the retrieval order
            self._count_failure("ranking", exc)
            degraded["ranking"] = f"failed, retrieval order kept: {type(exc).__name__}: {exc}"
        timings["ranking"] = _ms(stage_start)
        return candidates, None

    def _decide(
        self, query: Query, ranked: ItemList | None, k: int, degraded: dict[str, str]
    ) -> Served:
        if self.decision is None:
            return self._top_k_filled(query, ranked, k, degraded)
        try:
            if isinstance(self.decision, DecisionPipeline):
                # the engine logs the decision itself, with the whole request's timings
                decided = self.decision(query, ranked, k, log=False)
            else:
                decided = self.decision(query, ranked, k)
        except Exception as exc:  # noqa: BLE001 - rules alone decide instead
            self._count_failure("decision", exc)
            degraded["decision"] = f"failed, rules only: {type(exc).__name__}: {exc}"
            return self._rules_only(query, ranked, k, degraded)
        if isinstance(decided, ItemList):
            return Served(decided)
        for reason in getattr(decided, "reasons", None) or []:
            degraded.setdefault("decision", reason)
        return Served(
            decided.slate,
            variant=getattr(decided, "variant", None),
            filled=int(getattr(decided, "filled", 0)),
            decision=decided,
        )

    def _rules_only(
        self, query: Query, ranked: ItemList | None, k: int, degraded: dict[str, str]
    ) -> Served:
        rules_only = getattr(self.decision, "rules_only", None)
        if callable(rules_only):
            try:
                slate, filled = rules_only(query, ranked, k)
                return Served(slate, filled=filled)
            except Exception as exc:  # noqa: BLE001 - the last resort follows
                self._count_failure("rules", exc)
                degraded["rules"] = f"failed: {type(exc).__name__}: {exc}"
        return self._top_k_filled(query, ranked, k, degraded)

    def _top_k_filled(
        self, query: Query, ranked: ItemList | None, k: int, degraded: dict[str, str]
    ) -> Served:
        """Top ``k`` of the ranked list, short lists filled from the fallback (no rules)."""
        head = ItemList.empty() if ranked is None else ranked.head(k)
        if len(head) >= k:
            return Served(head)
        filler = self._fallback(query, k + len(head), degraded)
        slate = _append_unique(head, filler, k)
        filled = len(slate) - len(head)
        return Served(slate, filled=filled if ranked is not None else 0)

    def _fallback(self, query: Query, k: int, degraded: dict[str, str]) -> ItemList:
        try:
            return self.fallback(query, k)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            self._count_failure("fallback", exc)
            degraded["fallback"] = f"failed: {type(exc).__name__}: {exc}"
            return ItemList.empty()

    def _count_failure(self, stage: str, exc: BaseException) -> None:
        log.error("%s stage failed", stage, exc_info=exc)
        with self._failures_lock:
            self._failures[f"{stage}:{type(exc).__name__}"] += 1

    def _log_decision(self, query: Query, served: Served, answer: Recommendation) -> None:
        """Write exactly what was shown to the decision pipeline's log."""
        if not isinstance(self.decision, DecisionPipeline):
            return
        record = getattr(served.decision, "record", None)
        if record is None:  # the rules-only path after a decision failure
            record = self.decision.record_for(query, served.slate, source="rules_only")
        keys = self.decision.consent.config.non_personal_context
        self.decision.log.append(
            replace(
                record,
                items=list(answer.items),
                scores=list(answer.scores),
                propensities=list(answer.propensities or [1.0] * len(answer.items)),
                filled=answer.filled,
                fallback=answer.fallback,
                degraded=dict(answer.degraded),
                timings_ms=dict(answer.timings_ms),
                context={k: v for k, v in query.context.items() if k in keys},
            )
        )


def check_components(items: IdIndex, retriever: Any, ranker: Any) -> None:
    """Refuse parts that were not trained together.

    Components record the item index they were trained on (``item_digest``) and a ranker
    the retriever whose candidates it learned from (``retriever_id``). Parts without these
    attributes (plain callables in tests) are not checked.

    Raises:
        ComponentMismatchError: Naming the part and both fingerprints.
    """
    for name, part in (("retriever", retriever), ("ranker", ranker)):
        digest = getattr(part, "item_digest", None)
        if digest is not None and digest != items.digest:
            raise ComponentMismatchError(
                f"{name}: trained on item index {digest}, but the engine serves item index "
                f"{items.digest}; retrain it on this catalogue or serve its own"
            )
    wanted = getattr(ranker, "retriever_id", None)
    have = getattr(retriever, "model_id", None)
    if wanted is not None and have is not None and wanted != have:
        raise ComponentMismatchError(
            f"ranker: trained on the candidates of retriever {wanted}, but the engine's "
            f"retriever is {have} ({type(retriever).__name__}); train the ranker on it"
        )


def _append_unique(head: ItemList, tail: ItemList, k: int) -> ItemList:
    seen = set(head.items.tolist())
    extra = [i for i, item in enumerate(tail.items.tolist()) if item not in seen]
    extra = extra[: max(0, k - len(head))]
    items = np.concatenate([head.items, tail.items[extra]])
    # fallback items rank below every personalised one
    low = (head.scores.min() if len(head) else 0.0) - 1.0
    scores = np.concatenate([head.scores, np.full(len(extra), low, dtype=np.float32)])
    return ItemList(items, scores)


def _set_torch_threads(n: int) -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
