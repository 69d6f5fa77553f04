"""The decision pipeline: consent, cold start, experiment, rules, diversity, exploration, log.

``DecisionPipeline(config, catalog, fallback)(query, ranked, k) -> Decision``. The ranked list
comes from the ranker (best first, ~100 items); the decision is the slate actually shown, with
the probability of each shown item at its position, the experiment variant, and one log record
that an off-policy estimator can later read. Every optional stage that fails or runs past the
deadline degrades to the simpler choice (diversity → capped top-k, exploration → none); a
missing candidate list is replaced by context popularity. Nothing here raises on bad luck.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

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

logger = logging.getLogger(__name__)


def _ones_if_none(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32) if values is None else values


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
    """One logged decision: exactly what was shown, and enough to evaluate another policy.

    Items are external ids (stable across retrains). Without consent ``user_id`` and
    ``session_id`` are ``None`` and no history or personal context is stored.

    Attributes:
        decision_id: Unique id of the decision.
        timestamp: Request time (Unix seconds).
        user_id: External user id, ``None`` without consent or for anonymous requests.
        session_id: Session id, ``None`` without consent.
        consent: Whether the user consented to personalisation.
        experiment: Experiment name, if any.
        variant: Experiment variant, if any.
        bucket: The user's position in [0, 1) for the experiment, if assigned by user.
        source: Where the candidates came from (``ranked``, ``cold_start:<reason>``, ...).
        diversity: The diversity config that ran (JSON), ``none`` otherwise.
        exploration: The exploration config that ran (JSON), ``none`` otherwise.
        items: The shown slate, best first.
        scores: Score of each shown item.
        propensities: Probability each shown item had at its position.
        filled: Slots filled from the fallback after the personalised candidates ran out.
        fallback: Why the fallback served (part of) the answer (set by the engine).
        reasons: Why the decision deviated from the plain path.
        degraded: Degraded stages and why (set by the engine).
        timings_ms: Milliseconds per stage.
        context: Non-personal request context (device, referrer, ...).
    """

    decision_id: str
    timestamp: float
    user_id: str | None
    session_id: str | None
    consent: bool
    experiment: str | None
    variant: str | None
    bucket: float | None
    source: str
    diversity: str
    exploration: str
    items: list[str]
    scores: list[float]
    propensities: list[float]
    filled: int = 0
    fallback: str | None = None
    reasons: list[str] = field(default_factory=list)
    degraded: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (shallow: the fields are already plain values, lists and dicts).

        ``dataclasses.asdict`` deep-copies every list element, a third of a millisecond per
        served request here; the record is never mutated after it is made.
        """
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


_RECORD_FIELDS = tuple(f.name for f in fields(DecisionRecord))


class DecisionLog:
    """Append-only decision log: the last records in memory, all of them as JSON lines.

    Args:
        path: A ``.jsonl`` file, or a directory that gets one file per process
            (``decisions-<pid>.jsonl``, so several workers never interleave lines); ``None``
            keeps records in memory only.
        max_in_memory: How many recent records :attr:`records` keeps (0: none).
    """

    def __init__(self, path: str | Path | None = None, max_in_memory: int = 10_000) -> None:
        self.path = None if path is None else Path(path)
        self.records: deque[DecisionRecord] = deque(maxlen=max_in_memory)
        self._lock = threading.Lock()
        self._handle: TextIO | None = None
        self._pid = 0

    @property
    def file(self) -> Path | None:
        """The file this process appends to."""
        if self.path is None:
            return None
        if self.path.suffix == ".jsonl":
            return self.path
        return self.path / f"decisions-{os.getpid()}.jsonl"

    def append(self, record: DecisionRecord) -> None:
        """Store one record (one line written and flushed; the handle stays open)."""
        line = json.dumps(record.to_dict(), default=float) + "\n" if self.path else ""
        with self._lock:
            if self.records.maxlen:
                self.records.append(record)
            if not line:
                return
            if self._handle is None or self._pid != os.getpid():
                target = self.file
                assert target is not None
                target.parent.mkdir(parents=True, exist_ok=True)
                # a forked worker must not share its parent's handle
                self._handle = target.open("a", encoding="utf-8")
                self._pid = os.getpid()
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        """Close the file handle (the next append reopens it)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


@dataclass(frozen=True)
class Decision:
    """What to show and why.

    Attributes:
        slate: The shown items in order, with scores and propensities (1.0 when deterministic).
        variant: Experiment variant name (``None`` without an experiment).
        record: The log record of this decision.
        filled: How many slate items came from the fallback after the candidates ran out.
    """

    slate: ItemList
    variant: str | None
    record: DecisionRecord
    filled: int = 0

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

    def __call__(self, query: Query, ranked: ItemList | None, k: int, log: bool = True) -> Decision:
        """Decide the slate for one request.

        Every shown slot passes the rules (exclusions, availability, caps), including slots
        the fallback fills when the candidates run out, and every slot has a propensity.

        Args:
            query: The request (its ``consent`` flag is honoured first).
            ranked: Ranker output, best first; ``None`` or empty when upstream failed.
            k: Slate size.
            log: Append the record to :attr:`log` (the engine passes ``False`` and logs the
                record itself, with the whole request's timings).

        Returns:
            The decision and its record.
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
        personalised = False
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
            personalised = True
        t = lap("candidates", t)

        assignment: Assignment | None = (
            None if self.experiment is None else self.experiment.assign(q)
        )
        arm = None if assignment is None else assignment.variant.name
        div_cfg, exp_cfg, selector, explorer = self._stages[arm]
        t = lap("experiment", t)

        try:
            prepared, filled_from = self._prepare(q, candidates, k, n_fb, personalised)
        except Exception as exc:  # noqa: BLE001 - a broken rule must not break the response
            reasons.append(f"failed:rules:{type(exc).__name__}")
            self._log_failure("rules", exc)
            prepared, filled_from = self._unruled_fallback(q, n_fb), 0
            source = "fallback:" + getattr(prepared, "reason", "global")
        caps = self.rules.caps
        t = lap("rules", t)

        if self._late(start):
            reasons.append("late:diversity")
            selector, explorer = self._plain, None
        try:
            positions = selector.select(prepared, min(k, len(prepared)), caps)
        except Exception as exc:  # noqa: BLE001 - degrade, never fail the request
            reasons.append(f"failed:diversity:{type(exc).__name__}")
            self._log_failure("diversity", exc)
            positions = capped_top_k(prepared, min(k, len(prepared)), caps)
        rest = np.setdiff1d(np.arange(len(prepared)), positions, assume_unique=True)
        order = np.concatenate([positions, rest]).astype(np.int64)
        ordered = take(prepared, order)
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
                self._log_failure("exploration", exc)
                explorer = None
        if explorer is None:
            slate = ItemList(slate.items, slate.scores, np.ones(len(slate), dtype=np.float32))
        lap("exploration", t)
        timings["total"] = (time.perf_counter() - start) * 1000.0

        filled = 0
        if filled_from < len(prepared):
            filled = int(np.isin(slate.items, prepared.items[filled_from:]).sum())
        record = self.record_for(
            query,
            slate,
            arm,
            source=source,
            assignment=assignment,
            diversity=_describe(div_cfg),
            exploration=_describe(exp_cfg if explorer is not None else None),
            filled=filled,
            reasons=reasons,
            timings=timings,
        )
        if log:
            self.log.append(record)
        return Decision(slate=slate, variant=arm, record=record, filled=filled)

    def rules_only(self, query: Query, ranked: ItemList | None, k: int) -> tuple[ItemList, int]:
        """The slate the rules alone choose (no diversity, no exploration, propensities 1).

        What the engine serves when the full decision stage fails: exclusions, availability
        and caps still hold for every slot, the fallback filling what the candidates lack.

        Returns:
            The slate and how many of its items the fallback filled.
        """
        k = check_k(k)
        q = self.consent.anonymise(query)
        n_fb = max(k, self.config.n_fallback_candidates)
        personalised = query.consent and ranked is not None and len(ranked) > 0
        candidates = ranked if personalised else self.fallback(q, n_fb)
        assert candidates is not None
        prepared, filled_from = self._prepare(q, candidates, k, n_fb, personalised)
        chosen = take(prepared, capped_top_k(prepared, min(k, len(prepared)), self.rules.caps))
        slate = ItemList(chosen.items, chosen.scores, np.ones(len(chosen), dtype=np.float32))
        filled = int(np.isin(slate.items, prepared.items[filled_from:]).sum())
        return slate, filled

    def _prepare(
        self, query: Query, candidates: ItemList, k: int, n_fb: int, personalised: bool
    ) -> tuple[ItemList, int]:
        """Rules over the candidates; when fewer than ``k`` survive, fallback items too.

        Returns:
            The prepared list (sorted best first) and the position where fallback items
            start (its length when none were needed).
        """
        prepared = self.rules.prepare(query, candidates)
        if len(prepared) >= k or not personalised:
            return prepared, len(prepared)
        extra = self.fallback(query, n_fb + len(candidates), exclude=candidates.items)
        extra = self.rules.prepare(query, extra)
        if not len(extra):
            return prepared, len(prepared)
        # fallback items rank below every personalised one, in their own order
        low = float(prepared.scores.min()) if len(prepared) else 0.0
        shifted = extra.scores - float(extra.scores.max()) + low - 1.0
        merged = ItemList(
            np.concatenate([prepared.items, extra.items]),
            np.concatenate([prepared.scores, shifted]),
            None
            if prepared.propensities is None and extra.propensities is None
            else np.concatenate(
                [
                    _ones_if_none(prepared.propensities, len(prepared)),
                    _ones_if_none(extra.propensities, len(extra)),
                ]
            ),
        )
        return merged, len(prepared)

    def _unruled_fallback(self, query: Query, n: int) -> ItemList:
        """Last resort when a rule itself is broken: availability still holds."""
        listed = self.fallback(query, n)
        keep = self.availability.is_available(listed.items)
        return take(listed, np.flatnonzero(keep))

    def record_for(
        self,
        query: Query,
        slate: ItemList,
        variant: str | None = None,
        *,
        source: str = "ranked",
        assignment: Assignment | None = None,
        diversity: str = "none",
        exploration: str = "none",
        filled: int = 0,
        reasons: list[str] | None = None,
        timings: dict[str, float] | None = None,
    ) -> DecisionRecord:
        """The log record of a shown slate (nothing personal without consent)."""
        props = slate.propensities
        return DecisionRecord(
            decision_id=uuid.uuid4().hex,
            timestamp=time.time() if query.timestamp is None else float(query.timestamp),
            user_id=query.user_id if query.consent else None,
            session_id=query.session_id if query.consent else None,
            consent=query.consent,
            experiment=None if assignment is None else assignment.experiment,
            variant=variant,
            bucket=None if assignment is None else assignment.bucket,
            source=source,
            diversity=diversity,
            exploration=exploration,
            items=self.catalog.external_ids(slate.items),
            scores=[float(x) for x in slate.scores],
            propensities=[1.0] * len(slate) if props is None else [float(p) for p in props],
            filled=filled,
            reasons=list(reasons or []),
            timings_ms=dict(timings or {}),
        )

    @staticmethod
    def _log_failure(stage: str, exc: BaseException) -> None:
        logger.error("decision %s failed", stage, exc_info=exc)

    def _late(self, start: float) -> bool:
        deadline = self.config.deadline_ms
        return deadline is not None and (time.perf_counter() - start) * 1000.0 > deadline

    def feedback(self, record: DecisionRecord, clicks: list[float]) -> None:
        """Feed per-position clicks of a logged decision to its variant's Thompson sampler."""
        if len(clicks) != len(record.items):
            raise ValueError(f"clicks: {len(clicks)} values for {len(record.items)} items")
        explorer = self._stages[record.variant][3]
        if isinstance(explorer, ThompsonSampling):
            explorer.update(self._dense(record.items), clicks)

    def _dense(self, ids: list[str]) -> np.ndarray:
        if self.catalog.ids is None:
            return np.asarray([int(i) for i in ids], dtype=np.int64)
        position = self._id_positions
        return np.asarray([position[i] for i in ids], dtype=np.int64)

    @functools.cached_property
    def _id_positions(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.catalog.ids or ())}
