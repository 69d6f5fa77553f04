"""Fault injection for the served engine's reliability tests (``RECSYS_FAULTS``).

``RECSYS_FAULTS="ranking=raise,retrieval=sleep:200"`` makes the ranking stage raise and the
retrieval stage sleep 200 ms on every request, so tests against the real ``bentoml serve``
process can show the engine's degradation paths (a failing ranker keeps the retrieval
order; a stage past the budget is abandoned) without a special build of the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from recsys.errors import RecsysError

STAGES = ("retrieval", "ranking")


class InjectedFaultError(RuntimeError):
    """Raised by a stage on purpose (``RECSYS_FAULTS``)."""


def parse_faults(spec: str) -> dict[str, tuple[str, float]]:
    """``"ranking=raise,retrieval=sleep:200"`` → ``{stage: (action, milliseconds)}``.

    Raises:
        RecsysError: An unknown stage or action (the message names it).
    """
    faults: dict[str, tuple[str, float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        stage, _, action = part.partition("=")
        if stage not in STAGES:
            raise RecsysError(f"RECSYS_FAULTS: unknown stage {stage!r}; choose from {STAGES}")
        kind, _, value = action.partition(":")
        if kind == "raise" and not value:
            faults[stage] = ("raise", 0.0)
        elif kind == "sleep" and value.replace(".", "", 1).isdigit():
            faults[stage] = ("sleep", float(value))
        else:
            raise RecsysError(f"RECSYS_FAULTS: {part!r}: use <stage>=raise or <stage>=sleep:<ms>")
    return faults


def _faulty(stage: str, action: str, ms: float, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if action == "raise":
            raise InjectedFaultError(f"injected {stage} failure")
        time.sleep(ms / 1000.0)
        return call(*args, **kwargs)

    return wrapped


def inject_faults(engine: Any, spec: str) -> dict[str, tuple[str, float]]:
    """Wrap the engine's stages as ``spec`` says (nothing when it is empty)."""
    faults = parse_faults(spec)
    for stage, (action, ms) in faults.items():
        part = engine.retriever if stage == "retrieval" else engine.ranker
        if part is None:
            raise RecsysError(f"RECSYS_FAULTS: the engine has no {stage} stage")
        wrapped = _faulty(stage, action, ms, part)
        if stage == "retrieval":
            engine.retriever = wrapped
        else:
            engine.ranker = wrapped
    return faults
