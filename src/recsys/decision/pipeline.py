"""The decision pipeline: consent, cold start, experiment, rules, diversity, exploration, log.

``DecisionPipeline(config, catalog, fallback)(query, ranked, k) -> Decision``. The ranked list
comes from the ranker (best first, ~100 items); the decision is the slate actually shown, with
the probability of each shown item at its position, the experiment variant, and one log record
that an off-policy estimator can later read. Every optional stage that fails or runs past the
deadline degrades to the simpler choice (diversity → capped top-k, exploration → none); a
missing candidate list is replaced by context popularity. Nothing here raises on bad luck.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.decision.base import ItemCatalog, check_k, take
from recsys.decision.consent import ConsentConfig, ConsentGate
from recsys.decision.diversity import DiversityConfig, make_selector
from recsys.decision.experiments import Assignment, Experiment, ExperimentConfig
from recsys.decision.exploration import ExplorationConfig, ThompsonSampling, make_explorer
from recsys.decision.fallback import ContextPopularity, ContextPopularityConfig
from recsys.decision.rules import Availability, BusinessRules, RulesConfig, capped_top_k
from recsys.types import ItemList, Query


class DecisionPipelineConfig(ComponentConfig):
    """Configuration of the whole decision stage (data only)."""

    rules: RulesConfig = RulesConfig()
    diversity: DiversityConfig | None = Field(None, discriminator="kind")
    exploration: ExplorationConfig | None = Field(None, discriminator="kind")
    experiment: ExperimentConfig | None = Field(
        None, description="When set, the user's variant chooses diversity and exploration."
    )
    fallback: ContextPopularityConfig = ContextPopularityConfig()
    consent: ConsentConfig = ConsentConfig()
    n_fallback_candidates: int = Field(100, ge=1, le=100_000)
    cold_start_max_history: int = Field(
        0,
        ge=0,
        description="Consenting users with at most this many history items get the "
        "context-popularity list instead of the ranked one.",
    )
    deadline_ms: float | None = Field(
        None,
        gt=0.0,
        description="After this, optional stages (diversity, exploration) are "
        "skipped for the request.",
    )


@dataclass
class DecisionRecord:
    """One logged decision: enough to evaluate another policy off-line, nothing more.

    Without consent ``user`` and ``session_id`` are ``None`` and no history is stored.
    """

    decision_id: str
    timestamp: float
    user: int | None
    session_id: str | None
    consent: bool
    experiment: str | None
    variant: str | None
    bucket: float | None
    source: str
    diversity: str
    exploration: str
    items: list[int]
    scores: list[float]
    propensities: list[float]
    reasons: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class DecisionLog:
    """Append-only decision log: in memory, and as JSON lines when ``path`` is given."""

    def __init__(self, path: str | Path | None = None, keep_in_memory: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.keep_in_memory = keep_in_memory
        self.records: list[DecisionRecord] = []
        self._lock = threading.Lock()

    def append(self, record: DecisionRecord) -> None:
        """Store one record."""
        with self._lock:
            if self.keep_in_memory:
                self.records.append(record)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as handle:
                    handle.write(json.dumps(record.to_dict()) + "\n")


@dataclass(frozen=True)
class Decision:
    """What to show and why.

    Attributes:
        slate: The shown items in order, with scores and propensities (1.0 when deterministic).
        variant: Experiment variant name (``None`` without an experiment).
        record: The log record written for this decision.
    """

    slate: ItemList
    variant: str | None
    record: DecisionRecord

    @property
    def reasons(self) -> list[str]:
        """Why the decision deviated from the plain path (fallbacks, degraded stages)."""
        return self.record.reasons


def _describe(config: ComponentConfig | None) -> str:
    return "none" if config is None else config.model_dump_json()


class DecisionPipeline:
    """Composes the decision stages in order.

    Args:
        config: The pipeline configuration.
        catalog: Item attributes and vectors (rules, diversity).
        fallback: A fitted context popularity; fitted here from ``fit_data`` when not given.
        fit_data: A Split or Dataset to fit the fallback on.
        availability: Live availability set shared with an inventory feed.
        log: Where decisions are recorded (default: in memory).
    """

    def __init__(
        self,
        config: DecisionPipelineConfig | None = None,
        catalog: ItemCatalog | None = None,
        fallback: ContextPopularity | None = None,
        fit_data: Any = None,
        availability: Availability | None = None,
        log: DecisionLog | None = None,
    ) -> None:
        self.config = config or DecisionPipelineConfig()
        if catalog is None:
            raise ValueError("catalog: DecisionPipeline needs an ItemCatalog")
        self.catalog = catalog
        if fallback is None:
            if fit_data is None:
                raise ValueError("fallback: give a fitted ContextPopularity or fit_data")
            fallback = ContextPopularity(self.config.fallback).fit(fit_data)
        self.fallback = fallback
        self.rules = BusinessRules(self.config.rules, catalog, availability)
        self.consent = ConsentGate(self.config.consent, fallback)
        self.log = log if log is not None else DecisionLog()
        self.experiment = (
            None if self.config.experiment is None else Experiment(self.config.experiment)
        )
        # one selector and one explorer per variant: explorers keep their own random stream
        # and (Thompson) posterior, so variants never share state
        arms: dict[str | None, tuple[Any, Any]] = {}
        if self.experiment is None:
            arms[None] = (self.config.diversity, self.config.exploration)
        else:
            for variant in self.experiment.config.variants:
                arms[variant.name] = (variant.diversity, variant.exploration)
        self._stages = {
            name: (div, exp, make_selector(div, catalog), make_explorer(exp, catalog))
            for name, (div, exp) in arms.items()
        }
        self._plain = make_selector(None, catalog)

    @property
    def availability(self) -> Availability:
        """The live availability set the rules read."""
        return self.rules.availability

    def __call__(self, query: Query, ranked: ItemList | None, k: int) -> Decision:
        """Decide the slate for one request.

        Args:
            query: The request (its ``consent`` flag is honoured first).
            ranked: Ranker output, best first; ``None`` or empty when upstream failed.
            k: Slate size.

        Returns:
            The decision; its record has already been appended to the log.
        """
        k = check_k(k)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        reasons: list[str] = []
        q = self.consent.anonymise(query)
        n_fb = max(k, self.config.n_fallback_candidates)

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            timings[name] = (now - since) * 1000.0
            return now

        t = start
        if not query.consent:
            candidates: ItemList = self.fallback(q, n_fb)
            source = "no_consent:" + candidates.reason  # type: ignore[attr-defined]
        elif len(q.history) <= self.config.cold_start_max_history:
            candidates = self.fallback(q, n_fb)
            source = "cold_start:" + candidates.reason  # type: ignore[attr-defined]
        elif ranked is None or len(ranked) == 0:
            candidates = self.fallback(q, n_fb)
            source = "fallback:" + candidates.reason  # type: ignore[attr-defined]
            reasons.append("no_candidates")
        else:
            candidates = ranked
            source = "ranked"
        t = lap("candidates", t)

        assignment: Assignment | None = (
            None if self.experiment is None else self.experiment.assign(q)
        )
        arm = None if assignment is None else assignment.variant.name
        div_cfg, exp_cfg, selector, explorer = self._stages[arm]
        t = lap("experiment", t)

        try:
            prepared = self.rules.prepare(q, candidates)
        except Exception as exc:  # noqa: BLE001 - a broken rule must not break the response
            reasons.append(f"failed:rules:{type(exc).__name__}")
            prepared = self.fallback(q, n_fb)
            source = "fallback:" + prepared.reason  # type: ignore[attr-defined]
        caps = self.rules.caps
        t = lap("rules", t)

        if self._late(start):
            reasons.append("late:diversity")
            selector, explorer = self._plain, None
        try:
            positions = selector.select(prepared, min(k, len(prepared)), caps)
        except Exception as exc:  # noqa: BLE001 - degrade, never fail the request
            reasons.append(f"failed:diversity:{type(exc).__name__}")
            positions = capped_top_k(prepared, min(k, len(prepared)), caps)
        rest = np.setdiff1d(np.arange(len(prepared)), positions, assume_unique=True)
        ordered = take(prepared, np.concatenate([positions, rest]).astype(np.int64))
        n_slate = len(positions)
        t = lap("diversity", t)

        slate = ordered.head(n_slate)
        if explorer is not None and self._late(start):
            reasons.append("late:exploration")
            explorer = None
        if explorer is not None:
            try:
                slate = explorer(q, ordered, n_slate, caps)
            except Exception as exc:  # noqa: BLE001 - degrade, never fail the request
                reasons.append(f"failed:exploration:{type(exc).__name__}")
                explorer = None
        if explorer is None:
            slate = ItemList(slate.items, slate.scores, np.ones(len(slate), dtype=np.float32))
        lap("exploration", t)
        timings["total"] = (time.perf_counter() - start) * 1000.0

        record = DecisionRecord(
            decision_id=uuid.uuid4().hex,
            timestamp=time.time() if q.timestamp is None else float(q.timestamp),
            user=q.user if query.consent else None,
            session_id=q.session_id if query.consent else None,
            consent=query.consent,
            experiment=None if assignment is None else assignment.experiment,
            variant=arm,
            bucket=None if assignment is None else assignment.bucket,
            source=source,
            diversity=_describe(div_cfg),
            exploration=_describe(exp_cfg if explorer is not None else None),
            items=[int(i) for i in slate.items],
            scores=[float(s) for s in slate.scores],
            propensities=[float(p) for p in slate.propensities],  # type: ignore[union-attr]
            reasons=reasons,
            timings_ms=timings,
        )
        self.log.append(record)
        return Decision(slate=slate, variant=arm, record=record)

    def _late(self, start: float) -> bool:
        deadline = self.config.deadline_ms
        return deadline is not None and (time.perf_counter() - start) * 1000.0 > deadline

    def feedback(self, record: DecisionRecord, clicks: list[float]) -> None:
        """Feed per-position clicks of a logged decision to its variant's Thompson sampler."""
        if len(clicks) != len(record.items):
            raise ValueError(f"clicks: {len(clicks)} values for {len(record.items)} items")
        explorer = self._stages[record.variant][3]
        if isinstance(explorer, ThompsonSampling):
            explorer.update(record.items, clicks)
