"""The retrieval component contract shared by baselines and neural retrievers.

A :class:`Recommender` is trained with :meth:`Recommender.fit` on a :class:`~recsys.data.Split`
and then answers ``recommender(query, n) -> ItemList``. Batch scoring over the whole catalogue
(:meth:`Recommender.score`) is what full-ranking evaluation uses; ``__call__`` is what the
online engine uses. Both read the user's profile from the :class:`~recsys.types.Query`, so a
fresher history gives a fresher recommendation without retraining.
"""

from __future__ import annotations

import importlib
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.errors import NotFittedError
from recsys.types import FloatArray, ItemList, Query


class Recommender(ABC):
    """Base class of retrieval components.

    Subclasses set ``config_class``, implement :meth:`fit`, :meth:`score`, :meth:`_state`
    and :meth:`_restore`.
    """

    config_class: ClassVar[type[ComponentConfig]]
    name: ClassVar[str]

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:
            self.config = self.config_class.model_validate(self.config.model_dump())
        self.n_items: int | None = None
        # identity of the trained component: which catalogue, which training run
        self.item_digest: str | None = None
        self.model_id: str | None = None

    def _fitted_on(self, split: Split) -> None:
        """Record what the component was trained on (call at the start of ``fit``)."""
        self.n_items = split.dataset.n_items
        self.item_digest = split.dataset.item_index.digest
        self.model_id = uuid.uuid4().hex[:16]

    # ------------------------------------------------------------------ training / scoring
    @abstractmethod
    def fit(self, split: Split) -> Self:
        """Train on ``split.train`` (``split.valid`` may be used for early stopping)."""

    @abstractmethod
    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Scores of every catalogue item for each query, shape (B, n_items).

        Higher is better. Items are not masked: callers decide what to exclude.
        """

    def retrieve(
        self, queries: Sequence[Query], n: int, exclude_seen: bool = True
    ) -> list[ItemList]:
        """Top-``n`` items per query, excluding ``query.exclude`` (and the history).

        The serving path (the engine's retrieval stage calls ``retriever(query, n)``, which is
        this with one query). Subclasses with an index override it (the two-tower: FAISS).
        """
        scores = self.score(queries)
        return [
            ItemList.from_scores(scores[row], n, exclude=_excluded(query, exclude_seen))
            for row, query in enumerate(queries)
        ]

    def __call__(self, query: Query, n: int, exclude_seen: bool = True) -> ItemList:
        """Top-``n`` items for one query (:meth:`retrieve` of one)."""
        return self.retrieve([query], n, exclude_seen)[0]

    def _require_fitted(self) -> int:
        if self.n_items is None:
            raise NotFittedError(f"{type(self).__name__} is not trained: call fit() or load()")
        return self.n_items

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that, with the config, restore the trained component."""

    @abstractmethod
    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_state`."""

    def save(self, path: str | Path) -> Path:
        """Write config and trained state to the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.config.model_dump(mode="json"),
            "n_items": self._require_fitted(),
            "item_digest": self.item_digest,
            "model_id": self.model_id,
        }
        (path / "component.json").write_text(json.dumps(meta, indent=2))
        np.savez(path / "state.npz", **self._state())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a component saved with :meth:`save` (never retrains)."""
        path = Path(path)
        meta = json.loads((path / "component.json").read_text())
        module, _, qualname = meta["class"].rpartition(".")
        klass = getattr(importlib.import_module(module), qualname)
        if not issubclass(klass, cls):
            raise TypeError(f"{path}: holds a {klass.__name__}, not a {cls.__name__}")
        component = klass(klass.config_class.model_validate(meta["config"]))
        component.n_items = int(meta["n_items"])
        component.item_digest = meta.get("item_digest")
        component.model_id = meta.get("model_id")
        with np.load(path / "state.npz", allow_pickle=False) as state:
            component._restore({k: state[k] for k in state.files})
        return component


def _excluded(query: Query, exclude_seen: bool) -> np.ndarray:
    if exclude_seen and len(query.history):
        return np.concatenate([query.exclude, query.history])
    return query.exclude


def history_matrix(queries: Sequence[Query], n_items: int) -> sp.csr_matrix:
    """Binary (B, n_items) CSR of the queries' histories (items outside the catalogue dropped)."""
    indptr = [0]
    indices: list[np.ndarray] = []
    for query in queries:
        items = np.unique(query.history[(query.history >= 0) & (query.history < n_items)])
        indices.append(items)
        indptr.append(indptr[-1] + len(items))
    cols = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    data = np.ones(len(cols), dtype=np.float32)
    return sp.csr_matrix((data, cols, np.asarray(indptr)), shape=(len(queries), n_items))
