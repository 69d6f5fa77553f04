"""Base class of every component config: pydantic, bounded, ``extra="forbid"``, JSON round-trip."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Base of component configs.

    Unknown keys are rejected (a misspelt hyper-parameter must not be silently ignored) and
    every config survives ``model_validate_json(config.model_dump_json())``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def to_json(self) -> str:
        """Serialise to JSON text."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse JSON text produced by :meth:`to_json`."""
        return cls.model_validate_json(text)
