"""Shared fixtures. Real-data fixtures are session-scoped: each dataset loads once per run."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# hermetic: BentoML's model and bento stores of a test run live in a throwaway folder, set
# before anything imports bentoml (it reads the variable once)
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="recsys-test-bentoml-")


@pytest.fixture(scope="session")
def ml100k():
    """MovieLens-100K (fetched into the cache on first use, checksums verified)."""
    from recsys.data import load_ml100k

    return load_ml100k()


@pytest.fixture(scope="session")
def ml100k_random(ml100k):
    """ML-100K per-user random 80/10/10 split, seed 2020."""
    from recsys.data import random_split

    return random_split(ml100k, seed=2020)


@pytest.fixture(scope="session")
def ml_latest_small():
    """ml-latest-small from the shared data folder."""
    from recsys.data import load_ml_latest_small

    return load_ml_latest_small()


@pytest.fixture(scope="session")
def synthetic():
    """A small seeded synthetic dataset."""
    from recsys.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(n_users=120, n_items=100, seed=7))
