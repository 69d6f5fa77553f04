"""Seeded synthetic event and decision logs with drift injected at a known strength.

The truth is known here, so a drift check can be scored: a *world* (users with a home device
and country, items with a power-law popularity, a rating distribution, an engine's stage
latencies) produces a reference window and a current window; an :class:`Injection` changes
one thing in the current window only.

Kinds, what ``strength`` means, and what must move (:data:`EXPECTED`):

* ``popularity``: this share of events picks items from a shuffled popularity → ``item``,
  ``item_popularity``.
* ``context``: this share of requests comes from a tablet → ``device``.
* ``rating``: this share of ratings is one star lower (at least 1) → ``value``.
* ``new_items``: this share of events goes to items never seen before → ``item``,
  ``item_popularity``.
* ``slow_ranker``: the ranking stage takes ``1 + strength`` times as long → latency
  ``ranking``.
* ``score``: ranked scores shift down by ``strength`` standard deviations → ``score``.
* ``fallback``: this share of decisions falls back ("retrieval failed") → ``fallback``,
  ``source``.
* ``variant``: this share of control users is served the ``mmr`` variant → ``variant``.
* ``quality``: clicks on shown items are ``1 - strength`` times as likely → quality
  ``ndcg``, ``recall``.

Everything is vectorised (a million events in seconds) and deterministic under the seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from recsys.config import ComponentConfig
from recsys.monitoring.inputs import CONTEXT_PREFIX, LATENCY_PREFIX

DriftKind = Literal[
    "popularity", "context", "rating", "new_items", "slow_ranker", "score", "fallback",
    "variant", "quality",
]  # fmt: skip
DRIFT_KINDS: tuple[str, ...] = (
    "popularity", "context", "rating", "new_items", "slow_ranker", "score", "fallback",
    "variant", "quality",
)  # fmt: skip
# where each kind must show up: check -> the columns / stages / metrics that name it
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "popularity": {"data": ("item", "item_popularity")},
    "context": {"data": ("device",), "context": ("device",)},
    "rating": {"data": ("value",)},
    "new_items": {"data": ("item", "item_popularity")},
    "slow_ranker": {"latency": ("ranking",)},
    "score": {"prediction": ("score",)},
    "fallback": {"prediction": ("fallback", "source")},
    "variant": {"prediction": ("variant",)},
    "quality": {"quality": ("ndcg", "recall")},
}

DEVICES = ("mobile", "desktop", "tablet")
DEVICE_P = (0.6, 0.3, 0.1)
REFERRERS = ("home", "search", "email", "social")
REFERRER_P = (0.45, 0.35, 0.12, 0.08)
GEOS = ("FR", "DE", "GB", "ES", "IT")
GEO_P = (0.3, 0.25, 0.2, 0.15, 0.1)
RATING_P = (0.06, 0.11, 0.27, 0.34, 0.22)  # MovieLens-like, ratings 1..5
STAGES = ("profile", "retrieval", "ranking", "decision")
STAGE_MEDIAN_MS = {"profile": 0.2, "retrieval": 0.6, "ranking": 1.5, "decision": 0.4}
JAN_1_2026 = 1767225600.0
_CHUNK = 4096


class SyntheticLogConfig(ComponentConfig):
    """Shape of a synthetic world and of each window drawn from it."""

    n_events: int = Field(20_000, ge=10, le=50_000_000, description="Background events/window.")
    n_users: int = Field(2000, ge=2, le=10_000_000)
    n_items: int = Field(1000, ge=20, le=10_000_000)
    popularity_exponent: float = Field(1.0, ge=0.0, le=3.0)
    decisions_per_event: float = Field(0.25, ge=0.0, le=10.0)
    slate_size: int = Field(10, ge=1, le=100)
    click_rate: float = Field(0.3, ge=0.0, le=1.0, description="Click chance at position 1.")
    consent_rate: float = Field(0.95, ge=0.0, le=1.0)
    n_new_items: int = Field(200, ge=1, le=1_000_000, description="Items unseen in reference.")
    start: float = Field(JAN_1_2026, ge=0.0, description="Reference window start (Unix s).")
    span_days: float = Field(7.0, gt=0.0, le=3650.0)
    seed: int = Field(0, ge=0, description="Seed of the world (users, items, popularity).")


class Injection(ComponentConfig):
    """One drift injected into the current window (see the module table)."""

    kind: DriftKind
    strength: float = Field(ge=0.0, le=10.0)


@dataclass
class SyntheticLog:
    """One window of a synthetic world.

    Attributes:
        events: Events (schema columns + ``device``, ``referrer``, ``geo``), time-ordered.
        decisions: Decisions in the normal form of :func:`recsys.monitoring.inputs.decisions_frame`.
        start: Window start (Unix seconds).
        end: Window end (exclusive).
    """

    events: pd.DataFrame
    decisions: pd.DataFrame
    start: float
    end: float


class SyntheticWorld:
    """Users, items and an engine; draws windows of events and decisions from them.

    Args:
        config: The world's shape; ``config.seed`` fixes users, items and popularity.
    """

    def __init__(self, config: SyntheticLogConfig | None = None) -> None:
        self.config = cfg = config or SyntheticLogConfig()
        rng = np.random.default_rng([cfg.seed, 0])
        ranks = rng.permutation(cfg.n_items) + 1.0
        pop = ranks ** (-cfg.popularity_exponent)
        self.popularity = pop / pop.sum()
        self.shuffled_popularity = self.popularity[rng.permutation(cfg.n_items)]
        new_ranks = np.arange(1, cfg.n_new_items + 1, dtype=np.float64)
        new_pop = new_ranks ** (-cfg.popularity_exponent)
        self.new_popularity = new_pop / new_pop.sum()
        activity = rng.lognormal(0.0, 1.0, size=cfg.n_users)
        self.user_weights = activity / activity.sum()
        self.user_device = rng.choice(len(DEVICES), size=cfg.n_users, p=DEVICE_P)
        self.user_geo = rng.choice(len(GEOS), size=cfg.n_users, p=GEO_P)
        self.user_mmr = rng.random(cfg.n_users) < 0.5
        self.user_ids = np.array([f"u{u}" for u in range(cfg.n_users)], dtype=object)
        self.item_ids = np.array(
            [f"i{i}" for i in range(cfg.n_items)] + [f"new{i}" for i in range(cfg.n_new_items)],
            dtype=object,
        )
        self.top_items = np.argsort(-self.popularity)[: max(cfg.slate_size * 5, 50)]

    # ------------------------------------------------------------------ windows
    def window(
        self,
        index: int = 0,
        seed: int = 0,
        injection: Injection | Sequence[Injection] | None = None,
    ) -> SyntheticLog:
        """Draw window ``index`` (``[start + index·span, start + (index+1)·span)``).

        Args:
            index: Which window (0 = the reference in :func:`synthetic_pair`).
            seed: Seed of this window's draws.
            injection: Drift(s) applied to this window (at most one per kind).
        """
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 1, index, seed])
        span = cfg.span_days * 86400.0
        start = cfg.start + index * span
        injections = [injection] if isinstance(injection, Injection) else list(injection or [])
        drift = {i.kind: i.strength for i in injections}
        if len(drift) != len(injections):
            raise ValueError("injection: at most one per kind")
        background = self._events(rng, cfg.n_events, start, span, drift)
        decisions, clicks = self._decisions(rng, start, span, drift)
        events = pd.concat([background, clicks], ignore_index=True)
        events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
        events = _categorical(events, ("user_id", "item_id", "event_type", "session_id"))
        return SyntheticLog(events, decisions, start, start + span)

    def _share(
        self, rng: np.random.Generator, n: int, drift: Mapping[str, float], kind: str
    ) -> np.ndarray:
        """Rows affected by ``kind`` (a ``drift[kind]`` share of them; none if not injected)."""
        s = drift.get(kind, 0.0)
        if s <= 0:
            return np.zeros(n, dtype=bool)
        return rng.random(n) < min(s, 1.0)

    def _events(
        self,
        rng: np.random.Generator,
        n: int,
        start: float,
        span: float,
        drift: Mapping[str, float],
    ) -> pd.DataFrame:
        cfg = self.config
        users = rng.choice(cfg.n_users, size=n, p=self.user_weights)
        items = rng.choice(cfg.n_items, size=n, p=self.popularity)
        moved = self._share(rng, n, drift, "popularity")
        items[moved] = rng.choice(cfg.n_items, size=int(moved.sum()), p=self.shuffled_popularity)
        fresh = self._share(rng, n, drift, "new_items")
        items[fresh] = cfg.n_items + rng.choice(
            cfg.n_new_items, size=int(fresh.sum()), p=self.new_popularity
        )
        rating = rng.choice(5, size=n, p=RATING_P) + 1
        lower = self._share(rng, n, drift, "rating")
        rating[lower] = np.maximum(rating[lower] - 1, 1)
        timestamps = start + rng.random(n) * span
        device = self.user_device[users].copy()
        device[self._share(rng, n, drift, "context")] = DEVICES.index("tablet")
        return pd.DataFrame(
            {
                "user_id": self.user_ids[users],
                "item_id": self.item_ids[items],
                "timestamp": timestamps,
                "event_type": "rating",
                "value": rating.astype(np.float32),
                "session_id": _sessions(self.user_ids[users], timestamps),
                "device": pd.Categorical.from_codes(device, DEVICES),
                "referrer": pd.Categorical.from_codes(
                    rng.choice(len(REFERRERS), size=n, p=REFERRER_P), REFERRERS
                ),
                "geo": pd.Categorical.from_codes(self.user_geo[users], GEOS),
            }
        )

    def _slates(self, rng: np.random.Generator, m: int, fallback: np.ndarray) -> np.ndarray:
        """(m, k) item indices without repeats: popularity-weighted (Gumbel top-k)."""
        cfg = self.config
        k = cfg.slate_size
        pool = np.argsort(-self.popularity)[: min(cfg.n_items, 1000)]
        logp = np.log(self.popularity[pool])
        out = np.empty((m, k), dtype=np.int64)
        for lo in range(0, m, _CHUNK):
            hi = min(m, lo + _CHUNK)
            keys = logp + rng.gumbel(size=(hi - lo, len(pool)))
            top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
            out[lo:hi] = pool[np.take_along_axis(top, order, axis=1)]
        # fallbacks serve the global top list (with a little shuffling among the top items)
        n_fb = int(fallback.sum())
        if n_fb:
            head = self.top_items
            keys = rng.gumbel(size=(n_fb, len(head))) - np.arange(len(head)) * 0.5
            out[fallback] = head[np.argsort(-keys, axis=1)[:, :k]]
        return out

    def _decisions(
        self, rng: np.random.Generator, start: float, span: float, drift: Mapping[str, float]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        cfg = self.config
        m = round(cfg.n_events * cfg.decisions_per_event)
        k = cfg.slate_size
        users = rng.choice(cfg.n_users, size=m, p=self.user_weights)
        ts = np.sort(start + rng.random(m) * span)
        consent = rng.random(m) < cfg.consent_rate
        draw = rng.random(m)
        source = np.full(m, "ranked", dtype=object)
        fallback = np.full(m, None, dtype=object)
        filled = np.zeros(m, dtype=np.int64)
        cold = draw < 0.05
        source[cold] = "cold_start:context:device"
        fallback[cold] = "cold start: no history"
        failed = (draw >= 0.05) & (draw < 0.08)
        failed |= self._share(rng, m, drift, "fallback") & ~cold
        source[failed] = "fallback:global"
        fallback[failed] = "retrieval failed: timeout"
        short = (draw >= 0.08) & (draw < 0.10) & ~failed
        fallback[short] = "only 3 personalised items"
        filled[short] = k - 3
        source[~consent] = "no_consent:global"
        fallback[~consent] = None
        popular_list = ~consent | cold | failed
        slates = self._slates(rng, m, popular_list)

        ranked_scores = -np.sort(-(2.0 + 0.5 * rng.standard_normal((m, k))), axis=1)
        ranked_scores -= 0.5 * drift.get("score", 0.0)
        pop_scores = np.log1p(self.popularity[slates] * 1e4)
        scores = np.where(popular_list[:, None], pop_scores, ranked_scores)

        mmr = self.user_mmr[users] | self._share(rng, m, drift, "variant")
        variant = np.where(mmr, "mmr", "control").astype(object)

        timings = {
            stage: rng.lognormal(np.log(STAGE_MEDIAN_MS[stage]), 0.3, size=m) for stage in STAGES
        }
        timings["ranking"] *= 1.0 + drift.get("slow_ranker", 0.0)
        timings["ranking"][popular_list] = np.nan  # no ranker on popularity lists
        timings["retrieval"][~consent | cold] = np.nan
        total = np.nansum(np.stack(list(timings.values())), axis=0)
        total += rng.lognormal(np.log(0.1), 0.3, size=m)

        device = self.user_device[users].copy()
        device[self._share(rng, m, drift, "context")] = DEVICES.index("tablet")
        referrer = rng.choice(len(REFERRERS), size=m, p=REFERRER_P)
        user_ids = np.where(consent, self.user_ids[users], None)
        decision_ids = [f"{int(t * 1000):x}{i:06x}" for i, t in enumerate(ts)]
        decisions = pd.DataFrame(
            {
                "decision_id": decision_ids,
                "timestamp": ts,
                "user_id": user_ids,
                "session_id": np.where(
                    consent, _sessions(self.user_ids[users], ts).astype(object), None
                ),
                "consent": consent,
                "experiment": "diversity",
                "variant": variant,
                "bucket": rng.random(m),
                "source": source,
                "fallback": fallback,
                "filled": filled,
                "items": self.item_ids[slates].tolist(),
                "scores": scores.astype(float).tolist(),
                "propensities": [[1.0] * k] * m,
                "reasons": [[] for _ in range(m)],
            }
        )
        for stage in STAGES:
            decisions[LATENCY_PREFIX + stage] = timings[stage]
        decisions[LATENCY_PREFIX + "total"] = total
        decisions[CONTEXT_PREFIX + "device"] = pd.Categorical.from_codes(device, DEVICES)
        decisions[CONTEXT_PREFIX + "referrer"] = pd.Categorical.from_codes(referrer, REFERRERS)
        decisions[CONTEXT_PREFIX + "geo"] = pd.Categorical.from_codes(self.user_geo[users], GEOS)
        decisions = _categorical(
            decisions, ("user_id", "session_id", "experiment", "variant", "source", "fallback")
        )

        # outcomes: consenting users click shown items, less often further down the slate
        rate = cfg.click_rate * (1.0 - min(drift.get("quality", 0.0), 1.0))
        click_p = rate / np.arange(1, k + 1)
        clicked = (rng.random((m, k)) < click_p) & consent[:, None]
        rows, cols = np.nonzero(clicked)
        click_ts = ts[rows] + rng.exponential(600.0, size=len(rows))
        clicks = pd.DataFrame(
            {
                "user_id": self.user_ids[users[rows]],
                "item_id": self.item_ids[slates[rows, cols]],
                "timestamp": click_ts,
                "event_type": "click",
                "value": np.ones(len(rows), dtype=np.float32),
                "session_id": _sessions(self.user_ids[users[rows]], click_ts),
                "device": pd.Categorical.from_codes(device[rows], DEVICES),
                "referrer": pd.Categorical.from_codes(referrer[rows], REFERRERS),
                "geo": pd.Categorical.from_codes(self.user_geo[users[rows]], GEOS),
            }
        )
        # a click after the window's end belongs to the next window
        clicks = clicks[clicks["timestamp"] < start + span]
        return decisions, clicks


def synthetic_pair(
    config: SyntheticLogConfig | None = None,
    injection: Injection | Sequence[Injection] | None = None,
    seed: int = 0,
) -> tuple[SyntheticLog, SyntheticLog]:
    """A reference window and the next window of one world, the drift injected into the latter.

    Args:
        config: World and window shape; its ``seed`` is replaced by ``seed``.
        injection: What changes in the current window (``None``: the same distribution).
        seed: Seeds both the world and the draws, so each seed is an independent trial.
    """
    cfg = (config or SyntheticLogConfig()).model_copy(update={"seed": seed})
    world = SyntheticWorld(cfg)
    return world.window(0, seed), world.window(1, seed, injection)


def _sessions(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    bucket = (timestamps // 1800 * 1800).astype(np.int64).astype(str)
    return np.char.add(np.char.add(users.astype(str), "@"), bucket).astype(object)


def _categorical(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    for column in columns:
        frame[column] = frame[column].astype("category")
    return frame


# --------------------------------------------------------------------------- writing logs


def decision_records(decisions: pd.DataFrame) -> list[dict[str, Any]]:
    """Decisions as log records (the JSON-lines format: ``timings_ms``, ``context`` dicts)."""
    latency = [c for c in decisions.columns if c.startswith(LATENCY_PREFIX)]
    context = [c for c in decisions.columns if c.startswith(CONTEXT_PREFIX)]
    plain = [c for c in decisions.columns if c not in latency and c not in context]
    records = []
    columns = {c: decisions[c].tolist() for c in decisions.columns}
    for i in range(len(decisions)):
        record: dict[str, Any] = {}
        for c in plain:
            value = columns[c][i]
            record[c] = None if _is_nan(value) else _plain(value)
        record["timings_ms"] = {
            c[len(LATENCY_PREFIX) :]: float(columns[c][i])
            for c in latency
            if not _is_nan(columns[c][i])
        }
        record["context"] = {
            c[len(CONTEXT_PREFIX) :]: columns[c][i] for c in context if not _is_nan(columns[c][i])
        }
        records.append(record)
    return records


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_log(log_dir: str | Path, log: SyntheticLog, segment_max_events: int = 100_000) -> Path:
    """Append a window to ``log_dir/events/`` (EventLog) and ``log_dir/decisions/`` (JSON lines).

    Returns:
        ``log_dir``.
    """
    from recsys.features.events import EventLog, events_from_frame

    root = Path(log_dir)
    with EventLog(root / "events", segment_max_events=segment_max_events, fsync=False) as elog:
        frame = log.events.astype(
            {c: object for c in log.events.columns if log.events[c].dtype == "category"}
        )
        for lo in range(0, len(frame), 100_000):
            elog.write(events_from_frame(frame.iloc[lo : lo + 100_000]))
    folder = root / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("*.jsonl"))) + 1
    with (folder / f"decisions-{number:06d}.jsonl").open("w") as handle:
        for record in decision_records(log.decisions):
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return root
