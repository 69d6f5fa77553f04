"""Train / validation / test splits, deterministic under a seed and leak-free.

* :func:`random_split`: per-user random 80/10/10 (RecBole's ``RS`` with ``group_by: user``).
* :func:`temporal_split`: per-user, ordered by time: each user's oldest 80 % train, next 10 %
  validation, latest 10 % test (RecBole's ``TO`` + ``RS``).
* :func:`leave_last_out`: per-user, the last ``n`` events by time held out.
* :func:`time_cutoff_split`: one global cutoff: everything before trains, nothing after does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.dataset import Dataset, interaction_matrix
from recsys.types import IntArray


@dataclass
class Split:
    """A dataset cut into train, validation and test interactions (dense ``user``/``item``)."""

    dataset: Dataset
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    seed: int | None = None

    def train_matrix(self, include_valid: bool = False) -> sp.csr_matrix:
        """Binary user × item CSR of training (optionally + validation) interactions."""
        frame = pd.concat([self.train, self.valid]) if include_valid else self.train
        return interaction_matrix(frame, self.dataset.n_users, self.dataset.n_items)

    def target_users(self, stage: str = "test") -> IntArray:
        """Users with at least one interaction in ``stage`` (``"valid"`` or ``"test"``)."""
        frame = self.test if stage == "test" else self.valid
        return np.unique(frame["user"].to_numpy(np.int64))

    def sizes(self) -> dict[str, int]:
        """Number of interactions in each part."""
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _ratio_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """RecBole's rounding: valid/test get floor(ratio·n) (at least 1 when n ≥ 3), train the rest."""
    n_valid = int(ratios[1] * n)
    n_test = int(ratios[2] * n)
    if n >= 3:
        n_valid = max(n_valid, 1)
        n_test = max(n_test, 1)
    n_train = n - n_valid - n_test
    return n_train, n_valid, n_test


def _assign(
    frame: pd.DataFrame, order: np.ndarray, ratios: tuple[float, float, float]
) -> np.ndarray:
    """Part label (0 train, 1 valid, 2 test) per row, given each user's rows in ``order``."""
    labels = np.zeros(len(frame), dtype=np.int8)
    users = frame["user"].to_numpy()
    ordered_users = users[order]
    boundaries = np.flatnonzero(np.diff(ordered_users)) + 1
    for group in np.split(order, boundaries):
        n_train, n_valid, _ = _ratio_counts(len(group), ratios)
        labels[group[n_train : n_train + n_valid]] = 1
        labels[group[n_train + n_valid :]] = 2
    return labels


def _make(
    dataset: Dataset, frame: pd.DataFrame, labels: np.ndarray, protocol: str, seed: int | None
) -> Split:
    parts = [frame[labels == k].reset_index(drop=True) for k in range(3)]
    return Split(dataset, parts[0], parts[1], parts[2], protocol=protocol, seed=seed)


def random_split(
    dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 2020
) -> Split:
    """Per-user random split (RecBole protocol). Deterministic under ``seed``."""
    frame = dataset.interactions
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(frame))
    # group by user, keeping the random order within each user
    order = shuffled[np.argsort(frame["user"].to_numpy()[shuffled], kind="stable")]
    return _make(dataset, frame, _assign(frame, order, ratios), "random", seed)


def temporal_split(dataset: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Per-user temporal split: oldest events train, latest test (ties keep file order)."""
    frame = dataset.interactions
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    return _make(dataset, frame, _assign(frame, order, ratios), "temporal", None)


def leave_last_out(dataset: Dataset, n_valid: int = 1, n_test: int = 1) -> Split:
    """Per-user: the last ``n_test`` events by time are test, the ``n_valid`` before them valid.

    Users with fewer than ``n_valid + n_test + 1`` events stay entirely in train.
    """
    frame = dataset.interactions
    order = np.lexsort(
        (np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy())
    )
    labels = np.zeros(len(frame), dtype=np.int8)
    users = frame["user"].to_numpy()[order]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    for group in np.split(order, boundaries):
        if len(group) <= n_valid + n_test:
            continue
        labels[group[len(group) - n_test - n_valid : len(group) - n_test]] = 1
        labels[group[len(group) - n_test :]] = 2
    return _make(dataset, frame, labels, "leave_last_out", None)


def time_cutoff_split(dataset: Dataset, valid_start: float, test_start: float) -> Split:
    """Global cutoffs: train before ``valid_start``, valid until ``test_start``, test after.

    Only test/valid interactions of users and items seen in train are kept (the rest cannot be
    scored by a model trained before the cutoff; they are cold-start cases).
    """
    if valid_start > test_start:
        raise ValueError("valid_start must not be after test_start")
    frame = dataset.interactions
    ts = frame["timestamp"].to_numpy()
    labels = np.where(ts < valid_start, 0, np.where(ts < test_start, 1, 2)).astype(np.int8)
    split = _make(dataset, frame, labels, "time_cutoff", None)
    known_users = set(split.train["user"])
    split.valid = split.valid[split.valid["user"].isin(known_users)].reset_index(drop=True)
    split.test = split.test[split.test["user"].isin(known_users)].reset_index(drop=True)
    return split


def make_split(dataset: Dataset, protocol: str, seed: int = 2020) -> Split:
    """Split by protocol name: ``random``, ``temporal`` or ``leave_last_out``."""
    if protocol == "random":
        return random_split(dataset, seed=seed)
    if protocol == "temporal":
        return temporal_split(dataset)
    if protocol == "leave_last_out":
        return leave_last_out(dataset)
    raise ValueError(f"protocol: unknown {protocol!r}; use random, temporal or leave_last_out")
