"""External-library peers for the quality benchmark: ``implicit`` ALS and BPR.

They stand beside our models in ``recsys bench quality`` so our numbers are read against a
well-known implementation on the same split; they are not served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
from pydantic import Field
from threadpoolctl import threadpool_limits

from recsys.config import ComponentConfig
from recsys.data.splits import Split
from recsys.retrieval.base import Recommender
from recsys.types import FloatArray, Query


class ImplicitALSConfig(ComponentConfig):
    """``implicit.cpu.als.AlternatingLeastSquares`` hyper-parameters."""

    # defaults picked by validation NDCG@10 on ML-100K random (never on test)
    factors: int = Field(32, ge=1, le=1024)
    regularization: float = Field(0.05, ge=0.0)
    alpha: float = Field(5.0, gt=0.0)
    iterations: int = Field(20, ge=1, le=1000)
    seed: int = 0


class ImplicitBPRConfig(ComponentConfig):
    """``implicit.cpu.bpr.BayesianPersonalizedRanking`` hyper-parameters."""

    factors: int = Field(64, ge=1, le=1024)
    learning_rate: float = Field(0.05, gt=0.0)
    regularization: float = Field(0.01, ge=0.0)
    iterations: int = Field(200, ge=1, le=10_000)
    seed: int = 0


class _ImplicitMF(Recommender):
    """Matrix factorisation from ``implicit``: score = user_factors · item_factors."""

    def _model(self):
        raise NotImplementedError

    def fit(self, split: Split) -> Self:
        """Train on the binary training matrix (one BLAS thread: implicit's advice)."""
        matrix = split.train_matrix().tocsr()
        with threadpool_limits(1, "blas"):
            model = self._model()
            model.fit(matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self._fitted_on(split)
        return self

    def score(self, queries: Sequence[Query]) -> FloatArray:
        """Dot products for known users; unknown users get the mean user vector."""
        self._require_fitted()
        mean = self.user_factors.mean(axis=0)
        users = np.stack(
            [
                self.user_factors[q.user]
                if q.user is not None and q.user < len(self.user_factors)
                else mean
                for q in queries
            ]
        )
        return users @ self.item_factors.T

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors = state["user_factors"]
        self.item_factors = state["item_factors"]


class ImplicitALS(_ImplicitMF):
    """implicit's ALS (Hu, Koren & Volinsky 2008) with confidence 1 + α·r."""

    config_class = ImplicitALSConfig
    name = "implicit_als"
    config: ImplicitALSConfig

    def _model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        return AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.iterations,
            random_state=cfg.seed,
            num_threads=1,
        )


class ImplicitBPR(_ImplicitMF):
    """implicit's BPR-MF (Rendle et al. 2009)."""

    config_class = ImplicitBPRConfig
    name = "implicit_bpr"
    config: ImplicitBPRConfig

    def _model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cfg = self.config
        return BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations,
            random_state=cfg.seed,
            num_threads=1,
        )
