"""Ranking stage: per-candidate features, a DCN-v2 ranker, and the two-stage recommender.

``recsys.ranking.two_stage`` (the retriever + ranker :class:`Recommender`) imports the
two-tower retriever; import it from there.
"""

from recsys.ranking.features import CandidateFeatureConfig, CandidateFeaturizer
from recsys.ranking.model import DCNRanker, FusedDCNBag
from recsys.ranking.ranker import Ranker, RankerConfig

__all__ = [
    "CandidateFeatureConfig",
    "CandidateFeaturizer",
    "DCNRanker",
    "FusedDCNBag",
    "Ranker",
    "RankerConfig",
]
