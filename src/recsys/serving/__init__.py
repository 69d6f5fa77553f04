"""Serving: the online engine that composes the stages (and, later, the Bento export)."""

from recsys.serving.build import build_engine, stage_latency
from recsys.serving.engine import (
    ComponentMismatchError,
    Engine,
    EngineConfig,
    Profile,
    Recommendation,
    check_components,
)
from recsys.serving.profiles import split_profiles, store_profiles

__all__ = [
    "ComponentMismatchError",
    "Engine",
    "EngineConfig",
    "Profile",
    "Recommendation",
    "build_engine",
    "check_components",
    "split_profiles",
    "stage_latency",
    "store_profiles",
]
