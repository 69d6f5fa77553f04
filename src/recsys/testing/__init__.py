"""Reusable contract tests for recsys components (as LensKit ships ``lenskit.testing``).

Subclass :class:`RecommenderContract` in a test module, set ``component`` (and optionally
``config_overrides`` for a fast configuration), and pytest collects the whole contract::

    class TestEASE(RecommenderContract):
        component = EASE
"""

from recsys.testing.contracts import RecommenderContract, checkerboard_split, tiny_split

__all__ = ["RecommenderContract", "checkerboard_split", "tiny_split"]
