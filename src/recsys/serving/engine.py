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

import asyncio
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.data.dataset import IdIndex
from recsys.decision.pipeline import DecisionPipeline
from recsys.features.definitions import derive_context, merge_history, session_start
from recsys.serving import deadline
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
        session_start: When that session started (Unix seconds), if known.
        degraded: Why the profile is incomplete (e.g. ``"online store unavailable"``), or None.
    """

    history: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    history_times: TimeArray | None = None
    history_types: tuple[str, ...] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    session_start: float | None = None
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
        50.0,
        gt=0.0,
        description="The request's latency budget. Ranking is skipped when retrieval has "
        "spent it; with enforce_budget a stage still running at the deadline is abandoned.",
    )
    enforce_budget: bool = Field(
        False,
        description="Make recommend() run retrieval and ranking under a deadline (budget_ms "
        "minus decision_reserve_ms; see `deadline`): a stage still running then is "
        "abandoned and the request answered from the fallback (or the retrieval order, when "
        "ranking was late). recommend_async() (the HTTP service) always does; serve() "
        "(benchmarks) never does.",
    )
    stage_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads that run retrieval and ranking under a thread deadline. The stages "
        "are CPU-bound and share the GIL: more threads only interleave requests (each "
        "slower, the tail longer); two let one abandoned stage finish while the next "
        "request runs.",
    )
    deadline: Literal["alarm", "thread"] = Field(
        "alarm",
        description="How the budget binds. alarm: retrieval and ranking run on the calling "
        "thread and a SIGALRM timer interrupts them at the deadline "
        "(recsys.serving.deadline; the main thread on Unix, where the HTTP service's loop "
        "runs). thread: they run in the stage pool and the caller stops waiting at the "
        "deadline. alarm falls back to thread where signals cannot reach the caller. "
        "Measured over HTTP (ml-latest-small, two workers, 250 req/s): p99 33 ms with "
        "alarm, 59 ms with thread, where the loop and the stage thread contend for the GIL.",
    )
    decision_reserve_ms: float = Field(
        5.0, ge=0.0, description="Budget kept for the decision stage after a deadline."
    )
    mode: Literal["realtime", "session"] = Field(
        "realtime",
        description="Timing architecture. realtime: every event reaches the next request's "
        "retrieval and ranking. session: they run once per session, on the profile as it "
        "was when the session started, and later requests of the session reuse that list "
        "(only the decision stage runs, with the fresh history for exclusions). Batch is a "
        "retriever of precomputed lists (recsys.serving.modes.PrecomputedLists).",
    )
    session_gap_seconds: float = Field(
        1800.0, gt=0.0, description="Inactivity that starts a new session (session mode)."
    )
    session_cache_size: int = Field(
        100_000, ge=1, description="Sessions whose frozen lists a worker keeps (LRU)."
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


class _Progress:
    """How far a request's retrieval and ranking got.

    Written by the stage thread, read by the request at its deadline; fields are replaced,
    never mutated in place, so the request always reads a coherent snapshot.
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.stage_start = 0.0
        self.done: dict[str, float] = {}
        self.degraded: dict[str, str] = {}
        self.retrieved: ItemList | None = None
        self.abandoned = False

    def begin(self, stage: str) -> None:
        self.stage, self.stage_start = stage, time.perf_counter()

    def end(self, retrieved: ItemList | None = None) -> None:
        if self.abandoned or self.stage is None:
            return
        if retrieved is not None:
            self.retrieved = retrieved
        self.done = {**self.done, self.stage: _ms(self.stage_start)}
        self.stage = None

    def abandon(self) -> str:
        """Stop recording; the stage that was still running (``retrieval`` if none began)."""
        self.abandoned = True
        late = self.stage or "retrieval"
        self.done = {**self.done, late: _ms(self.stage_start) if self.stage else 0.0}
        return late

    def report(self, timings: dict[str, float], degraded: dict[str, str]) -> None:
        timings.update(self.done)
        for stage, reason in list(self.degraded.items()):
            degraded.setdefault(stage, reason)


@dataclass
class _Request:
    """One request in flight through :meth:`Engine.recommend`."""

    k: int
    start: float
    engine_config: EngineConfig
    query: Query = field(default_factory=Query)
    timings: dict[str, float] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)
    progress: _Progress = field(default_factory=lambda: _Progress())
    result: tuple[ItemList | None, str | None] = (None, None)
    personalise: bool = False

    def time_left(self) -> float:
        """Seconds until retrieval and ranking must be done (the decision's share kept)."""
        config = self.engine_config
        deadline_ms = config.budget_ms - config.decision_reserve_ms
        return max(0.0, deadline_ms - _ms(self.start)) / 1000.0


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
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, float], ItemList] = OrderedDict()
        self._sessions_lock = threading.Lock()
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
        request = self._begin(user_id, k, context, history, consent, exclude, now)
        if request.personalise:
            if self.config.enforce_budget and self.deadline_mechanism() == "alarm":
                self._run_under_alarm(request)
            elif self.config.enforce_budget:
                future = self._stage_pool().submit(
                    self._ranked_for, request.query, request.start, request.progress
                )
                try:
                    request.result = future.result(timeout=request.time_left())
                except FuturesTimeout:
                    request.result = self._abandoned(request.progress)
            else:
                request.result = self._ranked_for(request.query, request.start, request.progress)
        return self._finish(request)

    async def recommend_async(
        self,
        user_id: str | None = None,
        k: int | None = None,
        context: Mapping[str, Any] | None = None,
        history: Sequence[str] | None = None,
        consent: bool = True,
        exclude: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Recommendation:
        """:meth:`recommend` for an event loop (the HTTP service), the budget always binding.

        Every stage runs on the loop's thread; the deadline is the alarm's
        (``config.deadline``), or, where signals cannot reach the loop's thread, retrieval
        and ranking run in the stage pool and are awaited until the deadline. Arguments as
        :meth:`recommend`.
        """
        request = self._begin(user_id, k, context, history, consent, exclude, now)
        if request.personalise and self.deadline_mechanism() == "alarm":
            self._run_under_alarm(request)
        elif request.personalise:
            future = self._stage_pool().submit(
                self._ranked_for, request.query, request.start, request.progress
            )
            try:
                request.result = await asyncio.wait_for(
                    asyncio.wrap_future(future), timeout=request.time_left()
                )
            except TimeoutError:
                request.result = self._abandoned(request.progress)
        return self._finish(request)

    def deadline_mechanism(self) -> Literal["alarm", "thread"]:
        """How a binding budget is enforced for calls from this thread (see ``config.deadline``)."""
        return "alarm" if self.config.deadline == "alarm" and deadline.available() else "thread"

    def _run_under_alarm(self, request: _Request) -> None:
        """Retrieval and ranking on this thread, interrupted at the deadline (no hand-off)."""
        try:
            with deadline.deadline(request.time_left()):
                request.result = self._ranked_for(request.query, request.start, request.progress)
        except deadline.DeadlineExceeded:
            request.result = self._abandoned(request.progress)

    def _begin(
        self,
        user_id: str | None,
        k: int | None,
        context: Mapping[str, Any] | None,
        history: Sequence[str] | None,
        consent: bool,
        exclude: Sequence[str] | None,
        now: float | None,
    ) -> _Request:
        k = self.config.default_k if k is None else k
        if not 1 <= k <= self.config.max_k:
            raise ValueError(f"k: must be between 1 and {self.config.max_k}, got {k}")
        request = _Request(k=k, start=time.perf_counter(), engine_config=self.config)
        request.query = self.query_for(
            user_id,
            context,
            history,
            consent,
            exclude,
            now,
            timings=request.timings,
            degraded=request.degraded,
        )
        request.result = (None, self._unpersonalised_reason(request.query))
        request.personalise = request.result[1] is None
        return request

    def _finish(self, request: _Request) -> Recommendation:
        ranked, reason = request.result
        request.progress.report(request.timings, request.degraded)
        served = self._decided(
            request.query, ranked, reason, request.k, request.timings, request.degraded
        )
        request.timings["total"] = _ms(request.start)
        slate = served.slate
        answer = Recommendation(
            items=self.items.to_ids(slate.items),
            scores=slate.scores.tolist(),
            propensities=None if slate.propensities is None else slate.propensities.tolist(),
            timings_ms=request.timings,
            fallback=served.fallback,
            degraded=request.degraded,
            variant=served.variant,
            filled=served.filled,
        )
        self._log_decision(request.query, served, answer)
        return answer

    def _abandoned(self, progress: _Progress) -> tuple[ItemList | None, str | None]:
        """The answer when the deadline passes with a stage still running."""
        late = progress.abandon()
        with self._failures_lock:
            self._failures[f"{late}:abandoned"] += 1
        log.warning("%s still running at the %g ms budget: abandoned", late, self.config.budget_ms)
        reason = f"{late} abandoned at the {self.config.budget_ms:g} ms budget"
        if late == "ranking" and progress.retrieved is not None:
            progress.degraded["ranking"] = f"{reason}; retrieval order kept"
            return progress.retrieved, None
        return None, reason

    def serve(self, queries: Sequence[Query], k: int) -> list[ItemList]:
        """The slates of queries built offline, through the same stages as :meth:`recommend`.

        Benchmarks and replays call this with queries from
        :func:`recsys.evaluation.protocol.build_queries` (nothing is logged).
        """
        return [self._serve(query, k, time.perf_counter()).slate for query in queries]

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

    def rank(self, query: Query) -> ItemList | None:
        """Retrieval then ranking for a query, no decision stage (batch jobs build on it).

        ``None`` when the query cannot be personalised (no consent, no history) or
        retrieval failed.
        """
        if self._unpersonalised_reason(query) is not None:
            return None
        ranked, _ = self._retrieve_and_rank(query, time.perf_counter(), _Progress())
        return ranked

    def failure_counts(self) -> dict[str, int]:
        """Failures per ``stage:ExceptionType`` since the engine was built."""
        with self._failures_lock:
            return dict(self._failures)

    # ------------------------------------------------------------------ stages
    def _serve(self, query: Query, k: int, start: float) -> Served:
        """The stages after the profile, inline (the offline :meth:`serve` path)."""
        timings: dict[str, float] = {}
        degraded: dict[str, str] = {}
        ranked, reason = None, self._unpersonalised_reason(query)
        progress = _Progress()
        if reason is None:
            ranked, reason = self._ranked_for(query, start, progress)
        progress.report(timings, degraded)
        return self._decided(query, ranked, reason, k, timings, degraded)

    @staticmethod
    def _unpersonalised_reason(query: Query) -> str | None:
        if not query.consent:
            return "no personalisation consent"
        if len(query.history) == 0:
            # a user with no known event: an id alone (even one in the model's index, e.g.
            # registered but never active) carries no trained signal
            return "cold start: no history"
        return None

    def _decided(
        self,
        query: Query,
        ranked: ItemList | None,
        reason: str | None,
        k: int,
        timings: dict[str, float],
        degraded: dict[str, str],
    ) -> Served:
        stage_start = time.perf_counter()
        served = self._decide(query, ranked, k, degraded)
        if served.fallback is None:
            served.fallback = reason
        if served.filled and served.fallback is None:
            served.fallback = f"only {len(served.slate) - served.filled} personalised items"
        timings["decision"] = _ms(stage_start)
        return served

    def _ranked_for(
        self, query: Query, start: float, progress: _Progress
    ) -> tuple[ItemList | None, str | None]:
        """Retrieval and ranking for a request: every time (realtime), once per session."""
        if self.config.mode == "realtime" or query.timestamp is None:
            return self._retrieve_and_rank(query, start, progress)
        began = session_start(query.history_times, query.timestamp, self.config.session_gap_seconds)
        key = (query.user_id or "", -1.0 if began is None else began)
        with deadline.shielded(), self._sessions_lock:
            cached = self._sessions.get(key) if query.user_id is not None else None
            if cached is not None:
                self._sessions.move_to_end(key)
        if cached is not None:
            return cached, None
        frozen = query
        if began is not None and query.history_times is not None:
            before = query.history_times < began
            frozen = replace(
                query,
                history=query.history[before],
                history_times=query.history_times[before],
                history_types=None
                if query.history_types is None
                else tuple(t for t, b in zip(query.history_types, before, strict=True) if b),
            )
            if not len(frozen.history):  # nothing known before this session: cold start
                return None, "cold start: no history before this session"
        ranked, reason = self._retrieve_and_rank(frozen, start, progress)
        if ranked is not None and reason is None and query.user_id is not None:
            with deadline.shielded(), self._sessions_lock:
                self._sessions[key] = ranked
                while len(self._sessions) > self.config.session_cache_size:
                    self._sessions.popitem(last=False)
        return ranked, reason

    def _retrieve_and_rank(
        self, query: Query, start: float, progress: _Progress
    ) -> tuple[ItemList | None, str | None]:
        """Retrieval then ranking; ``progress`` says how far it got (read at a deadline)."""
        progress.begin("retrieval")
        try:
            if self.config.exclude_history:
                candidates = self.retriever(query, self.candidates)
            else:
                candidates = self.retriever(query, self.candidates, exclude_seen=False)  # type: ignore[call-arg]
        except Exception as exc:  # noqa: BLE001 - degrade, never 5xx
            self._count_failure("retrieval", exc)
            progress.end()
            return None, f"retrieval failed: {type(exc).__name__}: {exc}"
        progress.end(candidates)
        if self.ranker is None or len(candidates) == 0:
            return candidates, None
        if _ms(start) > self.config.budget_ms:
            progress.degraded["ranking"] = "skipped: latency budget spent before ranking"
            return candidates, None
        progress.begin("ranking")
        try:
            candidates = self.ranker(query, candidates)
        except Exception as exc:  # noqa: BLE001 - keep the retrieval order
            self._count_failure("ranking", exc)
            progress.degraded["ranking"] = (
                f"failed, retrieval order kept: {type(exc).__name__}: {exc}"
            )
        progress.end()
        return candidates, None

    def _stage_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.config.stage_threads, thread_name_prefix="recsys-stage"
                )
            return self._pool

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
