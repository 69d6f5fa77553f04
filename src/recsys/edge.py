"""Edge scoring: a self-contained bundle scored next to the user (numpy only).

What a CDN node or a device runs: no torch, no server, no user profile. The bundle
(:func:`recsys.serving.modes.build_edge_bundle`, ``recsys export --edge``) holds each item's
strongest neighbours (item-to-item co-occurrence in sessions), item popularity, and the
business rules' exclusions as a mask. :meth:`EdgeBundle.recommend` scores the current
session's own events, most recent first with a decay, against the neighbour lists;
popularity fills what the session does not cover. Importing this module imports numpy and
nothing else.

Example::

    bundle = EdgeBundle.load("bentos/dist/edge-ml-100k")
    bundle.recommend(["50", "172", "133"], k=10)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FILES = ("bundle.npz", "items.json", "meta.json")


class EdgeBundle:
    """Neighbour lists, popularity and rules of one catalogue.

    Args:
        item_ids: External id of each item (index order).
        neighbours: (n_items, M) neighbour indices per item (padding: weight 0).
        weights: (n_items, M) similarity of each neighbour.
        popularity: (n_items,) popularity scores.
        excluded: (n_items,) items the rules never show.
        meta: Free-form description (dataset, built when, settings).
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        neighbours: np.ndarray,
        weights: np.ndarray,
        popularity: np.ndarray,
        excluded: np.ndarray,
        meta: dict | None = None,
    ) -> None:
        self.item_ids = list(item_ids)
        self.position = {item: i for i, item in enumerate(self.item_ids)}
        self.neighbours = np.asarray(neighbours, dtype=np.int32)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.excluded = np.asarray(excluded, dtype=bool)
        self.meta = dict(meta or {})
        # popularity order once: the fill never sorts the catalogue per request
        self._by_popularity = np.argsort(-self.popularity, kind="stable")

    def recommend(
        self,
        session: Sequence[str],
        k: int = 10,
        exclude: Sequence[str] = (),
        decay: float = 0.8,
        exclude_session: bool = True,
    ) -> list[str]:
        """The next ``k`` items for a session's own events (oldest first).

        Args:
            session: External ids of the session's events, oldest first.
            k: How many items.
            exclude: Items the page must not show.
            decay: Weight of an event per step back in the session (1: all equal).
            exclude_session: Leave out the session's own items.
        """
        known = [self.position[i] for i in session if i in self.position]
        n = len(self.item_ids)
        scores = np.zeros(n, dtype=np.float32)
        if known:
            recent = np.asarray(known[::-1], dtype=np.int64)
            steps = decay ** np.arange(len(recent), dtype=np.float32)
            np.add.at(
                scores,
                self.neighbours[recent].ravel(),
                (self.weights[recent] * steps[:, None]).ravel(),
            )
        blocked = self.excluded.copy()
        blocked[[self.position[i] for i in exclude if i in self.position]] = True
        if exclude_session and known:
            blocked[known] = True
        scores[blocked] = -1.0
        chosen: list[int] = []
        hits = np.flatnonzero(scores > 0)
        if len(hits):
            top = hits[np.argsort(-scores[hits], kind="stable")[:k]]
            chosen = top.tolist()
        if len(chosen) < k:
            taken = set(chosen)
            for item in self._by_popularity:
                if len(chosen) == k:
                    break
                if not blocked[item] and int(item) not in taken:
                    chosen.append(int(item))
        return [self.item_ids[i] for i in chosen]

    def save(self, path: str | Path) -> Path:
        """Write the bundle's three files into the folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path / "bundle.npz",
            neighbours=self.neighbours,
            weights=self.weights,
            popularity=self.popularity,
            excluded=self.excluded,
        )
        (path / "items.json").write_text(json.dumps(self.item_ids))
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EdgeBundle:
        """Read a bundle written by :meth:`save`."""
        path = Path(path)
        with np.load(path / "bundle.npz") as arrays:
            parts = {name: arrays[name] for name in arrays.files}
        return cls(
            json.loads((path / "items.json").read_text()),
            parts["neighbours"],
            parts["weights"],
            parts["popularity"],
            parts["excluded"],
            json.loads((path / "meta.json").read_text()),
        )

    @staticmethod
    def size_bytes(path: str | Path) -> int:
        """Bytes of a saved bundle on disk."""
        return sum((Path(path) / name).stat().st_size for name in FILES)
