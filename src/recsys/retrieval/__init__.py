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

__all__ = [
    "EASE",
    "EASEConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "history_matrix",
]
