"""A/B experiments: deterministic, sticky assignment of users to variants.

A user's bucket is ``SHA-256(salt ":" user key)`` read as a number in [0, 1); the variants split
[0, 1) by their weights, in config order. No state, no randomness: the same user gets the same
variant in every process, after every restart, on every machine (Python's ``hash()`` is salted
per process and would not do). Changing the salt re-shuffles users for a new experiment.

Each variant names the decision configuration it runs (e.g. control = no diversity, treatment =
MMR with ``lam = 0.7``); the pipeline reads it and logs the variant with every decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from recsys.config import ComponentConfig
from recsys.decision.diversity import DiversityConfig
from recsys.decision.exploration import ExplorationConfig
from recsys.types import Query


class Variant(ComponentConfig):
    """One arm of an experiment and the decision configuration it runs."""

    name: str = Field(..., min_length=1, max_length=64)
    weight: float = Field(..., ge=0.0, description="Traffic share (normalised over variants).")
    diversity: DiversityConfig | None = Field(None, discriminator="kind")
    exploration: ExplorationConfig | None = Field(None, discriminator="kind")


class ExperimentConfig(ComponentConfig):
    """An experiment: a name, a salt and its variants with their traffic split."""

    name: str = Field(..., min_length=1, max_length=64)
    salt: str = Field(..., min_length=1, description="Change it to re-randomise users.")
    variants: tuple[Variant, ...] = Field(..., min_length=1)
    default_variant: str | None = Field(
        None,
        description="Variant for requests that cannot be assigned stickily (no user id, no "
        "consent); default: the first variant.",
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("variants: weights must sum to a positive number")
        if self.default_variant is not None and self.default_variant not in names:
            raise ValueError(f"default_variant: {self.default_variant!r} is not one of {names}")
        return self


@dataclass(frozen=True)
class Assignment:
    """The outcome of assigning one request.

    Attributes:
        experiment: Experiment name.
        variant: The variant config.
        bucket: The user's position in [0, 1), ``None`` when not assigned by user.
        sticky: Whether the assignment came from the user's hash (else the default variant).
    """

    experiment: str
    variant: Variant
    bucket: float | None
    sticky: bool


def bucket(key: str, salt: str) -> float:
    """Deterministic position of ``key`` in [0, 1) for ``salt`` (SHA-256, first 8 bytes)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


class Experiment:
    """Assigns requests to the variants of an :class:`ExperimentConfig`.

    Unlike the list-transforming stages this component maps a request to a configuration:
    ``Experiment(config).assign(query)``.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        weights = np.asarray([v.weight for v in config.variants], dtype=np.float64)
        self._edges = np.cumsum(weights / weights.sum())
        self._edges[-1] = 1.0  # no gap above the last edge from rounding
        default = config.default_variant or config.variants[0].name
        self._default = next(v for v in config.variants if v.name == default)

    def variant_for(self, user_key: str) -> Variant:
        """The variant of a user key (stable everywhere)."""
        return self._variant_at(bucket(user_key, self.config.salt))

    def _variant_at(self, b: float) -> Variant:
        index = min(int(np.searchsorted(self._edges, b, side="right")), len(self._edges) - 1)
        return self.config.variants[index]

    def assign(self, query: Query) -> Assignment:
        """Assign a request: by its external user id when known and consented.

        The key is ``query.user_id`` — never the dense user index, which a retrain may
        renumber — so a user keeps their variant across retrains, and users the model has
        never seen are assigned like everyone else. Anonymous or non-consenting requests get
        the default variant.
        """
        if query.user_id is None or not query.consent:
            return Assignment(self.config.name, self._default, None, sticky=False)
        b = bucket(str(query.user_id), self.config.salt)
        return Assignment(self.config.name, self._variant_at(b), b, sticky=True)

    def split(self, user_keys: list[str]) -> dict[str, float]:
        """Observed share of each variant over ``user_keys`` (for checking a split)."""
        counts = dict.fromkeys((v.name for v in self.config.variants), 0)
        for key in user_keys:
            counts[self.variant_for(key).name] += 1
        total = max(1, len(user_keys))
        return {name: count / total for name, count in counts.items()}
