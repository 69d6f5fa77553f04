"""Per-row tables given to Evidently, and exact aggregates computed over every row.

Each check compares one *table*: reference rows against current rows with the same columns,
each column typed numeric or categorical (which picks its drift method). Tables are built
from a seeded sample of at most ``max_rows`` rows per side (the sample size is recorded);
the aggregates that summarise a window (item shares, fallback shares, latency percentiles)
are computed over every row.

Item popularity is compared as a *distribution over item ids*, robust to a long tail: an
event's ``item`` is its id when the item is a *head* item (among the reference's top
``popularity_top_items`` and frequent enough to be expected ``min_category_count`` times in
the smaller window), ``__tail__`` for the other items the reference has seen, and
``__new__`` for items it never saw; ``item_popularity`` is ``log1p`` of the item's reference
count (0 for new items). Reference rows are counted leave-one-out (against the *other*
reference rows), so that a long tail the reference saw once does not look like new items: by
Good–Turing, the share of reference singletons is the share of unseen items a window of the
same distribution brings. A shift of traffic between head and tail, a reshuffle of the head and
an influx of new items all move these two columns, while the sampling noise of ten thousand
rare items does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import distance

from recsys.monitoring.inputs import CONTEXT_PREFIX, LATENCY_PREFIX
from recsys.monitoring.thresholds import DriftConfig

TAIL, NEW, OTHER, MISSING = "__tail__", "__new__", "__other__", "__missing__"
_EVENT_BASE = ("user_id", "item_id", "timestamp", "event_type", "value", "session_id")
_ID_LIKE = re.compile(r"(^|_)(id|ids|uuid)$")
_NUMERIC_MIN_UNIQUE = 20


@dataclass
class Table:
    """Reference and current rows of one check, ready for an Evidently report.

    Attributes:
        name: The check (``data``, ``context``, ``prediction``, ``latency``).
        reference: Reference rows (sampled).
        current: Current rows (sampled).
        numeric: Numeric columns.
        categorical: Categorical columns.
        rows: Rows before sampling, per side.
        notes: Columns left out and why.
    """

    name: str
    reference: pd.DataFrame
    current: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    rows: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """All compared columns."""
        return [*self.numeric, *self.categorical]

    @property
    def sampled(self) -> dict[str, int]:
        """Rows given to Evidently, per side."""
        return {"reference": len(self.reference), "current": len(self.current)}


# --------------------------------------------------------------------------- popularity


@dataclass
class Popularity:
    """The reference's item counts: the yardstick both windows are measured with.

    Attributes:
        counts: Reference count per item id, most frequent first.
        source: ``events`` or ``recommendations`` (what was counted).
    """

    counts: pd.Series
    source: str

    @classmethod
    def of(cls, item_ids: pd.Series, source: str) -> Popularity:
        """Count ``item_ids`` (one entry per event or per recommended slot)."""
        return cls(item_ids.astype(str).value_counts(), source)

    def head(self, top: int, n_rows: int, min_count: int) -> frozenset[str]:
        """The items compared one by one.

        At most ``top`` items, each expected ``min_count`` times in ``n_rows`` rows (the
        smaller window's sample).
        """
        share = self.counts / max(1, int(self.counts.sum()))
        keep = share.index[: max(0, top)][(share.iloc[: max(0, top)] * n_rows >= min_count)]
        return frozenset(keep)

    def _counts_of(self, item_ids: pd.Series, own: bool) -> pd.Series:
        counts = item_ids.astype(str).map(self.counts).fillna(0.0).astype(np.float64)
        # leave-one-out: a reference row is measured against the *other* reference rows, as a
        # current row is measured against all of them (Good-Turing: a reference singleton is
        # what a "new" item looks like in a window of the same distribution)
        return counts - 1.0 if own else counts

    def bucket(self, item_ids: pd.Series, head: frozenset[str], own: bool = False) -> pd.Series:
        """Item id for head items, ``__tail__`` for other seen items, ``__new__`` for unseen.

        Args:
            item_ids: Item ids of one window's rows.
            head: Items kept by id (:meth:`head`).
            own: The rows are the counted reference rows (leave-one-out counts).
        """
        ids = item_ids.astype(str)
        seen = self._counts_of(item_ids, own).to_numpy() > 0
        out = np.where(ids.isin(head).to_numpy() & seen, ids.to_numpy(), np.where(seen, TAIL, NEW))
        return pd.Series(out, index=item_ids.index, dtype=object)

    def log_count(self, item_ids: pd.Series, own: bool = False) -> pd.Series:
        """``log1p`` of each item's reference count (0 for unseen; leave-one-out if ``own``)."""
        return np.log1p(self._counts_of(item_ids, own))


# --------------------------------------------------------------------------- helpers


def sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, uniformly without replacement (seeded), in their original order."""
    if len(frame) <= n:
        return frame
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(frame), size=n, replace=False))
    return frame.iloc[keep]


def _is_numeric(ref: pd.Series, cur: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(ref) or isinstance(ref.dtype, pd.CategoricalDtype):
        return False
    if not (pd.api.types.is_numeric_dtype(ref) and pd.api.types.is_numeric_dtype(cur)):
        return False
    return int(pd.concat([ref, cur]).nunique()) > _NUMERIC_MIN_UNIQUE or _all_float(ref)


def _all_float(series: pd.Series) -> bool:
    return pd.api.types.is_float_dtype(series) and not (series.dropna() % 1 == 0).all()


def pool_categories(
    ref: pd.Series, cur: pd.Series, max_categories: int, min_count: int = 1
) -> tuple[pd.Series, pd.Series]:
    """Strings with missing values as ``__missing__`` and rare categories as ``__other__``.

    A category stands alone when it is among the reference's ``max_categories - 1`` most
    frequent and the smaller sample is expected to hold it at least ``min_count`` times (by
    its reference share); the others share ``__other__``.
    """
    ref_s = _as_str(ref)
    cur_s = _as_str(cur)
    counts = ref_s.value_counts()
    n = min(len(ref_s), len(cur_s))
    share = counts / max(1, len(ref_s))
    keep = set(share.index[: max_categories - 1][share.iloc[: max_categories - 1] * n >= min_count])
    if len(keep) < len(counts) or not set(cur_s.unique()) <= keep:
        ref_s = ref_s.where(ref_s.isin(keep), OTHER)
        cur_s = cur_s.where(cur_s.isin(keep), OTHER)
    return ref_s, cur_s


def _as_str(series: pd.Series) -> pd.Series:
    values = series.astype(object)
    return values.where(values.notna(), MISSING).astype(str)


def _finish(
    name: str,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    columns: list[str],
    rows: dict[str, int],
    config: DriftConfig,
    notes: list[str],
    numeric_hint: set[str] | None = None,
    raw_categories: frozenset[str] = frozenset(),
) -> Table:
    """Type, pool and filter the candidate columns of a table.

    ``raw_categories`` are already pooled (item buckets) and are not pooled again.
    """
    numeric: list[str] = []
    categorical: list[str] = []
    out_ref: dict[str, pd.Series] = {}
    out_cur: dict[str, pd.Series] = {}
    for column in columns:
        r = ref[column] if column in ref else pd.Series([np.nan] * len(ref), dtype=float)
        c = cur[column] if column in cur else pd.Series([np.nan] * len(cur), dtype=float)
        if r.isna().all() and c.isna().all():
            notes.append(f"{column}: empty in both windows")
            continue
        is_num = (numeric_hint is not None and column in numeric_hint) or (
            numeric_hint is None and _is_numeric(r, c)
        )
        if is_num:
            r = pd.to_numeric(r, errors="coerce").astype(np.float64)
            c = pd.to_numeric(c, errors="coerce").astype(np.float64)
            values = pd.concat([r, c]).dropna()
            if values.nunique() <= 1:
                notes.append(f"{column}: constant ({values.iloc[0] if len(values) else 'n/a'})")
                continue
            numeric.append(column)
        else:
            if column not in raw_categories:
                r, c = pool_categories(r, c, config.max_categories, config.min_category_count)
            else:
                r, c = _as_str(r), _as_str(c)
            if pd.concat([r, c]).nunique() <= 1:
                notes.append(f"{column}: one category ({r.iloc[0] if len(r) else c.iloc[0]})")
                continue
            categorical.append(column)
        out_ref[column] = r.reset_index(drop=True)
        out_cur[column] = c.reset_index(drop=True)
    return Table(
        name,
        pd.DataFrame(out_ref, index=pd.RangeIndex(len(ref))),
        pd.DataFrame(out_cur, index=pd.RangeIndex(len(cur))),
        numeric,
        categorical,
        rows,
        notes,
    )


def _hour(timestamps: pd.Series) -> pd.Series:
    hours = (timestamps.to_numpy(dtype=np.float64) // 3600 % 24).astype(np.int64)
    return pd.Series([f"{h:02d}" for h in hours], index=timestamps.index, dtype=object)


# --------------------------------------------------------------------------- events


def context_columns(frame: pd.DataFrame, prefix: str = "") -> list[str]:
    """Request-context columns of a frame: not schema, not id-like."""
    out = []
    for column in frame.columns:
        if not isinstance(column, str) or not column.startswith(prefix):
            continue
        name = column[len(prefix) :]
        if prefix == "" and (column in _EVENT_BASE or column in ("user", "item")):
            continue
        if prefix == "" and column.startswith((LATENCY_PREFIX, CONTEXT_PREFIX)):
            continue
        if _ID_LIKE.search(name):
            continue
        out.append(column)
    return out


def events_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    popularity: Popularity,
    items: pd.DataFrame | None = None,
) -> Table:
    """Data drift of events: rating level, event types, item popularity, hour, context.

    Args:
        reference: Reference events (schema columns + context columns).
        current: Current events.
        config: Thresholds and sizes.
        popularity: The reference's item counts.
        items: Optional item attributes by item id; numeric ones are compared as ``item_<name>``.
    """
    rows = {"reference": len(reference), "current": len(current)}
    ref = sample(reference, config.max_rows, config.seed)
    cur = sample(current, config.max_rows, config.seed + 1)
    context = sorted(set(context_columns(ref)) | set(context_columns(cur)))
    head = popularity.head(
        config.popularity_top_items, min(len(ref), len(cur)), config.min_category_count
    )
    frames = []
    for own, frame in ((True, ref), (False, cur)):
        derived: dict[str, Any] = {
            "value": frame["value"].astype(np.float64) if "value" in frame else np.nan,
            "event_type": frame.get("event_type", None),
            "item": popularity.bucket(frame["item_id"], head, own),
            "item_popularity": popularity.log_count(frame["item_id"], own),
        }
        if config.time_features:
            derived["hour"] = _hour(frame["timestamp"])
        for column in context:
            derived[column] = frame.get(column, None)
        if items is not None:
            for attr in _numeric_item_columns(items):
                derived[f"item_{attr}"] = (
                    frame["item_id"].astype(str).map(items[attr]).astype(np.float64)
                )
        frames.append(pd.DataFrame(derived, index=frame.index))
    columns = list(frames[0].columns)
    notes: list[str] = []
    numeric = {"value", "item_popularity"} | {c for c in columns if c.startswith("item_")}
    numeric.discard("item")
    for column in context:
        if _is_numeric(frames[0][column], frames[1][column]):
            numeric.add(column)
    notes.append(f"item: {len(head)} head items compared one by one, the rest pooled")
    table = _finish(
        "data", frames[0], frames[1], columns, rows, config, notes, numeric, frozenset({"item"})
    )
    return table


def _numeric_item_columns(items: pd.DataFrame) -> list[str]:
    return [
        c
        for c in items.columns
        if pd.api.types.is_numeric_dtype(items[c]) and not pd.api.types.is_bool_dtype(items[c])
    ]


def event_stats(reference: pd.DataFrame, current: pd.DataFrame, top: int = 100) -> dict[str, Any]:
    """Exact aggregates of two event windows (every row, no sampling).

    ``head_share`` is the share of events on the reference's ``top`` items.
    """
    ref_counts = reference["item_id"].astype(str).value_counts()
    cur_counts = current["item_id"].astype(str).value_counts()
    union = ref_counts.index.union(cur_counts.index)
    p = ref_counts.reindex(union, fill_value=0).to_numpy(dtype=np.float64)
    q = cur_counts.reindex(union, fill_value=0).to_numpy(dtype=np.float64)
    share_ref, share_cur = p / p.sum(), q / q.sum()
    change = pd.Series(share_cur - share_ref, index=union)
    movers = change.reindex(change.abs().sort_values(ascending=False).index[:10])
    new = ~current["item_id"].astype(str).isin(ref_counts.index)
    head = set(ref_counts.index[:top])
    out: dict[str, Any] = {
        "events": {"reference": len(reference), "current": len(current)},
        "users": {
            "reference": int(reference["user_id"].nunique()),
            "current": int(current["user_id"].nunique()),
        },
        "items": {"reference": len(ref_counts), "current": len(cur_counts)},
        "new_item_share": float(new.mean()),
        "item_js_distance_all_items": float(distance.jensenshannon(share_ref, share_cur)),
        "head_share": {
            "top": top,
            "reference": float(reference["item_id"].astype(str).isin(head).mean()),
            "current": float(current["item_id"].astype(str).isin(head).mean()),
        },
        "top_item_share_changes": {str(k): float(v) for k, v in movers.items()},
    }
    if "value" in reference and "value" in current:
        out["mean_value"] = {
            "reference": float(reference["value"].astype(np.float64).mean()),
            "current": float(current["value"].astype(np.float64).mean()),
        }
    return out


# --------------------------------------------------------------------------- decisions


def source_kind(source: Any) -> str:
    """``cold_start:context:age_band`` → ``cold_start``; missing → ``__missing__``."""
    if source is None or (isinstance(source, float) and np.isnan(source)):
        return MISSING
    return str(source).split(":", 1)[0]


def fallback_reason(reason: Any) -> str:
    """A fallback reason without its details.

    ``retrieval failed: timeout`` → ``retrieval failed``, ``only 3 personalised items`` →
    ``only N personalised items``, none → ``none``.
    """
    if reason is None or (isinstance(reason, float) and np.isnan(reason)) or reason == "":
        return "none"
    head = str(reason).split(":", 1)[0].strip()
    return re.sub(r"\d+", "N", head)


def context_table(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig) -> Table:
    """Request-context drift of decisions: ``ctx_*`` keys, consent and the hour of the request."""
    rows = {"reference": len(reference), "current": len(current)}
    ref = sample(reference, config.max_rows, config.seed)
    cur = sample(current, config.max_rows, config.seed + 1)
    keys = sorted(
        set(context_columns(ref, CONTEXT_PREFIX)) | set(context_columns(cur, CONTEXT_PREFIX))
    )
    frames = []
    for frame in (ref, cur):
        derived: dict[str, Any] = {}
        for column in keys:
            derived[column[len(CONTEXT_PREFIX) :]] = frame.get(column, None)
        if "consent" in frame:
            derived["consent"] = frame["consent"].astype(object).astype(str)
        if config.time_features:
            derived["hour"] = _hour(frame["timestamp"])
        frames.append(pd.DataFrame(derived, index=frame.index))
    columns = list(frames[0].columns)
    return _finish("context", frames[0], frames[1], columns, rows, config, [])


def prediction_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    popularity: Popularity,
    recommended: Popularity,
) -> Table:
    """Prediction drift, one row per shown slot.

    Columns: the score, the recommended item (pooled by the reference's recommendation
    counts), its popularity, and the decision's variant, source and fallback reason
    (repeated per slot).
    """
    rows = {"reference": len(reference), "current": len(current)}
    frames = []
    for i, frame in enumerate((reference, current)):
        slate = max(1, int(frame["items"].map(len).mean()) if len(frame) else 1)
        frame = sample(frame, max(1, config.max_rows // slate), config.seed + i)
        lengths = frame["items"].map(len).to_numpy()
        exploded = pd.DataFrame(
            {
                "position": np.concatenate([np.arange(n) for n in lengths])
                if len(lengths)
                else np.zeros(0),
                "item_id": [x for items in frame["items"] for x in items],
            }
        )
        repeat = np.repeat(np.arange(len(frame)), lengths)
        if "scores" in frame:
            scores = [
                s[j] if j < len(s) else np.nan
                for s, n in zip(frame["scores"], lengths, strict=True)
                for j in range(n)
            ]
            exploded["score"] = np.asarray(scores, dtype=np.float64)
        # counted rows measure themselves leave-one-out (see Popularity.bucket)
        own = i == 0 and popularity.source == "recommendations"
        exploded["rec_item_popularity"] = popularity.log_count(exploded["item_id"], own)
        for column, fn in (
            ("variant", lambda v: "none" if v is None or v != v else str(v)),
            ("source", source_kind),
            ("fallback", fallback_reason),
        ):
            if column in frame:
                values = np.asarray([fn(v) for v in frame[column].astype(object)], dtype=object)
                exploded[column] = values[repeat]
        if "filled" in frame:
            exploded["filled"] = frame["filled"].to_numpy(dtype=np.float64)[repeat]
        frames.append(exploded.drop(columns=["position"]))
    head = recommended.head(
        config.popularity_top_items, min(map(len, frames)), config.min_category_count
    )
    for i, frame in enumerate(frames):
        frame["rec_item"] = recommended.bucket(frame.pop("item_id"), head, own=i == 0)
    columns = list(dict.fromkeys([*frames[0].columns, *frames[1].columns]))
    numeric = {"score", "rec_item_popularity", "filled"}
    notes = [f"rec_item: {len(head)} head items compared one by one, the rest pooled"]
    return _finish(
        "prediction",
        frames[0],
        frames[1],
        columns,
        rows,
        config,
        notes,
        numeric,
        frozenset({"rec_item"}),
    )


def decision_stats(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    """Exact shares of two decision windows: fallback reasons, sources, variants."""

    def shares(frame: pd.DataFrame, column: str, fn: Any) -> dict[str, float]:
        if column not in frame:
            return {}
        values = pd.Series([fn(v) for v in frame[column].astype(object)])
        return {str(k): float(v) for k, v in values.value_counts(normalize=True).items()}

    out: dict[str, Any] = {"decisions": {"reference": len(reference), "current": len(current)}}
    for column, fn in (
        ("fallback", fallback_reason),
        ("source", source_kind),
        ("variant", lambda v: "none" if v is None or v != v else str(v)),
    ):
        out[f"{column}_share"] = {
            "reference": shares(reference, column, fn),
            "current": shares(current, column, fn),
        }
    if "scores" in reference and "scores" in current:
        out["mean_score"] = {
            "reference": _mean_of_lists(reference["scores"]),
            "current": _mean_of_lists(current["scores"]),
        }
    return out


def _mean_of_lists(column: pd.Series) -> float | None:
    values = [x for xs in column for x in xs]
    return float(np.mean(values)) if values else None


def recommended_popularity(decisions: pd.DataFrame) -> Popularity:
    """Counts of recommended items (one per shown slot) of a decision window."""
    ids = pd.Series([x for items in decisions["items"] for x in items], dtype=object)
    return Popularity.of(ids, "recommendations")


def latency_stages(frame: pd.DataFrame) -> list[str]:
    """Stages timed in a decision frame (``latency_<stage>`` columns with any value)."""
    return [
        c[len(LATENCY_PREFIX) :]
        for c in frame.columns
        if isinstance(c, str) and c.startswith(LATENCY_PREFIX) and frame[c].notna().any()
    ]
