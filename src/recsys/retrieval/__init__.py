"""Retrieval: candidate generators (baselines, two-tower) and the ANN index."""

from recsys.retrieval.base import Recommender, history_matrix
from recsys.retrieval.baselines import (
    EASE,
    EASEConfig,
    ItemKNN,
    ItemKNNConfig,
    Popularity,
    PopularityConfig,
)
from recsys.retrieval.session_knn import SKNN, VSKNN, SKNNConfig, VSKNNConfig

__all__ = [
    "EASE",
    "SKNN",
    "VSKNN",
    "EASEConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SKNNConfig",
    "VSKNNConfig",
    "history_matrix",
]
