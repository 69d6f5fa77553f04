"""Two-tower retrieval with TorchRec: features → model → training task → retriever component.

Importing this package imports torch and torchrec (slow, and torchrec prints warnings).
"""

from recsys.retrieval.two_tower.features import FeatureSpec, TwoTowerFeatures, Vocabulary
from recsys.retrieval.two_tower.model import Tower, TwoTowerModel
from recsys.retrieval.two_tower.retriever import TwoTowerConfig, TwoTowerRetriever
from recsys.retrieval.two_tower.task import InBatchSoftmaxTask, sampled_softmax_loss

__all__ = [
    "FeatureSpec",
    "InBatchSoftmaxTask",
    "Tower",
    "TwoTowerConfig",
    "TwoTowerFeatures",
    "TwoTowerModel",
    "TwoTowerRetriever",
    "Vocabulary",
    "sampled_softmax_loss",
]
