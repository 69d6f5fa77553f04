"""Serving: the online engine that composes the stages (and, later, the Bento export)."""

from recsys.serving.engine import Engine, EngineConfig, Profile, Recommendation

__all__ = ["Engine", "EngineConfig", "Profile", "Recommendation"]
