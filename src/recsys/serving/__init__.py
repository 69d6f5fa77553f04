"""Serving: the online engine that composes the stages (and, later, the Bento export)."""

from recsys.serving.build import build_engine, stage_latency
from recsys.serving.engine import Engine, EngineConfig, Profile, Recommendation

__all__ = ["Engine", "EngineConfig", "Profile", "Recommendation", "build_engine", "stage_latency"]
