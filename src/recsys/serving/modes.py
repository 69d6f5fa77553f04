"""Timing architectures beyond real time: batch lists precomputed on a schedule.

* **batch** — :func:`precompute` runs the engine's retrieval and ranking for every known
  user as of a moment (a nightly job), :class:`PrecomputedLists` serves those lists as the
  engine's retriever: at request time the engine only looks a list up (rules and consent
  still apply in the decision stage), and users without a list get the fallback.
* **session** and **real-time** are modes of the Engine itself (``EngineConfig.mode``);
* **edge** is a self-contained bundle scored next to the user (:mod:`recsys.edge`).

``recsys recommend --dataset NAME --out recs.parquet`` runs the batch job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.dataset import IdIndex
from recsys.types import ItemList, Query


class PrecomputedLists:
    """A retriever that looks up precomputed ranked lists by external user id.

    Args:
        lists: ``user_id -> ItemList`` (dense item indices, best first).
        as_of: When the lists were computed (Unix seconds): their staleness at request time.
    """

    def __init__(self, lists: dict[str, ItemList], as_of: float | None = None) -> None:
        self.lists = lists
        self.as_of = as_of

    def __call__(self, query: Query, n: int, exclude_seen: bool = True) -> ItemList:
        """The user's list minus the history and exclusions; empty for unknown users."""
        found = self.lists.get(query.user_id or "")
        if found is None:
            return ItemList.empty()
        drop = np.concatenate([query.exclude, query.history]) if exclude_seen else query.exclude
        keep = ~np.isin(found.items, drop) if len(drop) else np.ones(len(found), dtype=bool)
        return ItemList(found.items[keep][:n], found.scores[keep][:n])

    @property
    def nbytes(self) -> int:
        """Bytes the lists hold in memory (items + scores)."""
        return sum(lst.items.nbytes + lst.scores.nbytes for lst in self.lists.values())

    def to_frame(self, items: IdIndex) -> pd.DataFrame:
        """One row per (user, rank): ``user_id``, ``rank``, ``item_id``, ``score``."""
        rows: dict[str, list[Any]] = {"user_id": [], "rank": [], "item_id": [], "score": []}
        for user_id, lst in self.lists.items():
            rows["user_id"] += [user_id] * len(lst)
            rows["rank"] += list(range(len(lst)))
            rows["item_id"] += items.to_ids(lst.items)
            rows["score"] += lst.scores.tolist()
        frame = pd.DataFrame(rows)
        frame.attrs["as_of"] = self.as_of
        return frame

    def write(self, path: str | Path, items: IdIndex) -> Path:
        """Save as Parquet (``as_of`` in the file's metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.to_frame(items)
        frame["as_of"] = self.as_of
        frame.to_parquet(path)
        return path

    @classmethod
    def read(cls, path: str | Path, items: IdIndex) -> PrecomputedLists:
        """Load lists written by :meth:`write` (unknown items are dropped)."""
        frame = pd.read_parquet(path).sort_values(["user_id", "rank"], kind="stable")
        as_of = float(frame["as_of"].iloc[0]) if len(frame) and "as_of" in frame else None
        lists = {}
        for user_id, group in frame.groupby("user_id", sort=False):
            positions = [items.index(i) for i in group["item_id"]]
            known = [j for j, p in enumerate(positions) if p is not None]
            lists[str(user_id)] = ItemList(
                np.asarray([positions[j] for j in known], dtype=np.int64),
                group["score"].to_numpy(np.float32)[known],
            )
        return cls(lists, as_of)


class RedisPrecomputedLists:
    """Batch lists kept in the online store's Redis (``<prefix>recs:<user_id>``, JSON).

    The serving side of ``recsys recommend --redis-url``: every worker reads the nightly lists
    from the shared store, one GET per request; unknown users get an empty list (the engine
    then serves the fallback).

    Args:
        url: ``redis://host:port/db``.
        items: The served catalogue (lists hold external ids).
        prefix: Key prefix shared with the writer.
    """

    def __init__(self, url: str, items: IdIndex, prefix: str = "recsys:") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.25)
        self.items = items
        self.prefix = prefix

    def __call__(self, query: Query, n: int, exclude_seen: bool = True) -> ItemList:
        """The user's stored list minus the history and exclusions."""
        raw = self.client.get(f"{self.prefix}recs:{query.user_id}") if query.user_id else None
        if raw is None:
            return ItemList.empty()
        stored = json.loads(raw)
        found = PrecomputedLists(
            {"u": ItemList(self.items.indices(stored["items"]), np.asarray(stored["scores"]))}
        )
        return found(
            Query(user_id="u", history=query.history, exclude=query.exclude), n, exclude_seen
        )

    @staticmethod
    def load(lists: PrecomputedLists, url: str, items: IdIndex, prefix: str = "recsys:") -> int:
        """Write every list to Redis (one pipelined round trip); how many were written."""
        import redis

        client = redis.Redis.from_url(url)
        pipe = client.pipeline(transaction=False)
        for user_id, lst in lists.lists.items():
            body = {
                "items": items.to_ids(lst.items),
                "scores": lst.scores.tolist(),
                "as_of": lists.as_of,
            }
            pipe.set(f"{prefix}recs:{user_id}", json.dumps(body))
        pipe.execute()
        return len(lists.lists)


def precompute(
    engine: Any, user_ids: Sequence[str], n: int = 100, now: float | None = None
) -> tuple[PrecomputedLists, float]:
    """The batch job: each user's ranked list as of ``now``, through the engine's stages.

    Args:
        engine: An engine whose profile lookup knows the users' events up to ``now``.
        user_ids: Known users to precompute.
        n: List length (the decision stage chooses from it at request time).
        now: The job's time (default: the wall clock).

    Returns:
        The lists, and the CPU seconds the job took.
    """
    now = time.time() if now is None else now
    cpu = time.process_time()
    lists = {}
    for user_id in user_ids:
        ranked = engine.rank(engine.query_for(user_id, now=now))
        if ranked is not None:
            lists[user_id] = ranked.head(n)
    return PrecomputedLists(lists, as_of=now), time.process_time() - cpu


def build_edge_bundle(
    split: Any,
    neighbours: int = 50,
    window: int = 3,
    rules: Any = None,
    path: str | Path | None = None,
) -> Any:
    """The edge bundle of a split's training events (:class:`recsys.edge.EdgeBundle`).

    Item-to-item weights: co-occurrence within ``window`` steps in a user's (or session's)
    time-ordered events, cosine-normalised, each item's ``neighbours`` strongest kept;
    popularity: training counts; exclusions: the rules' static ones (excluded ids and
    attribute matches). Written to ``path`` when given.
    """
    import scipy.sparse as sp

    from recsys.decision import ItemCatalog, RulesConfig
    from recsys.decision.rules import BusinessRules
    from recsys.edge import EdgeBundle

    data = split.dataset
    n = data.n_items
    ordered = split.train.sort_values(["user", "timestamp"], kind="stable")
    items = ordered["item"].to_numpy(np.int64)
    users = ordered["user"].to_numpy(np.int64)
    src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for d in range(1, window + 1):
        same = users[d:] == users[:-d]
        src.append(items[:-d][same])
        dst.append(items[d:][same])
    a, b = np.concatenate(src), np.concatenate(dst)
    co = sp.csr_matrix((np.ones(len(a), np.float32), (a, b)), shape=(n, n))
    co = co + co.T
    co.setdiag(0.0)
    co.eliminate_zeros()
    counts = np.bincount(split.train["item"].to_numpy(np.int64), minlength=n).astype(np.float32)
    norm = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    co = sp.csr_matrix(sp.diags(norm) @ co @ sp.diags(norm))
    width = max(1, neighbours)
    nb = np.zeros((n, width), dtype=np.int32)
    wt = np.zeros((n, width), dtype=np.float32)
    for row in range(n):
        lo, hi = co.indptr[row], co.indptr[row + 1]
        cols, vals = co.indices[lo:hi], co.data[lo:hi]
        if hi - lo > width:
            keep = np.argpartition(-vals, width - 1)[:width]
            cols, vals = cols[keep], vals[keep]
        nb[row, : len(cols)], wt[row, : len(cols)] = cols, vals
    rules = BusinessRules(rules or RulesConfig(), ItemCatalog.from_dataset(data))
    bundle = EdgeBundle(
        list(data.item_index.ids),
        nb,
        wt,
        np.log1p(counts),
        rules.excluded_mask,
        {
            "dataset": data.name,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "neighbours": neighbours,
            "window": window,
            "events": len(split.train),
        },
    )
    if path is not None:
        bundle.save(path)
    return bundle
