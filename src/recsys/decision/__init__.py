"""Decision stage: what is shown, given what the models rank.

Rules → diversity (MMR, DPP) → exploration (propensities) under an experiment variant, with
context popularity for cold start, missing consent and failing stages. Compose them with
:class:`~recsys.decision.pipeline.DecisionPipeline`.
"""

from recsys.decision.base import DecisionStage, ItemCatalog
from recsys.decision.consent import ConsentConfig, ConsentGate, anonymise
from recsys.decision.diversity import (
    DPPConfig,
    DPPReranker,
    MMRConfig,
    MMRReranker,
    TopK,
    TopKConfig,
    make_selector,
)
from recsys.decision.experiments import Assignment, Experiment, ExperimentConfig, Variant, bucket
from recsys.decision.exploration import (
    EpsilonGreedy,
    EpsilonGreedyConfig,
    ThompsonConfig,
    ThompsonSampling,
    make_explorer,
)
from recsys.decision.fallback import (
    ContextPopularity,
    ContextPopularityConfig,
    FallbackList,
    run_with_fallback,
)
from recsys.decision.pipeline import (
    Decision,
    DecisionLog,
    DecisionPipeline,
    DecisionPipelineConfig,
    DecisionRecord,
)
from recsys.decision.rules import (
    AttributeMatch,
    Availability,
    BoostRule,
    BusinessRules,
    CapRule,
    RulesConfig,
    SlateCaps,
)

__all__ = [
    "Assignment",
    "AttributeMatch",
    "Availability",
    "BoostRule",
    "BusinessRules",
    "CapRule",
    "ConsentConfig",
    "ConsentGate",
    "ContextPopularity",
    "ContextPopularityConfig",
    "DPPConfig",
    "DPPReranker",
    "Decision",
    "DecisionLog",
    "DecisionPipeline",
    "DecisionPipelineConfig",
    "DecisionRecord",
    "DecisionStage",
    "EpsilonGreedy",
    "EpsilonGreedyConfig",
    "Experiment",
    "ExperimentConfig",
    "FallbackList",
    "ItemCatalog",
    "MMRConfig",
    "MMRReranker",
    "RulesConfig",
    "SlateCaps",
    "ThompsonConfig",
    "ThompsonSampling",
    "TopK",
    "TopKConfig",
    "Variant",
    "anonymise",
    "bucket",
    "make_explorer",
    "make_selector",
    "run_with_fallback",
]
